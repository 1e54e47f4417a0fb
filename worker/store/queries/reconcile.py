"""SQL for reconciliation: the per-integration sweep state, the linked issues a sweep
compares, and the Jira assignee the service last knew per issue."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from worker.domain.reconcile import Known
from worker.store.db import Connection


@dataclass(frozen=True)
class State:
    """One integration's sweep: switch, interval (None: the default), watermark, last run."""

    integration_id: int
    external_id: str
    integration_status: str
    enabled: bool
    interval_s: int | None
    watermark_ms: int | None
    next_run_at: datetime | None
    last_run_at: datetime | None
    last_success_at: datetime | None
    issues_checked: int
    changes_found: int
    jira_requests: int
    last_error: str | None
    last_error_at: datetime | None
    unusable: list[dict[str, Any]]


# An integration without a row sweeps with the defaults (on, RECONCILE_INTERVAL_S).
SELECT_STATES = """
SELECT i.id AS integration_id, i.external_id, i.status AS integration_status,
       coalesce(r.enabled, true) AS enabled, r.interval_s, r.watermark_ms, r.next_run_at,
       r.last_run_at, r.last_success_at, coalesce(r.issues_checked, 0) AS issues_checked,
       coalesce(r.changes_found, 0) AS changes_found,
       coalesce(r.jira_requests, 0) AS jira_requests, r.last_error, r.last_error_at,
       coalesce(r.unusable, '[]'::jsonb) AS unusable
FROM integration i
LEFT JOIN reconcile_state r ON r.integration_id = i.id
WHERE %(id)s::bigint IS NULL OR i.id = %(id)s
ORDER BY i.id
"""


def states(conn: Connection, integration_id: int | None = None) -> list[State]:
    """Every integration's sweep state (or one's), in id order."""
    return [State(**r) for r in conn.execute(SELECT_STATES, {"id": integration_id})]


CONFIGURE = """
INSERT INTO reconcile_state (integration_id, enabled, interval_s)
VALUES (%(id)s, coalesce(%(enabled)s, true), %(interval_s)s)
ON CONFLICT (integration_id) DO UPDATE SET
    enabled = coalesce(%(enabled)s, reconcile_state.enabled),
    interval_s = coalesce(%(interval_s)s, reconcile_state.interval_s),
    next_run_at = least(reconcile_state.next_run_at,
                        now() + make_interval(secs => coalesce(%(interval_s)s, 0)))
"""


def configure(
    conn: Connection, integration_id: int, enabled: bool | None, interval_s: int | None
) -> None:
    """Switch an integration's sweep or set its interval (None leaves a value as it is)."""
    conn.execute(CONFIGURE, {"id": integration_id, "enabled": enabled, "interval_s": interval_s})


ADD_MISSING_STATES = """
INSERT INTO reconcile_state (integration_id)
SELECT id FROM integration WHERE status = 'active'
ON CONFLICT (integration_id) DO NOTHING
"""

# Claimed by moving next_run_at: two beats (or a slow sweep) never claim one run twice.
CLAIM_DUE = """
UPDATE reconcile_state r
SET next_run_at = now() + make_interval(secs => coalesce(r.interval_s, %s))
FROM integration i
WHERE i.id = r.integration_id AND i.status = 'active' AND r.enabled AND r.next_run_at <= now()
RETURNING r.integration_id
"""


def claim_due(conn: Connection, default_interval_s: int) -> list[int]:
    """Integrations whose sweep is due, each claimed until its next run."""
    conn.execute(ADD_MISSING_STATES)
    rows = conn.execute(CLAIM_DUE, (default_interval_s,))
    return sorted(int(r["integration_id"]) for r in rows)


ADVANCE_WATERMARK = """
INSERT INTO reconcile_state (integration_id, watermark_ms) VALUES (%(id)s, %(ms)s)
ON CONFLICT (integration_id) DO UPDATE
SET watermark_ms = greatest(reconcile_state.watermark_ms, %(ms)s)
"""


def advance_watermark(conn: Connection, integration_id: int, watermark_ms: int) -> None:
    """Never backwards: a slower sweep finishing after a faster one keeps the later mark."""
    conn.execute(ADVANCE_WATERMARK, {"id": integration_id, "ms": watermark_ms})


