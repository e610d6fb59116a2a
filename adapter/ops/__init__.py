"""What operators and integrators touch: the CLI, status, the demo, PHI-safe output."""
