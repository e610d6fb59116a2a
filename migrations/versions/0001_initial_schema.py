"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-25
"""
from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('inbox_events',
    sa.Column('event_id', sa.String(length=120), nullable=False),
    sa.Column('event_type', sa.String(length=64), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('facility_siam_id', sa.String(length=40), nullable=True),
    sa.Column('source_system', sa.String(length=64), nullable=True),
    sa.Column('correlation_id', sa.String(length=100), nullable=True),
    sa.Column('subject_key', sa.String(length=200), nullable=True),
    sa.Column('patient_ref', sa.String(length=64), nullable=True),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('problems', sa.JSON(), nullable=True),
    sa.Column('duplicate_receipts', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('event_id')
    )
    with op.batch_alter_table('inbox_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_inbox_events_patient_ref'), ['patient_ref'], unique=False)
        batch_op.create_index(batch_op.f('ix_inbox_events_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_inbox_events_subject_key'), ['subject_key'], unique=False)

    op.create_table('refresh_tokens',
    sa.Column('destination', sa.String(length=32), nullable=False),
    sa.Column('principal_ref', sa.String(length=64), nullable=False),
    sa.Column('token_encrypted', sa.Text(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('destination', 'principal_ref')
    )
    op.create_table('state_changes',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('event_id', sa.String(length=120), nullable=False),
    sa.Column('submission_id', sa.Integer(), nullable=True),
    sa.Column('from_state', sa.String(length=16), nullable=True),
    sa.Column('to_state', sa.String(length=16), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('state_changes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_state_changes_event_id'), ['event_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_state_changes_submission_id'), ['submission_id'], unique=False)

    op.create_table('visits',
    sa.Column('facility_siam_id', sa.String(length=40), nullable=False),
    sa.Column('visit_id', sa.String(length=64), nullable=False),
    sa.Column('destination', sa.String(length=32), nullable=False),
    sa.Column('hid', sa.String(length=64), nullable=True),
    sa.Column('eligible', sa.Boolean(), nullable=True),
    sa.Column('detail', sa.JSON(), nullable=True),
    sa.Column('checked_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('facility_siam_id', 'visit_id', 'destination')
    )
    op.create_table('submissions',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('event_id', sa.String(length=120), nullable=False),
    sa.Column('destination', sa.String(length=32), nullable=False),
    sa.Column('operation', sa.String(length=32), nullable=False),
    sa.Column('mapping', sa.String(length=120), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('subject_key', sa.String(length=200), nullable=True),
    sa.Column('after_key', sa.String(length=200), nullable=True),
    sa.Column('principal', sa.String(length=64), nullable=True),
    sa.Column('idempotency_key', sa.String(length=80), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('first_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('lease_owner', sa.String(length=80), nullable=True),
    sa.Column('ambiguous', sa.Boolean(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('last_error_class', sa.String(length=16), nullable=True),
    sa.Column('params', sa.JSON(), nullable=True),
    sa.Column('payload', sa.JSON(), nullable=True),
    sa.Column('result', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['event_id'], ['inbox_events.event_id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('event_id', 'destination', 'operation', name='uq_submission_event_dest_op'),
    sa.UniqueConstraint('idempotency_key')
    )
    with op.batch_alter_table('submissions', schema=None) as batch_op:
        batch_op.create_index('ix_submissions_due', ['state', 'next_attempt_at'], unique=False)
        batch_op.create_index('ix_submissions_subject', ['destination', 'subject_key'], unique=False)

    op.create_table('attempts',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('submission_id', sa.Integer(), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('duration_ms', sa.Integer(), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('request', sa.JSON(), nullable=False),
    sa.Column('response', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['submission_id'], ['submissions.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('attempts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_attempts_submission_id'), ['submission_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('attempts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_attempts_submission_id'))

    op.drop_table('attempts')
    with op.batch_alter_table('submissions', schema=None) as batch_op:
        batch_op.drop_index('ix_submissions_subject')
        batch_op.drop_index('ix_submissions_due')

    op.drop_table('submissions')
    op.drop_table('visits')
    with op.batch_alter_table('state_changes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_state_changes_submission_id'))
        batch_op.drop_index(batch_op.f('ix_state_changes_event_id'))

    op.drop_table('state_changes')
    op.drop_table('refresh_tokens')
    with op.batch_alter_table('inbox_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_inbox_events_subject_key'))
        batch_op.drop_index(batch_op.f('ix_inbox_events_status'))
        batch_op.drop_index(batch_op.f('ix_inbox_events_patient_ref'))

    op.drop_table('inbox_events')
