"""SQL of moving a project from Data Center to Cloud (SPEC 15): the migration's record, the
linked issues still on Data Center page by page, moving a page's links, and the deliveries
that arrive for a moved issue on the instance it left."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from worker.store.db import Connection


@dataclass(frozen=True)
class Migration:
    from_integration_id: int
    to_integration_id: int
    project_key: str
    started_at: datetime
    last_run_at: datetime
    finished_at: datetime | None
    moved: int
    missing: list[str]


# Starting (or running again) keeps the first cutover time.
START = """
INSERT INTO project_migration (from_integration_id, to_integration_id, project_key)
VALUES (%s, %s, %s)
ON CONFLICT (from_integration_id, project_key) DO UPDATE
SET to_integration_id = EXCLUDED.to_integration_id, last_run_at = now()
"""


def start(conn: Connection, from_id: int, to_id: int, project: str) -> None:
    conn.execute(START, (from_id, to_id, project))


FINISH_RUN = """
UPDATE project_migration
SET moved = moved + %s, missing = %s, last_run_at = now(),
    finished_at = CASE WHEN %s THEN coalesce(finished_at, now()) END
WHERE from_integration_id = %s AND project_key = %s
"""


def finish_run(
    conn: Connection, from_id: int, project: str, moved: int, missing: list[str]
) -> None:
    conn.execute(FINISH_RUN, (moved, Jsonb(missing), not missing, from_id, project))


SELECT_MIGRATIONS = """
SELECT from_integration_id, to_integration_id, project_key, started_at, last_run_at,
       finished_at, moved, missing
FROM project_migration ORDER BY from_integration_id, project_key
"""


def migrations(conn: Connection) -> list[Migration]:
    return [Migration(**r) for r in conn.execute(SELECT_MIGRATIONS)]


@dataclass(frozen=True)
class LinkedRow:
    id: int
    organization_id: int
    key: str
    number: int


# Keyset over the issue number (MIG-2 before MIG-10), from just after the last page's.
SELECT_PAGE = """
SELECT id, organization_id, key, split_part(key, '-', 2)::bigint AS number
FROM external_issue
WHERE integration_id = %(integration)s AND upper(split_part(key, '-', 1)) = %(project)s
  AND split_part(key, '-', 2) ~ '^[0-9]{1,18}$'
  AND split_part(key, '-', 2)::bigint > %(after)s
ORDER BY split_part(key, '-', 2)::bigint
LIMIT %(size)s
"""


def linked_page(
    conn: Connection, integration_id: int, project: str, after: int, size: int
) -> list[LinkedRow]:
    """The next page of the project's issues still linked on `integration_id`."""
    params = {"integration": integration_id, "project": project, "after": after, "size": size}
    return [LinkedRow(**r) for r in conn.execute(SELECT_PAGE, params)]


SELECT_ORGANIZATIONS = """
SELECT DISTINCT o.slug FROM external_issue e JOIN organization o ON o.id = e.organization_id
WHERE e.integration_id = %(from)s AND upper(split_part(e.key, '-', 1)) = %(project)s
  AND NOT EXISTS (SELECT 1 FROM organization_integration oi
                  WHERE oi.organization_id = e.organization_id
                    AND oi.integration_id = %(to)s)
ORDER BY o.slug
"""


def organizations_not_linked(conn: Connection, from_id: int, to_id: int, project: str) -> list[str]:
    """Organizations with issues of the project on `from_id` but no link to `to_id`."""
    params = {"from": from_id, "to": to_id, "project": project}
    return [str(r["slug"]) for r in conn.execute(SELECT_ORGANIZATIONS, params)]


# The link moves with its groups, assignees, status and remembered Jira state; the issue's
# own event order starts afresh on the new instance (the two clocks are never compared).
MOVE = """
UPDATE external_issue e
SET integration_id = %(to)s, jira_issue_id = m.cloud_id,
    last_event_ts = NULL, last_changelog_id = NULL
FROM unnest(%(ids)s::bigint[], %(cloud_ids)s::text[]) AS m(id, cloud_id)
WHERE e.id = m.id AND e.integration_id = %(from)s
  AND NOT EXISTS (SELECT 1 FROM external_issue c
                  WHERE c.integration_id = %(to)s AND c.organization_id = e.organization_id
                    AND c.key = e.key)
RETURNING e.id
"""
# The groups' newest applied events came from the other clock: a Cloud event is judged only
# against Cloud events from now on.
FORGET_ORDER = """
WITH moved AS (SELECT DISTINCT group_id FROM group_link WHERE external_issue_id = ANY(%(ids)s))
, a AS (DELETE FROM group_applied_event WHERE group_id IN (SELECT group_id FROM moved))
DELETE FROM group_status_event WHERE group_id IN (SELECT group_id FROM moved)
"""


def move(conn: Connection, from_id: int, to_id: int, rows: list[tuple[int, str]]) -> list[int]:
    """Move these (external issue id, Cloud issue id) links to `to_id`, in one statement;
    the ids moved (a key already linked on Cloud is left as it is)."""
    params: dict[str, Any] = {
        "from": from_id,
        "to": to_id,
        "ids": [i for i, _ in rows],
        "cloud_ids": [c for _, c in rows],
    }
    moved = [int(r["id"]) for r in conn.execute(MOVE, params)]
    if moved:
        conn.execute(FORGET_ORDER, {"ids": moved})
    return moved


# A delivery from the instance a project left, for an issue no longer linked there.
SELECT_MIGRATED = """
SELECT t.id FROM unnest(%s::bigint[], %s::bigint[], %s::text[]) AS t(id, integration_id, key)
JOIN project_migration m
  ON m.from_integration_id = t.integration_id AND m.project_key = upper(split_part(t.key, '-', 1))
WHERE NOT EXISTS (SELECT 1 FROM external_issue e
                  WHERE e.integration_id = t.integration_id AND e.key = t.key)
"""


def migrated_deliveries(conn: Connection, deliveries: list[tuple[int, int, str]]) -> set[int]:
    """Which of these (delivery id, integration id, issue key) are for a moved issue."""
    if not deliveries:
        return set()
    columns = ([d for d, _, _ in deliveries], [i for _, i, _ in deliveries],
               [k for _, _, k in deliveries])  # fmt: skip
    return {int(r["id"]) for r in conn.execute(SELECT_MIGRATED, columns)}
