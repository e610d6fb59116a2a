"""Event contract v1 (pydantic): the envelope and the payload of each event type.

The HIS publishes one JSON object per message. ``parse_event`` turns raw bytes into a
typed ``Event`` or raises ``EventRejected`` with a reason an operator can act on
(field path, rule, value masked).
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from contextvars import ContextVar
from enum import Enum
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    Strict,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from adapter.events.dates import (
    MOMENT_MAX_DAYS_AHEAD,
    OCCURRED_AT_MAX_DAYS_AHEAD,
    PLANNED_MAX_DAYS_AHEAD,
    DateProblem,
    parse_date,
    window_problem,
)
from adapter.events.digits import to_ascii_digits
from adapter.events.identity import national_code_problem

SCHEMA_VERSION = "1"


def _ascii_digits(value: Any) -> Any:
    return to_ascii_digits(value).strip() if isinstance(value, str) else value


def _calendar_date(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return parse_date(value)
        except DateProblem as exc:
            raise ValueError(str(exc)) from None
    return value


def _national_code(value: str) -> str:
    problem = national_code_problem(value)
    if problem:
        raise ValueError(f"not a valid national code: {problem}")
    return value


def _datetime_text(value: Any) -> Any:
    if not isinstance(value, (str, dt.datetime)):
        raise ValueError("a date-time is ISO 8601 text with its offset, e.g. 2026-11-20T09:15:00+03:30")
    return value


def _aware(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        raise ValueError("a date-time needs its UTC offset (e.g. +03:30)")
    if not 1800 <= value.year <= 2199:
        raise ValueError("a date-time is Gregorian (year 1800-2199); Solar Hijri is for dates only")
    return value


# -- the sanity window of clinical dates (issue 16 item 13; limits in adapter/events/dates.py) ---
# An event's payload dates are judged against its own ``occurred_at``: the envelope puts it
# here while its payload is validated (None: outside an envelope, or occurred_at is itself
# wrong; the dates are then judged against now).
_OCCURRED_AT: ContextVar[dt.datetime | None] = ContextVar("occurred_at", default=None)


def _in_window(value: dt.date, info: ValidationInfo, days_ahead: int) -> None:
    problem = window_problem(value, _OCCURRED_AT.get(), days_ahead)
    if problem:
        raise ValueError(f"{info.field_name or 'the date'} is outside the date window: {problem}")


def _moment_in_window(value: dt.datetime, info: ValidationInfo) -> dt.datetime:
    _in_window(value, info, MOMENT_MAX_DAYS_AHEAD)
    return value


def _planned_in_window(value: dt.date, info: ValidationInfo) -> dt.date:
    _in_window(value, info, PLANNED_MAX_DAYS_AHEAD)
    return value


def _occurred_in_window(value: dt.datetime) -> dt.datetime:
    problem = window_problem(value, None, OCCURRED_AT_MAX_DAYS_AHEAD)
    if problem:
        raise ValueError(f"occurred_at is outside the date window: {problem}")
    return value


# -- characters (issue 16 item 15) ------------------------------------------------------------
# Every string: no C0/C1 control character but TAB, LF, CR (free text keeps its line breaks).
# Ids and codes (``IdText``): no control character at all, no invisible format character
# (bidi controls, zero-width space, BOM...), no line or paragraph separator, no lone surrogate.
# Names (``Name``): the same, but ZWNJ and ZWJ (Persian spelling needs ZWNJ) stay, and the
# invisible marks that change nothing (LRM, RLM, ALM, zero-width space, soft hyphen, BOM, word
# joiner: left by copy-paste and old keyboards) are dropped; the bidi embeddings, overrides and
# isolates U+202A-U+202E, U+2066-U+2069 and other format characters are refused.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_DROPPED_FROM_NAMES = str.maketrans("", "", "\u200e\u200f\u061c\u200b\u00ad\ufeff\u2060")
"""Invisible and harmless in a name, left by copy-paste or old keyboards (LRM, RLM, ALM, zero-width
space, soft hyphen, BOM, word joiner): dropped, so the prescription still reaches the insurer."""
_JOINERS = frozenset("\u200c\u200d")
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def _suspect_pattern() -> re.Pattern[str]:
    """Any character that may be refused: the refused categories of the Basic Multilingual Plane
    (listed once, at import: a few ms), and anything beyond it (rare; judged one by one)."""
    chars = [chr(c) for c in range(0x10000) if unicodedata.category(chr(c)) in _REFUSED_CATEGORIES]
    return re.compile("[" + "".join(re.escape(c) for c in chars) + "\U00010000-\U0010FFFF]")


_SUSPECT = _suspect_pattern()


def _refused_character(value: str, allowed: frozenset[str] = frozenset()) -> str | None:
    """What the first refused character is, for the reason; None when there is none. The
    pattern finds the clean strings (nearly all of them) without a per-character loop."""
    if _SUSPECT.search(value) is None:
        return None
    for char in value:
        category = unicodedata.category(char)
        if category in _REFUSED_CATEGORIES and char not in allowed:
            code = f"U+{ord(char):04X}"
            if char in _BIDI_CONTROLS:
                return f"bidi control {code} (an embedding, override or isolate: it changes how the text displays)"
            if category == "Cc":
                return f"control character {code}"
            if category == "Cs":
                return f"lone surrogate {code}"
            if category in ("Zl", "Zp"):
                return f"line or paragraph separator {code}"
            return f"invisible format character {code}"
    return None


def _id_characters(value: str) -> str:
    refused = _refused_character(value)
    if refused:
        raise ValueError(f"{refused} is not allowed in an id or code")
    return value


def _drop_invisible_marks(value: Any) -> Any:
    return value.translate(_DROPPED_FROM_NAMES) if isinstance(value, str) else value


def _name_characters(value: str) -> str:
    refused = _refused_character(value, _JOINERS)
    if refused:
        raise ValueError(f"{refused} is not allowed in a name")
    return value


Digits = Annotated[str, BeforeValidator(_ascii_digits), AfterValidator(_id_characters)]
NationalCode = Annotated[str, BeforeValidator(_ascii_digits), AfterValidator(_national_code)]
CalendarDate = Annotated[dt.date, BeforeValidator(_calendar_date)]
AwareDateTime = Annotated[dt.datetime, BeforeValidator(_datetime_text), AfterValidator(_aware)]
# the dates of clinical events: the sanity window above (birth dates are CalendarDate: none)
Moment = Annotated[AwareDateTime, AfterValidator(_moment_in_window)]
PlannedDate = Annotated[CalendarDate, AfterValidator(_planned_in_window)]
OccurredAt = Annotated[AwareDateTime, AfterValidator(_occurred_in_window)]
# every id and HIS code; every person's, specialty's or facility's name
IdText = Annotated[str, AfterValidator(_id_characters)]
Id = Annotated[IdText, Field(min_length=1, max_length=64)]
Code = Id
Name = Annotated[str, BeforeValidator(_drop_invisible_marks), Field(min_length=1, max_length=200),
                 AfterValidator(_name_characters)]
Mobile = Annotated[str, BeforeValidator(_ascii_digits), Field(pattern=r"^(\+98|0098|0)?9[0-9]{9}$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)

    @field_validator("*", mode="after")
    @classmethod
    def _no_control_characters(cls, value: Any) -> Any:
        if isinstance(value, str) and _CONTROL.search(value):
            raise ValueError("control characters are not allowed in text")
        return value


class IdentityKind(str, Enum):
    national_code = "national_code"
    fida = "fida"  # foreign nationals' unique id
    mother_national_code = "mother_national_code"  # newborn before a national code exists
    unidentified = "unidentified"  # unknown person or blocked code: does not imply insurance


class PatientIdentity(_Model):
    """Seed 002 s.7: the patient identifier and what kind it is."""

    kind: IdentityKind
    value: Digits = Field(min_length=1, max_length=40)

    @model_validator(mode="after")
    def _check_value(self) -> "PatientIdentity":
        if self.kind in (IdentityKind.national_code, IdentityKind.mother_national_code):
            problem = national_code_problem(self.value)
            if problem:
                raise ValueError(f"{self.kind.value} is not a valid national code: {problem}")
        elif self.kind is IdentityKind.fida and not re.fullmatch(r"[0-9]{8,16}", self.value):
            raise ValueError("fida id must be 8 to 16 digits")
        elif self.kind is IdentityKind.unidentified and not re.fullmatch(r"[A-Za-z0-9-]{4,40}", self.value):
            raise ValueError("unidentified-person id must be 4 to 40 letters, digits or dashes")
        return self


class Sex(str, Enum):
    male = "male"
    female = "female"
    other = "other"


class Patient(_Model):
    identity: PatientIdentity
    first_name: Name
    last_name: Name
    birth_date: CalendarDate | None = None
    age_years: Annotated[int, Strict(), Field(ge=0, le=130)] | None = None
    sex: Sex
    mobile: Mobile | None = None

    @model_validator(mode="after")
    def _birth_or_age(self) -> "Patient":
        if self.birth_date is None and self.age_years is None:
            raise ValueError("either birth_date or age_years is required (seed 002 s.7)")
        return self


MedicalCouncilNo = Annotated[str, BeforeValidator(_ascii_digits), Field(pattern=r"^[0-9]{1,10}[*]?$|^[0-9]{1,10}ات$")]


class Provider(_Model):
    """A clinician who provides a service (pharmacist, lab physician, radiologist, technician)."""

    first_name: Name
    last_name: Name
    medical_council_no: MedicalCouncilNo
    national_code: NationalCode
    specialty: Name | None = None
    mobile: Mobile | None = None


class Prescriber(Provider):
    """Seed 002 s.7: the prescriber's contact is mandatory."""

    mobile: Mobile


