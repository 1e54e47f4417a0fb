"""The retry policy of every step: exponential backoff with jitter, capped; what retries."""

from __future__ import annotations

import psycopg
import pytest
import requests

from tasks.base import backoff_s, is_retryable
from worker.errors import BadPayload, DatabaseUnavailable, JiraRejected, JiraUnavailable


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


@pytest.mark.parametrize(
    "exc",
    [
        JiraUnavailable("500"),
        DatabaseUnavailable("down"),
        psycopg.OperationalError("gone"),
        requests.ConnectionError("refused"),
        requests.Timeout("slow"),
    ],
)
def test_transient_errors_are_retried(exc: Exception) -> None:
    assert is_retryable(exc)


@pytest.mark.parametrize("exc", [BadPayload("x"), JiraRejected("400"), KeyError("k")])
def test_permanent_errors_are_not_retried(exc: Exception) -> None:
    assert not is_retryable(exc)
