"""The figures the benchmark derives from what it measured (issue 8): the CPU ceiling and the
RSS trend. The runs themselves are `python -m bench`, not tests."""

from __future__ import annotations

import pytest

from bench.cli import ceiling_text, cpu_ceiling, drain_kept, rss_trend


def test_cpu_ceiling_is_the_tighter_of_the_cores_and_the_interpreters() -> None:
    ceiling = cpu_ceiling(2, 0.7, {"cpu_ms_per_event": 1.0}, {"cpu_ms_per_event": 3.3}, 1000)
    assert ceiling is not None
    # 2 cores shared with a simulator taking 0.7 ms per event
    assert ceiling["bare"]["all_cores_eps"] == pytest.approx(2000 / 1.7, abs=0.1)
    assert ceiling["adapter"]["all_cores_eps"] == pytest.approx(2000 / 4.0, abs=0.1)
    # one interpreter: its Python runs on one core at a time
    assert ceiling["adapter"]["interpreters_eps"] == pytest.approx(1000 / 3.3, abs=0.1)
    # 1,000 ev/s on 2 cores, 0.7 ms of it to the simulator, leaves 1.3 ms per event
    assert ceiling["adapter_budget_ms_per_event_for_target"] == pytest.approx(1.3)
    assert ceiling_text(ceiling) == "bare <= 1000.0 ev/s, adapter <= 303.0 ev/s"


def test_several_processes_lift_the_interpreter_bound_but_not_the_cores() -> None:
    ceiling = cpu_ceiling(2, 0.7, None, {"cpu_ms_per_event": 3.3}, 1000, processes=4)
    assert ceiling is not None and "bare" not in ceiling
    assert ceiling["adapter"]["interpreters_eps"] == pytest.approx(4000 / 3.3, abs=0.1)
    assert ceiling_text(ceiling) == "adapter <= 500.0 ev/s"


def test_no_simulator_figure_no_ceiling() -> None:
    assert cpu_ceiling(2, None, {"cpu_ms_per_event": 1.0}, None, 1000) is None


def test_rss_trend_is_the_slope_after_warm_up() -> None:
    mib = 2**20
    # 100 MB at start-up (dropped as warm-up), then 1 MB more per 10,000 events
    samples = [(float(i), (100 + (i * 1000) // 10_000) * mib, 0.0, i * 1000) for i in range(1, 101)]
    assert rss_trend(samples)["rss_slope_mb_per_100k_events"] == pytest.approx(10.0, abs=0.5)
    flat = [(float(i), 114 * mib, 0.0, i * 1000) for i in range(1, 101)]
    assert rss_trend(flat)["rss_slope_mb_per_100k_events"] == 0.0
    assert rss_trend(flat[:3]) == {}


@pytest.mark.parametrize(("fraction", "steady", "kept"), [
    (0.990, 0.997, True),  # two processes sharing the bucket (bench/results/rabbitmq-postgres-drain-2proc-shared-bucket.json)
    (1.019, 1.007, True),  # one process: the first second's burst lifts the whole-drain figure, not the steady one
    (2.039, 2.127, False),  # two processes with a bucket each: the insurer saw twice max_rps
    (0.867, 0.870, False),  # too slow: the allowance unused
    (0.960, None, True),  # too few sends for a steady figure
])
def test_a_drain_must_use_the_allowance_and_keep_under_it(fraction: float, steady: float | None, kept: bool) -> None:
    assert drain_kept({"fraction_of_allowed": fraction, "steady_fraction": steady}) is kept
