"""Patient data at rest, through the adapter's own entry points: the SQLite store is created
mode 600 (an old 0644 one is tightened), a queue message the adapter cannot decrypt ends as an
invalid event naming the key problem (and is stored, with the right key, when replayed), the
payload key can be required, and ``config check`` warns about a PostgreSQL store without it."""

from __future__ import annotations

import datetime as dt
import json
import socket
import stat
from pathlib import Path

import kombu
import pytest
import yaml
from cryptography.fernet import Fernet
from typer.testing import CliRunner

from adapter.app import build, open_store
from adapter.broker.connection import publish_bodies
from adapter.broker.sqlite_transport import SCHEME
from adapter.config import BrokerConfig, ConfigError
from adapter.ops.cli import app as cli
from adapter.pipeline.intake import Received
from adapter.samples.generate import generate
from adapter.store.models import InboxEvent
from tests.support.pipeline import EMBEDDED, REPO, adapter_config, good_lines

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _no_payload_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ADAPTER_PAYLOAD_KEY", raising=False)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_sqlite_store_and_its_wal_are_created_private(tmp_path: Path) -> None:
    store = tmp_path / "adapter.db"
    engine, _ = open_store(adapter_config(f"sqlite:///{store}", "http://127.0.0.1:9", tmp_path), writable=True)
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
            members = [store, tmp_path / "adapter.db-wal", tmp_path / "adapter.db-shm"]
            assert {m.name: mode(m) for m in members} == {m.name: 0o600 for m in members}
    finally:
        engine.dispose()


def test_an_old_store_readable_by_others_is_tightened_at_start(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    store = tmp_path / "adapter.db"
    config = adapter_config(f"sqlite:///{store}", "http://127.0.0.1:9", tmp_path)
    open_store(config)[0].dispose()
    store.chmod(0o644)
    open_store(config)[0].dispose()
    assert mode(store) == 0o600
    assert f"{store} was readable by others (mode 644): now mode 600" in caplog.text


def take_one(queue_file: Path) -> bytes:
    got: list[bytes] = []

    def on_message(message: kombu.Message) -> None:
        got.append(message.body)
        message.ack()

    with kombu.Connection(f"{SCHEME}:///{queue_file}") as conn:
        with kombu.Consumer(conn.default_channel, [kombu.Queue("his.events", routing_key="his.events")],
                            on_message=on_message):
            try:
                while not got:
                    conn.drain_events(timeout=2)
            except socket.timeout:
                pass
    (body,) = got
    return body


def test_a_queue_message_under_another_key_is_an_invalid_event_then_replayable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    line = good_lines(generate(dt.datetime.now(dt.timezone.utc), patients=1).lines)[0]
    event_id = json.loads(line)["event_id"]
    national_code = json.loads(line)["payload"]["patient"]["identity"]["value"]
    queue_file = tmp_path / "queue.db"
    written_with = Fernet.generate_key().decode()
    monkeypatch.setenv("ADAPTER_PAYLOAD_KEY", written_with)
    publish_bodies(BrokerConfig(url=f"{SCHEME}:///{queue_file}"), [line])
    monkeypatch.setenv("ADAPTER_PAYLOAD_KEY", Fernet.generate_key().decode())  # the adapter has another key
    body = take_one(queue_file)
    app = build(adapter_config(f"sqlite:///{tmp_path / 'adapter.db'}", "http://127.0.0.1:9", tmp_path))
    try:
        result = app.intake.receive(body)
        assert result.outcome is Received.invalid
        assert "encrypted with another key than the one in ADAPTER_PAYLOAD_KEY" in result.reason
        with app.sessions() as session:
            invalid = session.get(InboxEvent, result.event_id)
            assert invalid is not None and invalid.status == "invalid" and national_code not in (invalid.body or "")
        monkeypatch.setenv("ADAPTER_PAYLOAD_KEY", written_with)  # the operator sets the right key and replays
        replayed = app.intake.receive(invalid.body)
        assert (replayed.outcome, replayed.event_id) == (Received.stored, event_id)
    finally:
        app.close()


def test_a_required_payload_key_stops_start_up_when_missing(tmp_path: Path) -> None:
    config = adapter_config(f"sqlite:///{tmp_path / 'adapter.db'}", "http://127.0.0.1:9", tmp_path,
                            secrets__payload_key_required="true")
    with pytest.raises(ConfigError) as caught:
        open_store(config)
    (line,) = caught.value.lines
    assert "secrets.payload_key_env: environment variable ADAPTER_PAYLOAD_KEY is not set" in line and " -- fix: " in line
    assert not (tmp_path / "adapter.db").exists()


def check(tmp_path: Path, config: dict, env: dict[str, str | None]) -> tuple[int, list[str]]:
    path = tmp_path / "adapter.yaml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(cli, ["config", "check", "--config", str(path)],
                                env={"ADAPTER_CONFIG": None, "ADAPTER_PAYLOAD_KEY": None, **env})
    return result.exit_code, result.output.splitlines()


def test_config_check_warns_when_a_postgresql_store_keeps_patient_data_in_clear(tmp_path: Path) -> None:
    config = yaml.safe_load(EMBEDDED.read_text())
    config["mappings_root"] = str(REPO / "mappings")
    config["database"]["url"] = "postgresql+psycopg://adapter@127.0.0.1:5432/adapter"
    config["secrets"] = {"token_key_file": str(tmp_path / "token.key")}
    code, lines = check(tmp_path, config, {})
    warnings = [line for line in lines if line.startswith("warning: ")]
    assert code == 0, lines
    assert len(warnings) == 1 and "secrets.payload_key_required" in warnings[0] and " -- fix: " in warnings[0]
    code, lines = check(tmp_path, config, {"ADAPTER_PAYLOAD_KEY": Fernet.generate_key().decode()})
    assert code == 0 and not [line for line in lines if line.startswith("warning: ")], lines
    config["database"]["url"] = f"sqlite:///{tmp_path / 'a.db'}"
    code, lines = check(tmp_path, config, {})
    assert code == 0 and not [line for line in lines if line.startswith("warning: ")], lines


def test_the_production_example_requires_the_payload_key() -> None:
    production = yaml.safe_load((REPO / "config" / "production.example.yaml").read_text())
    assert production["secrets"]["payload_key_required"] is True
