"""SQL of the operator's view (`jira-sync status`, the receiver's `/metrics`): one cheap
statement per figure, each answered from an index."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from worker.store.db import Connection
from worker.store.queries.failed_tasks import STATUSES as FAILED_STATUSES

DELIVERY_STATUSES = ("received", "queued", "done", "failed")
# Not finished yet: still to be sent, or sent and waiting for the pipeline.
UNFINISHED = ["received", "queued"]

# The status list lets the (status, received_at) index answer both windows.
COUNT_RECENT = """
SELECT status,
       count(*) FILTER (WHERE received_at >= now() - interval '1 hour') AS last_hour,
       count(*) AS last_day
FROM webhook_delivery
WHERE status = ANY(%s) AND received_at >= now() - interval '1 day'
GROUP BY status
"""


def recent_counts(conn: Connection) -> dict[str, tuple[int, int]]:
    """Deliveries received in the last hour and the last day, per status (all four listed)."""
    found = {
        r["status"]: (int(r["last_hour"]), int(r["last_day"]))
        for r in conn.execute(COUNT_RECENT, (list(DELIVERY_STATUSES),))
    }
    return {status: found.get(status, (0, 0)) for status in DELIVERY_STATUSES}


@dataclass(frozen=True)
class Unfinished:
    """The deliveries not done yet: how many, the oldest, and those stuck past a threshold."""

    count: int
    oldest_id: int | None
    oldest_status: str | None
    oldest_age_s: float | None
    stuck_count: int
    stuck_ids: list[int]


SELECT_UNFINISHED = """
SELECT count(*) AS count,
       (array_agg(id ORDER BY received_at, id))[1] AS oldest_id,
       (array_agg(status ORDER BY received_at, id))[1] AS oldest_status,
       extract(epoch FROM now() - min(received_at))::float8 AS oldest_age_s,
       count(*) FILTER (WHERE received_at < now() - make_interval(secs => %(stuck_s)s))
           AS stuck_count,
       coalesce((array_agg(id ORDER BY received_at, id)
           FILTER (WHERE received_at < now() - make_interval(secs => %(stuck_s)s)))
           [1:%(shown)s], '{}') AS stuck_ids
FROM webhook_delivery
WHERE status = ANY(%(statuses)s)
"""


def unfinished(conn: Connection, stuck_after_s: float, shown: int) -> Unfinished:
    """Deliveries `received` or `queued`; stuck ones were received over `stuck_after_s` ago
    (at most `shown` of their ids, oldest first)."""
    row = conn.execute(
        SELECT_UNFINISHED, {"stuck_s": stuck_after_s, "shown": shown, "statuses": UNFINISHED}
    ).fetchone()
    assert row is not None  # an aggregate always answers one row
    return Unfinished(
        count=int(row["count"]),
        oldest_id=row["oldest_id"],
        oldest_status=row["oldest_status"],
        oldest_age_s=row["oldest_age_s"],
        stuck_count=int(row["stuck_count"]),
        stuck_ids=[int(i) for i in row["stuck_ids"]],
    )


@dataclass(frozen=True)
class Lag:
    """Time from the 202 (the row's commit) to `done` over the latest finished deliveries."""

    sample: int
    p50_s: float | None
    p99_s: float | None


# Newest first by id (the primary key), so the sample costs `limit` rows whatever the inbox.
SELECT_LAG = """
SELECT count(*) AS sample,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY lag_s) AS p50_s,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY lag_s) AS p99_s
FROM (
    SELECT extract(epoch FROM finished_at - received_at)::float8 AS lag_s
    FROM webhook_delivery WHERE status = 'done'
    ORDER BY id DESC LIMIT %s
) latest
"""


def lag(conn: Connection, last: int) -> Lag:
    row = conn.execute(SELECT_LAG, (last,)).fetchone()
    assert row is not None
    return Lag(int(row["sample"]), row["p50_s"], row["p99_s"])


@dataclass(frozen=True)
class IntegrationActivity:
    """A linked Jira, when its last delivery came in (None: never), whether its webhook is
    signed and a signed delivery has arrived, and its refused signatures."""

    id: int
    name: str
    status: str
    last_delivery_at: datetime | None
    quiet_s: float | None
    signing: bool
    signature_seen: bool
    signature_refusals: int
    since_refusal_s: float | None


SELECT_LAST_DELIVERIES = """
SELECT i.id, i.name, i.status, last.received_at AS last_delivery_at,
       extract(epoch FROM now() - last.received_at)::float8 AS quiet_s,
       i.signing_secret_enc IS NOT NULL AS signing,
       i.signature_seen_at IS NOT NULL AS signature_seen,
       coalesce(seen.signature_refusals, 0) AS signature_refusals,
       extract(epoch FROM now() - seen.last_refused_at)::float8 AS since_refusal_s
FROM integration i
LEFT JOIN LATERAL (
    SELECT received_at FROM webhook_delivery d
    WHERE d.integration_id = i.id ORDER BY received_at DESC LIMIT 1
) last ON true
LEFT JOIN integration_webhook_seen seen ON seen.integration_id = i.id
ORDER BY i.id
"""


def integration_activity(conn: Connection) -> list[IntegrationActivity]:
    return [IntegrationActivity(**r) for r in conn.execute(SELECT_LAST_DELIVERIES)]


COUNT_FAILED = "SELECT status, count(*) AS n FROM failed_task GROUP BY status"


def failed_counts(conn: Connection) -> dict[str, int]:
    """Failed-task records per status (`failed`, `parked`, `replayed`; all listed)."""
    found = {r["status"]: int(r["n"]) for r in conn.execute(COUNT_FAILED)}
    return {status: found.get(status, 0) for status in FAILED_STATUSES}
