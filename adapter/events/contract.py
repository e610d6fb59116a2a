"""Event contract v1 (pydantic): the envelope and the payload of each event type.

The HIS publishes one JSON object per message. ``parse_event`` turns raw bytes into a
typed ``Event`` or raises ``EventRejected`` with a reason an operator can act on
(field path, rule, value masked).
"""

from __future__ import annotations

import datetime as dt
import re
from enum import Enum
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    field_validator,
    model_validator,
)

from adapter.events.dates import DateProblem, parse_date
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


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


Digits = Annotated[str, BeforeValidator(_ascii_digits)]
NationalCode = Annotated[str, BeforeValidator(_ascii_digits), AfterValidator(_national_code)]
CalendarDate = Annotated[dt.date, BeforeValidator(_calendar_date)]
AwareDateTime = Annotated[dt.datetime, BeforeValidator(_datetime_text), AfterValidator(_aware)]
Text = Annotated[str, Field(min_length=1, max_length=200)]
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
    first_name: Text
    last_name: Text
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

    first_name: Text
    last_name: Text
    medical_council_no: MedicalCouncilNo
    national_code: NationalCode
    specialty: Text | None = None
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

    code: Annotated[str, Field(min_length=1, max_length=64)]
    quantity: Annotated[int, Strict(), Field(gt=0, le=10_000)]
    dose: Annotated[str, Field(max_length=64)] | None = None  # HIS code: amount / times a day
    instruction: Annotated[str, Field(max_length=64)] | None = None  # HIS code: time of use
    note: Annotated[str, Field(max_length=500)] | None = None
    start_on: CalendarDate | None = None
    diagnosis_icd10: Annotated[str, Field(pattern=r"^[A-Z][0-9]{2}(\.[0-9]{1,4})?$")] | None = None


class VisitAdmitted(_Model):
    visit_id: Annotated[str, Field(min_length=1, max_length=64)]
    admitted_at: AwareDateTime
    admission_type: Literal["outpatient", "inpatient", "emergency"]
    patient: Patient
    attending: Prescriber


class _PrescriptionBody(_Model):
    prescription_id: Annotated[str, Field(min_length=1, max_length=64)]
    visit_id: Annotated[str, Field(max_length=64)] | None = None
    kind: PrescriptionKind
    prescribed_at: AwareDateTime
    expires_on: CalendarDate | None = None
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
    prescription_id: Annotated[str, Field(min_length=1, max_length=64)]
    kind: PrescriptionKind
    cancelled_at: AwareDateTime
    reason: Annotated[str, Field(max_length=500)] | None = None
    patient: Patient
    prescriber: Prescriber


# -- bill.closed: the HIS closed a visit's bill; SEPAS receives it as a PatientBill. ------------
# Amounts are integer Rial; codes are the HIS's own (the sepas mapping's tables translate them).

Code = Annotated[str, Field(min_length=1, max_length=64)]
Rial = Annotated[int, Field(ge=0, le=10**13)]


class BillInsurance(_Model):
    insurer: Code  # HIS insurer code
    box: Code | None = None  # HIS insurance-box (fund) code
    insured_number: Annotated[str, Field(max_length=40)] | None = None
    hid: Annotated[str, Field(pattern=r"^[A-Za-z0-9]{6,20}$")] | None = None  # SHEBAD, if the HIS has it


class BillOtherCost(_Model):
    code: Code  # HIS code of the cost kind (supplementary insurance, discount, subsidy...)
    amount: Rial


class BillService(_Model):
    code: Code  # HIS service / drug / consumable code
    quantity: Annotated[int, Field(gt=0, le=100_000)]
    started_at: AwareDateTime
    ended_at: AwareDateTime | None = None
    ward: Code | None = None  # HIS ward code
    total_charge: Rial
    basic_insurance: Rial = 0
    patient_share: Rial = 0
    other_costs: Annotated[list[BillOtherCost], Field(max_length=20)] = []
    provider: Prescriber | None = None


class BillDiagnosis(_Model):
    icd10: Annotated[str, Field(pattern=r"^[A-Z][0-9]{2}(\.[0-9]{1,4})?$")]
    status: Literal["initial", "during_treatment", "final"] = "final"
    diagnosed_at: AwareDateTime | None = None


