"""Everything this service keeps in Redis besides the broker: key formats, the assignee-exists
and owners-debounce caches and their purges (SPEC 4.7, key formats kept compatible with the
original system), the snowflake id claim (SPEC 6, one Lua script per claim), the record
of beat's last sweep and each Jira instance's status categories (SPEC 10).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import redis

from worker.domain import snowflake
from worker.domain.errors import NoIdAvailable

ASSIGNEE_EXISTS_KEY = "assignee_exists:1:{group_id}"
OWNERS_DEBOUNCE_KEY = "owner_exists:1:{group_id}"

ASSIGNEE_EXISTS_TTL_S = 24 * 3600
ASSIGNEE_MISSING_TTL_S = 60
OWNERS_DEBOUNCE_TTL_S = 24 * 3600
PROJECT_PURGE_WINDOW_S = 24 * 3600
PURGE_BATCH = 1000
SNOWFLAKE_KEY_PREFIX = "jira_sync:snowflake"


def assignee_exists_key(group_id: int) -> str:
    return ASSIGNEE_EXISTS_KEY.format(group_id=group_id)


def owners_debounce_key(group_id: int) -> str:
    return OWNERS_DEBOUNCE_KEY.format(group_id=group_id)


def cached_assignee_exists(client: redis.Redis, group_id: int) -> bool | None:
    """What the cache holds for a group: True, False, or None when nothing is cached."""
    raw = client.get(assignee_exists_key(group_id))
    if raw is None:
        return None
    return raw in (b"1", "1")


def fill_assignee_exists(client: redis.Redis, group_id: int, exists: bool) -> None:
    """The read path's fill: 24 h when an assignee exists, 60 s when none."""
    ttl = ASSIGNEE_EXISTS_TTL_S if exists else ASSIGNEE_MISSING_TTL_S
    client.set(assignee_exists_key(group_id), "1" if exists else "0", ex=ttl)


def _batches(group_ids: Iterable[int], size: int) -> Iterator[list[int]]:
    batch: list[int] = []
    for group_id in group_ids:
        batch.append(group_id)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def purge_assignee_exists(client: redis.Redis, group_ids: Iterable[int]) -> int:
    """Delete the assignee-exists keys of these groups, 1,000 keys per Redis call."""
    return sum(
        int(client.delete(*[assignee_exists_key(g) for g in batch]))
        for batch in _batches(group_ids, PURGE_BATCH)
    )


def purge_owners_debounce(client: redis.Redis, group_ids: Iterable[int]) -> int:
    """Delete the owners-debounce keys of these groups, 1,000 keys per Redis call."""
    return sum(
        int(client.delete(*[owners_debounce_key(g) for g in batch]))
        for batch in _batches(group_ids, PURGE_BATCH)
    )


def group_cache_keys(group_id: int) -> tuple[str, str]:
    """Both cache keys of a group: assignee-exists and owners-debounce."""
    return assignee_exists_key(group_id), owners_debounce_key(group_id)


