"""reconciliation verdicts and billing status (Airflow side, adapter/reconcile/models.py)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('reconciliation_results',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('destination', sa.String(length=32), nullable=False),
    sa.Column('item_key', sa.String(length=80), nullable=False),
    sa.Column('submission_id', sa.Integer(), nullable=True),
    sa.Column('subject_key', sa.String(length=200), nullable=True),
    sa.Column('operation', sa.String(length=32), nullable=True),
    sa.Column('head_id', sa.String(length=64), nullable=True),
    sa.Column('tracking_code', sa.String(length=64), nullable=True),
    sa.Column('verdict', sa.String(length=16), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('difference', sa.JSON(), nullable=True),
    sa.Column('interval_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('interval_end', sa.DateTime(timezone=True), nullable=False),
    sa.Column('run_id', sa.String(length=250), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('destination', 'item_key', name='uq_recon_destination_item')
    )
    with op.batch_alter_table('reconciliation_results', schema=None) as batch_op:
        batch_op.create_index('ix_recon_interval', ['interval_start'], unique=False)
        batch_op.create_index(batch_op.f('ix_reconciliation_results_submission_id'), ['submission_id'], unique=False)

    op.create_table('billing_statuses',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('destination', sa.String(length=32), nullable=False),
    sa.Column('head_id', sa.String(length=64), nullable=False),
    sa.Column('tracking_code', sa.String(length=64), nullable=True),
    sa.Column('submission_id', sa.Integer(), nullable=True),
    sa.Column('subject_key', sa.String(length=200), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('audit_status', sa.String(length=32), nullable=True),
    sa.Column('bill_id', sa.String(length=64), nullable=True),
    sa.Column('claimed_amount', sa.BigInteger(), nullable=True),
    sa.Column('approved_amount', sa.BigInteger(), nullable=True),
    sa.Column('paid_amount', sa.BigInteger(), nullable=True),
    sa.Column('deducted_amount', sa.BigInteger(), nullable=True),
    sa.Column('paid_date', sa.String(length=16), nullable=True),
    sa.Column('interval_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('interval_end', sa.DateTime(timezone=True), nullable=False),
    sa.Column('run_id', sa.String(length=250), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('destination', 'head_id', name='uq_billing_destination_head')
    )
    with op.batch_alter_table('billing_statuses', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_billing_statuses_state'), ['state'], unique=False)
        batch_op.create_index(batch_op.f('ix_billing_statuses_submission_id'), ['submission_id'], unique=False)

    op.create_table('billing_deductions',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('destination', sa.String(length=32), nullable=False),
    sa.Column('head_id', sa.String(length=64), nullable=False),
    sa.Column('deduction_ref', sa.String(length=64), nullable=False),
    sa.Column('srv_code', sa.String(length=32), nullable=True),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('reason_code', sa.String(length=32), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('found_interval_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('run_id', sa.String(length=250), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('destination', 'head_id', 'deduction_ref', name='uq_deduction_destination_head_ref')
    )
    with op.batch_alter_table('billing_deductions', schema=None) as batch_op:
        batch_op.create_index('ix_deductions_found', ['found_interval_start'], unique=False)


def downgrade() -> None:
    op.drop_table('billing_deductions')
    op.drop_table('billing_statuses')
    op.drop_table('reconciliation_results')
