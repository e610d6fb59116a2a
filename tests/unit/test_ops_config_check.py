"""``adapter config check``: the whole config, every mapping, SEPAS terminology and key when
enabled, the secrets it names and the status service's exposure; each problem with file, key
and fix; exit 0 clean, 1 otherwise."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from adapter.ops.cli import app as cli
from tests.support.pipeline import EMBEDDED, REPO


def write(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "adapter.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def base(tmp_path: Path) -> dict[str, Any]:
    config = yaml.safe_load(EMBEDDED.read_text())
    config["mappings_root"] = str(REPO / "mappings")
    config["database"]["url"] = f"sqlite:///{tmp_path / 'a.db'}"
    return config


def check(path: Path) -> tuple[int, list[str]]:
    result = CliRunner().invoke(cli, ["config", "check", "--config", str(path)], env={"ADAPTER_CONFIG": None})
    return result.exit_code, result.output.splitlines()


def test_a_clean_config_passes(tmp_path: Path) -> None:
    code, lines = check(write(tmp_path, base(tmp_path)))
    assert code == 0, lines
    assert lines == [f"{tmp_path / 'adapter.yaml'}: no problems (destinations: tamin, tamin_pharmacy, tamin_paraclinic; "
                     "status service on 127.0.0.1:8090)"]


def test_every_problem_of_the_file_is_listed_with_key_and_fix(tmp_path: Path) -> None:
    config = base(tmp_path)
    config["dispatch"]["workers"] = 0
    config["broker"]["prefetch"] = "many"
    config["retention"] = {"payload_days": -1}
    config["dispatch"]["wokers"] = 3
    path = write(tmp_path, config)
    code, lines = check(path)
    assert code == 1
    assert lines[-1] == f"4 problems in {path}"
    problems = lines[:-1]
    assert all(line.startswith(f"{path}: ") and " -- fix: " in line for line in problems)
    keys = {line.split(": ")[1] for line in problems}
    assert keys == {"dispatch.workers", "broker.prefetch", "retention.payload_days", "dispatch.wokers"}


def test_mapping_problems_secrets_and_exposure_are_reported_together(tmp_path: Path) -> None:
    mappings = tmp_path / "mappings"
    shutil.copytree(REPO / "mappings", mappings)
    broken = mappings / "tamin" / "send_epresc.yaml"
    broken.write_text(broken.read_text().replace("event_types:", "event_typez:", 1))
    config = base(tmp_path)
    config["mappings_root"] = str(mappings)
    config["destinations"]["tamin"]["auth"] = {"client_id": "x", "client_secret_env": "NOT_SET_ANYWHERE_4711"}
    config["status"] = {"host": "0.0.0.0"}
    path = write(tmp_path, config)
    code, lines = check(path)
    assert code == 1
    text = "\n".join(lines)
    assert f"{broken}: event_typez: unknown key" in text
    assert "destinations.tamin.auth.client_secret_env: environment variable NOT_SET_ANYWHERE_4711 is not set" in text
    assert "status.host: 0.0.0.0" in text and "no credentials" in text
    assert "would serve plain HTTP" in text  # and no TLS certificate either
    assert lines[-1] == f"5 problems in {path}"


def test_sepas_terminology_and_key_are_checked_when_enabled(tmp_path: Path) -> None:
    config = base(tmp_path)
    config["destinations"]["sepas"] = {
        "enabled": True, "base_url": "http://127.0.0.1:9", "system_id": "sys",
        "auth": {"client_id": "c", "client_secret": "adapter-sim-secret", "username": "u",
                 "password": "hospital-password"},
        "public_key_file": str(tmp_path / "missing.pem"), "terminology_dir": str(tmp_path / "no-terminology")}
    path = write(tmp_path, config)
    code, lines = check(path)
    assert code == 1
    text = "\n".join(lines)
    assert f"{path}: destinations.sepas.terminology_dir: {tmp_path / 'no-terminology'}" in text
    assert f"{path}: destinations.sepas.public_key_file: {tmp_path / 'missing.pem'}" in text
    assert "adapter-sim-secret" not in text and "hospital-password" not in text


def test_unreadable_yaml_is_one_problem_with_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "adapter.yaml"
    path.write_text("database: [\n")
    code, lines = check(path)
    assert code == 1 and "line" in lines[0] and "fix: correct the YAML syntax" in lines[0]
