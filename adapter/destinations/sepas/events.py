"""Proposed contract additions for SEPAS (to be moved into ``adapter/events/contract.py``).

``bill.closed``: the HIS closed a visit's bill (outpatient or inpatient); SEPAS receives it
as a PatientBill. Amounts are integer Rial. Codes are the HIS's own (the sepas mapping's
code tables translate them); diagnoses are ICD-10.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from adapter.events.contract import AwareDateTime, Patient, Prescriber, Text, _Envelope, _Model

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
    icd10: Annotated[str, Field(pattern=r"^[A-Z]\d{2}(\.\d{1,4})?$")]
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


class BillClosedEvent(_Envelope):
    event_type: Literal["bill.closed"]
    payload: BillClosed
