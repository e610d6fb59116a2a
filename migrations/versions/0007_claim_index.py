"""claim index: a partial index on the submissions the dispatcher may claim (pending,
retry_wait), in claim order, so claiming costs with the open work and not with the history
the store keeps (docs/performance.md)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

CLAIMABLE = "state IN ('pending', 'retry_wait')"  # the same text as adapter.store.models.CLAIMABLE_STATES_SQL


def upgrade() -> None:
    op.create_index('ix_submissions_claim', 'submissions', ['destination', 'next_attempt_at', 'id'], unique=False,
                    sqlite_where=sa.text(CLAIMABLE), postgresql_where=sa.text(CLAIMABLE))


def downgrade() -> None:
    op.drop_index('ix_submissions_claim', table_name='submissions')
