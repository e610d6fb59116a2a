"""Local keys: the Fernet key for stored refresh tokens and the HMAC key for patient pseudonyms.

Taken from an environment variable when set; otherwise from a file, created with mode 600
on first use (the embedded default), so a restart keeps the same keys.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet

from adapter.config import ConfigError


def load_key(env_name: str, file_name: str | None, *, source: str, key_name: str) -> bytes:
    value = os.environ.get(env_name)
    if value:
        return value.encode()
    if not file_name:
        raise ConfigError([f"{source}: secrets.{key_name}: environment variable {env_name} is not set and no file "
                           f"is configured -- fix: export {env_name}=$(python -c 'from cryptography.fernet import "
                           f"Fernet; print(Fernet.generate_key().decode())')"])
    path = Path(file_name)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(Fernet.generate_key())
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigError([f"{source}: secrets.{key_name}: {file_name} is readable by others (mode {mode:o}) "
                           f"-- fix: chmod 600 {file_name}"])
    return path.read_bytes().strip()
