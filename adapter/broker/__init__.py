"""Message-broker plumbing (embedded SQLite transport, broker URLs)."""
