"""The consumer under hostile input: ~200 malformed and hostile messages mixed with ~50 good
events on the embedded queue, the real SQLite store and the Tamin simulator over HTTP.

The runner must come back (no crash, no livelock), leave the queue empty, store every hostile
message as an ``invalid`` inbox row with a specific reason (never the generic "quarantined"
one: that means the intake crashed on it), count no intake errors, and get every good event
accepted at the simulator.

Regression tests at the end pin bugs these messages found (one used to livelock the consumer,
so the runner runs with a deadline).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import DataError

from adapter.app import App, build
from adapter.broker.connection import connect, publish_bodies, queue_depth
from adapter.events.parse import MAX_BODY_BYTES, body_fingerprint, event_id_or_none
from adapter.pipeline.intake import Received
from adapter.pipeline.runner import RunStats, Runner
from adapter.samples.generate import generate
from adapter.sim.server import SimServer
from adapter.sim.tamin_app import create_tamin_app
from adapter.store.models import InboxEvent, Submission
from tests.support.pipeline import adapter_config, good_lines

INJECTIONS = ["'; DROP TABLE inbox_events; --", "\" OR 1=1 --", "<script>alert(1)</script>", "$(rm -rf /)",
              "`reboot`", "../../etc/passwd", "%s%n", "\x1b[2J", "\r\nX-Injected: 1", "\u202eevil", "a\x00b"]
BAD_UTF8 = [b"\xff", b"\xc3\x28", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80", b"\xe2\x82"]
IMPOSSIBLE_DATES = ["1402/12/30", "1403/13/01", "2024-02-30", "1370-01-15", "2024/08/02", "02/08/2024"]


def _dumps(event: Any) -> bytes:
    return json.dumps(event, ensure_ascii=False).encode("utf-8")


def _leaves(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, path + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _leaves(value, path + (index,))
    else:
        yield path


def _put(node: Any, path: tuple[Any, ...], value: Any) -> None:
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


def hostile_messages(good: list[dict[str, Any]], count: int, seed: int = 7) -> list[bytes]:
    """``count`` distinct messages, each certainly invalid, each derived from a good event."""
    rng = random.Random(seed)
    out: list[bytes] = []
    seen: set[bytes] = set()
    n = 0
    while len(out) < count:
        n += 1
        event = copy.deepcopy(rng.choice(good))
        event["event_id"] = f"hostile-{n:04d}"
        mutation = n % 12
        required = [p for p in _leaves(event) if p[-1] in (
            "event_type", "schema_version", "occurred_at", "facility_siam_id", "kind", "sex", "first_name",
            "last_name", "national_code", "medical_council_no", "prescription_id", "visit_id", "admission_type")
            and len(p) > 0 and not (p[-1] == "visit_id" and "prescription_id" in event["payload"])]
        if mutation == 0:  # wrong type on a required leaf (numbers pass as epoch date-times: not here)
            path = rng.choice(required)
            wrong = [[1, 2], {"x": 1}, [[[]]]] + ([] if str(path[-1]).endswith("_at") else [12345, 1.5, True])
            _put(event, path, rng.choice(wrong))
            body = _dumps(event)
        elif mutation == 1:  # huge string (under and over the body limit)
            size = rng.choice([5_000, 200_000, MAX_BODY_BYTES + 10])
            _put(event, rng.choice(required), rng.choice(["x", "۹", "ي"]) * size)
            body = _dumps(event)
        elif mutation == 2:  # null where a value is required
            _put(event, rng.choice(required), None)
            body = _dumps(event)
        elif mutation == 3:  # a required key deleted
            path = rng.choice(required)
            target = event
            for part in path[:-1]:
                target = target[part]
            del target[path[-1]]
            body = _dumps(event)
        elif mutation == 4:  # an unknown key (extra="forbid")
            holder = rng.choice([event, event["payload"], event["payload"].get("patient", event)])
            holder[rng.choice(["admin", "__proto__", "$where", "is_vip", "ÙØ§", "extra"]) + f"_{n}"] = n
            body = _dumps(event)
        elif mutation == 5:  # deep nesting, whole body or in a leaf
            depth = rng.choice([1_000, 10_000, 50_000])
            if rng.random() < 0.5:
                body = b"[" * depth + _dumps(event) + b"]" * depth
            else:
                marker = f"@@{n}@@"
                _put(event, rng.choice(required), marker)
                body = _dumps(event).replace(f'"{marker}"'.encode(), b"[" * depth + b"]" * depth)
        elif mutation == 6:  # invalid UTF-8 anywhere
            raw = _dumps(event)
            at = rng.randrange(len(raw) + 1)
            body = raw[:at] + rng.choice(BAD_UTF8) + raw[at:]
        elif mutation == 7:  # injection / control characters in the event id
            event["event_id"] = f"{n:04d}{rng.choice(INJECTIONS)}"
            body = _dumps(event)
        elif mutation == 8:  # a date that does not exist, or the wrong calendar
            paths = [p for p in _leaves(event) if p[-1] == "birth_date"]
            _put(event, rng.choice(paths), rng.choice(IMPOSSIBLE_DATES))
            body = _dumps(event)
        elif mutation == 9:  # Persian digits in a date-time (not normalised there)
            path = rng.choice([p for p in _leaves(event) if str(p[-1]).endswith("_at")])
            value = str(event["occurred_at"] if path == ("occurred_at",) else "2026-01-01T10:00:00+03:30")
            _put(event, path, value.translate(str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")))
            body = _dumps(event)
        elif mutation == 10:  # truncated or not an object
            raw = _dumps(event)
            body = rng.choice([raw[: rng.randrange(1, len(raw) - 1)], b"[" + raw + b"]", b"null", b"42", b""])
        else:  # a national code that fails the check digit, with mixed digit scripts
            code = event["payload"]["patient"]["identity"]["value"]
            bad = code[:9] + str((int(code[9]) + 1) % 10)
            mixed = "".join(c.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")) if i % 2 else c
                            for i, c in enumerate(bad))
            event["payload"]["patient"]["identity"]["value"] = mixed
            body = _dumps(event)
        if body not in seen:
            seen.add(body)
            out.append(body)
    return out


def stored_id(body: bytes) -> str:
    """The inbox key of a body: its readable event id, else a fingerprint of the body."""
    if len(body) > MAX_BODY_BYTES:
        return body_fingerprint(body)
    try:
        event = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):
        return body_fingerprint(body)
    event_id = event.get("event_id") if isinstance(event, dict) else None
    return event_id_or_none(event_id) or body_fingerprint(body)


def _run(tmp_path: Path, lines: list[bytes], sim: SimServer, deadline_s: float | None = None,
         ) -> tuple[RunStats, bool, int, dict[str, InboxEvent], list[Submission], App]:
    config = adapter_config(f"sqlite:///{tmp_path / 'a.db'}", sim.base_url, tmp_path,
                            broker__url=f"sqlite-queue:///{tmp_path / 'q.db'}")
    publish_bodies(config.broker, lines)
    app = build(config)
    runner = Runner(app, until_idle=True, idle_horizon_s=0)
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["stats"] = runner.run()
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="runner-under-test", daemon=True)
    thread.start()
    thread.join(timeout=deadline_s)
    finished = not thread.is_alive()
    if not finished:
        runner.stop()
        thread.join(timeout=60)
    try:
        with app.sessions() as session:
            rows = {row.event_id: row for row in session.scalars(select(InboxEvent))}
            submissions = list(session.scalars(select(Submission)))
    finally:
        app.close()
    with connect(config.broker) as connection:
        depth = queue_depth(connection, config.broker)
    assert "error" not in outcome, f"the runner crashed: {outcome.get('error')!r}"
    return runner.stats, finished, depth, rows, submissions, app


def test_consumer_survives_hostile_messages_and_good_events_still_flow(tmp_path: Path) -> None:
    sample = generate(dt.datetime.now(dt.timezone.utc), patients=21)
    good = good_lines(sample.lines)
    good_events = [json.loads(line) for line in good]
    hostile = hostile_messages(good_events, 200)
    assert len(good) >= 45 and len(hostile) == 200
    mix = good + hostile
    random.Random(11).shuffle(mix)
    # the order of a good event's messages matters (create before update/cancel): keep it
    order, is_good = iter(good), set(good)
    mix = [next(order) if line in is_good else line for line in mix]

    with SimServer(create_tamin_app()) as sim:
        stats, finished, depth, rows, submissions, _ = _run(tmp_path, mix, sim, deadline_s=300)
        sim_stats = sim.app.state.registry.stats()

    assert finished, "the runner did not come back within 300 s"
    assert depth == 0
    assert stats.intake_errors == 0
    assert stats.received >= len(mix)
    # every hostile message: its own invalid row with a specific reason
    for body in hostile:
        row = rows.get(stored_id(body))
        assert row is not None, f"hostile message not stored: {body[:120]!r}"
        assert row.status == "invalid", (row.event_id, row.status, body[:120])
        assert row.problems and all(p["field"] and p["rule"] for p in row.problems), row.problems
        assert not any("quarantined" in p["rule"] for p in row.problems), (row.event_id, row.problems)
    assert stats.invalid == len(hostile)
    # every good event stored, every submission accepted by the simulator, none twice
    good_ids = [event["event_id"] for event in good_events]
    assert all(rows[event_id].status != "invalid" for event_id in good_ids)
    good_submissions = [s for s in submissions if s.event_id in set(good_ids)]
    assert good_submissions and {s.state for s in good_submissions} == {"accepted"}, \
        sorted({(s.event_id, s.operation, s.state, s.last_error) for s in good_submissions if s.state != "accepted"})
    prescriptions = {e for e in good_ids if not e.endswith("-visit")}
    assert prescriptions <= {s.event_id for s in good_submissions}, "a good prescription event was not routed"
    creates = [s for s in good_submissions if s.operation == "create"]
    assert sim_stats["duplicates"] == 0
    assert sim_stats["received_submissions"] >= len(creates)
    assert not [s for s in submissions if s.event_id not in set(good_ids)], "a hostile message reached a destination"


# -- known bugs ------------------------------------------------------------------------------

def test_lone_surrogate_event_id_does_not_livelock_the_consumer(tmp_path: Path) -> None:
    good = good_lines(generate(dt.datetime.now(dt.timezone.utc), patients=1).lines)[:1]
    event = json.loads(good[0])
    event["event_id"] = "SURROGATE-ID"
    poison = _dumps(event).replace(b'"SURROGATE-ID"', b'"evt-\\ud800"')
    with SimServer(create_tamin_app()) as sim:
        stats, finished, depth, rows, _, _ = _run(tmp_path, [poison, *good], sim, deadline_s=15)
    assert finished, "the consumer is still retrying the message after 15 s"
    assert depth == 0 and stats.intake_errors == 0


def test_huge_integer_literal_is_invalid_with_a_specific_reason(tmp_path: Path) -> None:
    good = good_lines(generate(dt.datetime.now(dt.timezone.utc), patients=1).lines)[:1]
    event = json.loads(good[1] if len(good) > 1 else good[0])
    event["event_id"] = "huge-int"
    body = _dumps(event)[:-1] + b', "n": ' + b"7" * 5_000 + b"}"
    with SimServer(create_tamin_app()) as sim:
        stats, finished, depth, rows, _, _ = _run(tmp_path, [body], sim, deadline_s=60)
    assert finished and depth == 0
    assert stats.intake_errors == 0, "the intake crashed on the message (it was quarantined after retries)"
    row = rows.get(body_fingerprint(body))  # unreadable JSON: its id cannot be read either
    assert row is not None and row.status == "invalid"
    assert not any("quarantined" in p["rule"] for p in row.problems)


# PostgreSQL: text cannot hold NUL and event_type is VARCHAR(64). Each body below makes
# Intake.receive raise DataError; the NUL ones fail Intake.quarantine too (same id / body).
_SAMPLE = json.loads((Path(__file__).resolve().parents[2] / "docs" / "sample-prescription-created.json")
                     .read_text(encoding="utf-8"))


def _variant(event_id: str, change: Any) -> bytes:
    event = copy.deepcopy(_SAMPLE)
    event["event_id"] = event_id
    change(event)
    return _dumps(event)


POSTGRES_HOSTILE = {
    "nul-in-event-id": _variant("pg-nul", lambda e: None).replace(b'"pg-nul"', b'"pg-\\u0000"'),
    "nul-in-unknown-key": _variant("pg-nul-key", lambda e: e["payload"]["patient"].update({"a\x00b": 1})),
    "raw-nul-byte": _variant("pg-raw", lambda e: None).replace(b'"Ali"', b'"A\x00li"'),
    "event-type-65-chars": _variant("pg-type", lambda e: e.update(event_type="x" * 65)),
}


@pytest.mark.parametrize("name", sorted(POSTGRES_HOSTILE))
def test_hostile_messages_store_as_invalid_on_postgresql(pg_admin_url: str, tmp_path: Path, name: str) -> None:
    from tests.support import services as svc

    db = svc.unique_name()
    url = svc.create_database(pg_admin_url, db)
    try:
        app = build(adapter_config(url, "http://127.0.0.1:9/unused", tmp_path))
        try:
            result = app.intake.receive(POSTGRES_HOSTILE[name])
        finally:
            app.close()
    finally:
        svc.drop_database(pg_admin_url, db)
    assert result.outcome is Received.invalid
