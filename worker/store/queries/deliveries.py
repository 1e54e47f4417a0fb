"""SQL for the webhook inbox."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from worker.store.db import AsyncConnection, Connection


@dataclass(frozen=True)
class Delivery:
    """One accepted webhook delivery as the inbox holds it."""

    id: int
    integration_id: int
    dedupe_key: str
    body: str
    headers: dict[str, Any]
    issue_key: str | None
    event_ts: int | None
    status: str
    outcome: str | None
    detail: dict[str, Any]
    attempts: int
    failed_task_id: int | None
    received_at: datetime
    queued_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    source: str  # `webhook`, or `reconcile` when the sweep fed it
    # The status part (SPEC 10): None until applied, or when the delivery changes no status.
    status_outcome: str | None = None
    status_detail: dict[str, Any] = field(default_factory=dict)
    sender: int | None = None  # the receiver process that stored it (migration 0024)


# queued_at is when the first step was last put on the broker (a re-send moves it).
MARK_QUEUED = """
UPDATE webhook_delivery SET status = 'queued', queued_at = now(), updated_at = now()
WHERE id = ANY(%s) AND status IN ('received', 'queued')
"""


def mark_queued(conn: Connection, delivery_ids: list[int]) -> None:
    conn.execute(MARK_QUEUED, (delivery_ids,))


SELECT_UNQUEUED = """
SELECT id FROM webhook_delivery
WHERE status = 'received' AND received_at < now() - make_interval(secs => %s)
ORDER BY id LIMIT %s
"""


def unqueued_delivery_ids(conn: Connection, older_than_s: float, limit: int) -> list[int]:
    """Deliveries stored but never put on the broker (the broker was down at the time)."""
    return [int(r["id"]) for r in conn.execute(SELECT_UNQUEUED, (older_than_s, limit))]


SELECT_STALLED = """
SELECT id FROM webhook_delivery
WHERE status = 'queued' AND queued_at < now() - make_interval(secs => %s)
ORDER BY queued_at LIMIT %s
"""


def stalled_delivery_ids(conn: Connection, older_than_s: float, limit: int) -> list[int]:
    """Deliveries sent to the broker long ago and still not finished: their messages may
    have been lost (the broker restarted without its data)."""
    return [int(r["id"]) for r in conn.execute(SELECT_STALLED, (older_than_s, limit))]


SELECT_DELIVERY = "SELECT * FROM webhook_delivery WHERE id = %s"


def get_delivery(conn: Connection, delivery_id: int) -> Delivery | None:
    row = conn.execute(SELECT_DELIVERY, (delivery_id,)).fetchone()
    return None if row is None else Delivery(**row)


@dataclass(frozen=True)
class StoredBody:
    """What a step reads of a delivery to act on it: its body, where from, and whether done."""

    id: int
    integration_id: int
    status: str
    body: str


# Only what the steps use: the three jsonb columns would be decoded for nothing.
SELECT_BODIES = """
SELECT id, integration_id, status, body FROM webhook_delivery WHERE id = ANY(%s) ORDER BY id
"""


def get_bodies(conn: Connection, delivery_ids: list[int]) -> list[StoredBody]:
    """The bodies of the deliveries of these ids that exist, in id order."""
    return [StoredBody(**row) for row in conn.execute(SELECT_BODIES, (delivery_ids,))]


FINISH_DELIVERIES = """
UPDATE webhook_delivery d
SET status = 'done', outcome = v.outcome, detail = '{}', finished_at = now(),
    updated_at = now(), attempts = d.attempts + 1
FROM unnest(%s::bigint[], %s::text[]) AS v(id, outcome)
WHERE d.id = v.id
"""


def finish_deliveries(conn: Connection, outcomes: list[tuple[int, str]]) -> None:
    """Mark many deliveries done, each with its outcome, in one statement."""
    conn.execute(FINISH_DELIVERIES, ([d for d, _ in outcomes], [o for _, o in outcomes]))


FINISH_DELIVERY = """
UPDATE webhook_delivery
SET status = 'done', outcome = %s, detail = %s, finished_at = now(), updated_at = now(),
    attempts = attempts + 1
