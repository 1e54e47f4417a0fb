"""53-bit snowflake ids (SPEC 6): the layout, pure. The atomic claim of an id (one Lua script on
Redis) is `worker.cache.IdClaimer`.

Layout, most significant first (bit 52 down to bit 0):

    version (5, bits 48..52) | seconds since epoch (32, bits 16..47)
    | region (12, bits 4..15) | sequence (4, bits 0..3)

Version 1 is stored bit-reversed within its 5 bits (0b10000 = 16), so every id is at least
2^52 and below 2^53: exact in JavaScript.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

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


def check_field(name: str, value: int, low: int, high: int) -> None:
    """Raise ValueError naming the field unless low <= value <= high (an int, not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"snowflake {name} must be an integer in {low}..{high}, got {value!r}")


def encode(seconds: int, region: int, sequence: int, version: int = VERSION) -> int:
    """The id of these fields; any field out of range raises ValueError."""
    # Version 0 would reverse to 0 and make an id below 2^52: not a valid version.
    check_field("version", version, 1, (1 << VERSION_BITS) - 1)
    check_field("seconds", seconds, 0, MAX_SECONDS)
    check_field("region", region, 0, MAX_REGION)
    check_field("sequence", sequence, 0, SEQUENCE_SIZE - 1)
    return (
        _reverse_bits(version, VERSION_BITS) << VERSION_SHIFT
        | seconds << SECONDS_SHIFT
        | region << REGION_SHIFT
        | sequence << SEQUENCE_SHIFT
    )


def decode(snowflake_id: int) -> Snowflake:
    """The fields of an id; an integer no version can have produced raises ValueError."""
    # A zero version field is no version; version 1 ids are all at least 2^52.
    check_field("id", snowflake_id, 1 << VERSION_SHIFT, (1 << ID_BITS) - 1)
    return Snowflake(
        version=_reverse_bits(snowflake_id >> VERSION_SHIFT, VERSION_BITS),
        seconds=(snowflake_id >> SECONDS_SHIFT) & MAX_SECONDS,
        region=(snowflake_id >> REGION_SHIFT) & MAX_REGION,
        sequence=snowflake_id & (SEQUENCE_SIZE - 1),
    )


def seconds_since_epoch(now_s: float, epoch_s: int) -> int:
    """Whole seconds from the epoch to now; before the epoch or past 2^32 s raises ValueError."""
    seconds = int(now_s) - epoch_s
    check_field("seconds", seconds, 0, MAX_SECONDS)
    return seconds
