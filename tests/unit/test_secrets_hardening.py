"""Issue 16, hardening: an empty secret is refused wherever the adapter reads one (item 1), a
store the adapter cannot write is the one-line configuration error at start-up (item 14), and a
secret written in the config file is accepted only for a destination on this machine (item 16)."""

from __future__ import annotations

import base64
import ctypes
import hmac
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from starlette.testclient import TestClient
from typer.testing import CliRunner

from adapter.app import build, open_store
from adapter.config import ConfigError, load_config, read_secret
from adapter.keys import load_key
from adapter.ops import http_status
from adapter.ops.cli import app as cli
from adapter.ops.http_status import StatusAuth, create_status_app, resolve_auth
from adapter.pipeline.runner import Liveness
from tests.support.pipeline import EMBEDDED, REPO, adapter_config


def secret_file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(0o600)
    return path


def embedded(tmp_path: Path) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(EMBEDDED.read_text())
    config["mappings_root"] = str(REPO / "mappings")
    config["database"]["url"] = f"sqlite:///{tmp_path / 'store' / 'a.db'}"
    config["broker"]["url"] = f"sqlite-queue:///{tmp_path / 'queue.db'}"
    config["secrets"] = {"token_key_file": str(tmp_path / "token.key")}
    config["status"] = {"port": 0}
    return config