class PrescriptionKind(str, Enum):
    drug = "drug"
    paraclinic = "paraclinic"
    visit = "visit"
    service = "service"


class PrescriptionItem(_Model):
    """One prescribed item, in the HIS's own codes (the mapping's code tables translate)."""

    code: Id
    quantity: Annotated[int, Strict(), Field(gt=0, le=10_000)]
    dose: Annotated[IdText, Field(max_length=64)] | None = None  # HIS code: amount / times a day
    instruction: Annotated[IdText, Field(max_length=64)] | None = None  # HIS code: time of use
    note: Annotated[str, Field(max_length=500)] | None = None
    start_on: PlannedDate | None = None
    diagnosis_icd10: Annotated[str, Field(pattern=r"^[A-Z][0-9]{2}(\.[0-9]{1,4})?$")] | None = None


class VisitAdmitted(_Model):
    visit_id: Id
    admitted_at: Moment
    admission_type: Literal["outpatient", "inpatient", "emergency"]
    patient: Patient
    attending: Prescriber


class _PrescriptionBody(_Model):
    prescription_id: Id
    visit_id: Annotated[IdText, Field(max_length=64)] | None = None
    kind: PrescriptionKind
    prescribed_at: Moment
    expires_on: PlannedDate | None = None
    patient: Patient
    prescriber: Prescriber
    comments: Annotated[str, Field(max_length=1000)] | None = None
    items: Annotated[list[PrescriptionItem], Field(max_length=100)]

    @model_validator(mode="after")
    def _items_fit_kind(self) -> "_PrescriptionBody":
        if self.kind is PrescriptionKind.visit and self.items:
            raise ValueError("a visit prescription carries no items")
        if self.kind is not PrescriptionKind.visit and not self.items:
            raise ValueError(f"a {self.kind.value} prescription needs at least one item")
        return self


