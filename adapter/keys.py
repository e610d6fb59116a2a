"""Local keys: the Fernet key for stored refresh tokens and the HMAC key for patient pseudonyms.

Taken from an environment variable when set; otherwise from a file, created with mode 600
on first use (the embedded default), so a restart keeps the same keys. One key, one purpose:
the patient key has its own variable and file (``secrets.patient_ref_key_env`` /
``patient_ref_key_file``) and is never the refresh-token key.

Upgrading: before ``patient_ref_key_file`` existed, an install without ``ADAPTER_PATIENT_KEY``
made its pseudonyms and content digests with the refresh-token key file. When the patient key
file does not exist yet and that file does, its key is copied into the patient key file (the
stored pseudonyms and digests stay valid) and ``shared_key_warning`` says so until the operator
gives the refresh tokens a new key (see docs/operations.md, "Keys").
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from cryptography.fernet import Fernet

from adapter.config import ConfigError, SecretsConfig
from adapter.limits import KEY_FILE_MAX_BYTES, InputLimitError, read_bounded_bytes

log = logging.getLogger("adapter.keys")


def load_key(env_name: str, file_name: str | None, *, source: str, key_name: str,
             environ: Mapping[str, str] | None = None) -> bytes:
    """The key from ``env_name`` when set, else from ``file_name`` (created, mode 600, when absent).
    Never empty: a variable set to nothing (or whitespace) and an empty file are refused."""
    value = _from_env(env_name, source=source, key_name=key_name, environ=environ)
    if value is not None:
        return value
    if not file_name:
        raise ConfigError([f"{source}: secrets.{key_name}_env: environment variable {env_name} is not set and no file "
                           f"is configured -- fix: export {env_name}=$(python -c 'from cryptography.fernet import "
                           f"Fernet; print(Fernet.generate_key().decode())')"])
    path = Path(file_name)
    if not path.exists():
        _create_key_file(path, Fernet.generate_key())
    return _from_file(path, source=source, key_name=key_name)


def patient_key_file(secrets: SecretsConfig) -> str | None:
    """``secrets.patient_ref_key_file``, else ``patient.key`` in the folder of ``token_key_file``."""
    if secrets.patient_ref_key_file:
        return secrets.patient_ref_key_file
    if secrets.token_key_file:
        return str(Path(secrets.token_key_file).parent / "patient.key")
    return None


def load_patient_key(secrets: SecretsConfig, *, source: str, store_has_events: bool,
                     environ: Mapping[str, str] | None = None) -> bytes:
    """The HMAC key of patient pseudonyms and content digests: ``patient_ref_key_env`` when set,
    else ``patient_key_file``, created when absent -- from the token key file when the store
    already holds events (an older install pseudonymised them with it, see the module's
    docstring), else a new key (a token key file made by ``auth set-refresh-token`` before the
    first run is not adopted)."""
    file_name = patient_key_file(secrets)
    if store_has_events and file_name and not Path(file_name).exists() and \
            _from_env(secrets.patient_ref_key_env, source=source, key_name="patient_ref_key", environ=environ) is None:
        legacy = _legacy_patient_key(secrets, source=source)
        if legacy is not None:
            _create_key_file(Path(file_name), legacy)
            log.warning("%s: secrets.patient_ref_key_file: %s made from the refresh-token key file %s, which made "
                        "this install's patient pseudonyms so far; give the refresh tokens a key of their own "
                        "(docs/operations.md, Keys)", source, file_name, secrets.token_key_file)
    return load_key(secrets.patient_ref_key_env, file_name, source=source, key_name="patient_ref_key",
                    environ=environ)


def _legacy_patient_key(secrets: SecretsConfig, *, source: str) -> bytes | None:
    """The key an older install pseudonymised patients with: its token key file's, if it has one."""
    if not secrets.token_key_file or not Path(secrets.token_key_file).exists():
        return None
    return _from_file(Path(secrets.token_key_file), source=source, key_name="token_key")


def shared_key_warning(secrets: SecretsConfig, *, source: str, environ: Mapping[str, str] | None = None) -> str | None:
    """A line when the patient key and the refresh-token key are the same key (an upgraded
    install whose patient key file was copied from the token key file, or two variables set to
    one value); None when they differ or either is not there yet. Nothing is created."""
    patient = _existing_key(secrets.patient_ref_key_env, patient_key_file(secrets), source=source,
                            key_name="patient_ref_key", environ=environ)
    token = _existing_key(secrets.token_key_env, secrets.token_key_file, source=source, key_name="token_key",
                          environ=environ)
    if patient is None or patient != token:
        return None
    return (f"{source}: secrets.token_key_file: the refresh-token key is the patient key (one key, two purposes) "
            f"-- fix: give the refresh tokens a new key (stop the adapter, remove {secrets.token_key_file or 'the token key file'} "
            f"or set {secrets.token_key_env} to a new Fernet key, start it, then load each prescriber's refresh token "
            "again with adapter auth set-refresh-token); keep the patient key as it is")