def write(tmp_path: Path, config: dict[str, Any], name: str = "adapter.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


# -- item 1: empty secrets -------------------------------------------------------------------

@pytest.mark.parametrize("env,file_text,literal,key", [
    ({"S": ""}, None, None, "x.secret_env"),
    ({"S": "  \t\n"}, None, None, "x.secret_env"),
    ({}, "", None, "x.secret_file"),
    ({}, " \n\n\t ", None, "x.secret_file"),
    ({}, None, "   ", "x.secret"),
    ({"S": " "}, "a-good-secret\n", None, "x.secret_env"),  # set but blank: refused, not silently skipped
])
def test_read_secret_refuses_an_empty_or_blank_secret(tmp_path: Path, env: dict[str, str], file_text: str | None,
                                                      literal: str | None, key: str) -> None:
    file_name = str(secret_file(tmp_path, "secret", file_text)) if file_text is not None else None
    with pytest.raises(ConfigError) as caught:
        read_secret("S" if "S" in env else None, file_name, literal, what="x.secret", source="c.yaml", environ=env)
    (line,) = caught.value.lines
    assert line.startswith(f"c.yaml: {key}: ") and "empty" in line and " -- fix: " in line, line


def test_a_secret_file_that_cannot_be_read_is_a_config_error(tmp_path: Path) -> None:
    folder = tmp_path / "a-folder"
    folder.mkdir(mode=0o700)
    with pytest.raises(ConfigError, match=r"^c\.yaml: x\.secret_file: .* -- fix: "):
        read_secret(None, str(folder), None, what="x.secret", source="c.yaml", environ={})


def test_load_key_refuses_an_empty_key_file_or_a_blank_variable(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    empty = secret_file(tmp_path, "patient.key", "\n")
    monkeypatch.delenv("X_KEY", raising=False)
    with pytest.raises(ConfigError) as caught:
        load_key("X_KEY", str(empty), source="c.yaml", key_name="patient_ref_key")
    (line,) = caught.value.lines
    assert line.startswith("c.yaml: secrets.patient_ref_key_file: ") and "empty" in line and " -- fix: " in line
    monkeypatch.setenv("X_KEY", "   ")
    with pytest.raises(ConfigError) as caught:
        load_key("X_KEY", str(tmp_path / "other.key"), source="c.yaml", key_name="patient_ref_key")
    (line,) = caught.value.lines
    assert line.startswith("c.yaml: secrets.patient_ref_key_env: ") and "X_KEY" in line and "empty" in line
    assert not (tmp_path / "other.key").exists(), "a blank variable is not silently replaced by a new key file"


def test_status_service_refuses_an_empty_token_or_password_file(tmp_path: Path) -> None:
    empty = secret_file(tmp_path, "status.token", "\n")
    with pytest.raises(ConfigError) as caught:
        resolve_auth(adapter_config(f"sqlite:///{tmp_path / 'a.db'}", "http://127.0.0.1:9", tmp_path,
                                    status__host="0.0.0.0", status__token_file=str(empty)))
    (line,) = caught.value.lines
    assert f"status.token_file: {empty} is empty" in line and " -- fix: " in line
    with pytest.raises(ConfigError) as caught:
        resolve_auth(adapter_config(f"sqlite:///{tmp_path / 'a.db'}", "http://127.0.0.1:9", tmp_path,
                                    status__host="0.0.0.0", status__basic_user="ops",
                                    status__basic_password_file=str(empty)))
    (line,) = caught.value.lines
    assert f"status.basic_password_file: {empty} is empty" in line and " -- fix: " in line


def test_resolve_auth_refuses_an_empty_credential_whatever_the_reader_returned(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_status, "read_secret", lambda *args, **kwargs: " ")
    for overrides, key in [({"status__token_env": "T"}, "status.token_env"),
                           ({"status__basic_user": "ops", "status__basic_password_file": "/x"},
                            "status.basic_password_file")]:
        with pytest.raises(ConfigError) as caught:
            resolve_auth(adapter_config(f"sqlite:///{tmp_path / 'a.db'}", "http://127.0.0.1:9", tmp_path,
                                        status__host="0.0.0.0", **overrides))
        (line,) = caught.value.lines
        assert f": {key}: " in line and "empty" in line and " -- fix: " in line


def test_an_empty_credential_never_opens_the_status_service(tmp_path: Path) -> None:
    """Defence in depth: even handed an empty credential, the service lets nobody in with an empty one."""
    app = build(adapter_config(f"sqlite:///{tmp_path / 'a.db'}", "http://127.0.0.1:9", tmp_path))
    try:
        empty_basic = "Basic " + base64.b64encode(b"ops:").decode()
        for auth, attempts in [
            (StatusAuth(token=""), ["Bearer", "Bearer ", "Bearer    ", "bearer \t"]),
            (StatusAuth(token="   "), ["Bearer", "Bearer ", "Bearer    "]),
            (StatusAuth(user="ops", password=""), [empty_basic, "Basic " + base64.b64encode(b":").decode(), "Basic "]),
            (StatusAuth(user="", password=""), ["Basic " + base64.b64encode(b":").decode()]),
        ]:
            client = TestClient(create_status_app(app, Liveness(), auth))
            for header in attempts:
                assert auth.allows(header) is False, (auth, header)
                assert client.get("/status", headers={"Authorization": header}).status_code == 401, (auth, header)
    finally:
        app.close()


def test_status_credentials_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    compare = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return compare(a, b)
    monkeypatch.setattr(http_status.hmac, "compare_digest", spy)
    auth = StatusAuth(user="ops", password="pw-123456")
    assert auth.allows("Basic " + base64.b64encode(b"nobody:pw-123456").decode()) is False
    assert len(compared) == 2, "the password is compared even when the user is wrong (no early exit)"
    compared.clear()
    assert StatusAuth(token="tok-123456").allows("Bearer tok-123456") is True and len(compared) == 1


def test_config_check_names_every_empty_secret_with_file_key_and_fix(tmp_path: Path) -> None:
    empty = secret_file(tmp_path, "empty.secret", "\n")
    secret_file(tmp_path, "token.key", "")
    config = embedded(tmp_path)
    destinations = config["destinations"]
    destinations["tamin"]["auth"] = {"client_id": "x", "client_secret_file": str(empty)}
    destinations["tamin_pharmacy"]["auth"]["software_client_secret"] = None
    destinations["tamin_pharmacy"]["auth"]["software_client_secret_env"] = "BLANK_SOFTWARE_SECRET"
    destinations["tamin_pharmacy"]["auth"]["operators"]["1234567"] = {"username": "drugtest",
                                                                      "password_file": str(empty)}
    destinations["tamin_paraclinic"]["auth"]["operators"]["1234567"] = {"username": "paratest",
                                                                        "password_env": "EMPTY_OPERATOR_PASSWORD"}
    destinations["sepas"]["enabled"] = True
    destinations["sepas"]["auth"] = {"client_id": "c", "client_secret_env": "BLANK_SEPAS_SECRET", "username": "u",
                                     "password": "hospital-password"}
    config["status"] = {"host": "0.0.0.0", "port": 0, "token_file": str(empty)}
    config["alerts"] = {"webhooks": [{"url": "http://127.0.0.1:9/hook", "headers_env": {"Authorization": "BLANK_HOOK"}}],
                        "email": {"host": "127.0.0.1", "from": "a@h.example", "to": ["ops@h.example"],
                                  "username": "adapter", "password_file": str(empty)}}
    path = write(tmp_path, config)
    result = CliRunner().invoke(cli, ["config", "check", "--config", str(path)], env={
        "ADAPTER_CONFIG": None, "BLANK_SOFTWARE_SECRET": "   ", "EMPTY_OPERATOR_PASSWORD": "",
        "BLANK_SEPAS_SECRET": "\t", "BLANK_HOOK": " ", "ADAPTER_TOKEN_KEY": None, "ADAPTER_PATIENT_KEY": " ",
        "ADAPTER_PAYLOAD_KEY": "  "})
    assert result.exit_code == 1, result.output
    problems = result.output.splitlines()[:-1]
    for key in ["destinations.tamin.auth.client_secret_file",
                "destinations.tamin_pharmacy.auth.software_client_secret_env",
                "destinations.tamin_pharmacy.auth.operators.1234567.password_file",
                "destinations.tamin_paraclinic.auth.operators.1234567.password_env",
                "destinations.sepas.auth.client_secret_env",
                "status.token_file",
                "alerts.webhooks[0].headers_env.Authorization",
                "alerts.email.password_file",
                "secrets.patient_ref_key_env",
                "secrets.token_key_file",
                "secrets.payload_key_env"]:
        found = [line for line in problems if line.startswith(f"{path}: {key}: ")]
        assert len(found) == 1, (key, problems)
        assert "empty" in found[0] and " -- fix: " in found[0], found[0]


def test_adapter_run_refuses_an_empty_secret_at_start(tmp_path: Path) -> None:
    empty = secret_file(tmp_path, "tamin.secret", "")
    config = embedded(tmp_path)
    config["destinations"]["tamin"]["auth"] = {"client_id": "x", "client_secret_file": str(empty)}
    path = write(tmp_path, config)
    result = CliRunner().invoke(cli, ["run", "--until-idle", "--config", str(path)],
                                env={"ADAPTER_CONFIG": None, "ADAPTER_PATIENT_KEY": "k" * 32})
    assert result.exit_code == 2, result.output
    assert f"{path}: destinations.tamin.auth.client_secret_file: {empty} is empty" in result.output
    assert "Traceback" not in result.output


# -- item 14: a store the adapter cannot write ----------------------------------------------

CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, PR_CAPBSET_DROP = 1, 2, 3, 24


def _as_an_ordinary_user() -> None:
    """``preexec_fn``: as root, give up the capabilities that let root write what its mode forbids,
    so the child meets file modes as the service user the adapter really runs as does."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER):
            if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                os._exit(97)


def adapter_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADAPTER")} | {"ADAPTER_PATIENT_KEY": "k" * 32}
    return subprocess.run([sys.executable, "-m", "adapter", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120, preexec_fn=_as_an_ordinary_user)


@pytest.fixture
def modes_bind(tmp_path: Path) -> None:
    """Skip unless a read-only file really cannot be written by the child (root without the
    capability to drop it, an odd file system)."""
    probe = tmp_path / "probe"
    probe.write_text("x")
    probe.chmod(0o444)
    done = subprocess.run([sys.executable, "-c", f"open({str(probe)!r}, 'a')"], capture_output=True,
                          preexec_fn=_as_an_ordinary_user)
    probe.chmod(0o600)
    if done.returncode == 0:
        pytest.skip("file modes do not bind a child process here")


def one_store_line(done: subprocess.CompletedProcess[str], config: Path) -> str:
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output and "OperationalError" not in output, output
    lines = [line.strip() for line in output.splitlines() if "database.url" in line]
    assert len(lines) == 1, output
    assert lines[0].startswith(f"{config}: database.url: ") and " -- fix: " in lines[0], lines[0]
    return lines[0]


def test_a_read_only_store_file_stops_adapter_run_with_one_line(tmp_path: Path, modes_bind: None) -> None:
    config = write(tmp_path, embedded(tmp_path))
    engine, _ = open_store(load_config(config, environ={}))  # made by an earlier run: WAL mode, schema current
    engine.dispose()
    store = tmp_path / "store" / "a.db"
    store.chmod(0o444)
    try:
        line = one_store_line(adapter_cli("run", "--until-idle", "--config", str(config)), config)
    finally:
        store.chmod(0o600)
    assert str(store) in line and "read-only" in line


def test_replay_and_resend_on_a_read_only_store_stop_with_one_line(tmp_path: Path, modes_bind: None) -> None:
    """State-changing operator commands check the store takes writes before they start."""
    config = write(tmp_path, embedded(tmp_path))
    engine, _ = open_store(load_config(config, environ={}))
    engine.dispose()
    store = tmp_path / "store" / "a.db"
    store.chmod(0o444)
    try:
        one_store_line(adapter_cli("replay", "1", "--reason", "retry", "--config", str(config)), config)
        one_store_line(adapter_cli("replies", "resend", "abc", "--reason", "retry", "--config", str(config)), config)
    finally:
        store.chmod(0o600)


def test_a_read_only_store_folder_stops_db_upgrade_and_prune_with_one_line(tmp_path: Path, modes_bind: None) -> None:
    config = write(tmp_path, embedded(tmp_path))
    folder = tmp_path / "store"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        line = one_store_line(adapter_cli("db-upgrade", "--config", str(config)), config)
        assert str(folder / "a.db") in line
        folder.chmod(0o755)
        engine, _ = open_store(load_config(config, environ={}))
        engine.dispose()
        folder.chmod(0o555)
        one_store_line(adapter_cli("prune", "--reason", "retention", "--config", str(config)), config)  # it writes
    finally:
        folder.chmod(0o755)


def test_a_store_folder_that_cannot_be_made_is_a_config_error(tmp_path: Path) -> None:
    """Root or not: nothing can create a folder under /proc."""
    config = load_config(write(tmp_path, embedded(tmp_path)), environ={
        "ADAPTER__DATABASE__URL": "sqlite:////proc/adapter-no-such/a.db"})
    with pytest.raises(ConfigError) as caught:
        open_store(config)
    (line,) = caught.value.lines
    assert line.startswith(f"{tmp_path / 'adapter.yaml'}: database.url: ") and "/proc/adapter-no-such" in line
    assert " -- fix: " in line


@pytest.mark.integration
def test_a_read_only_postgresql_store_is_a_config_error(tmp_path: Path, pg_url: str) -> None:
    from adapter.store.db import upgrade

    upgrade(pg_url)
    read_only = pg_url + ("&" if "?" in pg_url else "?") + "options=-c%20default_transaction_read_only%3Don"
    config = load_config(write(tmp_path, embedded(tmp_path)), environ={"ADAPTER__DATABASE__URL": read_only})
    with pytest.raises(ConfigError) as caught:
        open_store(config, writable=True)
    (line,) = caught.value.lines
    assert line.startswith(f"{tmp_path / 'adapter.yaml'}: database.url: ") and "read-only" in line
    assert " -- fix: " in line


# -- item 16: literal secrets only for the simulator on this machine --------------------------

REMOTE = "https://soa.tamin.ir"


def test_a_literal_secret_for_a_remote_destination_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, embedded(tmp_path))
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={"ADAPTER__DESTINATIONS__TAMIN__BASE_URL": REMOTE,
                                   "ADAPTER__DESTINATIONS__TAMIN_PHARMACY__AUTH__AUTH_BASE_URL": REMOTE,
                                   "ADAPTER__DESTINATIONS__SEPAS__BASE_URL": "https://apigateway.behdasht.gov.ir"})
    lines = caught.value.lines
    # SEPAS is disabled in embedded.yaml: its literals are never used, so they are not refused
    expected = ["destinations.tamin.auth.client_secret", "destinations.tamin_pharmacy.auth.software_client_secret",
                "destinations.tamin_pharmacy.auth.operators.1234567.password"]
    assert len(lines) == len(expected), lines
    for key in expected:
        (line,) = [line for line in lines if line.startswith(f"{path}: {key}: ")]
        assert " -- fix: " in line and f"{key}_env" in line and f"{key}_file" in line, line
    text = "\n".join(lines)
    for secret in ("adapter-test-secret", "adapter-software-secret", "adapter-sim-secret", "hospital-password"):
        assert secret not in text


@pytest.mark.parametrize("url,local", [
    ("http://127.0.0.1:8089", True), ("http://localhost:8089", True), ("http://LOCALHOST", True),
    ("http://127.10.0.3:1", True), ("http://[::1]:8089", True),
    ("https://soa.tamin.ir", False), ("http://10.0.0.1:8089", False), ("http://0.0.0.0:8089", False),
    ("http://127.0.0.1.example:8089", False), ("http://localhost.example", False),
    ("http://user:pw@soa.tamin.ir", False), ("not a url", False),
])
def test_only_this_machine_counts_as_the_simulator(tmp_path: Path, url: str, local: bool) -> None:
    path = write(tmp_path, embedded(tmp_path))
    environ = {"ADAPTER__DESTINATIONS__TAMIN__BASE_URL": url}
    if local:
        assert load_config(path, environ=environ).destinations.tamin.base_url == url
        return
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=environ)
    (line,) = caught.value.lines
    assert "destinations.tamin.auth.client_secret: " in line and "pw@" not in line


def test_secrets_from_the_environment_or_a_file_are_fine_anywhere(tmp_path: Path) -> None:
    config = embedded(tmp_path)
    config["destinations"]["tamin"]["base_url"] = REMOTE
    config["destinations"]["tamin"]["auth"] = {"client_id": "x", "client_secret_env": "TAMIN_CLIENT_SECRET"}
    assert load_config(write(tmp_path, config), environ={}).destinations.tamin.base_url == REMOTE
    assert load_config(REPO / "config" / "production.example.yaml", environ={})


def test_an_environment_override_of_the_files_literal_secret_is_accepted(tmp_path: Path) -> None:
    """The README's way: embedded.yaml with its URL and secret overridden from the environment."""
    config = load_config(write(tmp_path, embedded(tmp_path)), environ={
        "ADAPTER__DESTINATIONS__TAMIN__BASE_URL": REMOTE,
        "ADAPTER__DESTINATIONS__TAMIN__AUTH__CLIENT_SECRET_ENV": "TAMIN_CLIENT_SECRET",
        "ADAPTER__DESTINATIONS__TAMIN_PHARMACY__ENABLED": "false",
        "ADAPTER__DESTINATIONS__TAMIN_PARACLINIC__ENABLED": "false"})
    assert config.destinations.tamin.base_url == REMOTE


def test_config_check_reports_a_literal_secret_for_a_remote_destination(tmp_path: Path) -> None:
    config = embedded(tmp_path)
    config["destinations"]["tamin"]["base_url"] = REMOTE
    path = write(tmp_path, config)
    result = CliRunner().invoke(cli, ["config", "check", "--config", str(path)], env={"ADAPTER_CONFIG": None})
    assert result.exit_code == 1
    assert any(line.startswith(f"{path}: destinations.tamin.auth.client_secret: ") and "client_secret_env" in line
               for line in result.output.splitlines()), result.output