class PrescriptionCreated(_PrescriptionBody):
    pass


class PrescriptionUpdated(_PrescriptionBody):
    """The full new item list for a prescription created earlier (Tamin: edit once, before dispensing)."""


class PrescriptionCancelled(_Model):
    prescription_id: Id
    kind: PrescriptionKind
    cancelled_at: Moment
    reason: Annotated[str, Field(max_length=500)] | None = None
    patient: Patient
    prescriber: Prescriber


# -- bill.closed: the HIS closed a visit's bill; SEPAS receives it as a PatientBill. ------------
# Amounts are integer Rial; codes are the HIS's own (the sepas mapping's tables translate them).

Rial = Annotated[int, Field(ge=0, le=10**13)]


class BillInsurance(_Model):
    insurer: Code  # HIS insurer code
    box: Code | None = None  # HIS insurance-box (fund) code
    insured_number: Annotated[IdText, Field(max_length=40)] | None = None
    hid: Annotated[str, Field(pattern=r"^[A-Za-z0-9]{6,20}$")] | None = None  # SHEBAD, if the HIS has it


class BillOtherCost(_Model):
    code: Code  # HIS code of the cost kind (supplementary insurance, discount, subsidy...)
    amount: Rial


class BillService(_Model):
    code: Code  # HIS service / drug / consumable code
    quantity: Annotated[int, Field(gt=0, le=100_000)]
    started_at: Moment
    ended_at: Moment | None = None
    ward: Code | None = None  # HIS ward code
    total_charge: Rial
    basic_insurance: Rial = 0
    patient_share: Rial = 0
    other_costs: Annotated[list[BillOtherCost], Field(max_length=20)] = []
    provider: Prescriber | None = None


class BillDiagnosis(_Model):
    icd10: Annotated[str, Field(pattern=r"^[A-Z][0-9]{2}(\.[0-9]{1,4})?$")]
    status: Literal["initial", "during_treatment", "final"] = "final"
    diagnosed_at: Moment | None = None


