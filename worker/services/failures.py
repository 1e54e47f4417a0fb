"""The failed-task store: record a step that gave up; spool to Redis while PostgreSQL is down."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import redis

from worker.domain.errors import DatabaseUnavailable
from worker.store.db import transaction
from worker.store.queries import failed_tasks as q_failed
from worker.support.logs import scrub

if TYPE_CHECKING:
    from worker.runtime.resources import Resources

log = logging.getLogger(__name__)

SPOOL_KEY = "jira_sync:failure_spool"
# Spooled entries that cannot be read back are set aside here rather than block the spool.
SPOOL_UNREADABLE_KEY = "jira_sync:failure_spool:unreadable"
SPOOL_LOCK_KEY = "jira_sync:failure_spool:lock"
SPOOL_LOCK_TTL_S = 120


@dataclass
class FailureRecord:
    """One failed attempt of a step, as the store keeps it."""

    task_name: str
    task_id: str
    args: list[Any]
    kwargs: dict[str, Any]
    error_type: str
    message: str
    traceback: str
    attempts: int
    # When it failed (ISO 8601): a spooled record keeps its real time, not the flush time.
    failed_at: str | None = None

    @property
    def fingerprint(self) -> str:
        """Same step, same arguments: the same record, whatever the task id."""
        ident = json.dumps([self.task_name, self.args, self.kwargs], sort_keys=True, default=str)
        return hashlib.sha256(ident.encode()).hexdigest()


RECORD_FIELDS = frozenset(f.name for f in fields(FailureRecord))


def record(res: Resources, rec: FailureRecord) -> int | None:
    """Store the failure (and point its delivery at it); spool it if PostgreSQL is down.
    Returns the record's id once written (None: spooled, or, logged, neither)."""
    return _keep(res, rec)[0]


def record_durably(res: Resources, rec: FailureRecord) -> bool:
    """As `record`; True once the record is written or spooled, False when neither store
    took it (the caller keeps what it would record, e.g. a message it has not acknowledged)."""
    return _keep(res, rec)[1]


def _keep(res: Resources, rec: FailureRecord) -> tuple[int | None, bool]:
    rec.message = scrub(rec.message)
    rec.traceback = scrub(rec.traceback)
    if rec.failed_at is None:
        rec.failed_at = datetime.now(UTC).isoformat()
    try:
        return write(res, rec), True
    except DatabaseUnavailable:
        try:
            res.redis.rpush(SPOOL_KEY, json.dumps(asdict(rec), default=str))
            log.warning("failure.spooled", extra={"task": rec.task_name})
            return None, True
        except redis.RedisError:
            log.error("failure.unrecorded", extra={"task": rec.task_name, "record": asdict(rec)})
            return None, False


def write(res: Resources, rec: FailureRecord) -> int:
    with transaction(res.pool) as conn:
        delivery_id = delivery_of(rec.kwargs)
        failed_id = q_failed.upsert_failed_task(conn, rec.fingerprint, asdict(rec), delivery_id)
        if delivery_id is not None:
            q_failed.point_delivery_at_failure(conn, delivery_id, failed_id)
    return failed_id


def delivery_of(kwargs: dict[str, Any]) -> int | None:
    """The one delivery a step's record is about: `delivery_id`, or the single item of a
    batch step's `delivery_ids` or `changes` ([delivery id, group id])."""
    candidates = [kwargs.get("delivery_id")]
    ids, changes = kwargs.get("delivery_ids"), kwargs.get("changes")
    if isinstance(ids, list) and len(ids) == 1:
        candidates.append(ids[0])
    if isinstance(changes, list) and len(changes) == 1 and isinstance(changes[0], list | tuple):
        candidates.append(changes[0][0])
    for value in candidates:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def flush_spool(res: Resources, limit: int = 1000) -> int:
    """Write spooled records into PostgreSQL; each leaves the spool only once written.
    PostgreSQL still down: stop quietly, the next beat run tries again (a failure of the
    flush itself is not worth a record of its own)."""
    # One flusher at a time, so no record is written twice (its attempts would double).
    lock = res.redis.lock(SPOOL_LOCK_KEY, timeout=SPOOL_LOCK_TTL_S, blocking=False)
    if not lock.acquire():
        return 0
    try:
        return _flush(res, limit)
    except DatabaseUnavailable as exc:
        log.warning("failure.spool_flush_deferred", extra={"error": str(exc)})
        return 0
    finally:
        with contextlib.suppress(redis.RedisError):
            lock.release()


def _flush(res: Resources, limit: int) -> int:
    written = 0
    for _ in range(limit):
        raw = res.redis.lindex(SPOOL_KEY, 0)
        if raw is None:
            break
        try:
            spooled = json.loads(raw)
            # Keys of an older version's record (e.g. `chain`) are left behind.
            rec = FailureRecord(**{k: v for k, v in spooled.items() if k in RECORD_FIELDS})
        except (ValueError, TypeError):
            res.redis.lmove(SPOOL_KEY, SPOOL_UNREADABLE_KEY, "LEFT", "RIGHT")
            log.error("failure.spool_unreadable", extra={"key": SPOOL_UNREADABLE_KEY})
            continue
        write(res, rec)
        # Only the entry just written leaves (LREM by value, not a blind LPOP).
        res.redis.lrem(SPOOL_KEY, 1, raw.decode() if isinstance(raw, bytes) else raw)
        written += 1
    return written
