"""TLS contexts from the config's certificate files, loaded at start-up with errors that name
file, key and fix (``ConfigError``).

* ``client_context``: the adapter's HTTPS connections to one insurer (``destinations.<name>.tls``):
  the CA bundle that verifies the insurer, and the client certificate the adapter presents;
* ``server_context``: the status service's HTTPS (``status.tls_cert_file`` / ``tls_key_file``).

A private key file must be mode 600, like every secret file of the adapter.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from adapter.config import ConfigError, TlsConfig


def _existing(file_name: str, key: str, what: str, source: str) -> Path:
    path = Path(file_name)
    if not path.is_file():
        raise ConfigError([f"{source}: {key}: {file_name} does not exist -- fix: point {key} at the {what}"])
    return path


def _private(file_name: str, key: str, source: str) -> None:
    mode = _existing(file_name, key, "PEM private key", source).stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigError([f"{source}: {key}: {file_name} is readable by others (mode {mode:o}) -- fix: "
                           f"chmod 600 {file_name}"])


def _load_chain(context: ssl.SSLContext, cert_file: str, key_file: str | None, keys: tuple[str, str],
                source: str) -> None:
    """``context.load_cert_chain`` with the files checked first; ``keys``: the config keys of both."""
    cert_key, key_key = keys
    _existing(cert_file, cert_key, "PEM certificate", source)
    if key_file:
        _private(key_file, key_key, source)
    try:
        context.load_cert_chain(cert_file, key_file or None)
    except (ssl.SSLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or type(exc).__name__
        raise ConfigError([f"{source}: {cert_key}: {cert_file} (with {key_key}: {key_file or 'the key in the same file'}) "
                           f"cannot be loaded ({reason}) -- fix: give a PEM certificate and its matching PEM "
                           "private key (unencrypted)"]) from None


def client_context(tls: TlsConfig, prefix: str, source: str) -> ssl.SSLContext | None:
    """The context for one destination's connections, or None when ``tls`` changes nothing (the
    HTTP client's default verification against the system's CAs). ``prefix``: the section's key,
    e.g. ``destinations.tamin.tls``."""
    if not tls.ca_file and not tls.client_cert_file:
        return None
    if tls.ca_file:
        _existing(tls.ca_file, f"{prefix}.ca_file", "PEM CA bundle", source)
        try:
            context = ssl.create_default_context(cafile=tls.ca_file)
        except (ssl.SSLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or type(exc).__name__
            raise ConfigError([f"{source}: {prefix}.ca_file: {tls.ca_file} cannot be loaded as a CA bundle ({reason}) "
                               "-- fix: give the PEM file of the CA certificate(s) that issued the insurer's"]) from None
    else:
        context = _default_client_context()
    if tls.client_cert_file:
        _load_chain(context, tls.client_cert_file, tls.client_key_file,
                    (f"{prefix}.client_cert_file", f"{prefix}.client_key_file"), source)
    return context


def client_verify(tls: TlsConfig, prefix: str, source: str) -> ssl.SSLContext | bool:
    """``client_context`` as httpx's ``verify``: the context, or True (its default verification)."""
    context = client_context(tls, prefix, source)
    return context if context is not None else True


def _default_client_context() -> ssl.SSLContext:
    """What the HTTP client verifies with by default (certifi's bundle when installed)."""
    try:
        import certifi
    except ImportError:  # pragma: no cover - certifi comes with httpx
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())


def server_context(cert_file: str | None, key_file: str | None, prefix: str, source: str) -> ssl.SSLContext | None:
    """The status service's server context, or None when neither file is set. Both are required
    together; ``prefix``: the section's key (``status``)."""
    if not cert_file and not key_file:
        return None
    if not cert_file or not key_file:
        given, missing = ("tls_cert_file", "tls_key_file") if cert_file else ("tls_key_file", "tls_cert_file")
        raise ConfigError([f"{source}: {prefix}.{missing}: {prefix}.{given} is set without it -- fix: set both "
                           f"{prefix}.tls_cert_file and {prefix}.tls_key_file"])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(context, cert_file, key_file, (f"{prefix}.tls_cert_file", f"{prefix}.tls_key_file"), source)
    return context
