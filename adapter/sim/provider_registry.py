"""Provider side of the Tamin simulator: dispensing (pharmacy) and paraclinic, on the
prescriptions SendEpresc registered. Mixed into ``TaminRegistry`` (same lock, same state).

Rules (docs/tamin-wire.md, "Dispensing and paraclinic"): the prescription is found by the
patient's national code + tracking code and must be active; a drug prescription (type 1) is
served only by a pharmacy, a paraclinic one (type 2) only by a paraclinic centre; every
line names a line of the prescription with its code; a quantity may not exceed what remains
of that line; business errors answer HTTP 200 with ``hasError`` and ``problems[]``.
Registrations are counted per ``X-Idempotency-Key``, so a test can prove none came twice.
"""

from __future__ import annotations

import copy
import re
import time
from dataclasses import dataclass, field
from typing import Any

from adapter.sim import tamin_rules as rules
from adapter.sim.prices import unit_price

FAMILY_TYPES = {"pharmacy": 1, "paraclinic": 2}  # prescTypeId each family serves

ERR_FETCH = 9900002
MSG_FETCH = "خطا در دریافت نسخه"  # research s.8
MSG_NOT_DRUG = "نسخه دارویی نیست و در داروخانه قابل ارائه نمی باشد"  # sim-defined
MSG_NOT_PARA = "نسخه پاراکلینیک نیست و در مرکز پاراکلینیک قابل ارائه نمی باشد"  # sim-defined
MSG_NO_LINE = "قلم درخواستی در نسخه وجود ندارد"  # sim-defined
MSG_TOO_MANY = "تعداد درخواستی بیش از مانده نسخه است"  # sim-defined
MSG_BAD_BARCODE = "کد رهگیری (TTAC) دارو معتبر نمی باشد"  # sim-defined
MSG_BAD_IRC = "کد IRC دارو معتبر نمی باشد"  # sim-defined
MSG_WRONG_PATIENT = "کد ملی بیمار با نسخه مطابقت ندارد"  # sim-defined
MSG_NO_REQUEST = "درخواست یافت نشد"  # sim-defined
MSG_NO_PROVIDER = "شناسه مرکز ارائه دهنده خدمت وارد نشده است"  # sim-defined
MSG_TYPE_MISMATCH = "نوع خدمت با نوع درخواست پاراکلینیک مطابقت ندارد"  # sim-defined
MSG_EMPTY = "هیچ قلمی برای ثبت ارسال نشده است"  # sim-defined

_SIXTEEN = re.compile(r"^\d{16}$")


class ProviderRefusal(Exception):
    def __init__(self, message: str, complementary: str = "", code: int = 9900100):
        super().__init__(message)
        self.problem = {"error_Code": code, "error_Msg": message, "complemantary_Msg": complementary,
                        "complemantary_Data": None, "complemantary_Code": None}


