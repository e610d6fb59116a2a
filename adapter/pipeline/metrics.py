"""Prometheus metrics: the only module that imports ``prometheus_client``.

Two kinds:

* **counters and histograms in this process** -- what the runner and dispatcher observe as it
  happens (events received, attempts by outcome class, send latency, queue depth). The
  pipeline calls the small functions below (``event_received``, ``observe_attempt``,
  ``queue_depth``); nothing else of Prometheus leaks into it. ``observe_attempt`` also writes
  the attempt's structured log line, so metrics and logs of an attempt come from one place.
* **gauges read from the store at scrape time** (``StoreCollector``): submissions by destination
  and state, oldest pending age, circuit state, open outages, fallback records, events by
  status; plus token refreshes read from the token caches. One grouped query each, cached for
  ``status.cache_s`` so a busy scraper cannot load the database.

All series live in ``REGISTRY`` (not the global default registry), exposed by ``render()``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
log = logging.getLogger(__name__)
CIRCUIT_VALUES = {"closed": 0, "half_open": 1, "open": 2}

REGISTRY = CollectorRegistry(auto_describe=True)

EVENTS_RECEIVED = Counter(
    "adapter_events_received", "Messages taken off the broker, by intake outcome "
    "(stored, invalid, duplicate, error = could not be stored and went back to the queue)",
    ["outcome"], registry=REGISTRY)
ATTEMPTS = Counter(
    "adapter_attempts", "Exchanges with a destination, by outcome class "
    "(accepted, rejected, transient, auth, ambiguous, invalid)", ["destination", "outcome"], registry=REGISTRY)
SEND_SECONDS = Histogram(
    "adapter_send_duration_seconds", "Duration of one exchange with a destination", ["destination", "outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60), registry=REGISTRY)
FALLBACKS_ISSUED = Counter(
    "adapter_fallback_records_issued", "Paper-fallback records issued by this process's intake", registry=REGISTRY)
QUEUE_DEPTH = Gauge(
    "adapter_broker_queue_depth", "Messages waiting in the broker queue (last reading of the consumer)",
    registry=REGISTRY)

_attempt_log = structlog.get_logger("adapter.attempt")


def event_received(outcome: str, fallbacks: int = 0) -> None:
    EVENTS_RECEIVED.labels(outcome).inc()
    if fallbacks:
        FALLBACKS_ISSUED.inc(fallbacks)


def queue_depth(depth: int) -> None:
    QUEUE_DEPTH.set(depth)


def observe_attempt(job: Any, outcome: Any) -> None:
    """One recorded exchange (``Job``, ``Outcome``): counters, latency and its log line."""
    klass = getattr(outcome.klass, "value", str(outcome.klass))
    ATTEMPTS.labels(job.destination, klass).inc()
    SEND_SECONDS.labels(job.destination, klass).observe(max(0, outcome.duration_ms) / 1000)
    _attempt_log.info("attempt", event_id=job.event_id, submission_id=job.submission_id,
                      destination=job.destination, operation=job.operation, attempt=job.attempts,
                      outcome=klass, duration_ms=outcome.duration_ms, message=outcome.message or None)


class StoreCollector(Collector):
    """Gauges read from the store at scrape time (cached ``cache_s`` seconds)."""

    def __init__(self, sessions: sessionmaker[Session], token_caches: Mapping[str, Any] | None = None,
                 cache_s: float = 2.0, extra: Callable[[], Iterable[Any]] | None = None):
        self._sessions = sessions
        self._token_caches = token_caches or {}
        self._cache_s = cache_s
        self._extra = extra
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Any]] | None = None
        self._readable = True

    def describe(self) -> list[Any]:
        return []  # values come from the store at collect time only

    def collect(self) -> Iterable[Any]:
        """The store's gauges; while the store cannot be read, the last ones read (or none) and
        ``adapter_store_readable`` 0 -- a scrape must keep working when the store is what failed."""
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] > self._cache_s:
                self._cached = (now, self._read_or_last())
            families = list(self._cached[1])
            readable = GaugeMetricFamily("adapter_store_readable",
                                         "1 when the last read of the store's gauges succeeded, 0 when it failed")
            readable.add_metric([], 1.0 if self._readable else 0.0)
            families.append(readable)
        tokens = CounterMetricFamily("adapter_token_refreshes", "Access tokens fetched from a destination's token endpoint",
                                     labels=["destination"])
        for name, cache in sorted(self._token_caches.items()):
            tokens.add_metric([name], getattr(cache, "fetches", 0))
        families.append(tokens)
        if self._extra is not None:
            families.extend(self._extra())
        return families

    def _read_or_last(self) -> list[Any]:
        try:
            families = self._read()
        except Exception as exc:  # the store is away: the rest of /metrics still answers
            if self._readable:
                log.warning("metrics: cannot read the store (%s); serving the last gauges read", type(exc).__name__)
            self._readable = False
            return list(self._cached[1]) if self._cached is not None else []
        self._readable = True
        return families

    def _read(self) -> list[Any]:
        from adapter.outage import records
        from adapter.store.models import CircuitStatus, InboxEvent, Submission
        from adapter.store.states import OPEN_STATES
        from adapter.store.types import utcnow

        submissions = GaugeMetricFamily("adapter_submissions", "Submissions in the store by destination and state",
                                        labels=["destination", "state"])
        oldest = GaugeMetricFamily("adapter_oldest_pending_age_seconds",
                                   "Age of the oldest open (pending, sending, retry_wait) submission, per destination",
                                   labels=["destination"])
        circuit = GaugeMetricFamily("adapter_circuit_state", "Circuit of a destination: 0 closed, 1 half_open, 2 open",
                                    labels=["destination"])
        outage = GaugeMetricFamily("adapter_outage_open", "1 while an outage of this kind (circuit|manual) is open",
                                   labels=["destination", "detected"])
        fallback = GaugeMetricFamily("adapter_fallback_records", "Paper-fallback records by state",
                                     labels=["destination", "state"])
        events = GaugeMetricFamily("adapter_events", "Events in the store by status", labels=["status"])
        now = utcnow()
        with self._sessions() as session:
            known: set[str] = set()
            for destination, state, count in session.execute(
                    select(Submission.destination, Submission.state, func.count())
                    .group_by(Submission.destination, Submission.state)):
                submissions.add_metric([destination, state], count)
                known.add(destination)
            for destination, created in session.execute(
                    select(Submission.destination, func.min(Submission.created_at))
                    .where(Submission.state.in_([s.value for s in OPEN_STATES])).group_by(Submission.destination)):
                oldest.add_metric([destination], max(0.0, (now - _aware(created)).total_seconds()))
            circuits = {row.destination: row.state for row in session.scalars(select(CircuitStatus))}
            for destination in sorted(known | set(circuits)):
                circuit.add_metric([destination], CIRCUIT_VALUES.get(circuits.get(destination, "closed"), 0))
            for row in records.open_outages(session):
                outage.add_metric([row.destination, row.detected], 1)
            for destination, states in sorted(records.fallback_counts(session).items()):
                for state, count in sorted(states.items()):
                    fallback.add_metric([destination, state], count)
            for status, count in session.execute(select(InboxEvent.status, func.count()).group_by(InboxEvent.status)):
                events.add_metric([status], count)
        return [submissions, oldest, circuit, outage, fallback, events]


def _aware(value: Any) -> Any:
    import datetime as dt

    return value if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)


_collectors: dict[int, Collector] = {}
_collectors_lock = threading.Lock()


def attach(collector: Collector) -> Callable[[], None]:
    """Register a collector in ``REGISTRY``; returns the function that removes it again."""
    with _collectors_lock:
        REGISTRY.register(collector)
        _collectors[id(collector)] = collector

    def detach() -> None:
        with _collectors_lock:
            if _collectors.pop(id(collector), None) is not None:
                REGISTRY.unregister(collector)
    return detach


def render() -> bytes:
    return generate_latest(REGISTRY)


def liveness_family(snapshot: Mapping[str, Any]) -> list[Any]:
    """Gauges of the runner's heartbeats (ages in seconds; -1 = never)."""
    family = GaugeMetricFamily("adapter_heartbeat_age_seconds",
                               "Seconds since the loop last ran (consumer, dispatcher) or a message arrived (delivery); -1 never",
                               labels=["loop"])
    for loop in ("consumer", "dispatcher", "delivery"):
        age = snapshot.get(f"{loop}_age_s")
        family.add_metric([loop], -1.0 if age is None else float(age))
    attached = GaugeMetricFamily("adapter_consumer_attached", "1 while the broker consumer is attached")
    attached.add_metric([], 1.0 if snapshot.get("consumer_attached") else 0.0)
    store = GaugeMetricFamily("adapter_store_available",
                              "1 while the running loops find the database usable, 0 while one of them does not")
    store.add_metric([], 0.0 if snapshot.get("store_available") is False else 1.0)
    return [family, attached, store]
