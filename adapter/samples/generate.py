"""Deterministic sample events: every event type and prescription kind, some patients the
insurer will refuse, and a few deliberately bad messages.

Times are set relative to ``now`` (Tehran), because Tamin refuses prescription dates in
the future and deletes after the day of registration: a fixed file would go stale.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from adapter.events.identity import national_code_check_digit
from adapter.samples import provider

TEHRAN = ZoneInfo("Asia/Tehran")
FACILITY = "1234567"
FIRST_NAMES = ["Ali", "Maryam", "Reza", "Zahra", "Hossein", "Fatemeh", "Mohammad", "Sara", "Mahdi", "Narges"]
LAST_NAMES = ["Ahmadi", "Hosseini", "Karimi", "Rezaei", "Moradi", "Jafari", "Sadeghi", "Rahimi", "Kazemi", "Ghasemi"]
DRUGS = ["D-AMOX-500", "D-PARA-500", "D-IBU-400", "D-OMEP-20", "D-METF-500", "D-ATOR-20", "D-SALB-INH"]
PARACLINIC = ["L-CBC", "L-FBS", "L-LIPID", "L-TSH", "L-PAP", "R-CXR-PA", "U-ABD-PELV", "CT-BRAIN", "MRI-LSPINE"]
SERVICES = ["S-DRESSING", "S-IM-INJ"]
DOSES = ["QD", "BID", "TID", "QID", "PRN"]
INSTRUCTIONS = ["BEFORE_MEAL", "AFTER_MEAL", "WITH_MEAL", "BEDTIME"]
KINDS = ["drug", "paraclinic", "visit", "service"]


@dataclass
class SampleSet:
    lines: list[bytes]
    unknown_patients: set[str] = field(default_factory=set)
    expired_patients: set[str] = field(default_factory=set)
    distinct_events: int = 0


def national_code(rng: random.Random) -> str:
    while True:
        first = f"{rng.randrange(1, 10**9):09d}"
        if len(set(first)) > 1:
            return first + str(national_code_check_digit(first))


def _prescriber(index: int) -> dict[str, Any]:
    if index == 0:  # the pilot's published test doctor (research: tamin-api.md s.2.1)
        return {"first_name": "Test", "last_name": "Doctor", "medical_council_no": "2000200092",
                "national_code": "1234567891", "specialty": "general", "mobile": "09991111111"}
    rng = random.Random(1000 + index)
    return {"first_name": FIRST_NAMES[index], "last_name": LAST_NAMES[-index], "medical_council_no": str(300000 + index),
            "national_code": national_code(rng), "specialty": "internal", "mobile": f"0912{rng.randrange(10**7):07d}"}


def _items(rng: random.Random, kind: str) -> list[dict[str, Any]]:
    if kind == "visit":
        return []
    pool = {"drug": DRUGS, "paraclinic": PARACLINIC, "service": SERVICES}[kind]
    codes = rng.sample(pool, k=min(len(pool), rng.randint(1, 3)))
    items = []
    for code in codes:
        item: dict[str, Any] = {"code": code, "quantity": rng.randint(1, 30) if kind == "drug" else 1}
        if kind == "drug":
            item.update(dose=rng.choice(DOSES), instruction=rng.choice(INSTRUCTIONS))
        items.append(item)
    return items


def _envelope(event_id: str, event_type: str, at: dt.datetime, visit_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"event_id": event_id, "event_type": event_type, "schema_version": "1", "occurred_at": at.isoformat(),
            "facility_siam_id": FACILITY, "source_system": "sample-his", "correlation_id": visit_id, "payload": payload}


class _Builder:
    def __init__(self, now: dt.datetime, seed: int):
        self.rng = random.Random(seed)
        local = now.astimezone(TEHRAN)
        self.start = max(local - dt.timedelta(hours=2), local.replace(hour=0, minute=0, second=1, microsecond=0))
        self.span = max(1.0, (local - self.start).total_seconds() - 5)
        self.events: list[dict[str, Any]] = []

    def at(self, n: int, total: int) -> dt.datetime:
        return (self.start + dt.timedelta(seconds=self.span * n / max(1, total))).replace(microsecond=0)

    def patient(self, i: int) -> dict[str, Any]:
        rng = self.rng
        return {"identity": {"kind": "national_code", "value": national_code(rng)},
                "first_name": rng.choice(FIRST_NAMES), "last_name": rng.choice(LAST_NAMES),
                "birth_date": f"{rng.randint(1320, 1400)}/{rng.randint(1, 12):02d}/{rng.randint(1, 29):02d}",
                "sex": rng.choice(["male", "female"]), "mobile": f"0912{rng.randrange(10**7):07d}"}


def generate(now: dt.datetime, patients: int = 90, seed: int = 1401, provider_side: bool = False) -> SampleSet:
    """About ``2.4 * patients`` good events plus a handful of bad ones.

    ``provider_side`` adds what the hospital's pharmacy, lab and imaging units and its billing
    send afterwards (dispense, paraclinic orders and results, bills): about 1.2 more per patient."""
    b = _Builder(now, seed)
    out = SampleSet(lines=[])
    total = patients * 3
    for i in range(patients):
        patient, doctor = b.patient(i), _prescriber(i % 5)
        kind = KINDS[i % len(KINDS)]
        visit_id, rx_id = f"V{i:04d}", f"RX{i:04d}"
        if i in (7, 23):
            out.unknown_patients.add(patient["identity"]["value"])
        if i == 41:
            out.expired_patients.add(patient["identity"]["value"])
        b.events.append(_envelope(f"evt-{i:04d}-visit", "visit.admitted", b.at(3 * i, total), visit_id, {
            "visit_id": visit_id, "admitted_at": b.at(3 * i, total).isoformat(), "admission_type": "outpatient",
            "patient": patient, "attending": doctor}))
        created = {"prescription_id": rx_id, "visit_id": visit_id, "kind": kind,
                   "prescribed_at": b.at(3 * i + 1, total).isoformat(), "patient": patient, "prescriber": doctor,
                   "comments": "", "items": _items(b.rng, kind)}
        b.events.append(_envelope(f"evt-{i:04d}-rx", "prescription.created", b.at(3 * i + 1, total), visit_id, created))
        final = created
        if kind in ("drug", "paraclinic") and i % 4 == 0:
            final = {**created, "items": _items(b.rng, kind)}
            b.events.append(_envelope(f"evt-{i:04d}-rx-edit", "prescription.updated", b.at(3 * i + 2, total), visit_id,
                                      final))
        elif i % 6 == 5:
            b.events.append(_envelope(f"evt-{i:04d}-rx-cancel", "prescription.cancelled", b.at(3 * i + 2, total),
                                      visit_id, {"prescription_id": rx_id, "kind": kind,
                                                 "cancelled_at": b.at(3 * i + 2, total).isoformat(),
                                                 "reason": "entered in error", "patient": patient, "prescriber": doctor}))
        refused = i in (7, 23, 41)  # the insurer refuses the prescription: nothing to serve
        if provider_side and not refused and i % 6 != 5:  # served as last edited, never once cancelled
            _add_provider_events(b, i, final, b.at(3 * i + 2, total))
        if provider_side and i % 3 == 0:
            b.events.append(provider.bill_event(_envelope, _visit_of(b, visit_id), b.at(3 * i + 2, total)
                                                + dt.timedelta(seconds=4), f"evt-{i:04d}-bill"))
    out.distinct_events = len(b.events)
    out.lines = [json.dumps(e, ensure_ascii=False).encode() for e in b.events]
    bad = _bad_events(b)
    out.lines.extend(bad)
    out.distinct_events += len(bad)
    out.lines.append(out.lines[1])  # the HIS sent one event twice: stored once
    return out


def _visit_of(b: _Builder, visit_id: str) -> dict[str, Any]:
    return next(e["payload"] for e in b.events
                if e["event_type"] == "visit.admitted" and e["payload"]["visit_id"] == visit_id)


def _add_provider_events(b: _Builder, i: int, created: dict[str, Any], at: dt.datetime) -> None:
    """The hospital's own units serve a prescription that was neither edited nor cancelled."""
    def moment(step: int) -> dt.datetime:
        return at + dt.timedelta(seconds=min(step, 3))

    if created["kind"] == "drug":
        b.events.append(provider.dispense_event(_envelope, b.rng, created, moment(0), f"evt-{i:04d}-dispense"))
    elif created["kind"] == "paraclinic":
        b.events.extend(provider.paraclinic_events(_envelope, b.rng, created, moment, f"evt-{i:04d}-para"))


