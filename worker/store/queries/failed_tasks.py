"""SQL for the failed-task store: record, list, pick for replay, park, purge."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from worker.store.db import Connection

STATUSES = ("failed", "parked", "replayed")


@dataclass(frozen=True)
class FailedTask:
    """One step that gave up, as the store keeps it."""

    id: int
    task_name: str
    task_id: str
    args: list[Any]
    kwargs: dict[str, Any]
    error_type: str
    message: str
    traceback: str
    attempts: int
    first_failed_at: datetime
    last_failed_at: datetime
    status: str
    delivery_id: int | None
    project_id: int | None
    replayed_at: datetime | None
    fingerprint: str


@dataclass(frozen=True)
class Filters:
    """Which records an operator means: every field None matches everything."""

    task: str | None = None
    error_type: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    status: str | None = None


UPSERT_FAILED_TASK = """
INSERT INTO failed_task (task_name, task_id, args, kwargs, error_type, message,
                         traceback, attempts, delivery_id, project_id, fingerprint,
                         first_failed_at, last_failed_at)
VALUES (%(task_name)s, %(task_id)s, %(args)s, %(kwargs)s, %(error_type)s,
        %(message)s, %(traceback)s, %(attempts)s, %(delivery_id)s, %(project_id)s,
        %(fingerprint)s, coalesce(%(failed_at)s::timestamptz, now()),
        coalesce(%(failed_at)s::timestamptz, now()))
ON CONFLICT (fingerprint) DO UPDATE SET
    task_id = EXCLUDED.task_id, error_type = EXCLUDED.error_type,
    message = EXCLUDED.message, traceback = EXCLUDED.traceback,
    attempts = failed_task.attempts + EXCLUDED.attempts,
    last_failed_at = greatest(failed_task.last_failed_at, EXCLUDED.last_failed_at),
    status = 'failed'
RETURNING id
"""


def upsert_failed_task(
    conn: Connection, fingerprint: str, rec: dict[str, Any], delivery_id: int | None
) -> int:
    """Add the record, or fold a new failure of the same step and arguments into it."""
    kwargs = rec["kwargs"]
    row = conn.execute(
        UPSERT_FAILED_TASK,
        {
            **rec,
            "args": Jsonb(rec["args"]),
            "kwargs": Jsonb(kwargs),
            "delivery_id": delivery_id,
            "project_id": _int_or_none(kwargs.get("project_id")),
            "fingerprint": fingerprint,
            "failed_at": rec.get("failed_at"),
        },
    ).fetchone()
    assert row is not None
    return int(row["id"])


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _where(filters: Filters) -> tuple[sql.Composable, dict[str, Any]]:
    """The WHERE clause for a set of filters (only the ones given)."""
    clauses: list[sql.Composable] = [sql.SQL("TRUE")]
    params: dict[str, Any] = {}
    for column, op, value in (
        ("task_name", "=", filters.task),
        ("error_type", "=", filters.error_type),
        ("last_failed_at", ">=", filters.since),
        ("last_failed_at", "<", filters.until),
        ("status", "=", filters.status),
    ):
        if value is None:
            continue
        key = f"p{len(params)}"
        params[key] = value
        clauses.append(
            sql.SQL("{} {} {}").format(sql.Identifier(column), sql.SQL(op), sql.Placeholder(key))
        )
    return sql.SQL(" AND ").join(clauses), params


def list_failed(conn: Connection, filters: Filters, limit: int) -> list[FailedTask]:
    """Newest failures first."""
    where, params = _where(filters)
    query = sql.SQL(
        "SELECT * FROM failed_task WHERE {} ORDER BY last_failed_at DESC, id DESC LIMIT {}"
    ).format(where, sql.Literal(limit))
    return [FailedTask(**r) for r in conn.execute(query, params)]


def counts_by_error(conn: Connection, filters: Filters) -> dict[str, int]:
    """How many matching records per error type, most frequent first."""
    where, params = _where(filters)
    query = sql.SQL(
        "SELECT error_type, count(*) AS n FROM failed_task WHERE {} "
        "GROUP BY error_type ORDER BY n DESC, error_type"
    ).format(where)
    return {r["error_type"]: int(r["n"]) for r in conn.execute(query, params)}


def get_failed(conn: Connection, failed_id: int) -> FailedTask | None:
    row = conn.execute("SELECT * FROM failed_task WHERE id = %s", (failed_id,)).fetchone()
    return None if row is None else FailedTask(**row)


def existing_ids(conn: Connection, ids: list[int]) -> set[int]:
    rows = conn.execute("SELECT id FROM failed_task WHERE id = ANY(%s)", (ids,))
    return {int(r["id"]) for r in rows}


def lock_batch_by_filters(
    conn: Connection, filters: Filters, after_id: int, limit: int
) -> list[FailedTask]:
    """The next records to replay, oldest id first, locked so that two replays never
    send the same record; rows another replay holds are skipped."""
    where, params = _where(filters)
    query = sql.SQL(
        "SELECT * FROM failed_task WHERE {} AND id > {} ORDER BY id LIMIT {} FOR UPDATE SKIP LOCKED"
    ).format(where, sql.Literal(after_id), sql.Literal(limit))
    return [FailedTask(**r) for r in conn.execute(query, params)]


LOCK_BY_IDS = """
SELECT * FROM failed_task WHERE id = ANY(%s) AND status = ANY(%s) ORDER BY id
FOR UPDATE SKIP LOCKED
"""


def lock_by_ids(conn: Connection, ids: list[int], statuses: list[str]) -> list[FailedTask]:
    return [FailedTask(**r) for r in conn.execute(LOCK_BY_IDS, (ids, statuses))]


def count_matching(conn: Connection, filters: Filters) -> int:
    where, params = _where(filters)
    query = sql.SQL("SELECT count(*) AS n FROM failed_task WHERE {}").format(where)
    row = conn.execute(query, params).fetchone()
    return 0 if row is None else int(row["n"])


# Even a delivery already done shows `failed` when a later step of it (a side effect)
# gives up: the operator must see it. The pointer names the newest failure.
POINT_DELIVERY_AT_FAILURE = """
UPDATE webhook_delivery
SET status = 'failed', failed_task_id = %s, updated_at = now(), finished_at = now(),
    attempts = attempts + 1
