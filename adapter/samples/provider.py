"""Provider-side sample events for one prescription: what the hospital's own pharmacy, lab and
imaging units and its billing send after a prescription was written (seed 002 s.9, provider
side), plus the bill of the visit.

Every event refers to the HIS prescription by ``prescription_id`` (the adapter resolves the
Tamin tracking code from its own create), and quantities never exceed what was prescribed,
so the simulators accept them. The codes are the ones the bundled mappings translate.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from typing import Any

# HIS drug code -> IRC (Iran Registration Code) of the product the pharmacy delivers.
# These codes are in mappings/sepas/terminology/irc.samples.csv.
DRUG_IRC = {
    "D-AMOX-500": "1228098765432101",
    "D-PARA-500": "1228098765432118",
    "D-IBU-400": "1228098765432125",
    "D-OMEP-20": "1228098765432132",
    "D-METF-500": "1228098765432149",
    "D-ATOR-20": "1228098765432156",
    "D-SALB-INH": "1228098765432163",
}
DRUG_PRICE = 25_000  # Rial per unit, sample
# HIS lab order code -> the tests its result reports (codes the sepas LOINC table translates)
LAB_RESULTS: dict[str, list[tuple[str, str, str, str]]] = {
    "L-CBC": [("L-HGB", "g/dL", "13.5-17.5", "14.1"), ("L-WBC", "10*3/uL", "4.5-11.0", "7.2"),
              ("L-PLT", "10*3/uL", "150-400", "250")],
    "L-FBS": [("L-FBS", "mg/dL", "70-100", "92")],
    "L-TSH": [("L-TSH", "mIU/L", "0.4-4.0", "2.1")],
}
PHARMACIST = {"first_name": "Neda", "last_name": "Rahimi", "medical_council_no": "55012", "national_code": "0076543218"}
LAB_PHYSICIAN = {"first_name": "Omid", "last_name": "Kazemi", "medical_council_no": "61234",
                 "national_code": "0098765434", "specialty": "pathology"}
RADIOLOGIST = {"first_name": "Leila", "last_name": "Moradi", "medical_council_no": "62345",
               "national_code": "0091234565", "specialty": "radiology"}
DIAGNOSES = ["E11.9", "I10", "J06.9", "K29.7", "M54.5", "N39.0"]

Envelope = Callable[[str, str, dt.datetime, str, dict[str, Any]], dict[str, Any]]


def category_of(code: str) -> str:
    """Lab codes start with L-; the other paraclinic codes (radiology, ultrasound, CT, MRI) are imaging."""
    return "lab" if code.startswith("L-") else "imaging"


def unit_of(code: str) -> str:
    """The unit that takes the order: the lab, or one imaging modality (L, R, U, CT, MRI). Tamin
    registers one service type per paraclinic request, so each modality gets its own order."""
    return code.split("-", 1)[0]


def ttac_code(rng: random.Random) -> str:
    return f"{rng.randrange(10**15, 10**16)}"


def dispense_event(envelope: Envelope, rng: random.Random, created: dict[str, Any], at: dt.datetime,
                   event_id: str) -> dict[str, Any]:
    """The hospital pharmacy delivered every prescribed drug."""
    items = [{"code": item["code"], "quantity": item["quantity"], "irc": DRUG_IRC[item["code"]],
              "ttac_codes": [ttac_code(rng) for _ in range(min(3, item["quantity"]))], "unit_price": DRUG_PRICE}
             for item in created["items"]]
    total = sum(i["quantity"] * DRUG_PRICE for i in items)
    return envelope(event_id, "dispense.completed", at, created["visit_id"], {
        "dispense_id": f"DSP-{created['prescription_id']}", "prescription": {"prescription_id": created["prescription_id"]},
        "visit_id": created["visit_id"], "dispensed_at": at.isoformat(), "patient": created["patient"],
        "pharmacist": PHARMACIST, "prescriber": created["prescriber"], "items": items,
        "total_charge": total, "insurer_share": total * 7 // 10, "patient_share": total - total * 7 // 10})


def paraclinic_events(envelope: Envelope, rng: random.Random, created: dict[str, Any],
                      at: Callable[[int], dt.datetime], event_prefix: str) -> list[dict[str, Any]]:
    """One order per unit (the lab, each imaging modality) the prescription needs: requested,
    completed, and the lab's result."""
    events: list[dict[str, Any]] = []
    diagnosis = rng.choice(DIAGNOSES)
    for step, unit in enumerate(sorted({unit_of(i["code"]) for i in created["items"]})):
        order_id = f"{unit}-{created['prescription_id']}"
        services = [{"code": i["code"], "quantity": i["quantity"]} for i in created["items"] if unit_of(i["code"]) == unit]
        category = category_of(services[0]["code"])
        common = {"order_id": order_id, "category": category,
                  "prescription": {"prescription_id": created["prescription_id"]}, "visit_id": created["visit_id"],
                  "patient": created["patient"], "services": services, "diagnoses": [diagnosis]}
        requested_at, completed_at = at(3 * step), at(3 * step + 1)
        performer = LAB_PHYSICIAN if category == "lab" else RADIOLOGIST
        events.append(envelope(f"{event_prefix}-{unit}-req", "paraclinic.requested", requested_at,
                               created["visit_id"], {**common, "requested_at": requested_at.isoformat(),
                                                     "ordering": created["prescriber"]}))
        done = {**common, "completed_at": completed_at.isoformat(), "performer": performer}
        if category == "imaging":
            done["report"] = "No acute abnormality."
        events.append(envelope(f"{event_prefix}-{unit}-done", "paraclinic.completed", completed_at,
                               created["visit_id"], done))
        observations = [{"code": code, "value": value, "unit": measure, "reference_range": ref, "interpretation": "normal"}
                        for service in services for code, measure, ref, value in LAB_RESULTS.get(service["code"], [])]
        if observations:
            reported_at = at(3 * step + 2)
            events.append(envelope(f"{event_prefix}-lab-result", "lab.result", reported_at, created["visit_id"], {
                "result_id": f"RES-{order_id}", "order_id": order_id, "visit_id": created["visit_id"],
                "reported_at": reported_at.isoformat(), "specimen_collected_at": requested_at.isoformat(),
                "patient": created["patient"], "reporter": LAB_PHYSICIAN, "ordering": created["prescriber"],
                "observations": observations, "diagnoses": [diagnosis]}))
    return events