@dataclass
class ProviderRequest:
    request_id: int
    family: str
    provider_id: str
    head_id: int
    his_request_id: str | None
    lines: list[dict[str, Any]]  # {detail_id, code, count, price}
    registered_at: str
    confirmed: bool = False
    performed: list[dict[str, Any]] = field(default_factory=list)

    def price(self) -> int:
        return sum(line["price"] * line["count"] for line in self.lines)

    def summary(self) -> dict[str, Any]:
        id_key = "requestId" if self.family == "pharmacy" else "requestID"
        total = self.price()
        return {id_key: self.request_id, "hisRequestId": self.his_request_id, "confirmed": self.confirmed,
                "requestPrice": total, "patientAmount": total * 3 // 10, "regdate": self.registered_at}


@dataclass
class ProviderState:
    requests: dict[int, ProviderRequest] = field(default_factory=dict)
    next_request_id: int = 70_000_001
    submit_receipts: dict[str, int] = field(default_factory=dict)  # idempotency key -> submits received
    submit_repeats: dict[str, int] = field(default_factory=dict)  # key -> submits after one that was not refused
    resent_after_refusal: int = 0  # submits of a key every earlier submit of which was refused
    confirm_receipts: dict[str, int] = field(default_factory=dict)
    tokens_issued: int = 0
    rejections: int = 0


def problems_answer(refusal: ProviderRefusal) -> dict[str, Any]:
    return {"hasError": True, "problems": [refusal.problem], "warnings": [], "data": None, "list": []}


def ok_answer(**values: Any) -> dict[str, Any]:
    return {"hasError": False, "problems": [], "warnings": [], **values}


class ProviderDesk:
    """The mixin: needs ``self._lock``, ``self._state`` (with ``provider``), ``self._settings``."""

    _lock: Any
    _state: Any
    _settings: Any

    # ----- auth ---------------------------------------------------------------------
    def authenticate_operator(self, body: Any) -> str | None:
        """The operator's family ("pharmacy" / "paraclinic") when every credential matches."""
        if not isinstance(body, dict):
            return None
        with self._lock:
            s = self._settings
            if body.get("SoftwareClientID") != s.software_client_id or \
                    body.get("SoftwareClientSecret") != s.software_client_secret:
                return None
            operator = s.provider_operators.get(str(body.get("username")))
            if operator is None or operator.password != body.get("password"):
                return None
            self._state.provider.tokens_issued += 1
            return operator.family

    # ----- fetch --------------------------------------------------------------------
    def _served(self, family: str, patient: Any, tracking: Any) -> Any:
        try:
            tracking_code = int(str(tracking))
        except ValueError:
            tracking_code = -1
        found = next((p for p in self._state.prescriptions.values() if p.status == "active"
                      and p.patient == patient and p.tracking_code == tracking_code), None)
        if found is None:
            raise ProviderRefusal(MSG_FETCH, rules.MSG_NOT_FOUND, ERR_FETCH)
        if found.presc_type_id != FAMILY_TYPES[family]:
            raise ProviderRefusal(MSG_FETCH, MSG_NOT_DRUG if family == "pharmacy" else MSG_NOT_PARA, ERR_FETCH)
        return found

    def _remaining(self, presc: Any) -> dict[int, int]:
        left = {item["noteDetailsEprscId"]: int(item.get("srvQty") or 0) for item in presc.items}
        for request in self._state.provider.requests.values():
            if request.head_id == presc.head_id:
                for line in request.lines:
                    left[line["detail_id"]] = left.get(line["detail_id"], 0) - line["count"]
        return left

    def provider_fetch(self, family: str, patient: Any, tracking: Any, provider_id: Any) -> dict[str, Any]:
        with self._lock:
            try:
                presc = self._served(family, patient, tracking)
            except ProviderRefusal as refusal:
                return problems_answer(refusal)
            left = self._remaining(presc)
            mine = [r.summary() for r in self._state.provider.requests.values()
                    if r.head_id == presc.head_id and r.family == family and r.provider_id == str(provider_id)]
            head = _pharmacy_head(presc, left) if family == "pharmacy" else _paraclinic_head(presc, left)
            return ok_answer(total=1, list=[{**head, "registeredRequests": mine}])

    # ----- submit -------------------------------------------------------------------
    def provider_submit(self, family: str, body: Any, key: str | None) -> dict[str, Any]:
        with self._lock:
            state = self._state.provider
            if isinstance(body, dict) and body and key:
                state.resent_after_refusal += count_receipt(state.submit_receipts, state.submit_repeats, key)
            try:
                request = self._register(family, body if isinstance(body, dict) else {})
            except ProviderRefusal as refusal:
                state.rejections += 1
                return problems_answer(refusal)
            if key:
                state.submit_repeats.setdefault(key, 0)  # registered: any later submit of the key is a duplicate
            return ok_answer(data={**request.summary(), "finalDetailRegisterPrescs": [
                {"code": line["code"], "count": line["count"], "itemPrice": line["price"]} for line in request.lines]})

    def _register(self, family: str, body: dict[str, Any]) -> ProviderRequest:
        pharmacy = family == "pharmacy"
        provider_id = _provider_id(body, family)
        head_id = body.get("electronicPrescHead" if pharmacy else "eprsC_ID")
        presc = self._state.prescriptions.get(_int(head_id))
        if presc is None or presc.status != "active":
            raise ProviderRefusal(MSG_FETCH, rules.MSG_NOT_FOUND, ERR_FETCH)
        self._served(family, presc.patient, presc.tracking_code)  # the family may serve it
        if body.get("patientNatCode" if pharmacy else "nationalcode") != presc.patient:
            raise ProviderRefusal(MSG_WRONG_PATIENT)
        lines = _drug_lines(body, presc) if pharmacy else _service_lines(body, presc)
        left = self._remaining(presc)
        for line in lines:
            left[line["detail_id"]] -= line["count"]
            if left[line["detail_id"]] < 0:
                raise ProviderRefusal(MSG_TOO_MANY, f"کد {line['code']}")
        state = self._state.provider
        request = ProviderRequest(state.next_request_id, family, provider_id, presc.head_id,
                                  _text_or_none(body.get("hisRequestId")), lines,
                                  time.strftime("%Y-%m-%dT%H:%M:%S"))
        state.next_request_id += 1
        state.requests[request.request_id] = request
        presc.dispensed = True  # acted on by a provider: the doctor may no longer edit or delete it
        return request

    # ----- confirm ------------------------------------------------------------------
    def provider_confirm(self, family: str, body: Any, key: str | None) -> dict[str, Any]:
        with self._lock:
            state = self._state.provider
            body = body if isinstance(body, dict) else {}
            if key:
                state.confirm_receipts[key] = state.confirm_receipts.get(key, 0) + 1
            try:
                request = self._confirm(family, body)
            except ProviderRefusal as refusal:
                state.rejections += 1
                return problems_answer(refusal)
            return ok_answer(data=request.summary())

    def _confirm(self, family: str, body: dict[str, Any]) -> ProviderRequest:
        provider_id = _provider_id(body, family)
        request_id = _int(body.get("requestId" if family == "pharmacy" else "requestID"))
        request = self._state.provider.requests.get(request_id)
        if request is None or request.family != family or request.provider_id != provider_id:
            raise ProviderRefusal(MSG_NO_REQUEST)
        if family == "paraclinic":
            request.performed = _performed(body, request)
        request.confirmed = True  # confirming a confirmed request changes nothing
        return request

    # ----- reporting ----------------------------------------------------------------
    def provider_requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{**vars(copy.deepcopy(r))} for r in self._state.provider.requests.values()]

    def provider_stats(self) -> dict[str, Any]:
        with self._lock:
            state = self._state.provider
            duplicate = sorted(k for k, n in state.submit_repeats.items() if n > 0)
            by_family: dict[str, int] = {}
            for request in state.requests.values():
                by_family[request.family] = by_family.get(request.family, 0) + 1
            return {"registered": by_family, "confirmed": sum(r.confirmed for r in state.requests.values()),
                    "submit_receipts": sum(state.submit_receipts.values()),
                    "received_submissions": len(state.submit_receipts),
                    "confirm_receipts": sum(state.confirm_receipts.values()),
                    "duplicate_submit_keys": duplicate, "resent_after_refusal": state.resent_after_refusal,
                    "tokens_issued": state.tokens_issued,
                    "rejections": state.rejections}


