"""Optional encryption at rest of what carries patient data: event bodies, submission
payloads and URL parameters.

When the environment variable named by ``secrets.payload_key_env`` (default
``ADAPTER_PAYLOAD_KEY``) holds a Fernet key, these columns are written encrypted; rows
written before the key was set stay readable, so it can be switched on at any time. The key
is read from the environment, not the config file, so every process that opens the store
(the adapter, the CLI, Airflow's tasks) reads the same rows the same way.
"""

from __future__ import annotations

import json
import os
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import JSON, Text, TypeDecorator

DEFAULT_KEY_ENV = "ADAPTER_PAYLOAD_KEY"
_TEXT_PREFIX = "enc:v1:"
_JSON_MARK = "__encrypted_v1__"
_key_env = DEFAULT_KEY_ENV
_cached: tuple[str, Fernet] | None = None


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
