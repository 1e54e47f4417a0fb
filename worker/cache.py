"""Redis key formats and purge helpers for the assignee-exists and owners-debounce caches.

Key formats are kept compatible with the original system (SPEC 4.7).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import redis

ASSIGNEE_EXISTS_KEY = "assignee_exists:1:{group_id}"
OWNERS_DEBOUNCE_KEY = "owner_exists:1:{group_id}"

ASSIGNEE_EXISTS_TTL_S = 24 * 3600
ASSIGNEE_MISSING_TTL_S = 60
OWNERS_DEBOUNCE_TTL_S = 24 * 3600
PROJECT_PURGE_WINDOW_S = 24 * 3600
PURGE_BATCH = 1000


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
