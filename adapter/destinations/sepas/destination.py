"""SEPAS (through DITAS) as a dispatch destination.

``prepare`` does everything that needs no network: it completes ``MsgID`` (system and
facility ids from config, VersionLifecycleState, the PatientUID/CompositionUID SEPAS gave
earlier messages about the same record), adds the visit's HID when the mapping left it
out, writes the XML and runs the local terminology checks. Any problem there is an
``invalid`` outcome and nothing is sent.

``send`` encrypts, calls the validation service (mandatory before every send, seed 004)
and only when it reports no critical error calls the save; the returned ids
(``message_uid``, ``composition_uid``, ``patient_uid``) end up in the submission's result.

The mapping gives ``params``: ``message`` (PatientBill, MedicationPrescription, ...),
``facility`` (the event's facility_siam_id) and optionally ``visit_id``.
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import zoneinfo
from collections.abc import Callable
from typing import Any

from adapter.destinations.base import Job
from adapter.destinations.outcome import Outcome, OutcomeClass
from adapter.destinations.sepas.client import DESTINATION, DitasClient
from adapter.destinations.sepas.config import SepasConfig
from adapter.destinations.sepas.crypto import encrypt_envelope, load_public_key
from adapter.destinations.sepas.messages import (
    MessageProblem,
    build_xml,
    document_hash,
    spec_for,
)
from adapter.destinations.sepas.terminology import Terminology
from adapter.store.lookups import DestinationStore

INCOMPLETE = {"Value": "incomplete", "Terminology_id": "thritaEHR", "Coded_string": "1.1.1.2"}
_TEHRAN = zoneinfo.ZoneInfo("Asia/Tehran")


def tehran_today() -> dt.date:
    return dt.datetime.now(_TEHRAN).date()


def _identifier(value: str, kind: str) -> dict[str, str]:
    return {"Issuer": "MOHME_IT", "Assigner": "MOHME_IT", "ID": value, "Type": kind}


def complete_msg_id(tree: dict[str, Any], system_id: str, location_id: str,
                    patient_uid: str | None = None, composition_uid: str | None = None) -> dict[str, Any]:
    """A copy of ``tree`` whose MsgID has the ids in the order of the VO (research s.2)."""
    out = copy.deepcopy(tree)
    given = dict(out.get("MsgID") or {})
    msg: dict[str, Any] = {"VersionLifecycleState": given.pop("VersionLifecycleState", INCOMPLETE)}
    if "IS_Queriable" in given:
        msg["IS_Queriable"] = given.pop("IS_Queriable")
    msg["SystemID"] = _identifier(system_id, "System_ID")
    msg["HealthCareFacilityID"] = _identifier(location_id, "Org_ID")
    given.pop("SystemID", None), given.pop("HealthCareFacilityID", None)
    patient_uid = given.pop("PatientUID", None) or patient_uid
    composition_uid = given.pop("CompositionUID", None) or composition_uid
    if patient_uid:
        msg["PatientUID"] = patient_uid
    if composition_uid:
        msg["CompositionUID"] = composition_uid
    msg.update(given)  # Committer and anything else the mapping gave
    ordered = {"Person": out.get("Person"), "MsgID": msg, "Composition": out.get("Composition")}
    return {k: v for k, v in ordered.items() if v is not None}


class SepasDestination:
    name = DESTINATION

    def __init__(self, client: DitasClient, config: SepasConfig, terminology: Terminology,
                 today: Callable[[], dt.date] = tehran_today, hid_destination: str | None = "tamin"):
        self._client, self._config, self._terminology = client, config, terminology
        self._public_key = load_public_key(config.public_key_file)
        self._today = today
        self._hid_destination = hid_destination

    # ----- prepare ----------------------------------------------------------------------
    def prepare(self, store: DestinationStore, job: Job) -> Job | Outcome:
        known = self._known_uids(store, job)
        hid = self._visit_hid(store, job)
        return self.prepare_offline(job, known, hid)

    def prepare_offline(self, job: Job, known: dict[str, str] | None = None, hid: str | None = None) -> Job | Outcome:
        """The part of ``prepare`` that needs no database (also used by tests and ``mapping test``)."""
        params = job.params or {}
        try:
            spec = spec_for(str(params.get("message")))
        except MessageProblem as exc:
            return Outcome(OutcomeClass.invalid, f"mapping params.message: {exc}")
        location = self._config.location_for(params.get("facility"))
        if not location:
            return Outcome(OutcomeClass.invalid, "no facility GUID for this facility: set destinations.sepas."
                                                 "location_ids or default_location_id")
        if not isinstance(job.payload, dict):
            return Outcome(OutcomeClass.invalid, "the SEPAS mapping produced no message body")
        known = known or {}
        tree = complete_msg_id(job.payload, self._config.system_id, location,
                               known.get("patient_uid"), known.get("composition_uid"))
        _add_hid(tree, hid, self._hid_destination, spec.insurance_list)
        problems = self._terminology.check(spec.name, tree, self._today())
        if problems:
            return Outcome(OutcomeClass.invalid,
                           "local terminology check: " + "; ".join(str(p) for p in problems)[:1500],
                           result={"validation": [p.as_dict() for p in problems], "validated_by": "local"})
        try:
            xml = build_xml(spec.name, tree)
        except MessageProblem as exc:
            return Outcome(OutcomeClass.invalid, f"SEPAS message: {exc}")
        return job.with_context(message=spec.name, xml=xml.decode("utf-8"), location_id=location,
                                document_hash=document_hash(xml), uids=known, hid=hid)

    def _known_uids(self, store: DestinationStore, job: Job) -> dict[str, str]:
        """CompositionUID of this record and PatientUID from earlier accepted SEPAS messages."""
        known = store.earlier_uids(self.name, job.subject_key, (job.params or {}).get("message"), job.submission_id)
        facility, visit_id = (job.params or {}).get("facility"), (job.params or {}).get("visit_id")
        if "patient_uid" not in known and facility and visit_id:
            patient_uid = store.visit_patient_uid(str(facility), str(visit_id), self.name)
            if patient_uid:
                known["patient_uid"] = patient_uid
        return known

    def _visit_hid(self, store: DestinationStore, job: Job) -> str | None:
        facility, visit_id = (job.params or {}).get("facility"), (job.params or {}).get("visit_id")
        if not (self._hid_destination and facility and visit_id):
            return None
        answer = store.visit_answer(str(facility), str(visit_id), self._hid_destination)
        return answer.eligible_hid if answer is not None else None

    # ----- send -------------------------------------------------------------------------
    def _ready(self, job: Job) -> Job | Outcome:
        return job if "xml" in job.context else self.prepare_offline(job)

    def send(self, job: Job) -> Outcome:
        ready = self._ready(job)
        if isinstance(ready, Outcome):
            return ready
        spec = spec_for(ready.context["message"])
        envelope = encrypt_envelope(ready.context["xml"].encode("utf-8"), self._public_key)
        body = self._client.envelope_body(spec, envelope, ready.context["location_id"])
        checked, items = self._client.validate(spec, body, ready.idempotency_key, ready.deadline)
        if checked.klass is not OutcomeClass.accepted:
            checked.result.setdefault("validated_by", "sepas")
            return checked
        saved = self._client.save(spec, body, ready.idempotency_key, ready.deadline)
        if items:
            saved.result["validation_warnings"] = [i.as_dict() for i in items]
        saved.request["validated"] = True
        saved.request["document_sha256"] = ready.context["document_hash"][:16]
        _keep_lookup_keys(saved, ready)
        return saved

    def lookup(self, job: Job) -> Outcome:
        """Did an earlier, unanswered save reach SEPAS? Asked by document hash, for each form the
        document could have had then: what the adapter knows of the visit only grows (a
        PatientUID, a CompositionUID, the HID learned since), so the unanswered send carried
        the same body with some of today's ids missing. Asking with today's form alone would
        miss it and send it again."""
        ready = self._ready(job)
        if isinstance(ready, Outcome):
            return ready
        spec = spec_for(ready.context["message"])
        found = Outcome(OutcomeClass.not_found, "no SEPAS record with this document")
        for candidate in self._forms_sent_before(ready):
            found = self._client.lookup(spec, candidate.context["document_hash"], candidate.context["location_id"],
                                        candidate.idempotency_key, candidate.deadline)
            if found.klass is not OutcomeClass.not_found:
                _keep_lookup_keys(found, candidate)
                return found
        return found

    def _forms_sent_before(self, ready: Job) -> list[Job]:
        """``ready`` as prepared now, then with every smaller set of the ids it carries (most first)."""
        known: dict[str, str] = dict(ready.context.get("uids") or {})
        hid = ready.context.get("hid")
        names = [n for n in ("patient_uid", "composition_uid") if n in known] + (["hid"] if hid else [])
        forms, seen = [ready], {ready.context["document_hash"]}
        for size in range(len(names) - 1, -1, -1):
            for kept in itertools.combinations(names, size):
                form = self.prepare_offline(ready, {n: known[n] for n in kept if n != "hid"},
                                            hid if "hid" in kept else None)
                if isinstance(form, Job) and form.context["document_hash"] not in seen:
                    seen.add(form.context["document_hash"])
                    forms.append(form)
        return forms

    def on_result(self, store: DestinationStore, job: Job, outcome: Outcome) -> None:
        """Keep the PatientUID per visit, so later messages of the visit carry it (the store
        handles two messages of one visit settling at once)."""
        if outcome.klass is not OutcomeClass.accepted or not outcome.result.get("patient_uid"):
            return
        facility, visit_id = (job.params or {}).get("facility"), (job.params or {}).get("visit_id")
        if not (facility and visit_id):
            return
        store.record_patient_uid(str(facility), str(visit_id), self.name, outcome.result["patient_uid"])


def _keep_lookup_keys(outcome: Outcome, job: Job) -> None:
    """An accepted record keeps what a later reconciliation lookup needs (the full document
    hash and the facility GUID): Airflow's ``reconcile_submissions`` asks DITAS with them."""
    if outcome.klass is OutcomeClass.accepted:
        outcome.result.update(document_hash=job.context["document_hash"], location_id=job.context["location_id"],
                              message=job.context["message"])


