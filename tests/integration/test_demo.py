"""The README's first command, as a new user runs it: `adapter demo --json` in its own process,
on the embedded defaults, with both bundled simulators. Every event type of the contract
reaches every destination it maps to, the provider-side ones all the way to ``accepted``,
and neither simulator received anything twice."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from adapter.events.contract import EVENT_TYPES

REPO = Path(__file__).resolve().parents[2]

# event type -> the destinations it must reach, every submission accepted
PROVIDER_SIDE = {
    "dispense.completed": {"tamin_pharmacy", "sepas"},
    "paraclinic.requested": {"tamin_paraclinic", "sepas"},
    "paraclinic.completed": {"tamin_paraclinic"},
    "lab.result": {"sepas"},
    "bill.closed": {"sepas"},
}


def run_demo(workdir: Path, patients: int) -> dict:
    done = subprocess.run([sys.executable, "-m", "adapter", "demo", "--json", "--workdir", str(workdir),
                           "--patients", str(patients)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_demo_covers_every_event_type_and_destination(tmp_path: Path) -> None:
    summary = run_demo(tmp_path / "demo", patients=40)
    assert summary["complete"] is True
    assert summary["pending"] == 0 and summary["dead"] == 0
    assert summary["duplicates_at_destination"] == 0
    assert summary["ditas_simulator"]["duplicates"] == 0
    by_type = summary["by_event_type"]
    assert set(EVENT_TYPES) <= set(by_type), set(EVENT_TYPES) - set(by_type)
    assert set(summary["by_destination"]) == {"tamin", "tamin_pharmacy", "tamin_paraclinic", "sepas"}
    for event_type, destinations in PROVIDER_SIDE.items():
        reached = by_type[event_type]
        assert set(reached) == destinations, (event_type, reached)
        for destination, states in reached.items():
            assert set(states) == {"accepted"}, (event_type, destination, states)
    # a drug prescription goes to SEPAS as a MedicationPrescription; the only one refused is the
    # sample with a drug code no table knows (invalid at both destinations, never sent)
    created = by_type["prescription.created"]
    assert created["sepas"].get("accepted", 0) > 0 and created["sepas"].get("invalid") == 1
    assert set(by_type["prescription.updated"]["sepas"]) == {"accepted"}
    saves = summary["ditas_simulator"]["saves"]
    assert saves == sum(states.get("accepted", 0) for destinations in by_type.values()
                        for name, states in destinations.items() if name == "sepas")
