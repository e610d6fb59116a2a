"""The alert evaluator, pure: no store, no network, no clock of its own.

1. ``conditions(facts, rules)``: a snapshot of facts (``Facts``) -> the conditions active now,
   each with a stable key (``circuit:tamin``, ``outage:tamin``, ``oldest_pending:tamin``,
   ``new_dead:tamin``, ``new_rejected:tamin``, ``new_invalid``).
2. ``plan(active, ledger, channels, now, renotify_s)``: per channel and key, what to send, given
   the ledger of what each channel was already told:

   * active, never told (or the start did not get through) -> ``start``;
   * active, told, ``renotify_s`` passed since the last message -> ``renotify``;
   * not active any more, told -> ``resolve``; never told -> ``forget`` (nothing is sent);
   * a channel no longer configured -> ``forget``.
3. ``settle(action, ok, now)``: the ledger entry after the attempt: on failure nothing moves
   (the same action comes again on the next evaluation), on success the entry is stamped,
   or removed after a resolve.

The ledger is kept in the store by ``adapter.ops.alerts.service``, so a restart neither repeats
a start nor forgets to resolve.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from adapter.config import AlertRulesConfig


@dataclass(frozen=True)
class OutageFact:
    detected: str  # circuit | manual
    reason: str
    started_at: dt.datetime
    started_by: str


@dataclass(frozen=True)
class DestinationFacts:
    circuit: str = "closed"  # closed | open | half_open (the last state the dispatcher wrote)
    circuit_since: dt.datetime | None = None
    circuit_reason: str | None = None
    declared_outage: OutageFact | None = None
    circuit_outage: OutageFact | None = None
    oldest_pending_age_s: float | None = None
    new_dead: int = 0  # within rules.new_dead.window_s
    new_rejected: int = 0  # within rules.new_rejected.window_s
    new_invalid: int = 0  # submissions, within rules.new_invalid.window_s


@dataclass(frozen=True)
class Facts:
    at: dt.datetime
    destinations: Mapping[str, DestinationFacts] = field(default_factory=dict)
    new_invalid_events: int = 0  # events refused by the contract, within rules.new_invalid.window_s
    open_conflicts: int = 0  # different bodies under known event ids, waiting for an operator
    dead_replies: int = 0  # replies the HIS's webhook kept refusing (adapter replies list --state dead)


@dataclass(frozen=True)
class Condition:
    key: str
    rule: str
    destination: str | None
    summary: str
    details: Mapping[str, Any] = field(default_factory=dict)
    since: dt.datetime | None = None


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def conditions(facts: Facts, rules: AlertRulesConfig) -> dict[str, Condition]:
    """The conditions active in ``facts`` under ``rules``, by key."""
    out: list[Condition] = []
    for name, dest in sorted(facts.destinations.items()):
        if rules.circuit_open and (dest.circuit != "closed" or dest.circuit_outage is not None):
            state = dest.circuit if dest.circuit != "closed" else "open"
            since = dest.circuit_outage.started_at if dest.circuit_outage is not None else dest.circuit_since
            reason = dest.circuit_reason or (dest.circuit_outage.reason if dest.circuit_outage else "")
            out.append(Condition(f"circuit:{name}", "circuit_open", name,
                                 f"circuit of {name} is {state}: sends held, outage mode (paper fallback)",
                                 {"state": state, "reason": reason}, since))
        if rules.outage_declared and dest.declared_outage is not None:
            outage = dest.declared_outage
            out.append(Condition(f"outage:{name}", "outage_declared", name,
                                 f"outage of {name} declared by {outage.started_by}: nothing is sent until it is ended",
                                 {"reason": outage.reason, "started_by": outage.started_by}, outage.started_at))
        limit_min = rules.oldest_pending_minutes
        if limit_min is not None and dest.oldest_pending_age_s is not None and dest.oldest_pending_age_s > limit_min * 60:
            age = dest.oldest_pending_age_s
            out.append(Condition(f"oldest_pending:{name}", "oldest_pending", name,
                                 f"oldest open submission to {name} is {_minutes(age)} old (limit {limit_min:g} min)",
                                 {"age_s": round(age), "limit_s": round(limit_min * 60)},
                                 facts.at - dt.timedelta(seconds=age)))
        for rule_name, count in (("new_dead", dest.new_dead), ("new_rejected", dest.new_rejected)):
            rule = getattr(rules, rule_name)
            if rule.threshold is not None and count >= rule.threshold:
                state = rule_name.removeprefix("new_")
                out.append(Condition(f"{rule_name}:{name}", rule_name, name,
                                     f"{count} submissions to {name} became {state} in the last "
                                     f"{_minutes(rule.window_s)} (threshold {rule.threshold})",
                                     {"count": count, "threshold": rule.threshold, "window_s": rule.window_s}))
    invalid = rules.new_invalid
    submissions = sum(d.new_invalid for d in facts.destinations.values())
    count = facts.new_invalid_events + submissions
    if invalid.threshold is not None and count >= invalid.threshold:
        out.append(Condition("new_invalid", "new_invalid", None,
                             f"{count} new invalid events or submissions in the last {_minutes(invalid.window_s)} "
                             f"(threshold {invalid.threshold})",
                             {"count": count, "events": facts.new_invalid_events, "submissions": submissions,
                              "threshold": invalid.threshold, "window_s": invalid.window_s}))
    if rules.replies_dead and facts.dead_replies:
        out.append(Condition("replies_dead", "replies_dead", None,
                             f"{facts.dead_replies} replies to the HIS are dead (its webhook kept refusing them): "
                             "adapter replies list --state dead, then adapter replies resend",
                             {"count": facts.dead_replies}))
    if rules.event_conflict and facts.open_conflicts > 0:
        out.append(Condition("event_conflict", "event_conflict", None,
                             f"{facts.open_conflicts} event version(s) in conflict: a different body under a known "
                             "event id, kept, not sent (adapter show EVENT_ID; adapter replay --conflict EVENT_ID)",
                             {"count": facts.open_conflicts}))
    return {c.key: c for c in out}


def store_unavailable(unavailable_for_s: float | None, reason: str | None, rules: AlertRulesConfig,
                      now: dt.datetime) -> dict[str, Condition]:
    """The one rule read without the store (it is about the store): active while the running loops
    have found it unavailable for longer than ``rules.store_unavailable_s``. ``reason``: the
    driver's one-line error (``adapter.store.health.store_reason``)."""
    limit = rules.store_unavailable_s
    if limit is None or unavailable_for_s is None or unavailable_for_s <= limit:
        return {}
    condition = Condition("store_unavailable", "store_unavailable", None,
                          f"the database has been unavailable for {_minutes(unavailable_for_s)} (limit {_minutes(limit)}): "
                          "nothing is stored, acked or sent meanwhile; the adapter retries on its own",
                          {"unavailable_s": round(unavailable_for_s), "limit_s": round(limit), "reason": reason or ""},
                          now - dt.timedelta(seconds=unavailable_for_s))
    return {condition.key: condition}