class BillClosed(_Model):
    bill_id: Id
    visit_id: Id
    medical_record_number: Annotated[IdText, Field(min_length=1, max_length=40)]
    admission_type: Literal["outpatient", "inpatient", "emergency"]
    admitted_at: Moment
    discharged_at: Moment | None = None
    closed_at: Moment
    ward: Code | None = None  # admission ward, HIS code
    patient: Patient
    attending: Prescriber
    insurance: BillInsurance
    total_charge: Rial
    basic_insurance: Rial
    patient_share: Rial
    other_costs: Annotated[list[BillOtherCost], Field(max_length=20)] = []
    services: Annotated[list[BillService], Field(min_length=1, max_length=2000)]
    diagnoses: Annotated[list[BillDiagnosis], Field(max_length=50)] = []
    facility_name: Name | None = None


# -- provider side (seed 002 s.9): dispensing, paraclinic and lab results. ---------------------
# A provider acts on a Tamin prescription: one this adapter registered for the same HIS (its
# ``prescription_id``) or one whose tracking code the patient brought from elsewhere.

Icd10 = Annotated[str, Field(pattern=r"^[A-Z][0-9]{2}(\.[0-9]{1,4})?$")]
TtacCode = Annotated[str, BeforeValidator(_ascii_digits), Field(pattern=r"^[0-9]{16}$")]
IrcCode = Annotated[str, BeforeValidator(_ascii_digits), Field(pattern=r"^[0-9]{16}$")]


class PrescriptionRef(_Model):
    """Which Tamin prescription is served: the HIS's own (sent by this adapter) or a tracking code."""

    prescription_id: Id | None = None
    tracking_code: Annotated[str, BeforeValidator(_ascii_digits), Field(pattern=r"^[0-9A-Za-z]{4,20}$")] | None = None

    @model_validator(mode="after")
    def _one_reference(self) -> "PrescriptionRef":
        if self.prescription_id is None and self.tracking_code is None:
            raise ValueError("give prescription_id (a prescription this HIS sent) or tracking_code (from the patient)")
        return self


class DispensedItem(_Model):
    """One delivered drug: the HIS code (tables translate it), IRC product code, TTAC authenticity codes."""

    code: Code
    quantity: Annotated[int, Strict(), Field(gt=0, le=10_000)]
    irc: IrcCode  # Iran Registration Code of the delivered product (SEPAS DispensedPrescription ProductCode)
    ttac_codes: Annotated[list[TtacCode], Field(min_length=1, max_length=100)]  # one per package scanned
    unit_price: Rial | None = None


class DispenseCompleted(_Model):
    dispense_id: Id
    prescription: PrescriptionRef
    visit_id: Annotated[IdText, Field(max_length=64)] | None = None
    dispensed_at: Moment
    patient: Patient
    pharmacist: Provider
    prescriber: Prescriber | None = None  # who wrote it, when the HIS knows
    items: Annotated[list[DispensedItem], Field(min_length=1, max_length=100)]
    total_charge: Rial | None = None
    insurer_share: Rial | None = None
    patient_share: Rial | None = None


class ParaclinicCategory(str, Enum):
    lab = "lab"
    imaging = "imaging"


class ParaclinicService(_Model):
    code: Code  # HIS service code (tables translate to Tamin, LOINC, RVU3)
    quantity: Annotated[int, Strict(), Field(gt=0, le=1000)] = 1
    note: Annotated[str, Field(max_length=500)] | None = None


class _ParaclinicBody(_Model):
    order_id: Id  # the lab / imaging unit's order
    category: ParaclinicCategory
    prescription: PrescriptionRef
    visit_id: Annotated[IdText, Field(max_length=64)] | None = None
    patient: Patient
    services: Annotated[list[ParaclinicService], Field(min_length=1, max_length=100)]
    diagnoses: Annotated[list[Icd10], Field(max_length=20)] = []


class ParaclinicRequested(_ParaclinicBody):
    """The lab or imaging unit accepted an order for a Tamin prescription (Tamin: register the request)."""

    requested_at: Moment
    ordering: Prescriber  # the physician who ordered


class ParaclinicCompleted(_ParaclinicBody):
    """The services were performed (Tamin: confirm the registered request)."""

    completed_at: Moment
    performer: Provider  # technician, lab physician or radiologist
    report: Annotated[str, Field(max_length=4000)] | None = None  # imaging report / lab comment


