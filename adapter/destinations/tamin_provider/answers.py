"""Reading the dispensing and paraclinic answers (research s.8/s.9).

Business errors come in the body as ``problems[]`` (``error_Code``, ``error_Msg``,
``complemantary_Msg`` -- sic, ``complementary_Msg`` accepted too), usually with
``hasError`` true; clients join the messages. The two families spell the same things
differently (``headeprscid`` / ``eprsC_ID``, ``requestId`` / ``requestID``): the readers take
either. ``registeredRequests`` (the requests this provider already registered for the
prescription, with the HIS's ``hisRequestId``) is simulator-defined: see docs/tamin-wire.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from adapter.destinations.outcome import Outcome, OutcomeClass
from adapter.redact import redact_text


@dataclass(frozen=True)
class Detail:
    detail_id: str
    code: str
    remaining: int | None


@dataclass(frozen=True)
class Registered:
    request_id: str
    his_request_id: str | None
    confirmed: bool
    prices: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Fetched:
    head_id: str
    tracking_code: str | None
    details: list[Detail]
    requests: list[Registered]

    def ours(self, his_request_id: str | None) -> Registered | None:
        return next((r for r in self.requests if his_request_id and r.his_request_id == his_request_id), None)


_PRICE_KEYS = {"requestPrice": "request_price", "patientAmount": "patient_amount", "regdate": "registered_at"}


def _first(node: dict[str, Any], *names: str) -> Any:
    return next((node[n] for n in names if node.get(n) not in (None, "")), None)


def _data(answer: Any) -> dict[str, Any]:
    data = answer.get("data", answer) if isinstance(answer, dict) else None
    return data if isinstance(data, dict) else {}


def _problem_nodes(answer: Any) -> list[dict[str, Any]]:
    data = _data(answer)
    nested = data.get("data")
    inner = nested if isinstance(nested, dict) else {}
    for node in (data, inner, answer if isinstance(answer, dict) else {}):
        problems = node.get("problems")
        if isinstance(problems, list) and problems:
            return [p for p in problems if isinstance(p, dict)]
    return []


def problems_message(answer: Any) -> str | None:
    """The insurer's business error, joined and masked; None when the answer reports none."""
    problems = _problem_nodes(answer)
    if not problems:
        return "the answer has hasError but no problems[]" if _data(answer).get("hasError") is True else None
    parts = []
    for problem in problems:
        texts = [problem.get("error_Msg"), problem.get("complemantary_Msg") or problem.get("complementary_Msg")]
        text = " | ".join(str(t) for t in texts if t)
        code = problem.get("error_Code")
        parts.append(f"{code}: {text}" if code not in (None, "") else text)
    return redact_text("; ".join(parts))


def _rejected(message: str, what: str) -> Outcome:
    return Outcome(OutcomeClass.rejected, f"Tamin refused the {what}: {message}")


def _registered(node: dict[str, Any]) -> Registered | None:
    request_id = _first(node, "requestId", "requestID", "request_id")
    if request_id is None:
        return None
    prices = {ours: node[theirs] for theirs, ours in _PRICE_KEYS.items() if node.get(theirs) is not None}
    his = _first(node, "hisRequestId")
    return Registered(str(request_id), str(his) if his is not None else None, bool(node.get("confirmed")), prices)


def _detail(node: dict[str, Any]) -> Detail | None:
    detail_id, code = _first(node, "detailId", "detailID"), _first(node, "drugCode", "paR_TAREF_CODE", "srvCode")
    if detail_id is None or code is None:
        return None
    remaining = _first(node, "remainingCount", "remainingQty")
    return Detail(str(detail_id), str(code), int(remaining) if remaining is not None else None)


def read_fetch(answer: Any) -> Fetched | Outcome:
    """The one prescription in ``data.list``, or a rejection with the insurer's message."""
    problem = problems_message(answer)
    if problem:
        return _rejected(problem, "prescription lookup")
    rows = _data(answer).get("list")
    heads = [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []
    if not heads:
        return _rejected("no prescription with this national code and tracking code", "prescription lookup")
    head = heads[0]
    head_id = _first(head, "headeprscid", "eprsC_ID", "head_EPRSC_ID")
    if head_id is None:
        return Outcome(OutcomeClass.rejected, "the prescription lookup answered without a head id")
    tracking = _first(head, "trackingCode")
    details = [d for n in (_first(head, "finalDetailsPresc", "details") or []) if isinstance(n, dict) and (d := _detail(n))]
    requests = [r for n in (head.get("registeredRequests") or []) if isinstance(n, dict) and (r := _registered(n))]
    return Fetched(str(head_id), str(tracking) if tracking is not None else None, details, requests)


def _result_node(answer: Any) -> dict[str, Any]:
    data = _data(answer)
    inner = data.get("data")
    return inner if isinstance(inner, dict) else data


def read_submit(answer: Any, what: str) -> Outcome:
    """``data.data.requestId`` (pharmacy) / ``requestID`` (paraclinic); prices when given."""
    problem = problems_message(answer)
    if problem:
        return _rejected(problem, what)
    registered = _registered(_result_node(answer))
    if registered is None:
        return Outcome(OutcomeClass.rejected, f"the {what} answer has neither a request id nor problems[]")
    return Outcome(OutcomeClass.accepted, result={"request_id": registered.request_id, **registered.prices})


def read_confirm(answer: Any, what: str) -> Outcome:
    problem = problems_message(answer)
    if problem:
        return _rejected(problem, what)
    return Outcome(OutcomeClass.accepted, result={"confirmed": True})