def purge_group_caches(client: redis.Redis, group_ids: Iterable[int]) -> int:
    """Delete both caches' keys of these groups (a whole-group purge: project delete, the CLI),
    one Redis call per 500 groups; returns the number of keys deleted."""
    return sum(
        int(client.delete(*[key for g in batch for key in group_cache_keys(g)]))
        for batch in _batches(group_ids, max(1, PURGE_BATCH // 2))
    )


def snowflake_counter_key(region: int, second: int) -> str:
    """The Redis counter of one second of one region."""
    return f"{SNOWFLAKE_KEY_PREFIX}:{region}:{second}"


def snowflake_high_water_key(region: int) -> str:
    """The newest second a region has claimed from (guards against clocks moving backwards)."""
    return f"{SNOWFLAKE_KEY_PREFIX}:{region}:newest"


# One round trip whatever the look-back: the search, the increment and the expiry are atomic.
CLAIM_SCRIPT = """
local newest_key = KEYS[1]
local prefix = ARGV[1]
local epoch = tonumber(ARGV[2])
local now
if ARGV[3] == '' then
  -- Redis's clock: the same one that expires the counters, whatever the callers' clocks say.
  now = tonumber(redis.call('TIME')[1]) - epoch
else
  now = tonumber(ARGV[3])
end
if now < 0 or now > tonumber(ARGV[6]) then
  return {-2, -2, now}
end
local lookback = tonumber(ARGV[4])
local size = tonumber(ARGV[5])
local newest = tonumber(redis.call('GET', newest_key) or '-1')
if newest > now then
  now = newest
elseif newest < now then
  redis.call('SET', newest_key, string.format('%d', now))
end
local oldest = math.max(now - lookback, 0)
for second = now, oldest, -1 do
  local key = prefix .. string.format('%d', second)
  -- Increment first: a used-up second only counts past its size, which is harmless.
  local used = redis.call('INCR', key) - 1
  if used == 0 then
    -- A new counter. By Redis's clock: gone once this second has left every window.
    redis.call('EXPIREAT', key, string.format('%d', epoch + second + lookback + 1))
  end
  if used < size then
    return {second, used, now - second}
  end
end
return {-1, -1, now}
"""


@dataclass(frozen=True)
class IdClaim:
    """One claimed id and where it came from."""

    id: int
    seconds: int
    sequence: int
    lookback_s: int  # 0: the current second; more: an earlier second was used


class IdClaimer:
    """Claims snowflake ids for one region from one Redis; the script is loaded once, then one
    EVALSHA per claim.

    Seconds come from Redis's clock (TIME inside the script): every worker shares it, and it
    is the clock that expires the counters. The script keeps, per region, the newest second it
    ever served (the high-water mark); when the clock moves backwards, claims are served from
    that second and its look-back window, so a second whose counter may have expired is never
    reached again. Each counter expires just after its second has left every possible
    look-back window. The unique constraint and the 5-attempt insert retry stay as the last
    guard (e.g. for a Redis that lost its data).
    """

    def __init__(self, client: redis.Redis, region: int, epoch_s: int) -> None:
        snowflake.check_field("region", region, 0, snowflake.MAX_REGION)
        self._client = client
        self._region = region
        self._epoch_s = epoch_s
        self._script = client.register_script(CLAIM_SCRIPT)

    def load(self) -> None:
        """Put the script in Redis's cache now, so that no claim pays for loading it."""
        self._client.script_load(CLAIM_SCRIPT)

    def claim(self, now_s: int | None = None) -> IdClaim:
        """Claim the next free id, by Redis's clock (one clock for every worker, and the one
        that expires the counters). now_s (seconds since the epoch) replaces it in tests; it
        must not lag Redis's clock."""
        if now_s is not None:
            snowflake.check_field("seconds", now_s, 0, snowflake.MAX_SECONDS)
        second, sequence, lookback_s = (
            int(v)
            for v in self._script(
                keys=[snowflake_high_water_key(self._region)],
                args=[
                    f"{SNOWFLAKE_KEY_PREFIX}:{self._region}:",
                    self._epoch_s,
                    "" if now_s is None else now_s,
                    snowflake.LOOKBACK_S,
                    snowflake.SEQUENCE_SIZE,
                    snowflake.MAX_SECONDS,
                ],
            )
        )
        if second == -2:  # Redis's clock is out of range
            snowflake.check_field("seconds", lookback_s, 0, snowflake.MAX_SECONDS)
        if second < 0:
            raise NoIdAvailable(
                f"no id available: all {snowflake.SEQUENCE_SIZE} sequence values of the current "
                f"second and the {snowflake.LOOKBACK_S} before it are used "
                f"(region {self._region})"
            )
        return IdClaim(
            id=snowflake.encode(second, self._region, sequence),
            seconds=second,
            sequence=sequence,
            lookback_s=lookback_s,
        )


# -- the beat sweep's last run (for `jira-sync status`) -----------------------------------------

LAST_SWEEP_KEY = "jira_sync:beat:last_sweep"


@dataclass(frozen=True)
class SweepRecord:
    """What the last beat sweep did: when (epoch seconds) and what it sent again."""

    at: float
    unqueued: int  # stored deliveries that had never reached the broker
    stalled: int  # queued deliveries whose messages were presumed lost
    side_effects: int  # changed groups whose side effects never finished

    @property
    def age_s(self) -> float:
        return max(0.0, time.time() - self.at)


def record_sweep(client: redis.Redis, unqueued: int, stalled: int, side_effects: int) -> None:
    """Overwrite the last sweep's record (one small key, no expiry: a silent beat shows)."""
    record = SweepRecord(time.time(), unqueued, stalled, side_effects)
    client.set(LAST_SWEEP_KEY, json.dumps(dataclasses.asdict(record)))


def last_sweep(client: redis.Redis) -> SweepRecord | None:
    """The last sweep's record, or None when beat has never swept."""
    raw = client.get(LAST_SWEEP_KEY)
    return None if raw is None else SweepRecord(**json.loads(raw))


STATUS_CATEGORIES_KEY = "jira_sync:status_categories:{integration_id}"


def cached_status_categories(client: redis.Redis, integration_id: int) -> dict[str, str] | None:
    """An instance's Jira status id -> status category key, or None when nothing is cached."""
    raw = client.get(STATUS_CATEGORIES_KEY.format(integration_id=integration_id))
    if raw is None:
        return None
    found = json.loads(raw)
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else None


def fill_status_categories(
    client: redis.Redis, integration_id: int, categories: Mapping[str, str], ttl_s: int
) -> None:
    key = STATUS_CATEGORIES_KEY.format(integration_id=integration_id)
    client.set(key, json.dumps(dict(categories), sort_keys=True), ex=ttl_s)


SITE_PAUSE_KEY = "jira_sync:site_pause:{integration_id}"
# Sets the pause unless one at least as long is already there (a later, shorter Retry-After
# never shortens it), in one round trip.
PAUSE_SCRIPT = """
local left = redis.call('PTTL', KEYS[1])
if left < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[1])
end
return left
"""


class SitePause:
    """The pause a 429 puts on one linked site, shared by every process (workers, beat, the
    CLI) through Redis: the key lives exactly as long as Jira asked everyone to wait. Redis
    unreachable: no pause is known (Jira's own 429 still answers the next call)."""

    def __init__(self, client: redis.Redis, integration_id: int) -> None:
        self._client = client
        self._key = SITE_PAUSE_KEY.format(integration_id=integration_id)

    def remaining_s(self) -> float:
        try:
            left_ms = int(self._client.pttl(self._key))
        except redis.RedisError:
            return 0.0
        return left_ms / 1000 if left_ms > 0 else 0.0

    def pause(self, seconds: float) -> None:
        if seconds <= 0:
            return
        until = f"{time.time() + seconds:.3f}"
        with contextlib.suppress(redis.RedisError):
            self._client.eval(PAUSE_SCRIPT, 1, self._key, int(seconds * 1000), until)


def paused_sites(client: redis.Redis, integration_ids: Iterable[int]) -> dict[int, float]:
    """The sites a 429 paused, with the seconds left, in one round trip."""
    ids = list(integration_ids)
    if not ids:
        return {}
    pipe = client.pipeline(transaction=False)
    for integration_id in ids:
        pipe.pttl(SITE_PAUSE_KEY.format(integration_id=integration_id))
    left = pipe.execute()
    return {i: int(ms) / 1000 for i, ms in zip(ids, left, strict=True) if int(ms) > 0}
