"""Prescribers' refresh tokens, encrypted at rest with Fernet, keyed by a pseudonym.

One key, one purpose: the Fernet key (``secrets.token_key_*``) encrypts; the pseudonym of a
prescriber's national code is an HMAC with a key *derived* from it (HKDF-SHA256, its own label),
never the Fernet key itself. Rows written before that (pseudonym keyed by the Fernet key) are
found under their old reference and moved to the new one on first use.
"""

from __future__ import annotations

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from adapter.redact import pseudonym
from adapter.store.models import StoredRefreshToken
from adapter.store.types import utcnow

_REF_KEY_LABEL = b"adapter refresh-token principal reference v1"


def principal_ref_key(fernet_key: bytes) -> bytes:
    """The HMAC key of prescribers' pseudonyms, derived from the refresh-token Fernet key."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_REF_KEY_LABEL).derive(fernet_key)


class DbRefreshTokenStore:
    def __init__(self, sessions: sessionmaker[Session], fernet_key: bytes, destination: str):
        self._sessions = sessions
        self._fernet = Fernet(fernet_key)
        self._destination = destination
        self._ref_key = principal_ref_key(fernet_key)
        self._legacy_ref_key = fernet_key  # the pseudonym key of rows stored before the derived one

    def _ref(self, principal: str) -> str:
        return pseudonym(principal, self._ref_key)

    def get(self, principal: str) -> str | None:
        with self._sessions() as session:
            row = session.get(StoredRefreshToken, (self._destination, self._ref(principal)))
            if row is None:
                row = self._moved_from_legacy(session, principal)
            return self._fernet.decrypt(row.token_encrypted.encode()).decode() if row else None

    def put(self, principal: str, refresh_token: str) -> None:
        """Store or rotate; committed at once so a crash never loses the newest token."""
        with self._sessions() as session:
            key = (self._destination, self._ref(principal))
            row = session.get(StoredRefreshToken, key) or StoredRefreshToken(
                destination=self._destination, principal_ref=key[1], token_encrypted="")
            row.token_encrypted = self._fernet.encrypt(refresh_token.encode()).decode()
            row.updated_at = utcnow()
            session.add(row)
            legacy = session.get(StoredRefreshToken, (self._destination, pseudonym(principal, self._legacy_ref_key)))
            if legacy is not None:
                session.delete(legacy)
            session.commit()

    def _moved_from_legacy(self, session: Session, principal: str) -> StoredRefreshToken | None:
        """The row stored under the old reference, re-keyed (committed) under the new one."""
        legacy = session.get(StoredRefreshToken, (self._destination, pseudonym(principal, self._legacy_ref_key)))
        if legacy is None:
            return None
        moved = StoredRefreshToken(destination=self._destination, principal_ref=self._ref(principal),
                                   token_encrypted=legacy.token_encrypted, updated_at=legacy.updated_at)
        session.delete(legacy)
        session.add(moved)
        try:
            session.commit()
        except (IntegrityError, StaleDataError):  # another process moved it first
            session.rollback()
            return session.get(StoredRefreshToken, (self._destination, self._ref(principal)))
        return moved
