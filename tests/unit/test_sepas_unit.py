"""SEPAS pieces without a server: envelope, XML writer/reader, terminology rules, MAXA import."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path

import httpx
import pytest

from adapter.destinations.outcome import OutcomeClass
from adapter.destinations.sepas.client import read_validation
from adapter.destinations.sepas.crypto import decrypt_envelope, encrypt_envelope, generate_keypair, load_public_key
from adapter.destinations.sepas.messages import MessageProblem, build_xml, iter_coded, parse_xml
from adapter.destinations.sepas.terminology import load_maxa_csv, load_terminology
from tests.unit.sepas_support import REPO, make_destination
from tests.unit.test_sepas_golden import CASES, mapped_job

TERMS = REPO / "mappings" / "sepas" / "terminology"


def test_envelope_round_trip_fresh_key_and_iv() -> None:
    private, public_pem = generate_keypair()
    public = load_public_key(public_pem)
    xml = "<PatientBillMessageVO>سلام</PatientBillMessageVO>".encode()
    one, two = encrypt_envelope(xml, public), encrypt_envelope(xml, public)
    assert decrypt_envelope(one.as_fields(), private) == xml == decrypt_envelope(two.as_fields(), private)
    assert one.data != two.data and one.key != two.key and one.iv != two.iv
    assert len(private.decrypt(base64.b64decode(one.key), __import__("adapter.destinations.sepas.crypto",
                                                                      fromlist=["_OAEP"])._OAEP)) == 32


def test_public_key_from_dotnet_xml() -> None:
    private, _ = generate_keypair()
    numbers = private.public_key().public_numbers()
    b64 = lambda n: base64.b64encode(n.to_bytes((n.bit_length() + 7) // 8, "big")).decode()  # noqa: E731
    xml = f"<RSAKeyValue><Modulus>{b64(numbers.n)}</Modulus><Exponent>{b64(numbers.e)}</Exponent></RSAKeyValue>"
    envelope = encrypt_envelope(b"x", load_public_key(xml))
    assert decrypt_envelope(envelope.as_fields(), private) == b"x"


def test_xml_reads_back_and_coded_fields_are_found() -> None:
    job = mapped_job(next(c for c in CASES if c.name.startswith("patient_bill")))
    root, tree = parse_xml(build_xml("PatientBill", job.payload))
    assert root == "PatientBillMessageVO"
    assert tree["Composition"]["BillServices"][1]["Service"]["Coded_string"] == "980015"
    assert tree["Composition"]["Admission"]["AdmissionDate"] == {"Year": "1403", "Month": "5", "Day": "11"}
    fields = {name for _, name, _ in iter_coded(tree)}
    assert {"Gender", "Service", "ServiceType", "Diagnosis", "Name", "Type"} <= fields


def test_bad_date_is_a_message_problem() -> None:
    with pytest.raises(MessageProblem, match="IssueDate"):
        build_xml("MedicationPrescription", {"Person": {}, "MsgID": {}, "Composition": {"IssueDate": "2024-13-01"}})


def test_terminology_ids_compare_case_insensitively_and_dates_apply() -> None:
    terms = load_terminology(TERMS)
    tree = {"Composition": {"AdmissionWard": {"Type": {"Value": "x", "Terminology_id": "ThritaEHR.WardType",
                                                       "Coded_string": "999"}}}}
    after = terms.check("PatientBill", tree, dt.date(2023, 2, 1))
    assert [(p.field, p.code) for p in after] == [("Composition.AdmissionWard.Type", "CODE_NOT_IN_TERMINOLOGY")]
    assert terms.check("PatientBill", tree, dt.date(2023, 1, 29)) == []  # before 1401/11/10
    tree["Composition"]["AdmissionWard"]["Type"]["Coded_string"] = "300"
    assert terms.check("PatientBill", tree, dt.date(2024, 1, 1)) == []


def test_enforcement_dates_come_from_config() -> None:
    terms = load_terminology(TERMS, {"diagnosis-icd10": "1403/06/01"})
    tree = {"Composition": {"Diagnosis": [{"Diagnosis": {"Terminology_id": "icd10", "Coded_string": "Q99.9"}}]}}
    assert terms.check("LabResult", tree, dt.date(2024, 8, 1)) == []
    [problem] = terms.check("LabResult", tree, dt.date(2024, 9, 1))
    assert problem.field == "Composition.Diagnosis[0].Diagnosis" and "ICD10" in problem.text
    with pytest.raises(ValueError, match="unknown rules"):
        load_terminology(TERMS, {"no-such-rule": None})


def test_maxa_csv_import(tmp_path: Path) -> None:
    source = tmp_path / "maxa.csv"
    source.write_text("ConceptCode;ConceptName;Status\n718-7;Hemoglobin;Active\n2345-7;Glucose;Active\n718-7;dup;x\n",
                      encoding="utf-8")
    assert load_maxa_csv(source) == [("2345-7", "Glucose"), ("718-7", "Hemoglobin")]


def test_validation_answer_reading() -> None:
    items = read_validation([
        {"ErrorMessage": "code not valid", "ErrorCategoryType": "TERMINOLOGY", "ErrorCategorySource": "A.B",
         "ErrorCategoryCritical": "true"},
        {"ErrorMessage": "just a warning", "ErrorCategoryCritical": "false"},
        {"ErrorMessage": ""},
    ])
    assert [(i.field, i.code, i.critical) for i in items] == [("A.B", "TERMINOLOGY", True), ("", "", False)]
    assert read_validation({"ErrorMessage": None}) == []


def test_bad_erx_code_is_invalid_locally_without_any_http_call(tmp_path: Path) -> None:
    calls: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda request: calls.append(request) or httpx.Response(500))
    destination, _ = make_destination(tmp_path, transport=transport)
    job = mapped_job(next(c for c in CASES if c.name.startswith("medication")))
    orders = job.payload["Composition"]["MedicationPrescriptions"]["Orders"]
    orders[1]["ProductCode"] = {"Value": "?", "Terminology_id": "ERX", "Coded_string": "99999"}
    outcome = destination.send(job)
    assert outcome.klass is OutcomeClass.invalid
    assert outcome.result["validation"] == [{
        "field": "Composition.MedicationPrescriptions.Orders[1].ProductCode", "code": "CODE_NOT_IN_TERMINOLOGY",
        "text": "code '99999' is not in eRx version samples (checked since 2023-02-09, seed 004 row 5)"}]
    assert outcome.result["validated_by"] == "local"
    assert calls == []
