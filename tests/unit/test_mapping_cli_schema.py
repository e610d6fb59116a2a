"""cli_support (mapping test / mapping lint) and the JSON Schema of mapping files."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

from adapter.mapping import mapping_json_schema
from adapter.mapping.cli_support import mapping_lint, mapping_test

REPO = Path(__file__).resolve().parents[2]
TAMIN = REPO / "mappings" / "tamin"
GOLDEN = REPO / "tests" / "golden" / "tamin"


def test_mapping_test_prints_the_payload() -> None:
    code, text = mapping_test(TAMIN / "send_epresc.yaml", GOLDEN / "send_epresc.event.json")
    assert code == 0
    assert json.loads(text) == json.loads((GOLDEN / "send_epresc.expected.json").read_text("utf-8"))


def test_mapping_test_works_on_the_documented_sample() -> None:
    code, text = mapping_test(TAMIN / "send_epresc.yaml", REPO / "docs" / "sample-prescription-created.json")
    assert code == 0 and json.loads(text)["body"]["noteDetailEprscs"][0]["srvId"]["srvCode"]


def test_mapping_test_reports_contract_problems(tmp_path: Path) -> None:
    event = json.loads((GOLDEN / "send_epresc.event.json").read_text("utf-8"))
    event["payload"]["patient"]["identity"]["value"] = "0087654327"
    event["payload"]["items"][0]["quantity"] = 0
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event), encoding="utf-8")
    code, text = mapping_test(TAMIN / "send_epresc.yaml", path)
    assert code == 1
    assert "payload.patient.identity" in text and "payload.items.0.quantity" in text and "(event contract v1)" in text
    assert "0087654327" not in text and "Moradi" not in text


def test_mapping_test_reports_mapping_problems(tmp_path: Path) -> None:
    event = json.loads((GOLDEN / "send_epresc.event.json").read_text("utf-8"))
    event["payload"]["items"][0]["code"] = "D-NOT-IN-TABLE"
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event), encoding="utf-8")
    code, text = mapping_test(TAMIN / "send_epresc.yaml", path)
    assert code == 1
    [line] = text.splitlines()
    assert line.startswith(f"{TAMIN / 'send_epresc.yaml'}: body.noteDetailEprscs[0].srvId.srvCode: code 'D-NOT-IN-TABLE'")
    assert "services.csv" in line


def test_mapping_test_with_a_broken_mapping_and_missing_files(tmp_path: Path) -> None:
    broken = tmp_path / "m.yaml"
    broken.write_text("mapping: x\n", encoding="utf-8")
    code, text = mapping_test(broken, GOLDEN / "send_epresc.event.json")
    assert code == 1 and f"{broken}: operation: required key missing" in text
    assert mapping_test(tmp_path / "nope.yaml", GOLDEN / "send_epresc.event.json")[0] == 2
    assert mapping_test(broken, tmp_path / "nope.json")[0] == 2


def test_mapping_lint_lists_problems(tmp_path: Path) -> None:
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "m.yaml").write_text("mapping: [\n", encoding="utf-8")
    code, text = mapping_lint(tmp_path)
    assert code == 1 and "invalid YAML" in text and text.endswith("1 problem")


def test_schema_is_valid_and_checked_in() -> None:
    schema = mapping_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert json.loads((REPO / "docs" / "mapping-schema.json").read_text("utf-8")) == schema, \
        "docs/mapping-schema.json is stale: regenerate it from adapter.mapping.mapping_json_schema()"


def test_shipped_mappings_match_the_schema() -> None:
    validator = jsonschema.Draft202012Validator(mapping_json_schema())
    for path in sorted(TAMIN.glob("*.yaml")):
        errors = list(validator.iter_errors(yaml.safe_load(path.read_text("utf-8"))))
        assert not errors, (path.name, [e.message for e in errors])


def test_schema_rejects_unknown_dollar_key() -> None:
    validator = jsonschema.Draft202012Validator(mapping_json_schema())
    document = yaml.safe_load((TAMIN / "delete_epresc.yaml").read_text("utf-8"))
    document["params"]["doc_id"] = {"$pth": "x"}
    assert list(validator.iter_errors(document))
    document["extra"] = 1
    assert list(validator.iter_errors(document))
