"""SQL of `jira-sync explain` (SPEC 16): an issue's or a group's deliveries, what each decided
per group, the outbound pushes and failed-task records of each, and the changes made here.
Every statement reads by an index (migration 0021)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from worker.store.db import Connection
from worker.store.queries.effects import Effect


@dataclass(frozen=True)
class LinkedIssue:
    id: int
    integration_id: int
    key: str
    group_ids: list[int]


SELECT_ISSUES_BY_KEY = """
SELECT e.id, e.integration_id, e.key,
       coalesce(array_agg(l.group_id ORDER BY l.group_id)
                FILTER (WHERE l.group_id IS NOT NULL), '{}') AS group_ids
FROM external_issue e LEFT JOIN group_link l ON l.external_issue_id = e.id
WHERE e.key = %(key)s AND (%(integration)s::bigint IS NULL OR e.integration_id = %(integration)s)
GROUP BY e.id ORDER BY e.integration_id
"""

SELECT_ISSUES_OF_GROUP = """
SELECT e.id, e.integration_id, e.key, ARRAY[%(group)s::bigint] AS group_ids
FROM group_link l JOIN external_issue e ON e.id = l.external_issue_id
WHERE l.group_id = %(group)s ORDER BY e.integration_id, e.key
"""


def issues_by_key(conn: Connection, key: str, integration_id: int | None) -> list[LinkedIssue]:
    rows = conn.execute(SELECT_ISSUES_BY_KEY, {"key": key, "integration": integration_id})
    return [LinkedIssue(**r) for r in rows]


def issues_of_group(conn: Connection, group_id: int) -> list[LinkedIssue]:
    return [LinkedIssue(**r) for r in conn.execute(SELECT_ISSUES_OF_GROUP, {"group": group_id})]


@dataclass(frozen=True)
class Delivery:
    id: int
    integration_id: int
    issue_key: str | None
    event_ts: int | None
    source: str
    status: str
    outcome: str | None
    status_outcome: str | None
    detail: dict[str, Any]
    status_detail: dict[str, Any]
    received_at: datetime
    finished_at: datetime | None
    assignee: dict[str, Any] | None  # the body's issue.fields.assignee
    status_item: dict[str, Any] | None  # the body's last `status` changelog item


# The body is read in SQL, two small paths of it, never sent whole.
SELECT_DELIVERIES = """
SELECT d.id, d.integration_id, d.issue_key, d.event_ts, d.source, d.status, d.outcome,
       d.status_outcome, d.detail, d.status_detail, d.received_at, d.finished_at,
       b.doc #> '{issue,fields,assignee}' AS assignee,
       (SELECT item FROM jsonb_array_elements(
            CASE WHEN jsonb_typeof(b.doc #> '{changelog,items}') = 'array'
                 THEN b.doc #> '{changelog,items}' ELSE '[]'::jsonb END) AS item
        WHERE item ->> 'field' = 'status' LIMIT 1) AS status_item
FROM webhook_delivery d
JOIN unnest(%s::bigint[], %s::text[]) AS i(integration_id, key)
  ON d.issue_key = i.key
 AND (d.integration_id = i.integration_id
      OR d.integration_id IN (  -- the instance the issue's project moved from (SPEC 15)
          SELECT m.from_integration_id FROM project_migration m
          WHERE m.to_integration_id = i.integration_id
            AND m.project_key = upper(split_part(i.key, '-', 1))))
CROSS JOIN LATERAL (SELECT d.body::jsonb AS doc) b
ORDER BY d.event_ts NULLS FIRST, d.id
"""


def deliveries(conn: Connection, issues: list[LinkedIssue]) -> list[Delivery]:
    """Every delivery of these issues (from the instance they are linked on, or one their
    project moved from), in Jira order (its time, then arrival)."""
    if not issues:
        return []
    params = ([i.integration_id for i in issues], [i.key for i in issues])
    return [Delivery(**r) for r in conn.execute(SELECT_DELIVERIES, params)]


SELECT_EFFECTS = """
SELECT delivery_id, group_id, action, user_id, outcome
FROM delivery_effect WHERE delivery_id = ANY(%s) ORDER BY delivery_id, group_id
"""


def effects(conn: Connection, delivery_ids: list[int]) -> list[Effect]:
    return [Effect(**r) for r in conn.execute(SELECT_EFFECTS, (delivery_ids,))]


@dataclass(frozen=True)
class Push:
    delivery_id: int
    group_id: int
    integration_id: int
    key: str
    status: str
    detail: str
    created_at: datetime


SELECT_PUSHES = """
SELECT o.delivery_id, o.group_id, e.integration_id, e.key, o.status, o.detail, o.created_at
FROM outbound_call o JOIN external_issue e ON e.id = o.external_issue_id
WHERE o.delivery_id = ANY(%s) ORDER BY o.delivery_id, o.created_at
"""


def pushes(conn: Connection, delivery_ids: list[int]) -> list[Push]:
    return [Push(**r) for r in conn.execute(SELECT_PUSHES, (delivery_ids,))]


@dataclass(frozen=True)
class FailedRecord:
    id: int
    delivery_id: int
    task_name: str
    error_type: str
    message: str
    status: str


SELECT_FAILED = """
SELECT id, delivery_id, task_name, error_type, message, status
FROM failed_task WHERE delivery_id = ANY(%s) ORDER BY id
"""


def failed_records(conn: Connection, delivery_ids: list[int]) -> list[FailedRecord]:
    return [FailedRecord(**r) for r in conn.execute(SELECT_FAILED, (delivery_ids,))]


@dataclass(frozen=True)
class LocalChange:
    group_id: int
    type: int
    user_id: int | None
    created_at: datetime


# Changes made here (no delivery caused them): `group resolve|unresolve`, say.
SELECT_LOCAL_CHANGES = """
SELECT group_id, type, user_id, created_at FROM activity
WHERE group_id = ANY(%s) AND delivery_id IS NULL ORDER BY id
"""


def local_changes(conn: Connection, group_ids: list[int]) -> list[LocalChange]:
    return [LocalChange(**r) for r in conn.execute(SELECT_LOCAL_CHANGES, (group_ids,))]


SELECT_GROUP = "SELECT id FROM issue_group WHERE id = %s"


def group_exists(conn: Connection, group_id: int) -> bool:
    return conn.execute(SELECT_GROUP, (group_id,)).fetchone() is not None
