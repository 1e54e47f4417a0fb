"""SQL for status sync (SPEC 10): the issues and groups a status event acts on, a group's
status and its newest applied status event, a delivery's status outcome, the outbound mapping
and targets, and the transitions this service made (so their echo changes nothing)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from worker.domain.status import STATUS_RECORDS, GroupStatus, StatusOutcome
from worker.store.db import Connection
from worker.store.queries.inbound import GroupRef, insert_activity_and_history

# Jira's webhook for a transition this service made arrives within seconds; an older marker
# (its webhook lost) no longer swallows a change made in Jira by a person.
ECHO_WINDOW_S = 600


@dataclass(frozen=True)
class StatusIssue:
    """An external issue row of an organization with inbound status sync on."""

    id: int
    organization_id: int


@dataclass(frozen=True)
class GroupStatusRow:
    id: int
    project_id: int
    status: str


@dataclass(frozen=True)
class StatusTarget:
    """A Jira issue linked to a group, on a link with forward status sync on, and the status
    mapped for its organization and Jira project (None when there is no mapping)."""

    external_issue_id: int
    integration_id: int
    organization: str
    key: str
    resolved_status: str | None
    unresolved_status: str | None


# Issue rows in organizations with inbound status sync on (FROM and the switch's conditions).
STATUS_SYNCED_FROM = """
FROM external_issue ei
JOIN organization_integration oi
  ON oi.organization_id = ei.organization_id AND oi.integration_id = ei.integration_id
JOIN organization o ON o.id = ei.organization_id
WHERE oi.status = 'active'
  AND coalesce((oi.config ->> 'sync_status_reverse')::boolean, false)
  AND o.issue_sync_enabled
"""

SELECT_STATUS_SYNCED_ISSUES = f"""
SELECT ei.id, ei.organization_id {STATUS_SYNCED_FROM}
  AND ei.integration_id = %s AND ei.key = %s
ORDER BY ei.id
"""

SELECT_STATUS_SYNCED_KEYS = f"""
SELECT DISTINCT ei.integration_id, ei.key {STATUS_SYNCED_FROM}
  AND (ei.integration_id, ei.key) IN (SELECT * FROM unnest(%s::bigint[], %s::text[]))
"""


def status_synced_keys(conn: Connection, keys: set[tuple[int, str]]) -> set[tuple[int, str]]:
    """Which (integration, issue key) pairs have an issue row with inbound status sync on:
    one query for a whole batch."""
    if not keys:
        return set()
    pairs = sorted(keys)
    rows = conn.execute(SELECT_STATUS_SYNCED_KEYS, ([i for i, _ in pairs], [k for _, k in pairs]))
    return {(int(r["integration_id"]), str(r["key"])) for r in rows}


SET_NO_AFFECTED_GROUPS = """
UPDATE webhook_delivery SET status_outcome = %s, status_detail = '{}', updated_at = now()
WHERE id = ANY(%s) AND status_outcome IS NULL
"""


def set_no_affected_groups(conn: Connection, delivery_ids: list[int]) -> None:
    """The status part of these deliveries acts on no group (no issue row with the switch on)."""
    if delivery_ids:
        conn.execute(SET_NO_AFFECTED_GROUPS, (str(StatusOutcome.NO_AFFECTED_GROUPS), delivery_ids))


def status_synced_issues(conn: Connection, integration_id: int, key: str) -> list[StatusIssue]:
    """The issue's rows in organizations with inbound status sync on."""
    rows = conn.execute(SELECT_STATUS_SYNCED_ISSUES, (integration_id, key))
    return [StatusIssue(**r) for r in rows]


LOCK_GROUP_STATUS = """
SELECT id, project_id, status FROM issue_group WHERE id = %s FOR NO KEY UPDATE
"""


def lock_group_status(conn: Connection, group_id: int) -> GroupStatusRow | None:
    """The group's row locked (the lock every change to a group takes), with its status."""
    row = conn.execute(LOCK_GROUP_STATUS, (group_id,)).fetchone()
    return None if row is None else GroupStatusRow(**row)


SET_GROUP_STATUS = """
UPDATE issue_group
SET status = %(status)s,
    resolved_at = CASE WHEN %(status)s = 'resolved' THEN now() END
WHERE id = %(id)s
"""


def change_group_status(
    conn: Connection,
    group: GroupRef,
    status: GroupStatus,
    data: dict[str, Any],
    delivery_id: int | None,
) -> None:
    """Move a locked group into `status` with its activity and history (by the system; a
    delivery writes each kind once per group)."""
    conn.execute(SET_GROUP_STATUS, {"status": str(status), "id": group.id})
    activity, history = STATUS_RECORDS[status]
    insert_activity_and_history(conn, group, activity, data, history, delivery_id)


SET_STATUS_OUTCOME = """
UPDATE webhook_delivery SET status_outcome = %s, status_detail = %s, updated_at = now()
WHERE id = %s
"""


def set_status_outcome(
    conn: Connection, delivery_id: int, outcome: str, detail: dict[str, Any]
) -> None:
    conn.execute(SET_STATUS_OUTCOME, (outcome, Jsonb(detail), delivery_id))


TAKE_ECHOES = """
DELETE FROM status_push
WHERE external_issue_id = ANY(%s) AND group_id = ANY(%s) AND status_id = %s
  AND created_at > now() - make_interval(secs => %s)
RETURNING group_id
"""


