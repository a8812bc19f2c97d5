"""The monitor's timers: a deadline queue, and each host's place in its interval."""

from __future__ import annotations

import pytest

from cloudburst.daemon.timers import Deadlines, first_on_grid, next_on_grid, phase


def test_due_keys_come_in_time_order_once() -> None:
    timers = Deadlines()
    for key, at in ((3, 5.0), (1, 2.0), (2, 9.0)):
        timers.set(key, at)
    assert timers.pop_due(1.9) == []
    assert timers.pop_due(5.0) == [1, 3]
    assert timers.pop_due(5.0) == []  # taken: the caller sets the next time
    popped, waiting = 1, 2
    assert popped not in timers and timers.get(popped) is None
    assert waiting in timers and timers.get(waiting) == 9.0
    assert len(timers) == 1
    assert timers.pop_due(100.0) == [2]


def test_a_new_time_replaces_the_old_one_and_a_dropped_key_never_comes() -> None:
    timers = Deadlines()
    timers.set(1, 5.0)
    timers.set(1, 8.0)
    timers.set(2, 1.0)
    timers.drop(2)
    assert timers.pop_due(7.0) == []
    assert timers.get(1) == 8.0
    assert timers.pop_due(8.0) == [1]


def test_replaced_times_do_not_pile_up() -> None:
    timers = Deadlines()
    for round_ in range(1000):
        for key in range(10):
            timers.set(key, 1000.0 + round_ + key)
    assert len(timers._heap) <= 2 * 10 + 64  # the bound is the point
    assert timers.pop_due(10_000.0) == list(range(10))


@pytest.mark.parametrize("now", [0.0, 7.3, 1234.5678, 30.0 * 1000])
def test_the_next_point_of_a_grid_is_within_one_interval(now: float) -> None:
    for key in range(200):
        at = next_on_grid(key, now, 30.0)
        assert now < at <= now + 30.0
        assert (at - phase(key, 30.0)) % 30.0 == pytest.approx(0.0, abs=1e-6) or (
            (at - phase(key, 30.0)) % 30.0 == pytest.approx(30.0, abs=1e-6))
        # A tick late by a few seconds keeps the grid: the next one is one interval on.
        assert next_on_grid(key, at + 4.0, 30.0) == pytest.approx(at + 30.0)


def test_consecutive_ids_spread_evenly_over_the_interval() -> None:
    """Hosts created together (consecutive ids) are not due together: any tenth of
    the interval holds about a tenth of them."""
    tenths = [0] * 10
    for key in range(5000, 6000):
        tenths[int(phase(key, 60.0) // 6.0)] += 1
    assert min(tenths) >= 95 and max(tenths) <= 105


def test_a_first_time_is_on_the_grid_but_within_one_interval_of_the_last_run() -> None:
    for key in range(100):
        on_grid = next_on_grid(key, 500.0, 60.0)
        assert first_on_grid(key, 500.0, 60.0, since_last=0.0) == on_grid  # just ran
        late = first_on_grid(key, 500.0, 60.0, since_last=45.0)
        assert late == min(on_grid, 515.0)  # 60 s after the last run at the latest
        assert first_on_grid(key, 500.0, 60.0, since_last=600.0) == 500.0  # overdue: now