WHERE id = %s
"""


def finish_delivery(
    conn: Connection, delivery_id: int, outcome: str, detail: dict[str, Any] | None = None
) -> None:
    """Mark a delivery done with its outcome (also after a replay of a failed one)."""
    conn.execute(FINISH_DELIVERY, (outcome, Jsonb(detail or {}), delivery_id))


LIST_DELIVERIES = """
SELECT * FROM webhook_delivery
WHERE (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(outcome)s::text IS NULL OR outcome = %(outcome)s)
  AND (%(status_outcome)s::text IS NULL OR status_outcome = %(status_outcome)s)
ORDER BY id DESC LIMIT %(limit)s
"""


def list_deliveries(
    conn: Connection,
    status: str | None,
    outcome: str | None,
    limit: int,
    status_outcome: str | None = None,
) -> list[Delivery]:
    params = {
        "status": status,
        "outcome": outcome,
        "limit": limit,
        "status_outcome": status_outcome,
    }
    rows = conn.execute(LIST_DELIVERIES, params)
    return [Delivery(**r) for r in rows]


@dataclass(frozen=True)
class NewDelivery:
    """A delivery the receiver accepted (or the reconciliation sweep made), not stored yet."""

    integration_id: int
    dedupe_key: str
    body: str
    headers: dict[str, str]
    issue_key: str | None
    event_ts: int | None
    source: str = "webhook"


# Binary parameters (%b): psycopg's text format escapes every quote of every body in Python
# (about 1 ms for a 10 KB Jira body); the binary format copies the bytes.
INSERT_DELIVERIES = """
INSERT INTO webhook_delivery
    (integration_id, dedupe_key, body, headers, issue_key, event_ts, source)
SELECT * FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::jsonb[], %b::text[], %b::bigint[],
                     %b::text[])
ON CONFLICT (integration_id, dedupe_key) DO NOTHING
RETURNING id, integration_id, dedupe_key
"""

# The receiver's insert: stored `queued` by the receiver process that sends them next (one write
# per delivery; migration 0024 says what happens when the send does not follow).
INSERT_QUEUED = """
INSERT INTO webhook_delivery
    (integration_id, dedupe_key, body, headers, issue_key, event_ts, source, status, queued_at,
     sender)
SELECT u.*, 'queued', now(), %b::bigint
FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::jsonb[], %b::text[], %b::bigint[],
            %b::text[]) AS u
ON CONFLICT (integration_id, dedupe_key) DO NOTHING
RETURNING id, integration_id, dedupe_key
"""


class _Insert:
    """One group commit's statement: duplicates within the batch are sent once."""

    def __init__(self, batch: list[NewDelivery]) -> None:
        self.batch = batch
        self.first: dict[tuple[int, str], int] = {}
        for index, d in enumerate(batch):
            self.first.setdefault((d.integration_id, d.dedupe_key), index)
        unique = [batch[i] for i in self.first.values()]
        self.params = (
            [d.integration_id for d in unique],
            [d.dedupe_key for d in unique],
            [d.body for d in unique],
            [Jsonb(d.headers) for d in unique],
            [d.issue_key for d in unique],
            [d.event_ts for d in unique],
            [d.source for d in unique],
        )

    def ids(self, rows: list[dict[str, Any]]) -> list[int | None]:
        """Per item of the batch, the new id, or None when it duplicates a stored delivery or
        an earlier item."""
        stored = {(int(r["integration_id"]), str(r["dedupe_key"])): int(r["id"]) for r in rows}
        return [
            stored.get(key) if self.first[key] == i else None
            for i, key in enumerate((d.integration_id, d.dedupe_key) for d in self.batch)
        ]


