"""Circuit breaker and token bucket, with a fake clock."""

from __future__ import annotations

import pytest

from adapter.destinations.outcome import OutcomeClass
from adapter.outage.breaker import Breaker, BreakerSettings, CircuitState, Verdict
from adapter.outage.control import verdict_of
from adapter.outage.ratelimit import SendPacer, TokenBucket

S, F, N = Verdict.success, Verdict.failure, Verdict.neutral


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(**overrides: object) -> tuple[Breaker, Clock]:
    settings = dict(window=10, min_calls=4, failure_rate=0.5, open_s=30.0, half_open_probes=2)
    settings.update(overrides)
    clock = Clock()
    return Breaker(BreakerSettings(**settings), clock), clock  # type: ignore[arg-type]


def send(breaker: Breaker, verdict: Verdict, detail: str = "") -> object:
    permit = breaker.acquire()
    assert permit is not None
    return breaker.record(permit, verdict, detail)


def test_stays_closed_below_min_calls_even_if_all_fail() -> None:
    breaker, _ = make()
    for _ in range(3):
        assert send(breaker, F) is None
    assert breaker.state is CircuitState.closed
    assert breaker.allowance() is None


def test_opens_when_failure_rate_reached_and_says_why() -> None:
    breaker, _ = make()
    send(breaker, S)
    send(breaker, F)
    send(breaker, S)
    transition = send(breaker, F, "HTTP 503")
    assert transition is not None and transition.to_state is CircuitState.open
    assert "2 of the last 4" in transition.why and "HTTP 503" in transition.why
    assert breaker.allowance() == 0 and breaker.acquire() is None


def test_rejections_are_not_failures_and_neutral_is_not_counted() -> None:
    assert verdict_of(OutcomeClass.rejected) is S and verdict_of(OutcomeClass.accepted) is S
    assert verdict_of(OutcomeClass.transient) is F and verdict_of(OutcomeClass.ambiguous) is F
    assert verdict_of(OutcomeClass.invalid) is N and verdict_of(OutcomeClass.waiting) is N and verdict_of(None) is N
    breaker, _ = make()
    for _ in range(20):
        send(breaker, S)
        send(breaker, N)
    send(breaker, F)
    assert breaker.state is CircuitState.closed


def test_window_slides_old_failures_out() -> None:
    breaker, _ = make(window=4, min_calls=4, failure_rate=0.75)
    send(breaker, F)
    send(breaker, F)
    send(breaker, S)
    send(breaker, S)  # 2/4
    send(breaker, S)  # window F S S S = 1/4
    send(breaker, F)  # S S S F
    send(breaker, F)  # S S F F
    assert breaker.state is CircuitState.closed
    assert send(breaker, F) is not None  # S F F F = 3/4
    assert breaker.state is CircuitState.open


def test_open_then_half_open_after_open_s_with_k_probes_then_closes() -> None:
    breaker, clock = make()
    for _ in range(4):
        send(breaker, F)
    assert breaker.state is CircuitState.open
    clock.now += 29.9
    assert breaker.allowance() == 0 and breaker.open_remaining() == pytest.approx(0.1)
    clock.now += 0.1
    assert breaker.allowance() == 2
    assert breaker.state is CircuitState.half_open
    first, second = breaker.acquire(), breaker.acquire()
    assert first is not None and second is not None and first.probe
    assert breaker.acquire() is None, "only K probes at once"
    assert breaker.record(first, S) is None
    transition = breaker.record(second, S)
    assert transition is not None and transition.to_state is CircuitState.closed
    assert breaker.allowance() is None


def test_a_failed_probe_opens_again_for_open_s() -> None:
    breaker, clock = make()
    for _ in range(4):
        send(breaker, F)
    clock.now += 30
    probe = breaker.acquire()
    assert probe is not None
    transition = breaker.record(probe, F, "connect error")
    assert transition is not None and transition.from_state is CircuitState.half_open
    assert transition.to_state is CircuitState.open
    clock.now += 29
    assert breaker.state is CircuitState.open and breaker.allowance() == 0
    clock.now += 1
    assert breaker.allowance() == 2


def test_answers_from_an_earlier_period_are_ignored() -> None:
    breaker, clock = make()
    slow = breaker.acquire()  # a send started while closed, answered after the circuit opened
    for _ in range(4):
        send(breaker, F)
    clock.now += 30
    assert breaker.allowance() == 2
    assert slow is not None and breaker.record(slow, S) is None
    assert breaker.state is CircuitState.half_open


def test_neutral_probe_gives_its_slot_back() -> None:
    breaker, clock = make()
    for _ in range(4):
        send(breaker, F)
    clock.now += 30
    probe = breaker.acquire()
    assert probe is not None and breaker.allowance() == 1
    breaker.record(probe, N)
    assert breaker.allowance() == 2 and breaker.state is CircuitState.half_open


def test_release_if_idle_closes_after_one_success_when_no_more_work() -> None:
    breaker, clock = make(half_open_probes=3)
    for _ in range(4):
        send(breaker, F)
    clock.now += 30
    assert breaker.release_if_idle() is None, "no success yet: stays half-open"
    probe = breaker.acquire()
    assert probe is not None
    assert breaker.release_if_idle() is None, "a probe is still out"
    breaker.record(probe, S)
    transition = breaker.release_if_idle()
    assert transition is not None and transition.to_state is CircuitState.closed


def test_force_half_open_and_reset() -> None:
    breaker, _ = make()
    assert breaker.force_half_open("restart").to_state is CircuitState.half_open  # type: ignore[union-attr]
    assert breaker.allowance() == 2
    assert breaker.reset("operator").to_state is CircuitState.closed  # type: ignore[union-attr]
    assert breaker.reset("again") is None


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        BreakerSettings(failure_rate=0)
    with pytest.raises(ValueError):
        BreakerSettings(window=0)


def test_token_bucket_spreads_sends() -> None:
    clock = Clock()
    bucket = TokenBucket(10, 2, clock)
    assert bucket.available() == 2
    bucket.take(2)
    assert bucket.available() == 0 and bucket.wait_s() == pytest.approx(0.1)
    clock.now += 0.05
    assert bucket.available() == 0
    clock.now += 0.05
    assert bucket.available() == 1
    clock.now += 10
    assert bucket.available() == 2, "never more than the burst"
    bucket.take(2)
    bucket.give_back(1)
    assert bucket.available() == 1


def test_token_bucket_default_burst_is_one_second() -> None:
    clock = Clock()
    assert TokenBucket(20, None, clock).available() == 20
    assert TokenBucket(0.5, None, clock).available() == 1
    with pytest.raises(ValueError):
        TokenBucket(0)


def test_send_pacer_keeps_max_rps_at_the_insurer_even_when_claimed_jobs_arrive_together() -> None:
    """16 claimed sends reach their workers in the same instant (a loaded machine): the pacer gives
    them slots so that no second sees more than max_rps + burst - 1 of them start."""
    now = [100.0]
    pacer = SendPacer(10, 2, lambda: now[0])
    starts = [now[0] + pacer.turn() for _ in range(16)]
    assert starts[:2] == [100.0, 100.0], "the burst goes at once"
    assert starts == sorted(starts)
    for first in starts:
        in_one_second = [s for s in starts if first <= s < first + 1.0 - 1e-9]
        assert len(in_one_second) <= 11
    assert starts[-1] == pytest.approx(101.4)
    now[0] = 200.0  # idle for long: a burst is allowed again, not a backlog of slots
    assert [pacer.turn(), pacer.turn(), pacer.turn()] == [0.0, 0.0, pytest.approx(0.1)]
