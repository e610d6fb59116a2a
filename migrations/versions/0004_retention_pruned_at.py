"""retention: when an event's body / a submission's payload was pruned (adapter prune)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('inbox_events') as batch:
        batch.add_column(sa.Column('pruned_at', sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table('submissions') as batch:
        batch.add_column(sa.Column('pruned_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('submissions') as batch:
        batch.drop_column('pruned_at')
    with op.batch_alter_table('inbox_events') as batch:
        batch.drop_column('pruned_at')
