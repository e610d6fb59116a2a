"""Optional encryption at rest: with ADAPTER_PAYLOAD_KEY set, event bodies, payloads and URL
parameters are stored encrypted, the pipeline works unchanged, rows written before the key
was set stay readable, and a missing key is a clear error. Store on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select, text

from adapter.app import build
from adapter.ops.trail import event_trail
from adapter.samples.generate import generate
from adapter.sim.server import SimServer
from adapter.sim.tamin_app import create_tamin_app
from adapter.store.at_rest import PayloadKeyError
from adapter.store.models import InboxEvent, Submission
from tests.support.pipeline import adapter_config, drain, good_lines


def test_bodies_and_payloads_are_encrypted_at_rest(db_url: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    lines = good_lines(generate(dt.datetime.now(dt.timezone.utc), patients=6).lines)
    before, after = lines[:2], lines[2:]
    identifiers = {json.loads(line)["payload"]["patient"]["identity"]["value"] for line in lines}
    with SimServer(create_tamin_app()) as sim:
        app = build(adapter_config(db_url, sim.base_url, tmp_path))
        try:
            monkeypatch.delenv("ADAPTER_PAYLOAD_KEY", raising=False)
            for line in before:  # written in clear, before the key was switched on
                app.intake.receive(line)
            monkeypatch.setenv("ADAPTER_PAYLOAD_KEY", Fernet.generate_key().decode())
            for line in after:
                app.intake.receive(line)
            drain(app)
            with app.sessions() as session:
                states = {s.state for s in session.scalars(select(Submission))}
                raw = session.execute(text(
                    "select e.body, s.payload, s.params from inbox_events e join submissions s "
                    "on s.event_id = e.event_id where e.event_id = :id"), {"id": json.loads(after[-1])["event_id"]}
                ).all()
                trail = event_trail(session, json.loads(after[-1])["event_id"])
                old = session.get(InboxEvent, json.loads(before[0])["event_id"])
                assert old is not None and json.loads(old.body)["event_id"] == json.loads(before[0])["event_id"]
            monkeypatch.delenv("ADAPTER_PAYLOAD_KEY")
            with app.sessions() as session, pytest.raises(PayloadKeyError, match="ADAPTER_PAYLOAD_KEY"):
                session.get(InboxEvent, json.loads(after[-1])["event_id"]).body  # noqa: B018
        finally:
            app.close()
    assert states == {"accepted"}
    stored = " ".join(str(cell) for row in raw for cell in row)
    assert raw and "enc:v1:" in stored and "__encrypted_v1__" in stored
    assert not any(code in stored for code in identifiers)
    assert trail is not None and trail["event"]["body"]["event_type"]  # read back (and masked) with the key
