"""The retry policy of every step: exponential backoff with jitter, capped, and a retry budget
in time."""

from __future__ import annotations

import pytest

from worker.domain.retry import backoff_s, may_retry, retry_window_s, surely_waited_s


@pytest.mark.parametrize("retries", range(8))
def test_backoff_stays_between_half_and_all_of_its_ceiling(retries: int) -> None:
    ceiling = min(30.0, 2.0**retries)
    for _ in range(200):
        assert ceiling / 2 <= backoff_s(retries, cap_s=30.0) <= ceiling


def test_backoff_grows_then_stops_at_the_cap() -> None:
    assert max(backoff_s(0, cap_s=60) for _ in range(100)) <= 1.0
    assert min(backoff_s(4, cap_s=60) for _ in range(100)) >= 8.0
    assert max(backoff_s(20, cap_s=60) for _ in range(100)) <= 60.0


def test_backoff_is_jittered() -> None:
    assert len({backoff_s(5, cap_s=60) for _ in range(20)}) > 1


def test_the_budget_is_time_surely_waited_whatever_the_jitter() -> None:
    # Half ceilings with a 60 s cap: 0.5, 1, 2, 4, 8, 16, 30, 30, ... seconds.
    assert surely_waited_s(7, cap_s=60) == 61.5
    assert may_retry(7, budget_s=120, cap_s=60)
    assert may_retry(8, budget_s=120, cap_s=60)  # 91.5 s surely waited
    assert not may_retry(9, budget_s=120, cap_s=60)  # 121.5 s


def test_the_default_budget_outlasts_a_60_s_outage() -> None:
    retries = 0
    while may_retry(retries, budget_s=120, cap_s=60):
        retries += 1
    # The last try comes at least this long after the first failure.
    assert surely_waited_s(retries, cap_s=60) > 60


def test_no_budget_means_no_retry() -> None:
    assert not may_retry(0, budget_s=0, cap_s=60)
    assert retry_window_s(0, cap_s=60) == 0


def test_retry_window_is_every_allowed_backoff_at_its_ceiling() -> None:
    # Budget 2 s, cap 2 s: half ceilings 0.5, 1, 1 -> three retries of 1 + 2 + 2 s at most.
    assert retry_window_s(2, cap_s=2) == 5
