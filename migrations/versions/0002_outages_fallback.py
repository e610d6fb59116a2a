"""outages, circuit states and paper-fallback records

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25

``uq_outages_open`` is a partial unique index (one open outage per destination and kind);
SQLite and PostgreSQL both support the WHERE clause.
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('circuit_states',
    sa.Column('destination', sa.String(length=32), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('since', sa.DateTime(timezone=True), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('owner', sa.String(length=80), nullable=True),
    sa.PrimaryKeyConstraint('destination')
    )
    op.create_table('outages',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('destination', sa.String(length=32), nullable=False),
    sa.Column('detected', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_by', sa.String(length=64), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ended_by', sa.String(length=64), nullable=True),
    sa.Column('end_reason', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('outages', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_outages_destination'), ['destination'], unique=False)
        batch_op.create_index('uq_outages_open', ['destination', 'detected'], unique=True, sqlite_where=sa.text('ended_at IS NULL'), postgresql_where=sa.text('ended_at IS NULL'))

    op.create_table('fallback_records',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('fallback_no', sa.String(length=80), nullable=False),
    sa.Column('event_id', sa.String(length=120), nullable=False),
    sa.Column('submission_id', sa.Integer(), nullable=False),
    sa.Column('destination', sa.String(length=32), nullable=False),
    sa.Column('outage_id', sa.Integer(), nullable=True),
    sa.Column('facility_siam_id', sa.String(length=40), nullable=False),
    sa.Column('prescription_id', sa.String(length=64), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('linked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('tracking_code', sa.String(length=64), nullable=True),
    sa.Column('head_id', sa.String(length=64), nullable=True),
    sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('claim_reason', sa.Text(), nullable=True),
    sa.Column('reply_published_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['event_id'], ['inbox_events.event_id'], ),
    sa.ForeignKeyConstraint(['outage_id'], ['outages.id'], ),
    sa.ForeignKeyConstraint(['submission_id'], ['submissions.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('event_id', 'destination', name='uq_fallback_event_dest'),
    sa.UniqueConstraint('fallback_no'),
    sa.UniqueConstraint('submission_id')
    )
    with op.batch_alter_table('fallback_records', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_fallback_records_reply_published_at'), ['reply_published_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_fallback_records_state'), ['state'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('fallback_records', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_fallback_records_state'))
        batch_op.drop_index(batch_op.f('ix_fallback_records_reply_published_at'))

    op.drop_table('fallback_records')
    with op.batch_alter_table('outages', schema=None) as batch_op:
        batch_op.drop_index('uq_outages_open', sqlite_where=sa.text('ended_at IS NULL'), postgresql_where=sa.text('ended_at IS NULL'))
        batch_op.drop_index(batch_op.f('ix_outages_destination'))

    op.drop_table('outages')
    op.drop_table('circuit_states')
