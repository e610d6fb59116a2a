"""`adapter mapping test`, the integrator's own tool, run as a real command on every golden case
of every destination: it exits 0 and prints exactly the expected payload (for SEPAS, whose
body becomes XML in the destination, the expected routing params; the XML itself is compared
in test_sepas_golden.py). And no shipped mapping is without a golden case."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden"
CASES = sorted(GOLDEN.glob("*/*.event.json"))


def _mapping_of(case: Path) -> Path:
    return REPO / "mappings" / case.parent.name / (case.name.split(".")[0] + ".yaml")


def test_every_shipped_mapping_of_every_destination_has_a_golden_case() -> None:
    shipped = {p for p in (REPO / "mappings").glob("*/*.yaml")}
    covered = {_mapping_of(case) for case in CASES}
    assert shipped - covered == set()
    assert covered - shipped == set()  # a golden case names a mapping that exists


@pytest.mark.parametrize("case", CASES, ids=lambda p: f"{p.parent.name}/{p.name.removesuffix('.event.json')}")
def test_mapping_test_command_prints_the_expected_payload(case: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "adapter", "mapping", "test", str(_mapping_of(case)), str(case)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    printed = json.loads(done.stdout)
    expected_json = case.with_name(case.name.replace(".event.json", ".expected.json"))
    if expected_json.exists():
        assert printed == json.loads(expected_json.read_text("utf-8"))
    else:
        params = case.with_name(case.name.replace(".event.json", ".params.json"))
        assert printed["params"] == json.loads(params.read_text("utf-8"))
        assert printed["body"]  # the tree the destination writes as XML
