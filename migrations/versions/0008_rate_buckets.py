"""rate buckets: each destination's max_rps token bucket in a row, so several dispatcher
processes on one PostgreSQL store share one allowance (adapter/outage/shared_bucket.py)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('rate_buckets',
                    sa.Column('destination', sa.String(length=32), nullable=False),
                    sa.Column('tokens', sa.Float(), nullable=False),
                    sa.Column('refilled_at', sa.DateTime(timezone=True), nullable=False),
                    sa.PrimaryKeyConstraint('destination'))


def downgrade() -> None:
    op.drop_table('rate_buckets')
