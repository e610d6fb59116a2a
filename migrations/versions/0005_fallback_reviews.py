"""fallback reviews (Airflow side, adapter/reconcile/models.py FallbackReview): what the
fallback_reconciliation DAG made of each paper-fallback record (linked, paper_claim, flagged)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('fallback_reviews',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('fallback_no', sa.String(length=80), nullable=False),
    sa.Column('fallback_id', sa.Integer(), nullable=False),
    sa.Column('destination', sa.String(length=32), nullable=False),
    sa.Column('submission_id', sa.Integer(), nullable=True),
    sa.Column('record_created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('verdict', sa.String(length=16), nullable=False),
    sa.Column('submission_state', sa.String(length=16), nullable=True),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.Column('flagged_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('max_age_hours', sa.Integer(), nullable=False),
    sa.Column('interval_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('interval_end', sa.DateTime(timezone=True), nullable=False),
    sa.Column('run_id', sa.String(length=250), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('fallback_no', name='uq_fallback_review_no')
    )
    with op.batch_alter_table('fallback_reviews', schema=None) as batch_op:
        batch_op.create_index('ix_fallback_reviews_interval', ['interval_start'], unique=False)
        batch_op.create_index(batch_op.f('ix_fallback_reviews_fallback_id'), ['fallback_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_fallback_reviews_verdict'), ['verdict'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('fallback_reviews', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_fallback_reviews_verdict'))
        batch_op.drop_index(batch_op.f('ix_fallback_reviews_fallback_id'))
        batch_op.drop_index('ix_fallback_reviews_interval')
    op.drop_table('fallback_reviews')
