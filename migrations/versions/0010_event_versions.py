"""event versions: content-based de-duplication and conflicts (issue 16 item 3). Each inbox row
keeps a keyed digest of its body's canonical JSON (``adapter.events.content``; null on rows
stored before this, which intake compares by their body); a different body under a known event
id is an ``event_versions`` row (``conflict``, later ``replayed``), as is a body it replaced
(``superseded``).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('inbox_events') as batch:
        batch.add_column(sa.Column('content_digest', sa.String(length=64), nullable=True))
    op.create_table('event_versions',
                    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
                    sa.Column('event_id', sa.String(length=120), nullable=False),
                    sa.Column('content_digest', sa.String(length=64), nullable=False),
                    sa.Column('body', sa.Text(), nullable=False),
                    sa.Column('state', sa.String(length=16), nullable=False),
                    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
                    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
                    sa.Column('resolved_by', sa.String(length=64), nullable=True),
                    sa.Column('resolve_reason', sa.Text(), nullable=True),
                    sa.ForeignKeyConstraint(['event_id'], ['inbox_events.event_id']),
                    sa.PrimaryKeyConstraint('id'),
                    sa.UniqueConstraint('event_id', 'content_digest', name='uq_event_versions_digest'))
    op.create_index('ix_event_versions_state', 'event_versions', ['state'])


def downgrade() -> None:
    op.drop_index('ix_event_versions_state', table_name='event_versions')
    op.drop_table('event_versions')
    with op.batch_alter_table('inbox_events') as batch:
        batch.drop_column('content_digest')