def _existing_key(env_name: str, file_name: str | None, *, source: str, key_name: str,
                  environ: Mapping[str, str] | None) -> bytes | None:
    try:
        value = _from_env(env_name, source=source, key_name=key_name, environ=environ)
        if value is None and file_name and Path(file_name).exists():
            value = _from_file(Path(file_name), source=source, key_name=key_name)
    except ConfigError:
        return None  # reported by key_problems
    return value


def _create_key_file(path: Path, key: bytes) -> None:
    """Write ``key`` to a new mode-600 file; a file another process made first is kept."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)


def key_problems(env_name: str, file_name: str | None, *, source: str, key_name: str,
                 environ: Mapping[str, str] | None = None, required: bool = True) -> list[str]:
    """What ``load_key`` would refuse, without creating anything (for ``adapter config check``):
    an absent file is fine, ``load_key`` makes it; neither variable nor file is a problem only
    when the key is ``required``."""
    try:
        if _from_env(env_name, source=source, key_name=key_name, environ=environ) is not None:
            return []
        if not file_name:
            if required:
                load_key(env_name, file_name, source=source, key_name=key_name, environ=environ)
        elif Path(file_name).exists():
            _from_file(Path(file_name), source=source, key_name=key_name)
    except ConfigError as exc:
        return list(exc.lines)
    return []


def payload_key_problems(env_name: str, *, source: str, environ: Mapping[str, str] | None = None,
                         required: bool = False) -> list[str]:
    """The payload key (``secrets.payload_key_env``): unset means no encryption at rest, a
    problem only when ``secrets.payload_key_required``; set, it must be a Fernet key, not empty
    (an empty one would silently mean no encryption)."""
    environ = os.environ if environ is None else environ
    raw = environ.get(env_name)
    generate = (f"export {env_name}=$(python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())')")
    if raw is None:
        if required:
            return [f"{source}: secrets.payload_key_env: environment variable {env_name} is not set and "
                    f"secrets.payload_key_required is true -- fix: {generate} in every process that opens the "
                    "store or the embedded queue (keep a copy: what is stored under it is unreadable without it)"]
        return []
    fix = f"{generate}, or unset it to store bodies unencrypted"
    if not raw.strip():
        return [f"{source}: secrets.payload_key_env: environment variable {env_name} is set but empty -- fix: {fix}"]
    try:
        Fernet(raw.encode())  # as adapter.store.at_rest reads it
    except ValueError:
        return [f"{source}: secrets.payload_key_env: environment variable {env_name} is not a Fernet key "
                f"(32 url-safe base64-encoded bytes) -- fix: {fix}"]
    return []


def _from_env(env_name: str, *, source: str, key_name: str, environ: Mapping[str, str] | None) -> bytes | None:
    value = (os.environ if environ is None else environ).get(env_name)
    if value is None:
        return None
    if not value.strip():
        raise ConfigError([f"{source}: secrets.{key_name}_env: environment variable {env_name} is set but empty "
                           f"-- fix: export {env_name}=<key> (not empty), or unset it to use secrets.{key_name}_file"])
    return value.encode()


_LOST_KEY = {"token_key": "refresh tokens stored under the lost key must then be loaded again",
             "patient_ref_key": "events stored under the lost key are then no longer recognised as duplicates of "
                                "their redeliveries, and patients' pseudonyms change"}


def _from_file(path: Path, *, source: str, key_name: str) -> bytes:
    where = f"{source}: secrets.{key_name}_file: {path}"
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigError([f"{where} is readable by others (mode {mode:o}) -- fix: chmod 600 {path}"])
    try:
        key = read_bounded_bytes(path, KEY_FILE_MAX_BYTES, "key file").strip()
    except InputLimitError as exc:
        raise ConfigError([f"{where}: {exc.reason}"]) from None
    except OSError as exc:
        raise ConfigError([f"{where} cannot be read ({exc.strerror}) -- fix: make it a mode-600 file holding the key"]
                          ) from None
    if not key:
        raise ConfigError([f"{where} is empty -- fix: write the key into it, or remove it to have a new one made "
                           f"({_LOST_KEY.get(key_name, 'what was stored under the lost key is lost')})"])
    return key