def bill_event(envelope: Envelope, visit: dict[str, Any], closed_at: dt.datetime, event_id: str) -> dict[str, Any]:
    """The outpatient visit's bill: one specialist visit, paid 70/30 by Tamin and the patient."""
    charge, basic = 1_500_000, 1_050_000
    admitted = visit["admitted_at"]
    return envelope(event_id, "bill.closed", closed_at, visit["visit_id"], {
        "bill_id": f"B-{visit['visit_id']}", "visit_id": visit["visit_id"],
        "medical_record_number": f"MR{visit['visit_id']}", "admission_type": visit["admission_type"],
        "admitted_at": admitted, "closed_at": closed_at.isoformat(), "patient": visit["patient"],
        "attending": visit["attending"], "insurance": {"insurer": "TAMIN", "box": "MANDATORY"},
        "total_charge": charge, "basic_insurance": basic, "patient_share": charge - basic,
        "other_costs": [{"code": "BASIC_TOTAL", "amount": charge}],
        "services": [{"code": "S-VISIT-SPEC", "quantity": 1, "started_at": admitted, "total_charge": charge,
                      "basic_insurance": basic, "patient_share": charge - basic,
                      "other_costs": [{"code": "BASIC_TOTAL", "amount": charge}]}],
        "diagnoses": [{"icd10": "J06.9", "status": "final", "diagnosed_at": admitted}]})
