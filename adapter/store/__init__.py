"""The adapter's durable store: inbox, submissions, attempts, audit trail (SQLAlchemy 2)."""