def take_echoes(
    conn: Connection, issue_ids: list[int], group_ids: list[int], status_id: str
) -> set[int]:
    """The groups whose own push moved one of these issues to `status_id` lately: their
    markers are used up (one echo each) and the groups returned."""
    rows = conn.execute(TAKE_ECHOES, (issue_ids, group_ids, status_id, ECHO_WINDOW_S))
    return {int(r["group_id"]) for r in rows}


RECORD_STATUS_PUSH = """
INSERT INTO status_push (external_issue_id, group_id, status_id) VALUES (%s, %s, %s)
ON CONFLICT (external_issue_id, group_id, status_id) DO UPDATE SET created_at = now()
"""


def record_status_push(
    conn: Connection, external_issue_id: int, group_id: int, status_id: str
) -> None:
    """A transition about to be made for this group: Jira's webhook for it is its echo."""
    conn.execute(RECORD_STATUS_PUSH, (external_issue_id, group_id, status_id))


DROP_STATUS_PUSH = """
DELETE FROM status_push WHERE external_issue_id = %s AND group_id = %s AND status_id = %s
"""


def drop_status_push(
    conn: Connection, external_issue_id: int, group_id: int, status_id: str
) -> None:
    """The transition failed: no echo will come."""
    conn.execute(DROP_STATUS_PUSH, (external_issue_id, group_id, status_id))


REQUEST_STATUS_MOVE = """
INSERT INTO status_move_pending (group_id, source_integration_id) VALUES (%s, %s)
ON CONFLICT (group_id) DO UPDATE
SET source_integration_id = EXCLUDED.source_integration_id, requested_at = now()
"""


def request_status_move(conn: Connection, group_id: int, source_integration_id: int | None) -> None:
    """The group's linked issues must follow its status (in the transaction that changed it)."""
    conn.execute(REQUEST_STATUS_MOVE, (group_id, source_integration_id))


SELECT_STATUS_MOVE = "SELECT requested_at FROM status_move_pending WHERE group_id = %s"


def status_move_requested_at(conn: Connection, group_id: int) -> datetime | None:
    row = conn.execute(SELECT_STATUS_MOVE, (group_id,)).fetchone()
    return None if row is None else row["requested_at"]


FINISH_STATUS_MOVE = """
DELETE FROM status_move_pending WHERE group_id = %s AND requested_at <= %s
"""


def finish_status_move(conn: Connection, group_id: int, requested_at: datetime) -> None:
    """The move asked for at `requested_at` is done (a later request stays)."""
    conn.execute(FINISH_STATUS_MOVE, (group_id, requested_at))


STALLED_STATUS_MOVES = """
UPDATE status_move_pending p SET requested_at = now()
FROM (
    SELECT group_id FROM status_move_pending
    WHERE requested_at < now() - make_interval(secs => %s)
    ORDER BY requested_at LIMIT %s FOR UPDATE SKIP LOCKED
) due
WHERE p.group_id = due.group_id
RETURNING p.group_id, p.source_integration_id
"""


def take_stalled_status_moves(
    conn: Connection, older_than_s: float, limit: int
) -> list[tuple[int, int | None]]:
    """Moves asked for this long ago and not done (their message was lost): marked as asked
    again now, and returned (group id, source instance)."""
    rows = conn.execute(STALLED_STATUS_MOVES, (older_than_s, limit))
    return [(int(r["group_id"]), r["source_integration_id"]) for r in rows]


SELECT_STATUS_TARGETS = """
SELECT ei.id AS external_issue_id, ei.integration_id, o.slug AS organization, ei.key,
       m.resolved_status, m.unresolved_status
FROM group_link gl
JOIN external_issue ei ON ei.id = gl.external_issue_id
JOIN organization o ON o.id = ei.organization_id
JOIN organization_integration oi
  ON oi.organization_id = ei.organization_id AND oi.integration_id = ei.integration_id
JOIN integration i ON i.id = ei.integration_id
LEFT JOIN status_mapping m
  ON m.organization_id = ei.organization_id AND m.integration_id = ei.integration_id
 AND m.jira_project = upper(split_part(ei.key, '-', 1))
WHERE gl.group_id = %s
  AND oi.status = 'active' AND i.status = 'active'
  AND coalesce((oi.config ->> 'sync_status_forward')::boolean, false)
ORDER BY ei.id
"""


def status_targets(conn: Connection, group_id: int) -> list[StatusTarget]:
    """The Jira issues to move when the group is resolved or unresolved."""
    return [StatusTarget(**r) for r in conn.execute(SELECT_STATUS_TARGETS, (group_id,))]


SELECT_GROUP_STATUS = "SELECT status FROM issue_group WHERE id = %s"


def group_status(conn: Connection, group_id: int) -> str | None:
    row = conn.execute(SELECT_GROUP_STATUS, (group_id,)).fetchone()
    return None if row is None else str(row["status"])


UPSERT_STATUS_MAPPING = """
INSERT INTO status_mapping
    (organization_id, integration_id, jira_project, resolved_status, unresolved_status)
VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (organization_id, integration_id, jira_project) DO UPDATE
SET resolved_status = EXCLUDED.resolved_status,
    unresolved_status = EXCLUDED.unresolved_status, updated_at = now()
"""


def set_status_mapping(
    conn: Connection,
    organization_id: int,
    integration_id: int,
    jira_project: str,
    resolved: str,
    unresolved: str,
) -> None:
    conn.execute(
        UPSERT_STATUS_MAPPING,
        (organization_id, integration_id, jira_project, resolved, unresolved),
    )
