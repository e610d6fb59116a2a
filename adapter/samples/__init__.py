"""Bundled sample HIS events (demo, tests, and a starting point for integrators)."""
