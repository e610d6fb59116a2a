"""The template language, the loader and the errors of the mapping engine."""

from __future__ import annotations

import copy
import json
import textwrap
from pathlib import Path

import pytest

from adapter.mapping import (
    MappedPayload,
    Mapping,
    MappingError,
    MappingProblem,
    MappingSet,
    load_mapping_file,
    load_mappings,
)

REPO = Path(__file__).resolve().parents[2]

HEAD = """\
mapping: test
version: 1
destination: demo
operation: create
event_types: [prescription.created]
"""

SERVICES = """\
his_code,srv_code,srv_type,par_grp_code
D-1,111,01,
L-1,222,02,004
"""

EVENT = {
    "event_id": "evt-1",
    "event_type": "prescription.created",
    "facility_siam_id": "1234567",
    "payload": {
        "kind": "drug",
        "prescribed_at": "2026-11-20T09:10:00+03:30",
        "comments": None,
        "patient": {"identity": {"kind": "national_code", "value": "0087654326"},
                    "first_name": "Reza", "last_name": "Moradi", "mobile": "09121234567"},
        "prescriber": {"national_code": "1234567891", "first_name": "Sara", "last_name": "Karimi"},
        "items": [{"code": "D-1", "quantity": 2, "dose": "TID"}, {"code": "L-1", "quantity": 1}],
    },
}


def write_mapping(tmp_path: Path, body: str, tables: dict[str, str] | None = None, head: str = HEAD,
                  decl: str = "") -> Path:
    for name, text in (tables or {}).items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    path = tmp_path / "m.yaml"
    path.write_text(head + decl + textwrap.dedent(body), encoding="utf-8")
    return path


def mapped(tmp_path: Path, body: str, event: dict | None = None, **kw: object) -> MappedPayload:
    return load_mapping_file(write_mapping(tmp_path, body, **kw)).apply(copy.deepcopy(event or EVENT))


def problems(tmp_path: Path, body: str, event: dict | None = None, **kw: object) -> list[MappingProblem]:
    with pytest.raises(MappingError) as caught:
        mapped(tmp_path, body, event, **kw)
    return caught.value.problems


def load_problems(tmp_path: Path, body: str, **kw: object) -> list[str]:
    with pytest.raises(MappingError) as caught:
        load_mapping_file(write_mapping(tmp_path, body, **kw))
    return [str(p) for p in caught.value.problems]


TABLES = {"codes/services.csv": SERVICES}
TABLE_DECL = """\
tables:
  services: {file: codes/services.csv, key: his_code, default: error}
"""


# ---------------------------------------------------------------- literals and value specs


def test_literals_pass_through(tmp_path: Path) -> None:
    payload = mapped(tmp_path, """\
        body:
          a: 1
          b: [x, true, null, 2.5]
          c: {d: text}
        """)
    assert payload.body == {"a": 1, "b": ["x", True, None, 2.5], "c": {"d": "text"}}
    assert (payload.mapping, payload.destination, payload.operation, payload.params) == ("test", "demo", "create", {})


def test_path_const_and_root_paths(tmp_path: Path) -> None:
    payload = mapped(tmp_path, """\
        params:
          siam: {$path: facility_siam_id}
        body:
          kind: {$path: payload.kind}
          first_code: {$path: payload.items.0.code}
          fixed: {$const: {any: [json]}}
          from_root: {$path: $root.event_id}
        """)
    assert payload.params == {"siam": "1234567"}
    assert payload.body == {"kind": "drug", "first_code": "D-1", "fixed": {"any": ["json"]}, "from_root": "evt-1"}


def test_missing_required_path_names_file_key_and_path(tmp_path: Path) -> None:
    [problem] = problems(tmp_path, """\
        body:
          head: {mobile: {$path: payload.patient.telephone}}
        """)
    assert problem.file == str(tmp_path / "m.yaml")
    assert problem.key == "body.head.mobile"
    assert problem.reason == "required value missing: event path payload.patient.telephone is absent or null"
    assert str(problem) == f"{problem.file}: body.head.mobile: {problem.reason}"