def _bad_events(b: _Builder) -> list[bytes]:
    """Deliberately bad messages, each for a different reason."""
    good = b.events[1]
    variants: list[bytes] = [b'{"event_id": "bad-json", "event_type": ', b"\xff\xfe not utf-8"]

    def variant(event_id: str, change: Any) -> None:
        event = json.loads(json.dumps(good))
        event["event_id"] = event_id
        change(event)
        variants.append(json.dumps(event, ensure_ascii=False).encode())

    variant("bad-type", lambda e: e.update(event_type="prescription.teleported"))
    variant("bad-national-code", lambda e: e["payload"]["patient"]["identity"].update(value="0012345678"))
    variant("bad-jalali-date", lambda e: e["payload"]["patient"].update(birth_date="1402/12/30"))
    variant("bad-missing-prescriber", lambda e: e["payload"].pop("prescriber"))
    variant("bad-unmapped-code", lambda e: e["payload"].update(
        kind="drug", prescription_id="RX-UNMAPPED", visit_id=None,
        items=[{"code": "D-NOT-IN-TABLE", "quantity": 1, "dose": "TID", "instruction": "AFTER_MEAL"}]))
    variant("persian-digits-ok", lambda e: e["payload"].update(
        prescription_id="RX-PERSIAN", visit_id=None,
        patient={**e["payload"]["patient"], "identity": {"kind": "national_code", "value": "۱۲۳۴۵۶۷۸۹۱"}}))
    return variants
