"""Issue 8: the adapter's benchmark (measurement only; nothing here is used by ``adapter/``).

``python -m bench`` runs, against the Tamin simulator with a fixed latency:

1. a bare pipeline baseline (consume, one insert, one POST, ack; no adapter code in the loop),
2. the adapter's throughput on N events, and its ratio to the baseline,
3. the adapter's added latency (store timestamps, simulator latency subtracted),
4. a backlog drain after a declared outage, against the rate limit,
5. the adapter process's RSS over time (``--long``: 1,000,000 events).

See ``docs/performance.md`` for the method and the measured figures.
"""
