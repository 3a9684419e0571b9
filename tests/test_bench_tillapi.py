"""The till API benchmark's helpers (bench/tillapi.py): a poller's schedule and the
ratio figure made of rounds of unequal length."""

from __future__ import annotations

import pytest

from bench.tillapi import Measured, next_tick, ratio_figure


def test_a_poller_on_time_polls_one_period_after_its_last_tick() -> None:
    assert next_tick(10.0, 0.25, now=10.1) == 10.25


def test_a_late_poller_skips_the_ticks_it_missed_instead_of_catching_up() -> None:
    assert next_tick(10.0, 0.25, now=10.6) == 10.75  # 10.25 and 10.5 are gone
    assert next_tick(10.0, 0.25, now=10.25) == 10.5  # a tick due now is past


def test_the_ratio_is_the_median_of_the_rounds_ratios_at_p() -> None:
    without = Measured(rounds=[[0.001] * 10, [0.002] * 10, [0.001] * 10])
    with_pollers = Measured(
        rounds=[[0.0011] * 10, [0.006] * 3, [0.0013] * 10],  # the second ran out of time
        polls_per_second=[80.0, 40.0, 79.0],
        status_p50_ms=[3.0, 9.0, 3.0],
        status_p99_ms=[6.0, 20.0, 6.0],
        server_cpu=[0.5, 0.9, 0.5],
    )
    without.server_cpu = [0.4, 0.4, 0.4]
    figure = ratio_figure("f", with_pollers, without, 99, "<= 1.2", "b", "n", asked=0.1)
    assert figure.runs == pytest.approx([1.1, 3.0, 1.3])
    assert figure.value == pytest.approx(1.3) and figure.met is False
    assert figure.detail["fewest_checkouts_with_in_a_round"] == 3
    assert figure.detail["polls_per_second_asked"] == 80.0
    assert figure.spread is not None and figure.spread.startswith(
        "median of 3 rounds of up to 10 checkouts a side (p99 ratio): runs 1.100-3.000"
    )


def test_the_server_s_own_timings_go_to_the_round_whose_span_they_ended_in() -> None:
    measured = Measured(spans=[(10.0, 11.0), (20.0, 21.0)])
    measured.take_inside([(10.5, 0.002, 0.001), (15.0, 9.0, 9.0), (20.1, 0.003, 0.002)])
    assert measured.inside_wall == [[0.002], [0.003]]
    assert measured.inside_cpu == [[0.001], [0.002]]


def test_the_checkouts_are_timed_inside_the_server_and_nothing_else() -> None:
    from bench.tillapi import timing_checkouts

    into: list[tuple[float, float, float]] = []

    def app(environ: dict, start_response: object) -> list[bytes]:
        return [b"a", b"b"]

    timed = timing_checkouts(app, into)
    assert timed({"PATH_INFO": "/api/v1/status"}, None) == [b"a", b"b"] and into == []
    assert timed({"PATH_INFO": "/api/v1/checkout"}, None) == [b"ab"] and len(into) == 1
