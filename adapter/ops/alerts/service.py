"""One alert evaluation: read the facts from the store, decide (``rules``), send (``notify``),
and keep in the store (table ``alert_states``) what each channel was told.

A failed channel is logged and tried again at the next evaluation; it never raises out of
``evaluate_once`` and never stops the adapter. Each message's ledger change is committed right
after it was sent, so a crash costs at most one repeated message.

One ``adapter run`` per store is assumed to send alerts: two processes evaluating the same store
could both send a start.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from adapter.config import AdapterConfig, AlertRulesConfig
from adapter.ops.alerts.notify import Alert, Notifier, build_notifiers
from adapter.ops.alerts.rules import (Action, Condition, DestinationFacts, Entry, Facts, Kind, OutageFact, conditions,
                                      plan, settle, store_unavailable)
from adapter.redact import redact_text
from adapter.store.types import utcnow

log = logging.getLogger(__name__)


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)


def read_facts(session: Session, rules: AlertRulesConfig, now: dt.datetime) -> Facts:
    """The snapshot the rules look at: circuits, open outages, oldest open submission and new
    dead/rejected/invalid counts per destination, new invalid events. Only counts and states."""
    from adapter.outage import records
    from adapter.store.models import CircuitStatus, InboxEvent, ReplyRow, Submission
    from adapter.store.states import OPEN_STATES

    dests: dict[str, dict[str, Any]] = {}  # destination -> DestinationFacts' fields
    for row in session.scalars(select(CircuitStatus)):
        dests.setdefault(row.destination, {}).update(
            circuit=row.state, circuit_since=_aware(row.since), circuit_reason=row.reason)
    for outage in records.open_outages(session):
        fact = OutageFact(outage.detected, outage.reason, _aware(outage.started_at), outage.started_by)
        key = "declared_outage" if outage.detected == records.MANUAL else "circuit_outage"
        dests.setdefault(outage.destination, {})[key] = fact
    for destination, created in session.execute(
            select(Submission.destination, func.min(Submission.created_at))
            .where(Submission.state.in_([s.value for s in OPEN_STATES])).group_by(Submission.destination)):
        dests.setdefault(destination, {})["oldest_pending_age_s"] = max(0.0, (now - _aware(created)).total_seconds())
    for state in ("dead", "rejected", "invalid"):
        since = now - dt.timedelta(seconds=getattr(rules, f"new_{state}").window_s)
        for destination, count in session.execute(
                select(Submission.destination, func.count())
                .where(Submission.state == state, Submission.updated_at >= since).group_by(Submission.destination)):
            dests.setdefault(destination, {})[f"new_{state}"] = int(count)
    since = now - dt.timedelta(seconds=rules.new_invalid.window_s)
    invalid_events = session.scalar(select(func.count()).select_from(InboxEvent).where(
        InboxEvent.status == "invalid", InboxEvent.received_at >= since)) or 0
    dead_replies = session.scalar(select(func.count()).select_from(ReplyRow).where(ReplyRow.state == "dead")) or 0
    from adapter.store.versions import open_conflicts

    return Facts(now, {name: DestinationFacts(**values) for name, values in dests.items()},
                 int(invalid_events), dead_replies=int(dead_replies), open_conflicts=open_conflicts(session))


class Ledger(Protocol):
    """Where the service keeps what each channel was told: ``DbLedger``, or a test's own."""

    def load(self) -> dict[tuple[str, str], Entry]: ...

    def store(self, channel: str, key: str, entry: Entry | None) -> None: ...


class DbLedger:
    """The ``alert_states`` table as a ledger: (channel, key) -> ``Entry``."""

    def __init__(self, sessions: sessionmaker[Session]):
        self._sessions = sessions

    def load(self) -> dict[tuple[str, str], Entry]:
        from adapter.store.models import AlertState

        with self._sessions() as session:
            return {(r.channel, r.key): Entry(r.key, r.channel, r.rule, r.destination, r.summary, _aware(r.started_at),
                                              _aware(r.notified_at) if r.notified_at else None, r.notifications)
                    for r in session.scalars(select(AlertState))}

    def store(self, channel: str, key: str, entry: Entry | None) -> None:
        from adapter.store.models import AlertState

        with self._sessions() as session:
            if entry is None:
                session.execute(delete(AlertState).where(AlertState.channel == channel, AlertState.key == key))
            else:
                session.merge(AlertState(key=entry.key, channel=entry.channel, rule=entry.rule,
                                         destination=entry.destination, summary=entry.summary,
                                         started_at=entry.started_at, notified_at=entry.notified_at,
                                         notifications=entry.notifications))
            session.commit()


