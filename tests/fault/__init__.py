"""Fault-injection (chaos) tests: the real adapter under scripted and randomized faults."""