# -- what each channel was told -------------------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    """What one channel was told about one condition (a row of ``alert_states``)."""

    key: str
    channel: str
    rule: str
    destination: str | None
    summary: str
    started_at: dt.datetime
    notified_at: dt.datetime | None = None  # null: the start alert has not got through yet
    notifications: int = 0


class Kind(str, Enum):
    start = "start"
    renotify = "renotify"
    resolve = "resolve"
    forget = "forget"  # drop the entry, send nothing


@dataclass(frozen=True)
class Action:
    kind: Kind
    channel: str
    key: str
    condition: Condition | None  # None for resolve/forget
    entry: Entry | None  # None for a first start


Ledger = Mapping[tuple[str, str], Entry]  # (channel, key) -> entry


def plan(active: Mapping[str, Condition], ledger: Ledger, channels: Iterable[str], now: dt.datetime,
         renotify_s: float | None) -> list[Action]:
    channels = list(channels)
    actions: list[Action] = []
    for channel in channels:
        for key, condition in sorted(active.items()):
            entry = ledger.get((channel, key))
            if entry is None or entry.notified_at is None:
                actions.append(Action(Kind.start, channel, key, condition, entry))
            elif renotify_s is not None and (now - entry.notified_at).total_seconds() >= renotify_s:
                actions.append(Action(Kind.renotify, channel, key, condition, entry))
    for (channel, key), entry in sorted(ledger.items()):
        if channel in channels and key in active:
            continue
        told = channel in channels and entry.notified_at is not None
        actions.append(Action(Kind.resolve if told else Kind.forget, channel, key, None, entry))
    return actions


def settle(action: Action, ok: bool, now: dt.datetime) -> Entry | None:
    """The entry to keep after ``action`` was tried (None: remove it)."""
    if action.kind is Kind.forget:
        return None
    if action.kind is Kind.resolve:
        return None if ok else action.entry
    condition = action.condition
    assert condition is not None
    entry = action.entry or Entry(condition.key, action.channel, condition.rule, condition.destination,
                                  condition.summary, condition.since or now)
    if not ok:
        return entry  # a start that did not get through is kept as "seen, not told": retried next time
    if action.kind is Kind.start:
        entry = replace(entry, summary=condition.summary)
    return replace(entry, notified_at=now, notifications=entry.notifications + 1)
