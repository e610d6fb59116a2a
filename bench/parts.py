"""Per-part costs of the adapter, each measured alone in this process (``python -m bench.parts``).

* ``queue``: publish, then get + ack, N messages on the embedded SQLite queue (one thread).
* ``intake``: ``Intake.receive`` of N events into a fresh SQLite store (no broker, one thread).
* ``dispatch``: ``Dispatcher.run_once`` until nothing is due, for the submissions intake stored,
  against the simulator with **0 ms** latency in its own process, so the figure is the
  dispatcher's own CPU per submission (claim, prepare, HTTP client, settle, log line, metrics).

Wall and CPU (``time.process_time``: all threads of this process) per item, timed without a profiler;
then the adapter functions with the most cumulative time in a further, profiled slice (cProfile).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import time
from pathlib import Path
from typing import Any

from bench.adapter_proc import REPO, write_config
from bench.backends import backend
from bench.events import events
from bench.simproc import SimProcess


def _timed(fn: Any, count: int) -> dict[str, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return {"items": count, "wall_ms_per_item": round((time.perf_counter() - w) * 1000 / count, 3),
            "cpu_ms_per_item": round((time.process_time() - c) * 1000 / count, 3)}


def _top(profile: cProfile.Profile, needle: str = "/adapter/", top: int = 12) -> list[dict[str, Any]]:
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    total = max((ct for (_, _, _), (_, _, _, ct, _) in stats.items()), default=1.0)
    rows = [(f"{Path(file).name}:{func}", ct) for (file, _, func), (_, _, _, ct, _) in stats.items()
            if needle in file and "cli" not in file]
    rows.sort(key=lambda r: -r[1])
    return [{"function": name, "cumulative_pct": round(100 * ct / total, 1)} for name, ct in rows[:top]]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.parts")
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--workdir", type=Path, default=REPO / "var" / "bench" / "parts")
    args = parser.parse_args()
    from adapter.app import build
    from adapter.broker.connection import connect, event_queue, publish_bodies
    from adapter.config import load_config

    bodies = events(args.events, tag="p", seed=31000)
    out: dict[str, Any] = {"events": args.events}
    with SimProcess(0.0) as sim, backend("embedded", args.workdir) as b:
        cfg = load_config(write_config(b, sim.base_url, max_rps=None), {})
        # queue alone
        out["queue_publish"] = _timed(lambda: publish_bodies(cfg.broker, bodies), len(bodies))

        def drain() -> None:
            with connect(cfg.broker) as conn:
                queue = event_queue(cfg.broker)(conn.channel())
                while (message := queue.get(no_ack=False)) is not None:
                    message.ack()

        out["queue_get_ack"] = _timed(drain, len(bodies))
        # intake alone
        app = build(cfg)
        try:
            warm = min(100, len(bodies) // 10)
            for body in bodies[:warm]:
                app.intake.receive(body)
            timed, profiled = bodies[warm:len(bodies) - len(bodies) // 5], bodies[len(bodies) - len(bodies) // 5:]

            def intake() -> None:
                for body in timed:
                    app.intake.receive(body)

            out["intake"] = _timed(intake, len(timed))  # timed without the profiler, then a profiled slice
            profile = cProfile.Profile()
            profile.enable()
            for body in profiled:
                app.intake.receive(body)
            profile.disable()
            out["intake"]["top"] = _top(profile)
            # the dispatcher alone (0 ms simulator)
            with app.sessions() as session:
                from sqlalchemy import func, select

                from adapter.store.models import Submission

                submissions = session.scalar(select(func.count()).select_from(Submission)) or 0

            def dispatch(limit: int | None) -> None:  # until nothing is open (a wait on a predecessor: 1 s)
                deadline = time.monotonic() + 600
                done = 0
                while time.monotonic() < deadline and (limit is None or done < limit):
                    handled = app.dispatcher.run_once()
                    done += handled
                    if not handled:
                        due = app.dispatcher.next_due_in()
                        if due is None:
                            break
                        time.sleep(min(max(due, 0.01), 0.2))

            first = submissions * 4 // 5
            out["dispatch"] = _timed(lambda: dispatch(first), first)  # timed without the profiler
            profile = cProfile.Profile()  # then the rest profiled (the main thread: claiming)
            profile.enable()
            dispatch(None)
            profile.disable()
            out["dispatch"]["top_main_thread"] = _top(profile)
            with app.sessions() as session:
                out["dispatch"]["states"] = dict(session.execute(
                    select(Submission.state, func.count()).group_by(Submission.state)).all())
        finally:
            app.close()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