def insert_deliveries(conn: Connection, batch: list[NewDelivery]) -> list[int | None]:
    """Store many deliveries `received` in one statement (the caller sends them; what it cannot,
    beat's sweep does). Returns, per item, the new id or None when it duplicates a stored
    delivery or an earlier item."""
    insert = _Insert(batch)
    return insert.ids(conn.execute(INSERT_DELIVERIES, insert.params).fetchall())


async def insert_queued_async(
    conn: AsyncConnection, batch: list[NewDelivery], sender: int
) -> list[int | None]:
    """The receiver's group commit: like `insert_deliveries`, stored `queued` by `sender` (a
    receiver_process), on the event loop."""
    insert = _Insert(batch)
    cursor = await conn.execute(INSERT_QUEUED, (sender, *insert.params))
    return insert.ids(await cursor.fetchall())


# -- the receiver processes that send what they store (migration 0024) ---------------------

REGISTER_SENDER = """
INSERT INTO receiver_process (host, pid) VALUES (%s, %s) RETURNING id
"""
# A heartbeat also clears ended_at: beat's sweep may have taken over a receiver that was only
# cut off from the database; it goes on sending what it stores from now on.
SENDER_SEEN = "UPDATE receiver_process SET seen_at = now(), ended_at = NULL WHERE id = %s"
SENDER_ENDED = "UPDATE receiver_process SET seen_at = now(), ended_at = now() WHERE id = %s"
# A send that failed: back to `received`, for beat's sweep of unqueued deliveries.
_BACK_TO_RECEIVED = (
    "UPDATE webhook_delivery SET status = 'received', queued_at = NULL, updated_at = now()"
)
UNQUEUE = _BACK_TO_RECEIVED + " WHERE id = ANY(%s) AND status = 'queued'"


async def register_sender_async(conn: AsyncConnection, host: str, pid: int) -> int:
    cursor = await conn.execute(REGISTER_SENDER, (host, pid))
    row = await cursor.fetchone()
    assert row is not None
    return int(row["id"])


async def sender_seen_async(conn: AsyncConnection, sender: int, *, ended: bool = False) -> None:
    await conn.execute(SENDER_ENDED if ended else SENDER_SEEN, (sender,))


async def unqueue_async(conn: AsyncConnection, delivery_ids: list[int]) -> None:
    await conn.execute(UNQUEUE, (delivery_ids,))


TAKE_SILENT_SENDERS = """
UPDATE receiver_process SET ended_at = now()
WHERE ended_at IS NULL AND seen_at < now() - make_interval(secs => %s)
RETURNING id
"""
RELEASE_SENDERS = _BACK_TO_RECEIVED + " WHERE sender = ANY(%s) AND status = 'queued'"


def release_silent_senders(conn: Connection, silent_after_s: float) -> int:
    """Receivers whose heartbeat stopped without a clean stop (killed): set the deliveries they
    stored and may not have sent back to `received`, for the sweep of unqueued deliveries.
    Returns how many deliveries."""
    senders = [int(r["id"]) for r in conn.execute(TAKE_SILENT_SENDERS, (silent_after_s,))]
    if not senders:
        return 0
    return conn.execute(RELEASE_SENDERS, (senders,)).rowcount


@dataclass(frozen=True)
class OutboundCall:
    """One push of a delivery's change to another linked Jira issue, and its result."""

    group_id: int
    integration_id: int
    issue_key: str
    status: str
    detail: str
    created_at: datetime


SELECT_OUTBOUND_CALLS = """
SELECT oc.group_id, ei.integration_id, ei.key AS issue_key, oc.status, oc.detail, oc.created_at
FROM outbound_call oc
JOIN external_issue ei ON ei.id = oc.external_issue_id
WHERE oc.delivery_id = %s
ORDER BY oc.group_id, ei.integration_id, ei.key
"""


def outbound_calls(conn: Connection, delivery_id: int) -> list[OutboundCall]:
    return [OutboundCall(**r) for r in conn.execute(SELECT_OUTBOUND_CALLS, (delivery_id,))]
