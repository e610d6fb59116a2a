"""The alert evaluator with a fake clock: one alert when a condition starts, reminders every
renotify_s, one when it resolves; failed channels are retried; the ledger in the store means a
restart neither re-alerts nor forgets the resolve."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from adapter.config import AlertRulesConfig, CountRule
from adapter.ops.alerts.notify import Alert
from adapter.ops.alerts.rules import DestinationFacts, Facts, OutageFact, conditions
from adapter.ops.alerts.service import AlertService, DbLedger, read_facts
from adapter.store.db import make_engine, make_sessionmaker, upgrade

T0 = dt.datetime(2026, 11, 27, 8, 0, tzinfo=dt.timezone.utc)
RULES = AlertRulesConfig()


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


class MemoryLedger:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], Any] = {}

    def load(self) -> dict[tuple[str, str], Any]:
        return dict(self.rows)

    def store(self, channel: str, key: str, entry: Any) -> None:
        if entry is None:
            self.rows.pop((channel, key), None)
        else:
            self.rows[(channel, key)] = entry


class FakeNotifier:
    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.label = channel
        self.sent: list[Alert] = []
        self.failing = False

    def send(self, alert: Alert) -> None:
        if self.failing:
            raise ConnectionRefusedError("smtp.example: connection refused")
        self.sent.append(alert)

    def close(self) -> None:
        pass

    def kinds(self) -> list[tuple[str, str]]:
        return [(a.kind, a.key) for a in self.sent]


class World:
    """Facts the test sets; the evaluator reads them at each evaluation."""

    def __init__(self) -> None:
        self.destinations: dict[str, DestinationFacts] = {}
        self.invalid_events = 0

    def facts(self, now: dt.datetime) -> Facts:
        return Facts(now, dict(self.destinations), self.invalid_events)


def service(world: World, ledger: Any, notifiers: list[FakeNotifier], clock: Clock, renotify_s: float | None = 600,
            rules: AlertRulesConfig = RULES) -> AlertService:
    return AlertService(world.facts, ledger, notifiers, rules, renotify_s, "test-hospital", clock)


def open_circuit(world: World, reason: str = "503 Service Unavailable") -> None:
    world.destinations["tamin"] = DestinationFacts(circuit="open", circuit_since=T0, circuit_reason=reason,
                                                   circuit_outage=OutageFact("circuit", "circuit opened", T0, "adapter"))


def test_start_renotify_resolve_with_a_fake_clock() -> None:
    world, ledger, clock, hook = World(), MemoryLedger(), Clock(), FakeNotifier("webhook:1")
    alerts = service(world, ledger, [hook], clock, renotify_s=600)
    assert alerts.evaluate_once() == [] and hook.sent == []  # nothing wrong: nothing sent

    open_circuit(world)
    alerts.evaluate_once()
    assert hook.kinds() == [("start", "circuit:tamin")]
    start = hook.sent[0]
    assert start.status == "firing" and start.destination == "tamin" and start.since == T0
    assert "circuit of tamin is open" in start.summary

    for _ in range(5):  # evaluated every 30 s: still open, nothing new until renotify_s
        clock.advance(30)
        alerts.evaluate_once()
    assert len(hook.sent) == 1

    world.destinations["tamin"] = DestinationFacts(circuit="half_open", circuit_since=T0,  # probing: still the same condition
                                                   circuit_outage=OutageFact("circuit", "circuit opened", T0, "adapter"))
    clock.advance(600 - 150 - 1)
    alerts.evaluate_once()
    assert len(hook.sent) == 1, "599 s after the start: no reminder yet"
    clock.advance(1)
    alerts.evaluate_once()
    assert hook.kinds()[-1] == ("renotify", "circuit:tamin")
    clock.advance(300)
    alerts.evaluate_once()
    assert len(hook.sent) == 2, "the next reminder is renotify_s after the last one"

    world.destinations["tamin"] = DestinationFacts(circuit="closed")
    clock.advance(30)
    alerts.evaluate_once()
    assert hook.kinds()[-1] == ("resolve", "circuit:tamin")
    assert hook.sent[-1].status == "resolved" and hook.sent[-1].details == {"lasted_s": 930}
    clock.advance(3600)
    alerts.evaluate_once()
    assert len(hook.sent) == 3 and ledger.rows == {}, "resolved once, then nothing"


def test_no_reminders_when_renotify_is_off() -> None:
    world, clock, hook = World(), Clock(), FakeNotifier("webhook:1")
    alerts = service(world, MemoryLedger(), [hook], clock, renotify_s=None)
    open_circuit(world)
    for _ in range(10):
        alerts.evaluate_once()
        clock.advance(3600)
    assert hook.kinds() == [("start", "circuit:tamin")]


def test_a_failed_channel_is_retried_next_time_and_does_not_hold_up_the_others() -> None:
    world, ledger, clock = World(), MemoryLedger(), Clock()
    mail, hook = FakeNotifier("email:1"), FakeNotifier("webhook:1")
    mail.failing = True
    alerts = service(world, ledger, [mail, hook], clock)
    open_circuit(world)
    deliveries = alerts.evaluate_once()
    assert [(d.channel, d.kind, d.ok) for d in deliveries] == [("email:1", "start", False), ("webhook:1", "start", True)]
    assert "connection refused" in (deliveries[0].error or "")
    clock.advance(30)
    alerts.evaluate_once()
    assert mail.sent == [] and len(hook.sent) == 1, "the webhook is not told twice while the email fails"
    mail.failing = False
    clock.advance(30)
    alerts.evaluate_once()
    assert mail.kinds() == [("start", "circuit:tamin")] and len(hook.sent) == 1
    assert mail.sent[0].since == T0

    world.destinations["tamin"] = DestinationFacts()
    mail.failing = True
    clock.advance(30)
    alerts.evaluate_once()
    assert hook.kinds()[-1] == ("resolve", "circuit:tamin") and len(mail.sent) == 1
    mail.failing = False
    clock.advance(30)
    alerts.evaluate_once()
    assert mail.kinds()[-1] == ("resolve", "circuit:tamin"), "the resolve is retried too"
    assert ledger.rows == {}


def test_a_condition_over_before_its_start_got_through_is_forgotten_silently() -> None:
    world, ledger, clock, mail = World(), MemoryLedger(), Clock(), FakeNotifier("email:1")
    mail.failing = True
    alerts = service(world, ledger, [mail], clock)
    open_circuit(world)
    alerts.evaluate_once()
    world.destinations["tamin"] = DestinationFacts()
    mail.failing = False
    clock.advance(30)
    assert alerts.evaluate_once() == []
    assert mail.sent == [] and ledger.rows == {}


def test_each_rule_starts_and_resolves_independently() -> None:
    rules = AlertRulesConfig(oldest_pending_minutes=30, new_dead=CountRule(threshold=1, window_s=600),
                             new_rejected=CountRule(threshold=3, window_s=600),
                             new_invalid=CountRule(threshold=2, window_s=600))
    declared = OutageFact("manual", "maintenance 10-12, call 09121234567", T0, "alice")
    world = World()
    world.destinations["tamin"] = DestinationFacts(declared_outage=declared, oldest_pending_age_s=31 * 60,
                                                   new_dead=1, new_rejected=2)
    world.destinations["sepas"] = DestinationFacts(oldest_pending_age_s=29 * 60, new_rejected=3, new_invalid=1)
    world.invalid_events = 1
    active = conditions(world.facts(T0), rules)
    assert sorted(active) == ["new_dead:tamin", "new_invalid", "new_rejected:sepas", "oldest_pending:tamin",
                              "outage:tamin"]
    assert active["new_invalid"].details["count"] == 2
    assert "31 min" in active["oldest_pending:tamin"].summary

    clock, hook, ledger = Clock(), FakeNotifier("webhook:1"), MemoryLedger()
    alerts = service(world, ledger, [hook], clock, rules=rules)
    alerts.evaluate_once()
    assert sorted(k for _, k in hook.kinds()) == sorted(active)
    outage = next(a for a in hook.sent if a.key == "outage:tamin")
    assert "09121234567" not in str(outage.as_json()), "a mobile number in an operator's reason is masked"

    world.destinations["tamin"] = DestinationFacts(declared_outage=declared)  # only the outage is left
    world.invalid_events = 0
    clock.advance(30)
    alerts.evaluate_once()
    resolved = sorted(k for kind, k in hook.kinds() if kind == "resolve")
    assert resolved == ["new_dead:tamin", "new_invalid", "oldest_pending:tamin"]
    assert sorted(k for _, k in ledger.rows) == ["new_rejected:sepas", "outage:tamin"]


def test_rules_can_be_switched_off() -> None:
    rules = AlertRulesConfig(circuit_open=False, outage_declared=False, oldest_pending_minutes=None,
                             new_dead=CountRule(threshold=None), new_rejected=CountRule(threshold=None),
                             new_invalid=CountRule(threshold=None))
    world = World()
    open_circuit(world)
    world.destinations["sepas"] = DestinationFacts(declared_outage=OutageFact("manual", "x", T0, "bob"),
                                                   oldest_pending_age_s=10 ** 6, new_dead=50, new_rejected=50)
    world.invalid_events = 50
    assert conditions(world.facts(T0), rules) == {}


# -- the ledger in the store: restarts ---------------------------------------------------------
@pytest.fixture
def sessions(db_url: str) -> Any:  # SQLite, and PostgreSQL when it is running
    upgrade(db_url)
    engine = make_engine(db_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def test_restart_neither_re_alerts_nor_forgets(sessions: Any) -> None:
    world, clock = World(), Clock()
    open_circuit(world)
    first = FakeNotifier("webhook:1")
    service(world, DbLedger(sessions), [first], clock).evaluate_once()
    assert first.kinds() == [("start", "circuit:tamin")]

    clock.advance(120)  # the adapter restarts: new service, new notifier, same store
    second = FakeNotifier("webhook:1")
    restarted = service(world, DbLedger(sessions), [second], clock, renotify_s=600)
    restarted.evaluate_once()
    assert second.sent == [], "no second start alert after a restart"
    clock.advance(480)
    restarted.evaluate_once()
    assert second.kinds() == [("renotify", "circuit:tamin")], "reminders keep their rhythm across the restart"

    world.destinations["tamin"] = DestinationFacts()  # resolved while the adapter was down
    clock.advance(60)
    third = FakeNotifier("webhook:1")
    service(world, DbLedger(sessions), [third], clock).evaluate_once()
    assert third.kinds() == [("resolve", "circuit:tamin")], "the resolve is not forgotten"
    assert DbLedger(sessions).load() == {}


def test_read_facts_from_the_store(sessions: Any) -> None:
    from adapter.outage import records

    with sessions() as session:
        records.start_outage(session, "tamin", reason="maintenance", actor="alice", detected=records.MANUAL)
        records.save_circuit_state(session, "tamin", "open", "circuit opened: 503", "host:1", T0)
        session.commit()
        facts = read_facts(session, RULES, dt.datetime.now(dt.timezone.utc))
    tamin = facts.destinations["tamin"]
    assert tamin.circuit == "open" and tamin.circuit_reason == "circuit opened: 503"
    assert tamin.declared_outage is not None and tamin.declared_outage.started_by == "alice"
    assert sorted(conditions(facts, RULES)) == ["circuit:tamin", "outage:tamin"]


def test_an_open_event_conflict_alerts_until_an_operator_resolves_it() -> None:
    import datetime as _dt

    from adapter.config import AlertRulesConfig
    from adapter.ops.alerts.rules import Facts, conditions

    now = _dt.datetime(2026, 12, 2, tzinfo=_dt.timezone.utc)
    active = conditions(Facts(now, open_conflicts=2), AlertRulesConfig())
    assert active["event_conflict"].details == {"count": 2} and "replay --conflict" in active["event_conflict"].summary
    assert "event_conflict" not in conditions(Facts(now), AlertRulesConfig())
    assert "event_conflict" not in conditions(Facts(now, open_conflicts=2), AlertRulesConfig(event_conflict=False))
