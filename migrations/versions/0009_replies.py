"""replies outbox: one row per reply to the HIS (reply contract v1, adapter/replies); the HIS ids
each submission's replies name (submissions.his_ref). Paper-fallback replies not yet published by
an older adapter become pending rows of the new outbox, with the keys they had.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""
import json
import uuid

from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('replies',
                    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
                    sa.Column('reply_id', sa.String(length=40), nullable=False),
                    sa.Column('type', sa.String(length=40), nullable=False),
                    sa.Column('event_id', sa.String(length=120), nullable=False),
                    sa.Column('submission_id', sa.Integer(), nullable=True),
                    sa.Column('facility_siam_id', sa.String(length=40), nullable=True),
                    sa.Column('body', sa.JSON(), nullable=False),
                    sa.Column('state', sa.String(length=16), nullable=False),
                    sa.Column('attempts', sa.Integer(), nullable=False),
                    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
                    sa.Column('last_error', sa.Text(), nullable=True),
                    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
                    sa.Column('published_at', sa.DateTime(timezone=True), nullable=True),
                    sa.PrimaryKeyConstraint('id'),
                    sa.UniqueConstraint('reply_id'))
    op.create_index('ix_replies_type', 'replies', ['type'])
    op.create_index('ix_replies_event_id', 'replies', ['event_id'])
    op.create_index('ix_replies_state', 'replies', ['state'])
    op.create_index('ix_replies_unpublished', 'replies', ['id'], sqlite_where=sa.text("state = 'pending'"),
                    postgresql_where=sa.text("state = 'pending'"))
    with op.batch_alter_table('submissions') as batch:
        batch.add_column(sa.Column('his_ref', sa.JSON(), nullable=True))
    _carry_unpublished_paper_replies()


def _carry_unpublished_paper_replies() -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.text(
        "SELECT id, fallback_no, event_id, destination, facility_siam_id, prescription_id, reason, created_at "
        "FROM fallback_records WHERE reply_published_at IS NULL ORDER BY id")).mappings().all()
    replies = sa.table('replies', sa.column('reply_id'), sa.column('type'), sa.column('event_id'),
                       sa.column('submission_id'), sa.column('facility_siam_id'), sa.column('body', sa.JSON()),
                       sa.column('state'), sa.column('attempts'), sa.column('created_at'))
    for row in rows:
        issued = row['created_at'] if isinstance(row['created_at'], str) else row['created_at'].isoformat()
        reply_id = uuid.uuid4().hex
        body = {"schema_version": "1", "reply_id": reply_id, "type": "paper_fallback.issued", "at": issued,
                "event_id": row['event_id'], "event_type": "prescription.created",
                "facility_siam_id": row['facility_siam_id'], "destination": row['destination'],
                "prescription_id": row['prescription_id'], "visit_id": None, "dispense_id": None, "order_id": None,
                "result_id": None, "fallback_no": row['fallback_no'], "reason": row['reason'], "issued_at": issued}
        bind.execute(replies.insert().values(reply_id=reply_id, type=body["type"], event_id=row['event_id'],
                                             submission_id=None, facility_siam_id=row['facility_siam_id'],
                                             body=json.loads(json.dumps(body)), state='pending', attempts=0,
                                             created_at=row['created_at']))


def downgrade() -> None:
    with op.batch_alter_table('submissions') as batch:
        batch.drop_column('his_ref')
    op.drop_index('ix_replies_unpublished', table_name='replies')
    op.drop_index('ix_replies_state', table_name='replies')
    op.drop_index('ix_replies_event_id', table_name='replies')
    op.drop_index('ix_replies_type', table_name='replies')
    op.drop_table('replies')