class BillClosed(_Model):
    bill_id: Annotated[str, Field(min_length=1, max_length=64)]
    visit_id: Annotated[str, Field(min_length=1, max_length=64)]
    medical_record_number: Annotated[str, Field(min_length=1, max_length=40)]
    admission_type: Literal["outpatient", "inpatient", "emergency"]
    admitted_at: AwareDateTime
    discharged_at: AwareDateTime | None = None
    closed_at: AwareDateTime
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
    facility_name: Text | None = None


# -- provider side (seed 002 s.9): dispensing, paraclinic and lab results. ---------------------
# A provider acts on a Tamin prescription: one this adapter registered for the same HIS (its
# ``prescription_id``) or one whose tracking code the patient brought from elsewhere.

Icd10 = Annotated[str, Field(pattern=r"^[A-Z][0-9]{2}(\.[0-9]{1,4})?$")]
TtacCode = Annotated[str, BeforeValidator(_ascii_digits), Field(pattern=r"^[0-9]{16}$")]
IrcCode = Annotated[str, BeforeValidator(_ascii_digits), Field(pattern=r"^[0-9]{16}$")]


class PrescriptionRef(_Model):
    """Which Tamin prescription is served: the HIS's own (sent by this adapter) or a tracking code."""

    prescription_id: Annotated[str, Field(min_length=1, max_length=64)] | None = None
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
    dispense_id: Annotated[str, Field(min_length=1, max_length=64)]
    prescription: PrescriptionRef
    visit_id: Annotated[str, Field(max_length=64)] | None = None
    dispensed_at: AwareDateTime
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
    order_id: Annotated[str, Field(min_length=1, max_length=64)]  # the lab / imaging unit's order
    category: ParaclinicCategory
    prescription: PrescriptionRef
    visit_id: Annotated[str, Field(max_length=64)] | None = None
    patient: Patient
    services: Annotated[list[ParaclinicService], Field(min_length=1, max_length=100)]
    diagnoses: Annotated[list[Icd10], Field(max_length=20)] = []


class ParaclinicRequested(_ParaclinicBody):
    """The lab or imaging unit accepted an order for a Tamin prescription (Tamin: register the request)."""

    requested_at: AwareDateTime
    ordering: Prescriber  # the physician who ordered


class ParaclinicCompleted(_ParaclinicBody):
    """The services were performed (Tamin: confirm the registered request)."""

    completed_at: AwareDateTime
    performer: Provider  # technician, lab physician or radiologist
    report: Annotated[str, Field(max_length=4000)] | None = None  # imaging report / lab comment


class LabObservation(_Model):
    code: Code  # HIS test code (the sepas tables translate it to LOINC)
    value: Annotated[str, BeforeValidator(_ascii_digits), Field(min_length=1, max_length=200)]  # "13.8", "positive"
    unit: Annotated[str, Field(max_length=40)] | None = None
    reference_range: Annotated[str, BeforeValidator(_ascii_digits), Field(max_length=100)] | None = None
    interpretation: Literal["normal", "low", "high", "abnormal", "critical"] | None = None
    observed_at: AwareDateTime | None = None


class LabResultReported(_Model):
    result_id: Annotated[str, Field(min_length=1, max_length=64)]
    order_id: Annotated[str, Field(min_length=1, max_length=64)]
    visit_id: Annotated[str, Field(max_length=64)] | None = None
    reported_at: AwareDateTime
    specimen_collected_at: AwareDateTime | None = None
    patient: Patient
    reporter: Provider  # the lab physician who signs the result
    ordering: Prescriber | None = None
    observations: Annotated[list[LabObservation], Field(min_length=1, max_length=200)]
    diagnoses: Annotated[list[Icd10], Field(max_length=20)] = []


class _Envelope(_Model):
    event_id: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._:-]+$")]
    schema_version: Literal["1"]
    occurred_at: AwareDateTime
    facility_siam_id: Annotated[str, BeforeValidator(_ascii_digits), Field(min_length=1, max_length=40)]
    source_system: Annotated[str, Field(min_length=1, max_length=64)]
    correlation_id: Annotated[str, Field(max_length=100)] | None = None


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