WHERE id = %s
"""


def point_delivery_at_failure(conn: Connection, delivery_id: int, failed_id: int) -> None:
    conn.execute(POINT_DELIVERY_AT_FAILURE, (failed_id, delivery_id))


MARK_REPLAYED = """
UPDATE failed_task SET status = 'replayed', replayed_at = now() WHERE id = ANY(%s)
"""

# Once none of its records is `failed` any more, a failed delivery goes back to what it was:
# `done` if it had finished before a side effect failed, else `queued` until its steps finish
# it. A replayed step that fails again sets it `failed` again.
RESTORE_DELIVERIES = """
UPDATE webhook_delivery d
SET status = CASE WHEN d.outcome IS NULL THEN 'queued' ELSE 'done' END, updated_at = now()
WHERE d.id IN (SELECT delivery_id FROM failed_task WHERE id = ANY(%s))
  AND d.status = 'failed'
  AND NOT EXISTS (SELECT 1 FROM failed_task f WHERE f.delivery_id = d.id AND f.status = 'failed')
"""


def mark_replayed(conn: Connection, ids: list[int]) -> None:
    """One statement per table for a whole batch of replayed records."""
    conn.execute(MARK_REPLAYED, (ids,))
    conn.execute(RESTORE_DELIVERIES, (ids,))


PARK = """
UPDATE failed_task SET status = 'parked' WHERE id = ANY(%s) AND status = 'failed'
RETURNING id
"""


def park(conn: Connection, ids: list[int]) -> list[int]:
    """Set failed records aside (replay --all skips them); returns the ids changed."""
    return sorted(int(r["id"]) for r in conn.execute(PARK, (ids,)))


PURGE = """
WITH gone AS (
    DELETE FROM failed_task
    WHERE status = %(status)s
      AND (%(older_than_s)s::float8 IS NULL
           OR last_failed_at < now() - make_interval(secs => %(older_than_s)s::float8))
    RETURNING id
), unlinked AS (
    UPDATE webhook_delivery SET failed_task_id = NULL
    WHERE failed_task_id IN (SELECT id FROM gone)
)
SELECT count(*) AS n FROM gone
"""


def purge(conn: Connection, status: str, older_than_s: float | None) -> int:
    """Delete records with this status (and older than that); deliveries lose the pointer."""
    row = conn.execute(PURGE, {"status": status, "older_than_s": older_than_s}).fetchone()
    return 0 if row is None else int(row["n"])