class MemoryLedger:
    """A ledger in this process only: for the ``store_unavailable`` alert, which must be sent and
    resolved while the store (where ``DbLedger`` keeps the others) does not answer."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], Entry] = {}

    def load(self) -> dict[tuple[str, str], Entry]:
        return dict(self._entries)

    def store(self, channel: str, key: str, entry: Entry | None) -> None:
        if entry is None:
            self._entries.pop((channel, key), None)
        else:
            self._entries[(channel, key)] = entry


@dataclass(frozen=True)
class Delivery:
    """One message tried during an evaluation (for logs and tests)."""

    channel: str
    key: str
    kind: str
    ok: bool
    error: str | None = None


class AlertService:
    def __init__(self, facts: Callable[[dt.datetime], Facts], ledger: Ledger, notifiers: Sequence[Notifier],
                 rules: AlertRulesConfig, renotify_s: float | None, instance: str,
                 clock: Callable[[], dt.datetime] = utcnow):
        self._facts = facts
        self._ledger = ledger
        self.notifiers = list(notifiers)
        self._rules = rules
        self._renotify_s = renotify_s
        self._instance = instance
        self._clock = clock
        self._store_ledger = MemoryLedger()

    @classmethod
    def from_config(cls, config: AdapterConfig, sessions: sessionmaker[Session],
                    notifiers: Sequence[Notifier] | None = None) -> AlertService:
        rules = config.alerts.rules

        def facts(now: dt.datetime) -> Facts:
            with sessions() as session:
                return read_facts(session, rules, now)
        return cls(facts, DbLedger(sessions), build_notifiers(config) if notifiers is None else notifiers, rules,
                   config.alerts.renotify_s, config.instance)

    def evaluate_once(self) -> list[Delivery]:
        """Read, decide, send. Store failures propagate (the loop logs them and tries later);
        channel failures do not."""
        now = self._clock()
        return self._deliver(conditions(self._facts(now), self._rules), self._ledger, now)

    def evaluate_store(self, unavailable_for_s: float | None, reason: str | None) -> list[Delivery]:
        """The ``store_unavailable`` rule, from what the running loops found of the store
        (``adapter.store.health.StoreHealth``): no store read or written, its ledger is in memory.
        So a restart during an outage sends the start again, and the resolve comes from the
        process that sent the start."""
        now = self._clock()
        return self._deliver(store_unavailable(unavailable_for_s, reason, self._rules, now), self._store_ledger, now)

    def _deliver(self, active: dict[str, Condition], ledger_of: Ledger, now: dt.datetime) -> list[Delivery]:
        ledger = ledger_of.load()
        by_channel = {n.channel: n for n in self.notifiers}
        deliveries = []
        for action in plan(active, ledger, by_channel, now, self._renotify_s):
            ok, error = True, None
            if action.kind is not Kind.forget:
                notifier = by_channel[action.channel]
                try:
                    notifier.send(self._alert(action, now))
                except Exception as exc:  # retried at the next evaluation
                    ok, error = False, redact_text(f"{type(exc).__name__}: {exc}")[:500]
                    log.error("alert %s %s not delivered by %s (%s); retrying at the next evaluation",
                              action.kind.value, action.key, notifier.label, error)
                else:
                    log.info("alert %s %s sent by %s", action.kind.value, action.key, notifier.label)
                deliveries.append(Delivery(action.channel, action.key, action.kind.value, ok, error))
            after = settle(action, ok, now)
            if after != action.entry:
                ledger_of.store(action.channel, action.key, after)
        return deliveries

    def _alert(self, action: Action, now: dt.datetime) -> Alert:
        condition: Condition | None = action.condition
        if condition is not None:
            return Alert(action.kind.value, condition.key, condition.rule, condition.summary, self._instance, now,
                         condition.destination, condition.since, condition.details)
        entry = action.entry
        assert entry is not None
        return Alert(action.kind.value, entry.key, entry.rule, entry.summary, self._instance, now, entry.destination,
                     entry.started_at, {"lasted_s": round((now - entry.started_at).total_seconds())})

    def test(self) -> list[Delivery]:
        """One test alert to every channel (``adapter alerts test``); the ledger is not touched."""
        now = self._clock()
        alert = Alert("test", "test", "test", "test alert: this channel reaches the operators", self._instance, now)
        deliveries = []
        for notifier in self.notifiers:
            try:
                notifier.send(alert)
            except Exception as exc:
                deliveries.append(Delivery(notifier.channel, "test", "test", False,
                                           redact_text(f"{type(exc).__name__}: {exc}")[:500]))
            else:
                deliveries.append(Delivery(notifier.channel, "test", "test", True))
        return deliveries

    def close(self) -> None:
        for notifier in self.notifiers:
            try:
                notifier.close()
            except Exception:
                pass