def count_receipt(receipts: dict[str, int], repeats: dict[str, int], key: str) -> bool:
    """Count one receipt of ``key``; True when it is a resend of a key every earlier receipt of
    which was refused (nothing was registered: not a duplicate). ``repeats`` holds the keys with a
    receipt that was not refused, and counts the receipts after it (duplicates)."""
    receipts[key] = receipts.get(key, 0) + 1
    if key in repeats:
        repeats[key] += 1
        return False
    return receipts[key] > 1


def _int(value: Any) -> int:
    try:
        return int(str(value))
    except ValueError:
        return -1


def _text_or_none(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def _provider_id(body: dict[str, Any], family: str) -> str:
    info = body.get("userInformation")
    value = (info if isinstance(info, dict) else {}).get("phaId" if family == "pharmacy" else "parID")
    if value in (None, ""):
        raise ProviderRefusal(MSG_NO_PROVIDER)
    return str(value)


def _line_of(presc: Any, detail_id: Any, code: Any) -> dict[str, Any]:
    item = next((i for i in presc.items if i["noteDetailsEprscId"] == _int(detail_id)), None)
    if item is None or rules.item_srv_code(item) != str(code):
        raise ProviderRefusal(MSG_NO_LINE, f"کد {code}")
    return item


def _count(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ProviderRefusal(rules.MSG_QTY)
    return value


def _drug_lines(body: dict[str, Any], presc: Any) -> list[dict[str, Any]]:

    drugs = body.get("drugsList")
    if not isinstance(drugs, list) or not drugs:
        raise ProviderRefusal(MSG_EMPTY)
    lines = []
    for drug in drugs:
        item = _line_of(presc, drug.get("electronicPrescDetail"), drug.get("drugCode"))
        if not _SIXTEEN.match(str(drug.get("drugIrc") or "")):
            raise ProviderRefusal(MSG_BAD_IRC, f"کد {drug.get('drugCode')}")
        barcodes = drug.get("barcodesList")
        if not isinstance(barcodes, list) or not barcodes or not all(_SIXTEEN.match(str(b)) for b in barcodes):
            raise ProviderRefusal(MSG_BAD_BARCODE, f"کد {drug.get('drugCode')}")
        code = rules.item_srv_code(item)
        lines.append({"detail_id": item["noteDetailsEprscId"], "code": code,
                      "count": _count(drug.get("requestedCount")), "price": unit_price(code)})
    return lines


def _service_lines(body: dict[str, Any], presc: Any) -> list[dict[str, Any]]:

    details, kind = body.get("details"), str(body.get("partypecode") or "")
    if not isinstance(details, list) or not details:
        raise ProviderRefusal(MSG_EMPTY)
    lines = []
    for detail in details:
        code = detail.get("paR_TAREF_CODE")
        item = next((i for i in presc.items if rules.item_srv_code(i) == str(code)), None)
        if item is None:
            raise ProviderRefusal(MSG_NO_LINE, f"کد {code}")
        if rules.item_srv_type(item) != kind:
            raise ProviderRefusal(MSG_TYPE_MISMATCH, f"کد {code}")
        lines.append({"detail_id": item["noteDetailsEprscId"], "code": str(code),
                      "count": _count(detail.get("requesT_QTY")), "price": unit_price(str(code))})
    return lines


def _performed(body: dict[str, Any], request: ProviderRequest) -> list[dict[str, Any]]:
    """The services a paraclinic confirm reports done: each registered, no more than requested."""
    requested = {line["code"]: line["count"] for line in request.lines}
    performed = []
    for detail in body.get("details") or []:
        code = str(detail.get("paR_TAREF_CODE"))
        count = _count(detail.get("performedQty"))
        if code not in requested:
            raise ProviderRefusal(MSG_NO_LINE, f"کد {code}")
        if count > requested[code]:
            raise ProviderRefusal(MSG_TOO_MANY, f"کد {code}")
        performed.append({"code": code, "count": count})
    return performed


def _pharmacy_head(presc: Any, left: dict[int, int]) -> dict[str, Any]:
    return {"headeprscid": presc.head_id, "trackingCode": presc.tracking_code, "prescdate": presc.presc_date,
            "docid": presc.doc_id, "finalDetailsPresc": [
                {"detailId": i["noteDetailsEprscId"], "drugCode": rules.item_srv_code(i),
                 "prescribedCount": int(i.get("srvQty") or 0), "remainingCount": max(left[i["noteDetailsEprscId"]], 0),
                 "requiresBarcodeInquiry": True} for i in presc.items]}


def _paraclinic_head(presc: Any, left: dict[int, int]) -> dict[str, Any]:
    return {"eprsC_ID": presc.head_id, "trackingCode": presc.tracking_code, "prescDate": presc.presc_date,
            "docid": presc.doc_id, "details": [
                {"detailId": i["noteDetailsEprscId"], "paR_TAREF_CODE": rules.item_srv_code(i),
                 "partypecode": rules.item_srv_type(i), "prescribedQty": int(i.get("srvQty") or 0),
                 "remainingQty": max(left[i["noteDetailsEprscId"]], 0)} for i in presc.items]}
