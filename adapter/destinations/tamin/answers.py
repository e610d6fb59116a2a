"""Reading Tamin's answers. Business errors arrive in a 200 body (``error_Code``,
``error_Msg``), not as HTTP statuses; the duplicate answer (``error_Code`` 304) carries
the existing ids inside its Persian message."""

from __future__ import annotations

import re
from typing import Any

from adapter.destinations.outcome import Outcome, OutcomeClass
from adapter.events.digits import to_ascii_digits
from adapter.redact import redact_text

DUPLICATE_CODE = "304"
_HEAD_ID = re.compile(r"شناسه\s*(?:نسخه)?\s*[:：]?\s*(\d+)")
_TRACKING = re.compile(r"کد\s*\u200c?\s*رهگیری\s*[:：]?\s*(\d+)")


def _data(answer: Any) -> Any:
    return answer.get("data", answer) if isinstance(answer, dict) else answer


def _result(answer: Any) -> dict[str, Any]:
    """The create result sits at ``data.result`` (pilot) or flat; read both (research §11.4)."""
    data = _data(answer)
    for node in (data, answer):
        result = node.get("result") if isinstance(node, dict) else None
        if isinstance(result, dict):
            return result
    return data if isinstance(data, dict) else {}


def _message(result: dict[str, Any]) -> str:
    parts = [result.get("error_Msg"), result.get("complemantary_Msg") or result.get("complementary_Msg")]
    return redact_text(" | ".join(str(p) for p in parts if p))


def _problems(answer: Any) -> str:
    data = _data(answer)
    problems = data.get("problems") if isinstance(data, dict) else None
    if not problems:
        return ""
    return redact_text("; ".join(str(p.get("error_Msg", "")) for p in problems if isinstance(p, dict)))


def duplicate_ids(message: str) -> tuple[str, str] | None:
    """Head id and tracking code from the 304 message, or None when they are not both there."""
    text = to_ascii_digits(message)
    head, tracking = _HEAD_ID.search(text), _TRACKING.search(text)
    if head and tracking:
        return head.group(1), tracking.group(1)
    return None


def read_create(answer: Any) -> Outcome:
    result = _result(answer)
    code = str(result.get("error_Code") or "").strip()
    head, tracking = result.get("head_EPRSC_ID"), result.get("trackingCode")
    if not code and head not in (None, "") and tracking not in (None, ""):
        return Outcome(OutcomeClass.accepted, result={"head_id": str(head), "tracking_code": str(tracking)})
    if code == DUPLICATE_CODE:
        ids = duplicate_ids(str(result.get("error_Msg") or ""))
        if ids:
            return Outcome(OutcomeClass.accepted, "already registered at Tamin (304): took the existing ids",
                           result={"head_id": ids[0], "tracking_code": ids[1], "duplicate_answer": True})
        return Outcome(OutcomeClass.rejected, f"304 duplicate without readable ids: {_message(result)}")
    if code:
        return Outcome(OutcomeClass.rejected, f"Tamin error {code}: {_message(result)}",
                       result={"error_code": code, "error_message": _message(result)})
    return Outcome(OutcomeClass.rejected, f"answer without ids or error code: {_problems(answer) or 'empty result'}")


def read_change(answer: Any, what: str) -> Outcome:
    """Edit and delete answer ``data.statusCode`` "200" (a string) on success."""
    data = _data(answer)
    if isinstance(data, dict) and str(data.get("statusCode", "")) == "200":
        return Outcome(OutcomeClass.accepted, result={"status_code": "200"})
    result = data if isinstance(data, dict) else {}
    code = str(result.get("error_Code") or result.get("statusCode") or "?")
    message = _message(result) or _problems(answer)
    return Outcome(OutcomeClass.rejected, f"Tamin refused the {what} ({code}): {message}",
                   result={"error_code": code, "error_message": message})


def read_eligibility(answer: Any) -> Outcome:
    data = _data(answer)
    if not isinstance(data, dict) or "hasDeserve" not in data:
        return Outcome(OutcomeClass.rejected, "eligibility answer without hasDeserve")
    if data.get("hasDeserve") is True:
        return Outcome(OutcomeClass.accepted, result={"eligible": True, "hid": data.get("hid"),
                                                      "insurance_type": data.get("insuranceType")})
    message = redact_text(str(data.get("errMsg") or "hasDeserve false"))
    return Outcome(OutcomeClass.rejected, f"not eligible: {message}", result={"eligible": False, "error_message": message})
