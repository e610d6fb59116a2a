"""Test-only helpers (service set-up for the fixtures in tests/conftest.py)."""
