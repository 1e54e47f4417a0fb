"""53-bit snowflake ids (SPEC 6): the layout (pure) and the atomic Redis claim (one Lua script).

Layout, most significant first (bit 52 down to bit 0):

    version (5, bits 48..52) | seconds since epoch (32, bits 16..47)
    | region (12, bits 4..15) | sequence (4, bits 0..3)

Version 1 is stored bit-reversed within its 5 bits (0b10000 = 16), so every id is at least
2^52 and below 2^53: exact in JavaScript.

Clock. Seconds come from Redis's clock (TIME inside the script): every worker shares it, and
it is the clock that expires the counters. The script keeps, per region, the newest second it
ever served (the high-water mark); when the clock moves backwards, claims are served from that
second and its look-back window, so a second whose counter may have expired is never reached
again. Each counter expires just after its second has left every possible look-back window.
The unique constraint and the 5-attempt insert retry stay as the last guard (e.g. for a Redis
that lost its data).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import redis

from worker.errors import NoIdAvailable

VERSION = 1
VERSION_BITS = 5
SECONDS_BITS = 32
REGION_BITS = 12
SEQUENCE_BITS = 4

SEQUENCE_SHIFT = 0
REGION_SHIFT = SEQUENCE_BITS
SECONDS_SHIFT = REGION_SHIFT + REGION_BITS
VERSION_SHIFT = SECONDS_SHIFT + SECONDS_BITS
ID_BITS = VERSION_SHIFT + VERSION_BITS  # 53

MAX_SECONDS = (1 << SECONDS_BITS) - 1
MAX_REGION = (1 << REGION_BITS) - 1
SEQUENCE_SIZE = 1 << SEQUENCE_BITS  # values per second and region
LOOKBACK_S = 300  # earlier seconds searched when the current one is used up

KEY_PREFIX = "jira_sync:snowflake"


def _reverse_bits(value: int, width: int) -> int:
    return int(format(value, f"0{width}b")[::-1], 2)


@dataclass(frozen=True)
class Snowflake:
    """The fields of one id."""

    version: int
    seconds: int
    region: int
    sequence: int

    def issued_at(self, epoch_s: int) -> datetime:
        """The UTC second the id was issued in, given the deployment's epoch."""
        return datetime.fromtimestamp(epoch_s + self.seconds, UTC)


def _check(name: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"snowflake {name} must be an integer in {low}..{high}, got {value!r}")


def encode(seconds: int, region: int, sequence: int, version: int = VERSION) -> int:
    """The id of these fields; any field out of range raises ValueError."""
    # Version 0 would reverse to 0 and make an id below 2^52: not a valid version.
    _check("version", version, 1, (1 << VERSION_BITS) - 1)
    _check("seconds", seconds, 0, MAX_SECONDS)
    _check("region", region, 0, MAX_REGION)
    _check("sequence", sequence, 0, SEQUENCE_SIZE - 1)
    return (
        _reverse_bits(version, VERSION_BITS) << VERSION_SHIFT
        | seconds << SECONDS_SHIFT
        | region << REGION_SHIFT
        | sequence << SEQUENCE_SHIFT
    )


def decode(snowflake_id: int) -> Snowflake:
    """The fields of an id; an integer no version can have produced raises ValueError."""
    # A zero version field is no version; version 1 ids are all at least 2^52.
    _check("id", snowflake_id, 1 << VERSION_SHIFT, (1 << ID_BITS) - 1)
    return Snowflake(
        version=_reverse_bits(snowflake_id >> VERSION_SHIFT, VERSION_BITS),
        seconds=(snowflake_id >> SECONDS_SHIFT) & MAX_SECONDS,
        region=(snowflake_id >> REGION_SHIFT) & MAX_REGION,
        sequence=snowflake_id & (SEQUENCE_SIZE - 1),
    )


def seconds_since_epoch(now_s: float, epoch_s: int) -> int:
    """Whole seconds from the epoch to now; before the epoch or past 2^32 s raises ValueError."""
    seconds = int(now_s) - epoch_s
    _check("seconds", seconds, 0, MAX_SECONDS)
    return seconds


def counter_key(region: int, second: int) -> str:
    """The Redis counter of one second of one region."""
    return f"{KEY_PREFIX}:{region}:{second}"


def high_water_key(region: int) -> str:
    """The newest second a region has claimed from (guards against clocks moving backwards)."""
    return f"{KEY_PREFIX}:{region}:newest"


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
class Claim:
    """One claimed id and where it came from."""

    id: int
    seconds: int
    sequence: int
    lookback_s: int  # 0: the current second; more: an earlier second was used


class Claimer:
    """Claims ids for one region from one Redis; the script is loaded once, then one EVALSHA
    per claim."""

    def __init__(self, client: redis.Redis, region: int, epoch_s: int) -> None:
        _check("region", region, 0, MAX_REGION)
        self._client = client
        self._region = region
        self._epoch_s = epoch_s
        self._script = client.register_script(CLAIM_SCRIPT)

    def load(self) -> None:
        """Put the script in Redis's cache now, so that no claim pays for loading it."""
        self._client.script_load(CLAIM_SCRIPT)

    def claim(self, now_s: int | None = None) -> Claim:
        """Claim the next free id, by Redis's clock (one clock for every worker, and the one
        that expires the counters). now_s (seconds since the epoch) replaces it in tests; it
        must not lag Redis's clock."""
        if now_s is not None:
            _check("seconds", now_s, 0, MAX_SECONDS)
        second, sequence, lookback_s = (
            int(v)
            for v in self._script(
                keys=[high_water_key(self._region)],
                args=[
                    f"{KEY_PREFIX}:{self._region}:",
                    self._epoch_s,
                    "" if now_s is None else now_s,
                    LOOKBACK_S,
                    SEQUENCE_SIZE,
                    MAX_SECONDS,
                ],
            )
        )
        if second == -2:
            _check("seconds", lookback_s, 0, MAX_SECONDS)  # Redis's clock is out of range
        if second < 0:
            raise NoIdAvailable(
                f"no id available: all {SEQUENCE_SIZE} sequence values of the current second "
                f"and the {LOOKBACK_S} before it are used (region {self._region})"
            )
        return Claim(
            id=encode(second, self._region, sequence),
            seconds=second,
            sequence=sequence,
            lookback_s=lookback_s,
        )