RECORD_RUN = """
INSERT INTO reconcile_state AS r (integration_id, last_run_at, jira_requests, issues_checked,
                                  changes_found, last_success_at, last_error, last_error_at,
                                  unusable)
VALUES (%(id)s, now(), %(requests)s, %(checked)s, %(found)s,
        CASE WHEN %(error)s::text IS NULL THEN now() END, %(error)s,
        CASE WHEN %(error)s::text IS NOT NULL THEN now() END, %(unusable)s)
ON CONFLICT (integration_id) DO UPDATE
SET last_run_at = EXCLUDED.last_run_at, jira_requests = EXCLUDED.jira_requests,
    issues_checked = EXCLUDED.issues_checked, changes_found = EXCLUDED.changes_found,
    last_success_at = coalesce(EXCLUDED.last_success_at, r.last_success_at),
    last_error = EXCLUDED.last_error,
    last_error_at = coalesce(EXCLUDED.last_error_at, r.last_error_at),
    unusable = EXCLUDED.unusable
"""


def record_run(
    conn: Connection,
    integration_id: int,
    *,
    requests: int,
    checked: int,
    found: int,
    error: str | None,
    unusable: list[dict[str, str]],
) -> None:
    """What a sweep did; `error` says why it stopped before the end (None: it finished);
    `unusable` lists the linked issues it could not use, each with the reason."""
    conn.execute(
        RECORD_RUN,
        {
            "id": integration_id,
            "requests": requests,
            "checked": checked,
            "found": found,
            "error": error,
            "unusable": Jsonb(unusable),
        },
    )


SELECT_LINKED = """
SELECT ei.key,
       coalesce(array_agg(ei.jira_assignee ORDER BY ei.id)
                FILTER (WHERE ei.assignee_on), '{}') AS assignee,
       coalesce(array_agg(ei.jira_status ORDER BY ei.id)
                FILTER (WHERE ei.status_on), '{}') AS status
FROM (
    SELECT ei.id, ei.key, ei.jira_assignee, ei.jira_status,
           coalesce((oi.config ->> 'sync_reverse_assignment')::boolean, false) AS assignee_on,
           coalesce((oi.config ->> 'sync_status_reverse')::boolean, false) AS status_on
    FROM external_issue ei
    JOIN organization_integration oi
      ON oi.organization_id = ei.organization_id AND oi.integration_id = ei.integration_id
    JOIN organization o ON o.id = ei.organization_id
    WHERE ei.integration_id = %s AND ei.key = ANY(%s)
      AND oi.status = 'active' AND o.issue_sync_enabled
      AND EXISTS (SELECT 1 FROM group_link gl WHERE gl.external_issue_id = ei.id)
) ei
WHERE ei.assignee_on OR ei.status_on
GROUP BY ei.key
"""


def linked_issues(conn: Connection, integration_id: int, keys: list[str]) -> dict[str, Known]:
    """Of these keys, those that matter to the inbound sync (assignee or status), with what
    was last known of them."""
    rows = conn.execute(SELECT_LINKED, (integration_id, keys))
    return {str(r["key"]): Known(list(r["assignee"]), list(r["status"])) for r in rows}


REMEMBER_JIRA_STATUS = "UPDATE external_issue SET jira_status = %s WHERE id = ANY(%s)"


def remember_jira_status(conn: Connection, external_issue_ids: list[int], status_id: str) -> None:
    """The issues' Jira status as the service now knows it: from the newest status event
    applied, or because the service itself just moved them there."""
    conn.execute(REMEMBER_JIRA_STATUS, (status_id, external_issue_ids))


REMEMBER_JIRA_ASSIGNEE = "UPDATE external_issue SET jira_assignee = %s WHERE id = ANY(%s)"


def remember_jira_assignee(
    conn: Connection, external_issue_ids: list[int], mark: str | None
) -> None:
    """The issues' Jira assignee as the service now knows it: from the newest event read, or
    because the service itself just set it in Jira (so the sweep does not feed that back)."""
    conn.execute(REMEMBER_JIRA_ASSIGNEE, (mark, external_issue_ids))


SELECT_FED_OUTCOMES = """
SELECT dedupe_key, outcome FROM webhook_delivery WHERE integration_id = %s AND dedupe_key = ANY(%s)
"""


def fed_outcomes(conn: Connection, integration_id: int, keys: list[str]) -> dict[str, str | None]:
    """Of these dedupe keys, those a delivery was stored under, with its outcome so far."""
    rows = conn.execute(SELECT_FED_OUTCOMES, (integration_id, keys))
    return {str(r["dedupe_key"]): r["outcome"] for r in rows}
