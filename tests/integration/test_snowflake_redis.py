"""The snowflake claim against a real Redis: atomic, one round trip, look-back, clock safety."""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

import pytest
import redis

from tests.conftest import Servers
from worker.cache import IdClaimer, snowflake_counter_key
from worker.domain import snowflake
from worker.domain.errors import NoIdAvailable
from worker.domain.snowflake import decode
from worker.runtime.resources import Resources

REGION = 7
PROCESSES = 4
IDS_PER_PROCESS = 2000
# 16 ids a second and 300 s of look-back hold 4,816 ids: 8,000 at full speed need a clock
# running faster than real time. A fast clock only makes counters outlive their window.
CLOCK_SPEED = 200


class CountingConnection(redis.Connection):
    """Counts every reply read: one per round trip."""

    replies = 0

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        type(self).replies += 1
        return super().read_response(*args, **kwargs)


def _claim_many(redis_url: str, epoch_s: int, count: int, start: tuple[int, float] | None) -> Any:
    """One process: claim `count` ids as fast as it can; each claim's round trips counted."""
    pool = redis.ConnectionPool.from_url(redis_url, connection_class=CountingConnection)
    claimer = IdClaimer(redis.Redis(connection_pool=pool), REGION, epoch_s)
    claimer.load()
    claims, round_trips, refused = [], [], 0
    while len(claims) < count:
        now_s = None
        if start is not None:
            base_s, wall0 = start
            now_s = base_s + int((time.time() - wall0) * CLOCK_SPEED)
        before = CountingConnection.replies
        try:
            claim = claimer.claim(now_s)
        except NoIdAvailable:
            refused += 1
            continue
        finally:
            round_trips.append(CountingConnection.replies - before)
        claims.append((claim.id, claim.lookback_s))
    return claims, round_trips, refused


def _evalsha_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def _run_processes(servers: Servers, res: Resources, fast_clock: bool, per_process: int) -> Any:
    epoch_s = res.settings.snowflake_epoch_s
    start = (snowflake.seconds_since_epoch(time.time(), epoch_s), time.time())
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(PROCESSES) as pool:
        jobs = [
            pool.apply_async(
                _claim_many,
                (servers.redis_url, epoch_s, per_process, start if fast_clock else None),
            )
            for _ in range(PROCESSES)
        ]
        return [job.get(timeout=120) for job in jobs]


def test_four_processes_claim_8000_unique_ids_of_this_region(
    servers: Servers, res: Resources
) -> None:
    evalsha_before = _evalsha_calls(res.redis)
    results = _run_processes(servers, res, fast_clock=True, per_process=IDS_PER_PROCESS)

    ids = [i for claims, _, _ in results for i, _ in claims]
    assert len(ids) == PROCESSES * IDS_PER_PROCESS
    assert len(set(ids)) == len(ids)
    assert {decode(i).region for i in ids} == {REGION}
    assert all(1 << 52 <= i < 1 << 53 for i in ids)
    assert any(lookback > 0 for claims, _, _ in results for _, lookback in claims)
    # Exactly one round trip per claim, whatever the look-back; Redis agrees.
    assert {n for _, trips, _ in results for n in trips} == {1}
    attempts = sum(len(trips) for _, trips, _ in results)
    assert _evalsha_calls(res.redis) - evalsha_before == attempts


def test_claims_on_the_real_clock_use_the_look_back_without_duplicates(
    servers: Servers, res: Resources
) -> None:
    results = _run_processes(servers, res, fast_clock=False, per_process=1000)

    ids = [i for claims, _, _ in results for i, _ in claims]
    assert len(set(ids)) == len(ids) == 4000
    assert max(lookback for claims, _, _ in results for _, lookback in claims) > 0
    assert sum(refused for _, _, refused in results) == 0


def test_exhausting_the_current_and_300_earlier_seconds_gives_no_id_available(
    res: Resources,
) -> None:
    claimer = IdClaimer(res.redis, REGION, res.settings.snowflake_epoch_s)
    now_s = snowflake.seconds_since_epoch(time.time(), res.settings.snowflake_epoch_s) + 60
    capacity = snowflake.SEQUENCE_SIZE * (snowflake.LOOKBACK_S + 1)
    ids = {claimer.claim(now_s).id for _ in range(capacity)}
    assert len(ids) == capacity
    with pytest.raises(NoIdAvailable, match="no id available"):
        claimer.claim(now_s)


def test_look_back_takes_the_newest_earlier_second_with_a_free_value(res: Resources) -> None:
    claimer = IdClaimer(res.redis, REGION, res.settings.snowflake_epoch_s)
    now_s = snowflake.seconds_since_epoch(time.time(), res.settings.snowflake_epoch_s) + 60
    first = [claimer.claim(now_s) for _ in range(16)]
    spill = claimer.claim(now_s)
    assert [c.sequence for c in first] == list(range(16))
    assert {c.seconds for c in first} == {now_s}
    assert (spill.seconds, spill.sequence, spill.lookback_s) == (now_s - 1, 0, 1)


def test_counter_keys_are_namespaced_and_expire_after_the_look_back_window(
    res: Resources,
) -> None:
    claimer = IdClaimer(res.redis, REGION, res.settings.snowflake_epoch_s)
    claim = claimer.claim()
    key = snowflake_counter_key(REGION, claim.seconds)
    assert key == f"jira_sync:snowflake:{REGION}:{claim.seconds}"
    assert res.redis.get(key) == b"1"
    assert snowflake.LOOKBACK_S - 2 <= res.redis.ttl(key) <= snowflake.LOOKBACK_S + 2


def test_clock_moved_backwards_is_served_from_the_newest_second_seen(res: Resources) -> None:
    claimer = IdClaimer(res.redis, REGION, res.settings.snowflake_epoch_s)
    now_s = snowflake.seconds_since_epoch(time.time(), res.settings.snowflake_epoch_s) + 60
    ahead = claimer.claim(now_s + 1000)
    behind = claimer.claim(now_s)
    assert ahead.seconds == now_s + 1000
    assert behind.seconds >= now_s + 1000 - snowflake.LOOKBACK_S
    assert behind.id != ahead.id


def test_clock_moved_back_past_the_window_never_reissues_an_id(res: Resources) -> None:
    claimer = IdClaimer(res.redis, REGION, res.settings.snowflake_epoch_s)
    now_s = snowflake.seconds_since_epoch(time.time(), res.settings.snowflake_epoch_s) + 60
    issued = {claimer.claim(now_s).id for _ in range(16)}
    # The counter of that second is gone (it left the window); the clock then jumps back.
    claimer.claim(now_s + snowflake.LOOKBACK_S + 100)
    res.redis.delete(snowflake_counter_key(REGION, now_s))
    again = [claimer.claim(now_s) for _ in range(64)]
    assert not issued & {c.id for c in again}
    assert min(c.seconds for c in again) > now_s


def test_claims_are_timed_by_redis_clock(res: Resources) -> None:
    claimer = IdClaimer(res.redis, REGION, res.settings.snowflake_epoch_s)
    redis_s = int(res.redis.time()[0]) - res.settings.snowflake_epoch_s
    claim = claimer.claim()
    assert redis_s <= claim.seconds <= redis_s + 1
    assert claim.lookback_s == 0


def test_clock_before_the_epoch_raises_instead_of_a_wrong_id(res: Resources) -> None:
    claimer = IdClaimer(res.redis, REGION, int(time.time()) + 3600)
    with pytest.raises(ValueError, match="snowflake seconds must be"):
        claimer.claim()
