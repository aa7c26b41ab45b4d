"""The Ready loop's ticker drops missed ticks after a stall instead of firing them at once."""
import pytest

from raftkv.server.raft_loop import next_tick


def _ticks_fired(wakeups, tick_s=1):
    """Replay the ticker against wake-up times; each wake-up at or after the due time fires
    one tick. Returns the times at which ticks fired."""
    fired, due = [], next_tick(0.0, 0.0, tick_s)
    for now in wakeups:
        while due <= now:
            fired.append(now)
            due = next_tick(due, now, tick_s)
    return fired


def test_on_schedule_one_tick_per_period():
    assert next_tick(0.0, 0.05, 0.1) == pytest.approx(0.1)
    assert next_tick(0.1, 0.12, 0.1) == pytest.approx(0.2)


def test_less_than_a_period_late_keeps_the_schedule():
    assert next_tick(0.0, 0.15, 0.1) == pytest.approx(0.1)  # due already: fires now
    assert next_tick(0.1, 0.15, 0.1) == pytest.approx(0.2)  # then back on the grid


def test_a_stall_fires_one_tick_not_a_burst():
    # The loop was blocked for ten periods (a starved process): nine ticks were missed.
    fired = _ticks_fired([1, 2, 12, 13, 14])
    assert fired == [1, 2, 12, 13, 14]  # one at 12, not ten
    assert next_tick(0.2, 1.2, 0.1) == pytest.approx(1.3)
