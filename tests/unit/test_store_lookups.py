"""``adapter.store.lookups``: what destinations ask of and tell the store, against a migrated store
(SQLite, and PostgreSQL where the case matters there: the visit upserts and the insert race)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import count
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from adapter.store.lookups import CreateRecord, DestinationStore, VisitAnswer, stored_event
from adapter.store.models import InboxEvent, Submission, Visit
from tests.support.store import migrated_sessions

_keys = count(1)


@pytest.fixture
def sessions(sqlite_url: str) -> Iterator[sessionmaker[Session]]:
    yield from migrated_sessions(sqlite_url)


@pytest.fixture
def both_sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    """A migrated store on SQLite and on PostgreSQL (the ``db_url`` fixture's two cases)."""
    yield from migrated_sessions(db_url)


def event(session: Session, event_id: str, status: str = "accepted", body: dict[str, Any] | None = None) -> None:
    session.add(InboxEvent(event_id=event_id, event_type="prescription.created", status=status,
                           body=json.dumps(body if body is not None else {"event_id": event_id})))


def submission(session: Session, event_id: str, destination: str, operation: str, state: str, subject: str | None,
               **fields: Any) -> int:
    if session.get(InboxEvent, event_id) is None:
        event(session, event_id)
    row = Submission(event_id=event_id, destination=destination, operation=operation, state=state,
                     subject_key=subject, idempotency_key=f"key-{next(_keys)}", **fields)
    session.add(row)
    session.flush()
    return row.id


# ----- create_of -----------------------------------------------------------------------------

def test_create_of_is_the_first_create_of_the_subject_at_the_destination(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        submission(session, "e-other-dest", "sepas", "create", "accepted", "rx:1:A", result={"x": 1})
        submission(session, "e-update", "tamin", "update", "accepted", "rx:1:A")
        first = submission(session, "e-1", "tamin", "create", "accepted", "rx:1:A",
                           result={"head_id": "H1", "tracking_code": "T1"}, payload={"patient": {"n": 1}})
        submission(session, "e-2", "tamin", "create", "pending", "rx:1:A")  # a later create of the same subject
        submission(session, "e-3", "tamin", "create", "pending", "rx:1:B")
        session.commit()
    with sessions() as session:
        store = DestinationStore(session)
        assert store.create_of("tamin", "rx:1:A") == CreateRecord(first, "accepted", {"head_id": "H1", "tracking_code": "T1"},
                                                                  {"patient": {"n": 1}})
        assert store.create_of("tamin", "rx:1:C") is None
        assert store.create_of("tamin_pharmacy", "rx:1:A") is None
        assert store.create_of("tamin", None) is None  # no subject: no create


def test_create_of_reads_encrypted_payloads(sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADAPTER_PAYLOAD_KEY", Fernet.generate_key().decode())
    with sessions() as session:
        submission(session, "e-1", "tamin", "create", "accepted", "rx:1:A", payload={"patient": {"n": 1}})
        session.commit()
        stored = session.connection().execute(text("SELECT payload FROM submissions")).scalar_one()
        assert "patient" not in str(stored)
    with sessions() as session:
        found = DestinationStore(session).create_of("tamin", "rx:1:A")
        assert found is not None and found.payload == {"patient": {"n": 1}}


@pytest.mark.parametrize(("state", "is_open", "refused"), [
    ("pending", True, False), ("sending", True, False), ("retry_wait", True, False),
    ("accepted", False, False), ("confirmed", False, False),
    ("rejected", False, True), ("invalid", False, True), ("dead", False, True),
])
def test_a_create_is_open_or_refused_by_its_state(state: str, is_open: bool, refused: bool) -> None:
    record = CreateRecord(1, state, None, None)
    assert (record.open, record.refused) == (is_open, refused)


# ----- changes_open --------------------------------------------------------------------------

def test_changes_open_counts_open_edits_and_deletes_only(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        submission(session, "e-1", "tamin", "create", "pending", "rx:1:A")  # the create does not count
        submission(session, "e-2", "tamin", "update", "accepted", "rx:1:A")
        submission(session, "e-3", "sepas", "update", "pending", "rx:1:A")  # another destination
        session.commit()
    with sessions() as session:
        assert DestinationStore(session).changes_open("tamin", "rx:1:A") is False
    for state in ("pending", "sending", "retry_wait"):
        with sessions() as session:
            submission(session, f"e-cancel-{state}", "tamin", "cancel", state, "rx:1:A")  # rolled back after
            assert DestinationStore(session).changes_open("tamin", "rx:1:A") is True
            assert DestinationStore(session).changes_open("tamin", "rx:1:B") is False


# ----- earlier_uids --------------------------------------------------------------------------

def test_earlier_uids_come_from_accepted_submissions_of_the_subject_newest_first(
        sessions: sessionmaker[Session]) -> None:
    def sepas(event_id: str, state: str, message: str, result: dict[str, Any], subject: str = "lab:1:R") -> int:
        return submission(session, event_id, "sepas", "create", state, subject, params={"message": message},
                          result=result)

    with sessions() as session:
        sepas("e-1", "accepted", "LabResult", {"composition_uid": "C-old", "patient_uid": "P-old"})
        sepas("e-2", "accepted", "LabResult", {"composition_uid": "C-new"})
        sepas("e-3", "accepted", "PatientBill", {"composition_uid": "C-bill", "patient_uid": "P-bill"})
        sepas("e-4", "rejected", "LabResult", {"composition_uid": "C-rejected", "patient_uid": "P-rejected"})
        sepas("e-5", "accepted", "LabResult", {"composition_uid": "C-elsewhere"}, subject="lab:1:S")
        me = sepas("e-6", "accepted", "LabResult", {"composition_uid": "C-me", "patient_uid": "P-me"})
        submission(session, "e-7", "tamin", "create", "accepted", "lab:1:R", result={"patient_uid": "P-tamin"})
        session.commit()
    with sessions() as session:
        store = DestinationStore(session)
        # the newest accepted LabResult gives the CompositionUID; any accepted message the PatientUID
        assert store.earlier_uids("sepas", "lab:1:R", "LabResult", me) == {"composition_uid": "C-new",
                                                                           "patient_uid": "P-bill"}
        assert store.earlier_uids("sepas", "lab:1:R", "LabResult", 0)["composition_uid"] == "C-me"
        assert store.earlier_uids("sepas", "lab:1:R", "Imaging", me) == {"patient_uid": "P-bill"}
        assert store.earlier_uids("sepas", None, "LabResult", me) == {}
        assert store.earlier_uids("sepas", "", "LabResult", me) == {}


# ----- stored_event --------------------------------------------------------------------------

def test_stored_event_is_the_body_of_a_valid_event(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        event(session, "e-ok", body={"event_id": "e-ok", "payload": {"a": 1}})
        event(session, "e-bad", status="invalid", body={"event_id": "e-bad"})
        session.commit()
    with sessions() as session:
        store = DestinationStore(session)
        assert store.stored_event("e-ok") == {"event_id": "e-ok", "payload": {"a": 1}}
        assert store.stored_event("e-bad") is None
        assert store.stored_event("e-missing") is None
        assert stored_event(session, "e-ok") == store.stored_event("e-ok")


# ----- visits --------------------------------------------------------------------------------

def test_visit_answer_and_the_eligible_hid(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        session.add_all([
            Visit(facility_siam_id="F", visit_id="V1", destination="tamin", eligible=True, hid="H1", detail={"a": 1}),
            Visit(facility_siam_id="F", visit_id="V2", destination="tamin", eligible=False, hid="H2"),
            Visit(facility_siam_id="F", visit_id="V3", destination="tamin", eligible=True, hid=None),
            Visit(facility_siam_id="F", visit_id="V1", destination="sepas", detail={"patient_uid": "P-1"}),
        ])
        session.commit()
    with sessions() as session:
        store = DestinationStore(session)
        assert store.visit_answer("F", "V1", "tamin") == VisitAnswer(True, "H1", {"a": 1})
        assert store.visit_answer("F", "V1", "tamin").eligible_hid == "H1"  # type: ignore[union-attr]
        assert store.visit_answer("F", "V2", "tamin").eligible_hid is None  # type: ignore[union-attr]
        assert store.visit_answer("F", "V3", "tamin").eligible_hid is None  # type: ignore[union-attr]
        assert store.visit_answer("F", "V9", "tamin") is None
        assert store.visit_answer("G", "V1", "tamin") is None
        assert store.visit_patient_uid("F", "V1", "sepas") == "P-1"
        assert store.visit_patient_uid("F", "V1", "tamin") is None  # a detail without one
        assert store.visit_patient_uid("F", "V2", "sepas") is None  # no row


def test_record_eligibility_inserts_then_updates_the_answer(both_sessions: sessionmaker[Session]) -> None:
    sessions = both_sessions
    with sessions() as session:
        session.add(Visit(facility_siam_id="F", visit_id="V1", destination="sepas", detail={"patient_uid": "P"}))
        session.commit()
    with sessions() as session:
        DestinationStore(session).record_eligibility("F", "V1", "tamin", eligible=True, hid="H1", detail={"n": 1})
        session.commit()
    with sessions() as session:
        first = session.get(Visit, ("F", "V1", "tamin"))
        assert first is not None and (first.eligible, first.hid, first.detail) == (True, "H1", {"n": 1})
        first_checked = first.checked_at
        assert first_checked.tzinfo is not None
    with sessions() as session:
        DestinationStore(session).record_eligibility("F", "V1", "tamin", eligible=False, hid=None, detail={"n": 2})
        session.commit()
    with sessions() as session:
        rows = session.scalars(select(Visit).order_by(Visit.destination)).all()
        assert [(r.destination, r.eligible, r.hid, r.detail) for r in rows] == [
            ("sepas", None, None, {"patient_uid": "P"}),  # another destination's row is left alone
            ("tamin", False, None, {"n": 2})]
        assert rows[1].checked_at >= first_checked


def test_record_eligibility_is_undone_with_the_transaction(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        DestinationStore(session).record_eligibility("F", "V1", "tamin", eligible=True, hid="H1", detail={})
        session.rollback()
    with sessions() as session:
        assert session.get(Visit, ("F", "V1", "tamin")) is None


def test_record_patient_uid_inserts_or_merges_into_the_detail(both_sessions: sessionmaker[Session]) -> None:
    sessions = both_sessions
    with sessions() as session:
        session.add(Visit(facility_siam_id="F", visit_id="V2", destination="sepas", detail={"other": 1}))
        session.commit()
    with sessions() as session:
        store = DestinationStore(session)
        store.record_patient_uid("F", "V1", "sepas", "P-1")  # no row yet
        store.record_patient_uid("F", "V2", "sepas", "P-2")  # a row: its other keys stay
        session.commit()
    with sessions() as session:
        store = DestinationStore(session)
        assert store.visit_patient_uid("F", "V1", "sepas") == "P-1"
        assert store.visit_answer("F", "V2", "sepas") == VisitAnswer(None, None, {"other": 1, "patient_uid": "P-2"})
        store.record_patient_uid("F", "V1", "sepas", "P-1b")  # a later one replaces it
        session.commit()
        assert store.visit_patient_uid("F", "V1", "sepas") == "P-1b"


def test_record_patient_uid_after_losing_the_insert_race(both_sessions: sessionmaker[Session]) -> None:
    """Our read finds no row; another transaction inserts it and commits before our insert: ours
    collides in its savepoint and updates the row instead, and the rest of our transaction stays."""
    sessions = both_sessions
    with sessions() as session:
        submission(session, "e-mine", "sepas", "create", "accepted", "lab:1:R")  # earlier work of the settle
        real_get, calls = session.get, []

        def first_get_misses(*args: Any, **kwargs: Any) -> Any:
            calls.append(args)
            if len(calls) == 1:  # the row appears after our read
                with sessions() as other:
                    other.add(Visit(facility_siam_id="F", visit_id="V1", destination="sepas", detail={"other": 1}))
                    other.commit()
                return None
            return real_get(*args, **kwargs)

        session.get = first_get_misses  # type: ignore[method-assign]
        if session.get_bind().dialect.name == "sqlite":
            # one SQLite writer at a time: our open write would make the other insert wait for us,
            # so on SQLite the race is staged the other way round (row committed, then our read misses)
            session.commit()
        DestinationStore(session).record_patient_uid("F", "V1", "sepas", "P-1")
        session.commit()
        assert len(calls) == 2
    with sessions() as session:
        row = session.get(Visit, ("F", "V1", "sepas"))
        assert row is not None and row.detail == {"other": 1, "patient_uid": "P-1"}
        assert session.scalar(select(Submission.id).where(Submission.event_id == "e-mine")) is not None
