"""operator actions: one row per state-changing ``adapter`` command (who, as which OS user, what,
why, result), shown by ``adapter audit list`` (issue 16 item 9)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('operator_actions',
                    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
                    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
                    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
                    sa.Column('os_user', sa.String(length=64), nullable=False),
                    sa.Column('sudo_user', sa.String(length=64), nullable=True),
                    sa.Column('claimed_actor', sa.String(length=64), nullable=True),
                    sa.Column('host', sa.String(length=255), nullable=False),
                    sa.Column('command', sa.String(length=64), nullable=False),
                    sa.Column('arguments', sa.JSON(), nullable=False),
                    sa.Column('reason', sa.Text(), nullable=True),
                    sa.Column('result', sa.String(length=16), nullable=False),
                    sa.Column('detail', sa.Text(), nullable=True),
                    sa.PrimaryKeyConstraint('id'))
    op.create_index('ix_operator_actions_started_at', 'operator_actions', ['started_at'])
    op.create_index('ix_operator_actions_command', 'operator_actions', ['command'])


def downgrade() -> None:
    op.drop_index('ix_operator_actions_command', table_name='operator_actions')
    op.drop_index('ix_operator_actions_started_at', table_name='operator_actions')
    op.drop_table('operator_actions')
