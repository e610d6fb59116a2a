"""Config: the shipped files load; problems name file, key and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapter.config import ConfigError, load_config, read_secret

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["embedded.yaml", "production.example.yaml"])
def test_shipped_configs_load(name: str) -> None:
    config = load_config(ROOT / "config" / name, environ={})
    assert config.destinations.tamin.auth.client_id


def test_env_overrides_nested_keys() -> None:
    config = load_config(ROOT / "config/embedded.yaml", environ={
        "ADAPTER__DATABASE__URL": "postgresql+psycopg://x@h/db", "ADAPTER__DISPATCH__WORKERS": "3"})
    assert config.database.url == "postgresql+psycopg://x@h/db"
    assert config.dispatch.workers == 3


def test_problems_name_file_key_and_fix(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("destinations:\n  tamin:\n    auth: {client_id: x}\n    retry: {max_attempts: 0}\nbroker: {qeue: x}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(bad, environ={})
    text = str(caught.value)
    assert f"{bad}: destinations.tamin.base_url: Field required -- fix:" in text
    assert "destinations.tamin.retry.max_attempts" in text
    assert "broker.qeue" in text and "check its spelling" in text


def test_bad_yaml_gives_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1,\n")
    with pytest.raises(ConfigError, match=r"line \d+"):
        load_config(bad, environ={})


def test_env_problem_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="ADAPTER__DISPATCH__WORKERS"):
        load_config(ROOT / "config/embedded.yaml", environ={"ADAPTER__DISPATCH__WORKERS": "0"})


def test_secret_file_must_be_private(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    secret.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        read_secret(None, str(secret), None, what="x.client_secret", source="c.yaml", environ={})
    secret.chmod(0o600)
    assert read_secret(None, str(secret), None, what="x", source="c.yaml", environ={}) == "s3cret"
    with pytest.raises(ConfigError, match="export TAMIN_SECRET"):
        read_secret("TAMIN_SECRET", None, None, what="x", source="c.yaml", environ={})