def test_null_counts_as_missing_and_default(tmp_path: Path) -> None:
    payload = mapped(tmp_path, """\
        body:
          comments: {$path: payload.comments, $default: ""}
          absent: {$path: payload.nothing, $default: 0}
        """)
    assert payload.body == {"comments": "", "absent": 0}
    [problem] = problems(tmp_path, "body: {comments: {$path: payload.comments}}\n")
    assert problem.key == "body.comments"


def test_optional_omits_the_key_and_emptied_objects(tmp_path: Path) -> None:
    payload = mapped(tmp_path, """\
        params:
          maybe: {$path: payload.nope, $optional: true}
        body:
          expire: {$path: payload.expires_on, $optional: true}
          wrap: {inner: {$path: payload.nope, $optional: true}}
          kept: {inner: {$path: payload.kind, $optional: true}}
          list: [{$path: payload.nope, $optional: true}, 1]
        """)
    assert payload.params == {}
    assert payload.body == {"kept": {"inner": "drug"}, "list": [1]}


def test_when_equals_and_in(tmp_path: Path) -> None:
    payload = mapped(tmp_path, """\
        body:
          drug: {$const: yes, $when: {path: payload.kind, equals: drug}}
          lab: {$const: yes, $when: {path: payload.kind, equals: paraclinic}}
          either: {$const: 1, $when: {path: payload.kind, in: [drug, service]}}
          none: {$const: 1, $when: {path: payload.kind, in: [visit]}}
          absent_is_null: {$const: 1, $when: {path: payload.nope, equals: null}}
        """)
    assert payload.body == {"drug": True, "either": 1, "absent_is_null": 1}


def test_when_false_skips_required_value(tmp_path: Path) -> None:
    payload = mapped(tmp_path, "body: {x: {$path: payload.nope, $when: {path: payload.kind, equals: visit}}}\n")
    assert payload.body == {}


def test_each_with_relative_and_root_paths(tmp_path: Path) -> None:
    payload = mapped(tmp_path, """\
        body:
          items:
            $each: payload.items
            $item:
              code: {$path: code, $table: services, $column: srv_code}
              qty: {$path: quantity, $transform: str}
              group: {grp: {$path: code, $table: services, $column: par_grp_code, $optional: true}}
              dose: {$path: dose, $when: {path: $root.payload.kind, equals: drug}, $optional: true}
              siam: {$path: $root.facility_siam_id}
        """, tables=TABLES, decl=TABLE_DECL)
    assert payload.body == {"items": [
        {"code": "111", "qty": "2", "dose": "TID", "siam": "1234567"},
        {"code": "222", "qty": "1", "group": {"grp": "004"}, "siam": "1234567"},
    ]}


def test_each_as_the_whole_body_and_bad_list(tmp_path: Path) -> None:
    payload = mapped(tmp_path, "body: {$each: payload.items, $item: {$path: code}}\n")
    assert payload.body == ["D-1", "L-1"]
    [problem] = problems(tmp_path, "body: {$each: payload.patient, $item: {$path: code}}\n")
    assert problem.key == "body" and "needs a list" in problem.reason


def test_error_inside_each_names_the_index(tmp_path: Path) -> None:
    [problem] = problems(tmp_path, "body: {items: {$each: payload.items, $item: {d: {$path: dose}}}}\n")
    assert problem.key == "body.items[1].d"
    assert problem.reason == "required value missing: event path payload.items[1].dose is absent or null"


def test_transform_list_in_order(tmp_path: Path) -> None:
    payload = mapped(tmp_path, "body: {x: {$path: payload.items.0.dose, $transform: [str, upper]}}\n")
    assert payload.body == {"x": "TID"}


def test_table_lookup_and_default_row(tmp_path: Path) -> None:
    payload = mapped(tmp_path, """\
        tables:
          services: {file: codes/services.csv, key: his_code, default: {srv_code: "999", srv_type: "17"}}
        body:
          - {$path: payload.items.0.code, $table: services, $column: srv_code}
          - {$const: UNKNOWN-CODE, $table: services, $column: srv_code}
          - {$const: UNKNOWN-CODE, $table: services, $column: par_grp_code, $optional: true}
        """, tables=TABLES)
    assert payload.body == ["111", "999"]


