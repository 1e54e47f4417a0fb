"""The retry policy of every step: exponential backoff with jitter, capped; what retries."""

from __future__ import annotations

import pytest

from tasks.base import backoff_s


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
