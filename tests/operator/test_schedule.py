"""Debounce, retries and the spread of the safety-net resync: pure timing, no clock."""

from __future__ import annotations

from storefront_operator.schedule import (
    DueSet,
    batches,
    first_resync,
    next_resync,
    phase,
    resync_batch,
    resync_window,
    retry_after,
    retry_delay,
)


def test_events_of_one_instance_are_debounced_into_one() -> None:
    due = DueSet[str](debounce=1.0, max_delay=5.0)
    assert due.touch("a", 0.0) == 1.0
    assert due.touch("a", 0.5) == 1.5  # a further event postpones
    assert due.pop_due(1.0) == []
    assert due.pop_due(1.5) == ["a"]
    assert "a" not in due and len(due) == 0


def test_a_child_that_keeps_changing_cannot_starve_its_instance() -> None:
    due = DueSet[str](debounce=1.0, max_delay=5.0)
    for t in range(10):
        due.touch("a", t * 0.9)
    assert due.next_due() == 5.0


def test_at_keeps_the_earlier_due_and_pop_respects_limit() -> None:
    due = DueSet[str](debounce=1.0, max_delay=5.0)
    due.at("a", 10.0)
    due.at("a", 20.0)
    assert due.next_due() == 10.0
    due.at("b", 3.0)
    due.at("c", 4.0)
    assert due.pop_due(100.0, limit=2) == ["b", "c"]
    assert due.pop_due(100.0) == ["a"]


def test_resync_is_spread_over_the_interval() -> None:
    starts = [first_resync(0.0, 600.0, f"uid-{i}") for i in range(1000)]
    assert all(0 < s <= 600 for s in starts)
    # Spread, not a burst: every tenth of the interval holds roughly a tenth of the instances.
    tenths = [sum(1 for s in starts if k * 60 <= s < (k + 1) * 60) for k in range(10)]
    assert min(tenths) > 50, tenths
    assert phase("uid-1") == phase("uid-1")  # stable across restarts


def test_next_resync_is_jittered_within_bounds() -> None:
    assert next_resync(100.0, 600.0, 0.1, 0.0) == 100.0 + 540.0
    assert next_resync(100.0, 600.0, 0.1, 0.5) == 100.0 + 600.0
    assert 100.0 + 600.0 < next_resync(100.0, 600.0, 0.1, 0.99) < 100.0 + 660.0


def test_resync_batch_takes_the_earliest_due_within_the_window() -> None:
    due = {"a": 5.0, "b": 1.0, "c": 50.0, "d": 2.0}
    assert resync_batch(due, 0.0, 10.0, 10) == ["b", "d", "a"]
    assert resync_batch(due, 0.0, 10.0, 2) == ["b", "d"]
    assert resync_window(600.0) == 30.0
    assert resync_window(20.0) == 1.0


def test_retries_back_off_and_are_capped() -> None:
    assert [retry_delay(n) for n in (1, 2, 3, 4, 5, 6)] == [2, 4, 8, 16, 30, 30]
    assert retry_after("Degraded", "SecretNotFound", 1) == 2
    assert retry_after("Degraded", "InvalidSpec", 1) is None  # waits for a spec change
    assert retry_after("Ready", None, 1) is None


def test_batches() -> None:
    assert batches(range(5), 2) == [[0, 1], [2, 3], [4]]
    assert batches([], 3) == []
