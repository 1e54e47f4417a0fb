"""The retry policy of every step, pure: exponential backoff with jitter, and a retry budget
measured in time, not in attempts.

A step that meets a transient error is tried again while the time it has surely waited (the
lower bound of its backoffs so far) is under RETRY_BUDGET_S: whatever the jitter, its last
try comes at least that long after the first failure, so a database or broker outage shorter
than the budget never needs an operator. The longest the retries can take (every backoff at
its ceiling) bounds how long a step may legitimately stay unfinished.
"""

from __future__ import annotations

import random

BACKOFF_BASE_S = 1.0


def backoff_ceiling_s(retries: int, cap_s: float, base_s: float = BACKOFF_BASE_S) -> float:
    """The longest wait before retry number `retries` + 1 (doubling from base_s, capped)."""
    return min(cap_s, base_s * 2.0 ** min(retries, 62))


def backoff_s(retries: int, cap_s: float, base_s: float = BACKOFF_BASE_S) -> float:
    """Exponential backoff with jitter: half fixed, half random, never above cap_s."""
    ceiling = backoff_ceiling_s(retries, cap_s, base_s)
    return float(ceiling / 2 + random.uniform(0, ceiling / 2))


def surely_waited_s(retries: int, cap_s: float) -> float:
    """The least time `retries` backoffs can have taken (each at least half its ceiling)."""
    return sum(backoff_ceiling_s(i, cap_s) / 2 for i in range(retries))


def may_retry(retries: int, budget_s: float, cap_s: float) -> bool:
    """Whether a step that has been retried `retries` times may be retried again."""
    return surely_waited_s(retries, cap_s) < budget_s


def stalled_after_s(visibility_timeout_s: float, budget_s: float, cap_s: float) -> float:
    """How long a queued delivery may go unfinished before its first step is sent again:
    longer than a killed worker's messages take to come back (the broker's visibility
    timeout) plus a step's whole retry window. Its messages were lost with the broker's data;
    the pipeline is idempotent, so a second send of one that was merely slow changes
    nothing."""
    return float(visibility_timeout_s + retry_window_s(budget_s, cap_s))


def retry_window_s(budget_s: float, cap_s: float) -> float:
    """The most time all the retries of one step can take (every backoff at its ceiling)."""
    retries = 0
    while may_retry(retries, budget_s, cap_s):
        retries += 1
    return sum(backoff_ceiling_s(i, cap_s) for i in range(retries))
