"""The snowflake id layout: known vectors, round trips, range checks."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker import cache
from worker.domain import snowflake
from worker.domain.snowflake import decode, encode, seconds_since_epoch

EPOCH_S = int(datetime(2022, 8, 8, tzinfo=UTC).timestamp())


def test_layout_fills_exactly_53_bits() -> None:
    assert snowflake.ID_BITS == 53
    assert (snowflake.SEQUENCE_SHIFT, snowflake.REGION_SHIFT) == (0, 4)
    assert (snowflake.SECONDS_SHIFT, snowflake.VERSION_SHIFT) == (16, 48)


def test_first_id_of_a_second_in_region_zero_is_the_known_vector() -> None:
    now = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    seconds = seconds_since_epoch(now, EPOCH_S)
    assert seconds == 44_247_845
    assert encode(seconds, region=0, sequence=0) == 16 << 48 | (seconds << 16) | 0


def test_version_one_is_stored_bit_reversed_as_sixteen() -> None:
    assert encode(0, 0, 0) == 16 << 48 == 1 << 52
    assert decode(1 << 52).version == 1


def test_every_field_lands_in_its_bits() -> None:
    assert encode(1, 0, 0) == (1 << 52) | (1 << 16)
    assert encode(0, 1, 0) == (1 << 52) | (1 << 4)
    assert encode(0, 0, 1) == (1 << 52) | 1


def test_largest_id_stays_exact_in_javascript() -> None:
    largest = encode(snowflake.MAX_SECONDS, snowflake.MAX_REGION, 15, version=31)
    assert largest == (1 << 53) - 1
    assert float(largest) == largest


@given(
    seconds=st.integers(0, snowflake.MAX_SECONDS),
    region=st.integers(0, snowflake.MAX_REGION),
    sequence=st.integers(0, 15),
    version=st.integers(1, 31),
)
def test_decode_inverts_encode(seconds: int, region: int, sequence: int, version: int) -> None:
    fields = decode(encode(seconds, region, sequence, version))
    assert fields == snowflake.Snowflake(version, seconds, region, sequence)


@given(st.integers(1 << 52, (1 << 53) - 1))
def test_encode_inverts_decode(snowflake_id: int) -> None:
    f = decode(snowflake_id)
    assert encode(f.seconds, f.region, f.sequence, f.version) == snowflake_id


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"seconds": -1, "region": 0, "sequence": 0}, "seconds"),
        ({"seconds": 1 << 32, "region": 0, "sequence": 0}, "seconds"),
        ({"seconds": 0, "region": -1, "sequence": 0}, "region"),
        ({"seconds": 0, "region": 4096, "sequence": 0}, "region"),
        ({"seconds": 0, "region": 0, "sequence": -1}, "sequence"),
        ({"seconds": 0, "region": 0, "sequence": 16}, "sequence"),
        ({"seconds": 0, "region": 0, "sequence": 0, "version": 0}, "version"),
        ({"seconds": 0, "region": 0, "sequence": 0, "version": 32}, "version"),
        ({"seconds": 1.5, "region": 0, "sequence": 0}, "seconds"),
        ({"seconds": True, "region": 0, "sequence": 0}, "seconds"),
    ],
)
def test_out_of_range_field_raises(fields: dict[str, int], name: str) -> None:
    with pytest.raises(ValueError, match=f"snowflake {name} must be"):
        encode(**fields)


@pytest.mark.parametrize("bad", [0, 1, (1 << 48) - 1, 1 << 53, -(1 << 52)])
def test_decoding_an_integer_outside_the_id_range_raises(bad: int) -> None:
    with pytest.raises(ValueError, match="snowflake id must be"):
        decode(bad)


def test_time_before_the_epoch_raises() -> None:
    with pytest.raises(ValueError, match="seconds"):
        seconds_since_epoch(EPOCH_S - 1, EPOCH_S)


def test_time_past_32_bits_of_seconds_raises() -> None:
    with pytest.raises(ValueError, match="seconds"):
        seconds_since_epoch(EPOCH_S + (1 << 32), EPOCH_S)


def test_issued_at_is_the_utc_second() -> None:
    fields = decode(encode(86_400, 3, 7))
    assert fields.issued_at(EPOCH_S) == datetime(2022, 8, 9, tzinfo=UTC)


def test_keys_are_namespaced_by_region_and_second() -> None:
    assert cache.snowflake_counter_key(7, 123) == "jira_sync:snowflake:7:123"
    assert cache.snowflake_high_water_key(7).startswith("jira_sync:snowflake:7:")
