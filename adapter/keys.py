"""Local keys: the Fernet key for stored refresh tokens and the HMAC key for patient pseudonyms.

Taken from an environment variable when set; otherwise from a file, created with mode 600
on first use (the embedded default), so a restart keeps the same keys.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from cryptography.fernet import Fernet

from adapter.config import ConfigError


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
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(Fernet.generate_key())
    return _from_file(path, source=source)


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
            _from_file(Path(file_name), source=source)
    except ConfigError as exc:
        return list(exc.lines)
    return []


def payload_key_problems(env_name: str, *, source: str, environ: Mapping[str, str] | None = None) -> list[str]:
    """The optional payload key (``secrets.payload_key_env``): unset means no encryption at rest;
    set, it must be a Fernet key, not empty (an empty one would silently mean no encryption)."""
    environ = os.environ if environ is None else environ
    raw = environ.get(env_name)
    if raw is None:
        return []
    fix = (f"export {env_name}=$(python -c 'from cryptography.fernet import Fernet; "
           "print(Fernet.generate_key().decode())'), or unset it to store bodies unencrypted")
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
                           f"-- fix: export {env_name}=<key> (not empty), or unset it to use secrets.token_key_file"])
    return value.encode()


def _from_file(path: Path, *, source: str) -> bytes:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigError([f"{source}: secrets.token_key_file: {path} is readable by others (mode {mode:o}) "
                           f"-- fix: chmod 600 {path}"])
    try:
        key = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError([f"{source}: secrets.token_key_file: {path} cannot be read ({exc.strerror}) -- fix: make it "
                           "a mode-600 file holding the key"]) from None
    if not key:
        raise ConfigError([f"{source}: secrets.token_key_file: {path} is empty -- fix: write the key into it, or "
                           "remove it to have a new one made (refresh tokens stored under the lost key must then be "
                           "loaded again)"])
    return key
