"""Patient data at rest: files private to the adapter's user, and optional encryption of what
carries patient data -- event bodies, submission payloads and URL parameters in the store, message
bodies in the embedded queue.

When the environment variable named by ``secrets.payload_key_env`` (default
``ADAPTER_PAYLOAD_KEY``) holds a Fernet key, these are written encrypted; what was written before
the key was set stays readable, so it can be switched on at any time. The key is read from the
environment, not the config file, so every process that opens the store or the queue (the
adapter, the CLI, the HIS-side publisher, Airflow's tasks) reads the same rows the same way.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import JSON, Text, TypeDecorator

DEFAULT_KEY_ENV = "ADAPTER_PAYLOAD_KEY"
_TEXT_PREFIX = "enc:v1:"
_JSON_MARK = "__encrypted_v1__"
_key_env = DEFAULT_KEY_ENV
_cached: tuple[str, Fernet] | None = None
log = logging.getLogger("adapter.store")


class PayloadKeyError(RuntimeError):
    """A stored value is encrypted but no (or another) key is available."""


def use_key_env(name: str) -> None:
    """Which environment variable holds the key (from config ``secrets.payload_key_env``)."""
    global _key_env
    _key_env = name


def _fernet() -> Fernet | None:
    global _cached
    raw = os.environ.get(_key_env, "")
    if not raw:
        return None
    if _cached is None or _cached[0] != raw:
        _cached = (raw, Fernet(raw.encode()))
    return _cached[1]


def _encrypt(text: str) -> str | None:
    fernet = _fernet()
    return fernet.encrypt(text.encode()).decode() if fernet else None


def _decrypt(token: str) -> str:
    fernet = _fernet()
    if fernet is None:
        raise PayloadKeyError(f"stored data is encrypted: set {_key_env} to the payload key")
    try:
        return fernet.decrypt(token.encode()).decode()
    except InvalidToken:
        raise PayloadKeyError(f"stored data is encrypted with another key than the one in {_key_env}") from None


def seal_bytes(data: bytes) -> str | None:
    """``data`` encrypted, as text that ``is_sealed`` recognises; None when no key is set."""
    fernet = _fernet()
    return _TEXT_PREFIX + fernet.encrypt(data).decode() if fernet else None


def is_sealed(data: str | bytes) -> bool:
    return (data.encode() if isinstance(data, str) else data).startswith(_TEXT_PREFIX.encode())


def open_sealed(sealed: str | bytes) -> bytes:
    """What ``seal_bytes`` sealed; ``PayloadKeyError`` without the key it was sealed with."""
    text = sealed.decode("ascii", "replace") if isinstance(sealed, bytes) else sealed
    fernet = _fernet()
    if fernet is None:
        raise PayloadKeyError(f"the message is encrypted: set {_key_env} to the payload key it was written with")
    try:
        return fernet.decrypt(text[len(_TEXT_PREFIX):].encode())
    except (InvalidToken, ValueError):
        raise PayloadKeyError(f"the message is encrypted with another key than the one in {_key_env}: set the "
                              "payload key it was written with") from None


def private_sqlite_file(path: Path) -> None:
    """Make a SQLite database file (the store, the embedded queue) mode 600 before anything is
    written to it: created empty with that mode when absent (SQLite gives its -wal and -shm files
    the mode of the database file), tightened with a log line when an older version left it or its
    -wal/-shm readable by others. A file this user cannot change is only logged."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        return
    except FileExistsError:
        pass
    for member in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            mode = member.stat().st_mode & 0o777
        except FileNotFoundError:
            continue
        if mode & 0o077:
            try:
                member.chmod(mode & 0o700)
                log.warning("%s was readable by others (mode %o): now mode %o", member, mode, mode & 0o700)
            except OSError as exc:
                log.warning("%s is readable by others (mode %o) and cannot be changed (%s): chmod 600 it",
                            member, mode, exc.strerror)


class EncryptedText(TypeDecorator[str]):
    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        if value is None:
            return None
        token = _encrypt(value)
        return _TEXT_PREFIX + token if token is not None else value

    def process_result_value(self, value: str | None, dialect: Any) -> str | None:
        if value is not None and value.startswith(_TEXT_PREFIX):
            return _decrypt(value[len(_TEXT_PREFIX):])
        return value


class EncryptedJSON(TypeDecorator[Any]):
    """JSON in, JSON out; stored as ``{"__encrypted_v1__": token}`` when the key is set."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        if value is None:
            return None
        token = _encrypt(json.dumps(value, ensure_ascii=False))
        return {_JSON_MARK: token} if token is not None else value

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        if isinstance(value, dict) and set(value) == {_JSON_MARK}:
            return json.loads(_decrypt(value[_JSON_MARK]))
        return value
