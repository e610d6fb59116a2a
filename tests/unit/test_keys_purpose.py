"""One key, one purpose: the patient pseudonym key has its own file and is never the refresh-token
key; the refresh-token store's pseudonyms are keyed by a key derived from its Fernet key, and rows
stored under the old scheme are still found (and moved). The payload key can be required."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text

from adapter.config import ConfigError, SecretsConfig
from adapter.keys import load_key, load_patient_key, patient_key_file, payload_key_problems, shared_key_warning
from adapter.redact import pseudonym
from adapter.store.db import make_engine, make_sessionmaker, upgrade
from adapter.store.refresh_tokens import DbRefreshTokenStore, principal_ref_key

NO_ENV: dict[str, str] = {}
DOCTOR = "0012345678"


def secrets(tmp_path: Path, **fields: object) -> SecretsConfig:
    return SecretsConfig(token_key_file=str(tmp_path / "token.key"), **fields)  # type: ignore[arg-type]


def test_a_new_install_gets_a_patient_key_of_its_own(tmp_path: Path) -> None:
    config = secrets(tmp_path)
    token = load_key(config.token_key_env, config.token_key_file, source="c.yaml", key_name="token_key", environ=NO_ENV)
    patient = load_patient_key(config, source="c.yaml", store_has_events=False, environ=NO_ENV)
    assert patient_key_file(config) == str(tmp_path / "patient.key")
    assert (tmp_path / "patient.key").stat().st_mode & 0o777 == 0o600
    assert patient != token
    assert load_patient_key(config, source="c.yaml", store_has_events=True, environ=NO_ENV) == patient  # kept
    assert shared_key_warning(config, source="c.yaml", environ=NO_ENV) is None


def test_an_upgraded_install_keeps_its_pseudonyms_and_is_told_to_separate_the_keys(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = secrets(tmp_path)
    old = load_key(config.token_key_env, config.token_key_file, source="c.yaml", key_name="token_key", environ=NO_ENV)
    with caplog.at_level(logging.WARNING):
        patient = load_patient_key(config, source="c.yaml", store_has_events=True, environ=NO_ENV)
    assert patient == old, "events stored so far were pseudonymised with the token key file: it is kept for them"
    assert "made from the refresh-token key file" in caplog.text and old.decode() not in caplog.text
    warning = shared_key_warning(config, source="c.yaml", environ=NO_ENV)
    assert warning is not None and warning.startswith("c.yaml: secrets.token_key_file: ") and " -- fix: " in warning
    assert old.decode() not in warning
    (tmp_path / "token.key").unlink()  # what the fix says: the refresh tokens get a new key
    load_key(config.token_key_env, config.token_key_file, source="c.yaml", key_name="token_key", environ=NO_ENV)
    assert shared_key_warning(config, source="c.yaml", environ=NO_ENV) is None
    assert load_patient_key(config, source="c.yaml", store_has_events=True, environ=NO_ENV) == old


def test_a_token_key_file_made_before_the_first_event_is_not_adopted(tmp_path: Path) -> None:
    config = secrets(tmp_path)
    token = load_key(config.token_key_env, config.token_key_file, source="c.yaml", key_name="token_key", environ=NO_ENV)
    assert load_patient_key(config, source="c.yaml", store_has_events=False, environ=NO_ENV) != token


def test_the_patient_key_variable_wins_and_a_blank_one_is_refused(tmp_path: Path) -> None:
    config = secrets(tmp_path)
    assert load_patient_key(config, source="c.yaml", store_has_events=True, environ={"ADAPTER_PATIENT_KEY": "k1"}) == b"k1"
    assert not (tmp_path / "patient.key").exists()
    with pytest.raises(ConfigError) as caught:
        load_patient_key(config, source="c.yaml", store_has_events=True, environ={"ADAPTER_PATIENT_KEY": " "})
    (line,) = caught.value.lines
    assert line.startswith("c.yaml: secrets.patient_ref_key_env: ") and "secrets.patient_ref_key_file" in line


def test_without_any_patient_key_source_start_up_names_the_key_and_the_fix() -> None:
    config = SecretsConfig(token_key_file=None)
    with pytest.raises(ConfigError) as caught:
        load_patient_key(config, source="c.yaml", store_has_events=False, environ=NO_ENV)
    (line,) = caught.value.lines
    assert line.startswith("c.yaml: secrets.patient_ref_key_env: ") and "ADAPTER_PATIENT_KEY" in line
    assert " -- fix: export ADAPTER_PATIENT_KEY=" in line


def test_a_required_payload_key_that_is_not_set_is_a_problem() -> None:
    assert payload_key_problems("ADAPTER_PAYLOAD_KEY", source="c.yaml", environ=NO_ENV) == []
    (line,) = payload_key_problems("ADAPTER_PAYLOAD_KEY", source="c.yaml", environ=NO_ENV, required=True)
    assert line.startswith("c.yaml: secrets.payload_key_env: ") and "payload_key_required" in line and " -- fix: " in line
    key = Fernet.generate_key().decode()
    assert payload_key_problems("ADAPTER_PAYLOAD_KEY", source="c.yaml", environ={"ADAPTER_PAYLOAD_KEY": key},
                                required=True) == []


@pytest.fixture
def sessions(tmp_path: Path):  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'a.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield make_sessionmaker(engine), engine
    engine.dispose()


def test_refresh_token_pseudonyms_are_not_keyed_by_the_fernet_key(sessions) -> None:  # type: ignore[no-untyped-def]
    maker, engine = sessions
    key = Fernet.generate_key()
    DbRefreshTokenStore(maker, key, "tamin").put(DOCTOR, "refresh-1")
    with engine.connect() as conn:
        (ref,) = conn.execute(text("SELECT principal_ref FROM refresh_tokens")).scalars().all()
    assert ref == pseudonym(DOCTOR, principal_ref_key(key)) != pseudonym(DOCTOR, key)
    assert principal_ref_key(key) != key
    assert DbRefreshTokenStore(maker, key, "tamin").get(DOCTOR) == "refresh-1"


def test_a_refresh_token_stored_under_the_old_reference_is_found_and_moved(sessions) -> None:  # type: ignore[no-untyped-def]
    maker, engine = sessions
    key = Fernet.generate_key()
    old_ref = pseudonym(DOCTOR, key)  # how the previous version keyed it
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO refresh_tokens (destination, principal_ref, token_encrypted, updated_at) "
                          "VALUES ('tamin', :ref, :token, CURRENT_TIMESTAMP)"),
                     {"ref": old_ref, "token": Fernet(key).encrypt(b"legacy-refresh").decode()})
    store = DbRefreshTokenStore(maker, key, "tamin")
    assert store.get(DOCTOR) == "legacy-refresh"
    with engine.connect() as conn:
        refs = conn.execute(text("SELECT principal_ref FROM refresh_tokens")).scalars().all()
    assert refs == [pseudonym(DOCTOR, principal_ref_key(key))]
    store.put(DOCTOR, "rotated")
    assert store.get(DOCTOR) == "rotated"
    assert DbRefreshTokenStore(maker, key, "other").get(DOCTOR) is None
