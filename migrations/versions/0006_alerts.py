"""alert states: what each alert channel was told about each alert condition (adapter.ops.alerts),
so a restart neither repeats a start alert nor forgets the resolve

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('alert_states',
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('channel', sa.String(length=80), nullable=False),
    sa.Column('rule', sa.String(length=32), nullable=False),
    sa.Column('destination', sa.String(length=32), nullable=True),
    sa.Column('summary', sa.Text(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('notified_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('notifications', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('key', 'channel')
    )


def downgrade() -> None:
    op.drop_table('alert_states')
