"""SEPAS part of ``reconcile_submissions``: accepted ``sepas`` submissions against DITAS.

Each SEPAS record the adapter saved keeps, in its submission's result, the SHA-256 of the
plaintext XML (``document_hash``), the facility GUID (``location_id``), the message name and
the ``composition_uid`` SEPAS gave it. The DITAS reconciliation lookup
(``POST .../gwSepasHospital/lookup {SystemID, LocationID, ContentType, DocumentHash}``,
docs/sepas-wire.md; simulator contract, not a public DITAS endpoint) answers the record's
ResultVO or null:

* ResultVO with our CompositionUID -> ``confirmed`` (``match``);
* null -> ``discrepancy`` ``missing_at_insurer``;
* another CompositionUID -> ``discrepancy`` ``composition_differs``;
* a submission without a document hash (saved before the adapter kept it) cannot be looked
  up: ``discrepancy`` ``no_document_hash`` (a person checks it by hand).

Verdicts go to ``reconciliation_results`` (destination ``sepas``, ``sub:<id>``) and the
submission state, exactly like Tamin's. Calls happen before the write transaction; errors
are :class:`InsurerTransient` / :class:`InsurerPermanent` for the DAG's retry policy.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from adapter.config import TlsConfig
from adapter.destinations.auth import PasswordGrantProvider, TokenCache
from adapter.destinations.http import Endpoint, Exchange, Request
from adapter.destinations.sepas.client import DESTINATION, lookup_body
from adapter.destinations.sepas.messages import MessageProblem, spec_for
from adapter.reconcile.common import Interval, accepted_in, chunks, move, upsert
from adapter.reconcile.insurer import InsurerPermanent, answer_or_raise, endpoint_http
from adapter.reconcile.models import ReconciliationResult
from adapter.store.models import Submission
from adapter.store.states import RECONCILABLE

ACTOR = "airflow:reconcile_submissions"
OPERATIONS = ("create", "update")
PRINCIPAL = "ditas"


@dataclass(frozen=True)
class DitasEndpoint:
    """From the Airflow Connection ``ditas`` (see ``dagkit.ditas_endpoint``)."""

    base_url: str
    client_id: str
    client_secret: str
    username: str
    password: str
    system_id: str
    pid: str
    token_path: str = "/oauth/token"
    lookup_path: str = "/api/client/apim/v1/sepas/gwSepasHospital/lookup"
    timeout_s: float = 30.0
    tls: TlsConfig = field(default_factory=TlsConfig)


class DitasLookupClient:
    """The DITAS reconciliation lookup on the one exchange (``adapter.destinations.http``)."""

    def __init__(self, endpoint: DitasEndpoint, http: httpx.Client | None = None):
        self._endpoint = endpoint
        self._http = http or endpoint_http(endpoint.timeout_s, endpoint.tls, "ditas")
        self._owns_http = http is None
        provider = PasswordGrantProvider(self._http, endpoint.base_url.rstrip("/") + endpoint.token_path,
                                         endpoint.client_id, endpoint.client_secret, endpoint.username,
                                         endpoint.password)
        self._exchange = Exchange(self._http, Endpoint(endpoint.base_url, min(endpoint.timeout_s, 10),
                                                       endpoint.timeout_s, "bearer",
                                                       auth_hint="check the DITAS user and client"),
                                  TokenCache(provider, leeway_s=10))
        self.calls = 0

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> "DitasLookupClient":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def lookup(self, content_type: str, document_hash: str, location_id: str) -> dict[str, Any] | None:
        """The record's ResultVO, or ``None`` when SEPAS holds no record with this document hash."""
        path = self._endpoint.lookup_path
        body = lookup_body(self._endpoint.system_id, content_type, document_hash, location_id)
        self.calls += 1
        parsed = answer_or_raise(self._exchange.send(Request("POST", path, path, json=body, principal=PRINCIPAL,
                                                             headers={"pid": self._endpoint.pid}, applies=False)),
                                 path, "check the ditas connection")
        result = parsed.get("result") if isinstance(parsed, dict) else None
        if not isinstance(result, dict):
            raise InsurerPermanent(f"{path}: answer without a result object")
        data = result.get("data")
        return data if isinstance(data, dict) and data.get("CompositionUID") else None


def plan(sessions: sessionmaker[Session], interval: Interval, batch_size: int = 100) -> list[list[int]]:
    """SEPAS submissions first accepted in the interval, in batches."""
    with sessions() as session:
        ids = [s.id for s in accepted_in(session, interval, operations=OPERATIONS, destination=DESTINATION)]
    return chunks(ids, batch_size)


def _judge(sub: Submission, found: dict[str, Any] | None, looked_up: bool) -> tuple[str, str, dict[str, Any] | None]:
    ours = (sub.result or {}).get("composition_uid")
    if not looked_up:
        return "discrepancy", "no_document_hash", {"why": "saved without a stored document hash: check by hand"}
    if found is None:
        return "discrepancy", "missing_at_insurer", {"why": "SEPAS has no record with this document hash"}
    theirs = found.get("CompositionUID")
    if ours and theirs != ours:
        return "discrepancy", "composition_differs", {"ours": ours, "insurer": theirs}
    return "confirmed", "match", None


def reconcile_batch(sessions: sessionmaker[Session], client: DitasLookupClient, submission_ids: list[int],
                    interval: Interval) -> dict[str, int]:
    with sessions() as session:
        subs = list(session.scalars(select(Submission).where(Submission.id.in_(submission_ids)).order_by(Submission.id)))
        asks = {s.id: dict(s.result or {}, _params=dict(s.params or {})) for s in subs}
    # -- DITAS calls (no transaction open) --
    answers: dict[int, tuple[dict[str, Any] | None, bool]] = {}
    for sid, result in asks.items():
        digest, location = result.get("document_hash"), result.get("location_id")
        message = result.get("message") or result["_params"].get("message")
        try:
            content_type = spec_for(str(message)).content_type
        except MessageProblem:
            content_type = None
        if not (digest and location and content_type):
            answers[sid] = (None, False)
            continue
        answers[sid] = (client.lookup(content_type, str(digest), str(location)), True)
    counts: Counter[str] = Counter()
    stamp = {"interval_start": interval.start, "interval_end": interval.end, "run_id": interval.run_id}
    with sessions.begin() as session:
        for sub in session.scalars(select(Submission).where(Submission.id.in_(submission_ids)).order_by(Submission.id)):
            found, looked_up = answers.get(sub.id, (None, False))
            verdict, kind, difference = _judge(sub, found, looked_up)
            counts[verdict] += 1
            values = {"submission_id": sub.id, "subject_key": sub.subject_key, "operation": sub.operation,
                      "head_id": None, "tracking_code": (sub.result or {}).get("composition_uid"),
                      "verdict": verdict, "kind": kind, "difference": difference}
            key = {"destination": DESTINATION, "item_key": f"sub:{sub.id}"}
            counts["row_" + upsert(session, ReconciliationResult, key, values, stamp)] += 1
            if sub.state in RECONCILABLE and move(session, sub, verdict, actor=ACTOR,
                                                  reason=f"SEPAS reconciliation {interval.run_id}: {kind}"):
                counts["state_moves"] += 1
    return dict(counts)