def test_unmapped_code_error_names_file_key_table_and_code(tmp_path: Path) -> None:
    event = copy.deepcopy(EVENT)
    event["payload"]["items"][1]["code"] = "L-NEW"
    [problem] = problems(tmp_path, """\
        body:
          noteDetailEprscs:
            $each: payload.items
            $item: {srvId: {srvCode: {$path: code, $table: services, $column: srv_code}}}
        """, event=event, tables=TABLES, decl=TABLE_DECL)
    assert problem.file == str(tmp_path / "m.yaml")
    assert problem.key == "body.noteDetailEprscs[1].srvId.srvCode"
    assert "'L-NEW'" in problem.reason
    assert "payload.items[1].code" in problem.reason
    assert f"code table 'services' ({tmp_path / 'codes/services.csv'}, key column 'his_code')" in problem.reason
    assert "default is error" in problem.reason


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    found = problems(tmp_path, "body: {a: {$path: x.y}, b: {$path: payload.nope}, c: {$path: payload.kind, $transform: int}}\n")
    assert [p.key for p in found] == ["body.a", "body.b", "body.c"]


def test_wrong_event_type(tmp_path: Path) -> None:
    event = {**EVENT, "event_type": "visit.admitted"}
    [problem] = problems(tmp_path, "body: 1\n", event=event)
    assert problem.key == "event_types" and "not visit.admitted" in problem.reason


def test_no_body_gives_none(tmp_path: Path) -> None:
    assert mapped(tmp_path, "params: {a: {$const: 1}}\n").body is None
    assert mapped(tmp_path, "body: null\n").body is None


# ---------------------------------------------------------------- PHI never in errors


def test_no_patient_data_in_any_error(tmp_path: Path) -> None:
    event = copy.deepcopy(EVENT)
    event["payload"]["patient"]["identity"]["value"] = "0087654327"  # bad check digit
    event["payload"]["patient"]["mobile"] = "0212345678"  # not a mobile
    event["payload"]["prescriber"]["national_code"] = "1234567890"
    event["payload"]["patient"]["birth_date"] = "1985-02-30"
    found = problems(tmp_path, """\
        params:
          doc: {$path: payload.prescriber.national_code, $transform: national_code}
          name: {$path: payload.patient.first_name, $transform: int}
        body:
          patient: {$path: payload.patient.identity, $transform: patient_id_for_tamin}
          patient2: {$path: payload.patient.identity.value, $transform: national_code}
          mobile: {$path: payload.patient.mobile, $transform: mobile_ir}
          birth: {$path: payload.patient.birth_date, $transform: jalali_date8}
          last: {$path: payload.patient.last_name, $transform: [int]}
          whole: {$path: payload.patient, $transform: str}
          as_code: {$path: payload.patient.identity, $table: services, $column: srv_code}
          nc_code: {$path: payload.patient.identity.value, $table: services, $column: srv_code}
          name_code: {$path: payload.prescriber.first_name, $table: services, $column: srv_code}
          number_code: {$const: "09121234567", $table: services, $column: srv_code}
        """, event=event, tables=TABLES, decl=TABLE_DECL)
    assert len(found) == 12
    text = "\n".join(str(p) for p in found) + str(MappingError(found))
    for secret in ["0087654327", "0212345678", "1234567890", "Reza", "Moradi", "Sara", "Karimi", "1985-02-30", "02-30", "09121234567"]:
        assert secret not in text
    assert "payload.patient.mobile" in text


# ---------------------------------------------------------------- load-time errors


def test_unknown_dollar_key(tmp_path: Path) -> None:
    [text] = load_problems(tmp_path, "body: {a: {$path: x, $optinal: true}}\n")
    assert text.endswith("m.yaml: body.a: unknown key '$optinal' in a value spec "
                         "(known: $path, $const, $table, $column, $transform, $optional, $default, $when, $each, $item)")


def test_unknown_top_level_key_and_missing_keys(tmp_path: Path) -> None:
    found = load_problems(tmp_path, "bdy: {}\n", head="mapping: t\nversion: 1\ndestination: demo\n")
    assert any(t.endswith(": bdy: unknown key") for t in found)
    assert any(t.endswith(": operation: required key missing") for t in found)
    assert any(t.endswith(": event_types: required key missing") for t in found)