# the insurer whose eligibility answer gave a visit its HID (``hid_destination``)
HID_INSURERS: dict[str, dict[str, str]] = {
    "tamin": {"Value": "تأمین اجتماعی", "Terminology_id": "thritaEHR.insurer", "Coded_string": "1"},
}


def _add_hid(tree: dict[str, Any], hid: str | None, issuer: str | None, insurance_list: bool = True) -> None:
    """Complete the first Insurance's SHEBAD (the HID, research s.7): ``{Issuer, Assigner, ID, Type=HID}``.

    The mapping may give only ``Issuer`` (from the insurer) and ``ID`` when the HIS knows the
    HID; without an ID the visit's HID from eligibility is used, else SHEBAD is left out.
    A message whose mapping has no Insurance (the event knows no insurer: dispensing, lab,
    imaging) gets one from the visit's HID: the insurer that answered the eligibility call.
    """
    composition = tree.get("Composition")
    if not isinstance(composition, dict):
        return
    if "Insurance" not in composition:
        if hid and issuer in HID_INSURERS:
            _insert_after(composition, "Admission", "Insurance",
                          [{"Insurer": dict(HID_INSURERS[issuer]), "SHEBAD": {"ID": hid}}] if insurance_list
                          else {"Insurer": dict(HID_INSURERS[issuer]), "SHEBAD": {"ID": hid}})
        else:
            return
    insurance = composition.get("Insurance")
    first = insurance[0] if isinstance(insurance, list) and insurance else insurance
    if not isinstance(first, dict):
        return
    given = first.get("SHEBAD")
    shebad: dict[str, Any] = given if isinstance(given, dict) else {}
    hid_value = shebad.get("ID") or hid
    if not hid_value:
        first.pop("SHEBAD", None)
        return
    org = str(shebad.get("Issuer") or (issuer or "").upper() or "MOHME_IT")
    first["SHEBAD"] = {"Issuer": org, "Assigner": org, "ID": hid_value, "Type": "HID"}


def _insert_after(node: dict[str, Any], anchor: str, key: str, value: Any) -> None:
    """Put ``key`` right after ``anchor`` (the VO's element order), or last when there is no anchor."""
    items = list(node.items())
    at = next((i + 1 for i, (k, _) in enumerate(items) if k == anchor), len(items))
    items.insert(at, (key, value))
    node.clear()
    node.update(items)