class LabObservation(_Model):
    code: Code  # HIS test code (the sepas tables translate it to LOINC)
    value: Annotated[str, BeforeValidator(_ascii_digits), Field(min_length=1, max_length=200)]  # "13.8", "positive"
    unit: Annotated[str, Field(max_length=40)] | None = None
    reference_range: Annotated[str, BeforeValidator(_ascii_digits), Field(max_length=100)] | None = None
    interpretation: Literal["normal", "low", "high", "abnormal", "critical"] | None = None
    observed_at: Moment | None = None


class LabResultReported(_Model):
    result_id: Id
    order_id: Id
    visit_id: Annotated[IdText, Field(max_length=64)] | None = None
    reported_at: Moment
    specimen_collected_at: Moment | None = None
    patient: Patient
    reporter: Provider  # the lab physician who signs the result
    ordering: Prescriber | None = None
    observations: Annotated[list[LabObservation], Field(min_length=1, max_length=200)]
    diagnoses: Annotated[list[Icd10], Field(max_length=20)] = []


class _Envelope(_Model):
    event_id: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._:-]+$")]
    schema_version: Literal["1"]
    occurred_at: OccurredAt
    facility_siam_id: Annotated[IdText, BeforeValidator(_ascii_digits), Field(min_length=1, max_length=40)]
    source_system: Id
    correlation_id: Annotated[IdText, Field(max_length=100)] | None = None

    @model_validator(mode="wrap")
    @classmethod
    def _payload_dates_against_occurred_at(cls, data: Any, handler: ModelWrapValidatorHandler[Any]) -> Any:
        token = _OCCURRED_AT.set(_occurred_at_of(data))
        try:
            return handler(data)
        finally:
            _OCCURRED_AT.reset(token)


_OCCURRED_AT_ADAPTER: TypeAdapter[dt.datetime] = TypeAdapter(OccurredAt)


def _occurred_at_of(data: Any) -> dt.datetime | None:
    """The envelope's ``occurred_at`` when it is itself valid (else the payload is judged against now)."""
    if not isinstance(data, dict) or "occurred_at" not in data:
        return None
    try:
        return _OCCURRED_AT_ADAPTER.validate_python(data["occurred_at"])
    except ValidationError:
        return None


class VisitAdmittedEvent(_Envelope):
    event_type: Literal["visit.admitted"]
    payload: VisitAdmitted


class PrescriptionCreatedEvent(_Envelope):
    event_type: Literal["prescription.created"]
    payload: PrescriptionCreated


class PrescriptionUpdatedEvent(_Envelope):
    event_type: Literal["prescription.updated"]
    payload: PrescriptionUpdated


class PrescriptionCancelledEvent(_Envelope):
    event_type: Literal["prescription.cancelled"]
    payload: PrescriptionCancelled


class BillClosedEvent(_Envelope):
    event_type: Literal["bill.closed"]
    payload: BillClosed


class DispenseCompletedEvent(_Envelope):
    event_type: Literal["dispense.completed"]
    payload: DispenseCompleted


class ParaclinicRequestedEvent(_Envelope):
    event_type: Literal["paraclinic.requested"]
    payload: ParaclinicRequested


class ParaclinicCompletedEvent(_Envelope):
    event_type: Literal["paraclinic.completed"]
    payload: ParaclinicCompleted


class LabResultEvent(_Envelope):
    event_type: Literal["lab.result"]
    payload: LabResultReported


Event = Annotated[
    Union[VisitAdmittedEvent, PrescriptionCreatedEvent, PrescriptionUpdatedEvent, PrescriptionCancelledEvent,
          BillClosedEvent, DispenseCompletedEvent, ParaclinicRequestedEvent, ParaclinicCompletedEvent,
          LabResultEvent],
    Field(discriminator="event_type"),
]

EVENT_TYPES: tuple[str, ...] = (
    "visit.admitted",
    "prescription.created",
    "prescription.updated",
    "prescription.cancelled",
    "bill.closed",
    "dispense.completed",
    "paraclinic.requested",
    "paraclinic.completed",
    "lab.result",
)


class EventEnvelope(BaseModel):
    """Wrapper so one model validates and exports the whole tagged union."""

    event: Event


def event_json_schema() -> dict[str, Any]:
    """JSON Schema of contract v1 (what ``adapter schema`` prints)."""
    schema = EventEnvelope.model_json_schema()
    schema["$defs"] = schema.get("$defs", {})
    root = schema["properties"]["event"]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"HIS event, contract v{SCHEMA_VERSION}",
        **root,
        "$defs": schema["$defs"],
    }