@pytest.mark.parametrize("body, key, reason", [
    ("body: {a: {$path: x, b: 1}}\n", "body.a", "mixes $-keys"),
    ("body: {a: {$optional: true}}\n", "body.a", "exactly one of $path, $const, $each"),
    ("body: {a: {$path: x, $const: 1}}\n", "body.a", "(has $path, $const)"),
    ("body: {a: {$each: x}}\n", "body.a", "$each and $item go together"),
    ("body: {a: {$path: x, $table: services}}\n", "body.a", "$table and $column go together"),
    ("body: {a: {$path: x, $table: nope, $column: c}}\n", "body.a", "unknown code table 'nope'"),
    ("body: {a: {$path: x, $transform: jalali}}\n", "body.a", "unknown transform 'jalali'"),
    ("body: {a: {$path: x, $optional: true, $default: 1}}\n", "body.a", "$optional and $default together"),
    ("body: {a: {$path: x, $when: {path: y}}}\n", "body.a.$when", "exactly one of equals, in"),
    ("body: {a: {$path: x, $when: {path: y, equal: 1}}}\n", "body.a.$when.equal", "unknown key"),
    ("body: {a: {$path: x..y}}\n", "body.a.$path", "empty segment"),
    ("body: {a: {$path: x.$root}}\n", "body.a.$path", "only the first segment"),
    ("body: {a: {$each: x, $item: {b: {$pth: 1}}}}\n", "body.a[*].b", "unknown key '$pth'"),
    ("body: {1: x}\n", "body.1", "output keys must be text"),
    ("body: {a: 2026-01-01}\n", "body.a", "dates must be quoted"),
])
def test_template_problems(tmp_path: Path, body: str, key: str, reason: str) -> None:
    found = load_problems(tmp_path, body)
    assert any(f": {key}: " in t and reason in t for t in found), found


def test_missing_column_names_the_table(tmp_path: Path) -> None:
    [text] = load_problems(tmp_path, TABLE_DECL + "body: {a: {$path: x, $table: services, $column: srv_name}}\n", tables=TABLES)
    assert "body.a: code table 'services'" in text and "has no column 'srv_name'" in text


def test_bad_yaml_reports_line(tmp_path: Path) -> None:
    [text] = load_problems(tmp_path, "body:\n  a: [1, 2\n  b: 3\n")
    assert ": line 8, column" in text and "invalid YAML" in text


def test_duplicate_yaml_key_reports_line(tmp_path: Path) -> None:
    [text] = load_problems(tmp_path, "body:\n  a: 1\n  a: 2\n")
    assert ": line 8, column 3: invalid YAML:" in text and "'a' appears twice (first on line 7)" in text


def test_problem_and_error_shapes() -> None:
    problem = MappingProblem("mappings/tamin/x.yaml", "body.a", "why")
    assert str(problem) == "mappings/tamin/x.yaml: body.a: why"
    error = MappingError([problem, problem])
    assert error.problems == [problem, problem] and str(error).count("why") == 2


# ---------------------------------------------------------------- load_mappings / MappingSet


def test_load_mappings_reads_destination_folders(tmp_path: Path) -> None:
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "a.yaml").write_text(HEAD + "body: 1\n", encoding="utf-8")
    (tmp_path / "demo" / "b.yaml").write_text(HEAD.replace("test", "test-b").replace("prescription.created", "visit.admitted")
                                              .replace("create", "eligibility") + "params: {p: {$const: 2}}\n", encoding="utf-8")
    mappings = load_mappings(tmp_path)
    assert isinstance(mappings, MappingSet) and mappings.destinations == {"demo"}
    assert [m.name for m in mappings.mappings] == ["test", "test-b"]
    [m] = mappings.for_event("visit.admitted")
    assert isinstance(m, Mapping) and m.operation == "eligibility" and m.source_file == tmp_path / "demo" / "b.yaml"
    assert mappings.for_event("visit.admitted", "other") == []
    assert load_mappings(tmp_path, ["demo"]).destinations == {"demo"}


