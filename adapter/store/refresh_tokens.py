"""Prescribers' refresh tokens, encrypted at rest with Fernet, keyed by a pseudonym."""

from __future__ import annotations

from cryptography.fernet import Fernet
from sqlalchemy.orm import Session, sessionmaker

from adapter.redact import pseudonym
from adapter.store.models import StoredRefreshToken
from adapter.store.types import utcnow


class DbRefreshTokenStore:
    def __init__(self, sessions: sessionmaker[Session], fernet_key: bytes, destination: str):
        self._sessions = sessions
        self._fernet = Fernet(fernet_key)
        self._destination = destination
        self._ref_key = fernet_key

    def _ref(self, principal: str) -> str:
        return pseudonym(principal, self._ref_key)

    def get(self, principal: str) -> str | None:
        with self._sessions() as session:
            row = session.get(StoredRefreshToken, (self._destination, self._ref(principal)))
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
            session.commit()
