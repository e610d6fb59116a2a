"""Event contract v1: what the HIS puts on the queue."""