def test_load_mappings_collects_problems_of_every_file(tmp_path: Path) -> None:
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "a.yaml").write_text(HEAD + "body: {a: {$pth: 1}}\n", encoding="utf-8")
    (tmp_path / "demo" / "b.yaml").write_text(HEAD.replace("demo", "elsewhere") + "body: 1\n", encoding="utf-8")
    (tmp_path / "demo" / "c.yaml").write_text("key: [unclosed\n", encoding="utf-8")
    with pytest.raises(MappingError) as caught:
        load_mappings(tmp_path, ["demo", "missing"])
    files = [Path(p.file).name for p in caught.value.problems]
    assert files == ["missing", "a.yaml", "b.yaml", "c.yaml"]


def test_duplicate_mapping_names(tmp_path: Path) -> None:
    (tmp_path / "demo").mkdir()
    for name in ("a", "b"):
        (tmp_path / "demo" / f"{name}.yaml").write_text(HEAD + "body: 1\n", encoding="utf-8")
    with pytest.raises(MappingError) as caught:
        load_mappings(tmp_path)
    [problem] = caught.value.problems
    assert problem.key == "mapping" and "already used" in problem.reason


def test_shipped_tamin_mappings_load() -> None:
    mappings = load_mappings(REPO / "mappings", ["tamin"])
    assert sorted(m.source_file.name for m in mappings.mappings) == [
        "delete_epresc.yaml", "edit_epresc.yaml", "eligibility.yaml", "send_epresc.yaml"]


def test_drug_item_without_dose_is_a_mapping_error() -> None:
    event = json.loads((REPO / "tests/golden/tamin/send_epresc.event.json").read_text("utf-8"))
    del event["payload"]["items"][1]["dose"]
    [mapping] = load_mappings(REPO / "mappings", ["tamin"]).for_event("prescription.created")
    with pytest.raises(MappingError) as caught:
        mapping.apply(event)
    [problem] = caught.value.problems
    assert problem.key == "body.noteDetailEprscs[1].timesAday.drugAmntId"
    assert Path(problem.file).name == "send_epresc.yaml"


def test_dot_path_is_the_element_itself(tmp_path: Path) -> None:
    event = copy.deepcopy(EVENT)
    event["payload"]["tags"] = ["a", "b"]
    payload = mapped(tmp_path, "body: {$each: payload.tags, $item: {$path: ., $transform: upper}}\n", event=event)
    assert payload.body == ["A", "B"]


def test_one_problem_per_unmapped_code_not_per_column(tmp_path: Path) -> None:
    event = copy.deepcopy(EVENT)
    event["payload"]["items"][0]["code"] = "X-1"
    found = problems(tmp_path, """\
        body:
          $each: payload.items
          $item:
            a: {$path: code, $table: services, $column: srv_code}
            b: {$path: code, $table: services, $column: srv_type}
        """, event=event, tables=TABLES, decl=TABLE_DECL)
    assert [p.key for p in found] == ["body[0].a"]


# ---------------------------------------------------------------- mapping-level routing


def test_top_level_when_routes_only_matching_events(tmp_path: Path) -> None:
    mapping = load_mapping_file(write_mapping(tmp_path, "body: {kind: {$path: payload.kind}}\n",
                                              decl="when: {path: payload.kind, in: [drug]}\n"))
    lab = copy.deepcopy(EVENT)
    lab["payload"]["kind"] = "paraclinic"
    assert mapping.routes(EVENT) is True
    assert mapping.routes(lab) is False
    assert mapping.routes({**EVENT, "event_type": "visit.admitted"}) is False


def test_top_level_when_is_checked_at_load(tmp_path: Path) -> None:
    found = load_problems(tmp_path, "body: {}\n", decl="when: {path: payload.kind}\n")
    assert any("when" in p and "exactly one of equals, in" in p for p in found)


def test_shipped_sepas_medication_mapping_takes_only_drug_prescriptions() -> None:
    [mapping] = load_mappings(REPO / "mappings", ["sepas"]).for_event("prescription.created", "sepas")
    lab = copy.deepcopy(EVENT)
    lab["payload"]["kind"] = "paraclinic"
    assert mapping.routes(EVENT) and not mapping.routes(lab)
