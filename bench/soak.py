"""Soak run of the chaos schedule (not in CI): ``python -m bench.soak --cycles 200``.

It runs the fault test's own schedule (``tests/fault/test_chaos.py``: the real adapter process on a
private RabbitMQ node and PostgreSQL server, every server behind a relay, the Tamin simulator) for
``--cycles`` faults at the test's pace, then reads the same end state the test checks and reports
it as figures instead of pass/fail, so a long run shows *how* the adapter held, not only *whether*:
cycles by kind, events, lost, duplicated, and the longest recovery after each kind of fault.

Needs what the chaos test needs: root (the private broker node, ``runuser`` for ``initdb``),
``rabbitmq-server``, PostgreSQL's binaries, and a reachable PostgreSQL (for the fallback store).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.fault.chaos import PrivateRabbit
from tests.fault.test_chaos import ChaosRun, chaos_setup, run_chaos
from tests.support import services as svc

PACE_S = 3.0  # seconds per cycle: the chaos test's default (150 s for 50 cycles)
EVENTS_PER_CYCLE = 60  # the chaos test's default (3000 events for 50 cycles)


def figures(run: ChaosRun, elapsed_s: float) -> dict[str, Any]:
    """The soak's figures from one run's end state.

    ``lost``: events published but without an inbox row, or stored but not ``accepted`` with all
    their submissions accepted at the end. ``duplicated``: extra inbox rows for one event plus
    submissions the simulator received twice.
    """
    view, summary = run.view, run.summary
    stored = set(view["event_ids"])
    return {
        "cycles": summary["cycles"], "cycles_by_kind": dict(sorted(summary["kinds"].items())),
        "events": len(run.event_ids),
        "lost": max(0, len(run.event_ids) - view["visible"].get("accepted", 0)),
        "duplicated": (len(view["event_ids"]) - len(stored)) + int(run.sim["duplicates"]),
        "longest_recovery_s": summary["longest_recovery_s"],
        "recovery_unseen": summary["recovery_unseen"],
        "unexpected_exits": summary["unexpected_exits"], "queue_left": run.queue_left,
        "unlinked_paper_records": sum(n for state, n in view["fallbacks"].items() if state != "linked"),
        "problems": run.problems, "seed": summary["seed"], "elapsed_s": round(elapsed_s, 1),
        "timings_s": summary["timings_s"],
    }


def soak(cycles: int, seed: int, workdir: Path) -> dict[str, Any]:
    url, errors = svc.find_pg_admin_url()
    if url is None:
        raise SystemExit("PostgreSQL is not reachable: " + "; ".join(errors))
    rabbit = PrivateRabbit().start()
    started = time.monotonic()
    try:
        with chaos_setup(workdir, url, rabbit) as env:
            run = run_chaos(env, rabbit, seed, cycles, PACE_S * cycles, EVENTS_PER_CYCLE * cycles)
    finally:
        rabbit.close()
    return figures(run, time.monotonic() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="soak-") as folder:
        result = soak(args.cycles, args.seed, Path(folder))
    text = json.dumps(result, indent=1, sort_keys=True)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    clean = not (result["lost"] or result["duplicated"] or result["unexpected_exits"] or result["problems"])
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
