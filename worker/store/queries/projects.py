"""SQL for projects, their save and delete requests, and what a delete removes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from worker.store.db import Connection

PROJECT_ID_CONSTRAINT = "project_pkey"
PROJECT_SLUG_CONSTRAINT = "project_org_slug_uniq"


@dataclass(frozen=True)
class Project:
    """One project row."""

    id: int
    organization_id: int
    name: str
    slug: str
    status: str
    created_at: datetime


@dataclass(frozen=True)
class ProjectRequest:
    """A save or delete the chain was asked to do, and how it ended."""

    id: int
    kind: str
    organization_id: int | None
    project_id: int | None
    name: str | None
    requested_slug: str | None
    slug: str | None
    team_ids: list[int]
    purge_group_ids: list[int] | None
    status: str
    outcome: str | None
    error: str | None
    created_at: datetime
    finished_at: datetime | None


SELECT_ORGANIZATION_ID = "SELECT id FROM organization WHERE slug = %s"


def organization_id(conn: Connection, slug: str) -> int | None:
    row = conn.execute(SELECT_ORGANIZATION_ID, (slug,)).fetchone()
    return None if row is None else int(row["id"])


SELECT_TEAMS_OF_ORGANIZATION = """
SELECT id FROM team WHERE organization_id = %s AND id = ANY(%s)
"""


def teams_of_organization(conn: Connection, organization_id: int, team_ids: list[int]) -> set[int]:
    """Which of these teams exist and belong to the organization."""
    rows = conn.execute(SELECT_TEAMS_OF_ORGANIZATION, (organization_id, team_ids))
    return {int(r["id"]) for r in rows}


INSERT_REQUEST = """
INSERT INTO project_request (kind, organization_id, project_id, name, requested_slug, team_ids)
VALUES (%s, %s, %s, %s, %s, %s)
RETURNING id
"""


def insert_request(
    conn: Connection,
    kind: str,
    organization_id: int | None,
    project_id: int | None = None,
    name: str | None = None,
    requested_slug: str | None = None,
    team_ids: list[int] | None = None,
) -> int:
    row = conn.execute(
        INSERT_REQUEST,
        (kind, organization_id, project_id, name, requested_slug, team_ids or []),
    ).fetchone()
    assert row is not None
    return int(row["id"])


SELECT_REQUEST = "SELECT * FROM project_request WHERE id = %s"


def get_request(
    conn: Connection, request_id: int, for_update: bool = False
) -> ProjectRequest | None:
    sql = SELECT_REQUEST + (" FOR UPDATE" if for_update else "")
    row = conn.execute(sql, (request_id,)).fetchone()
    return None if row is None else ProjectRequest(**row)


SELECT_SLUG_TAKEN = """
SELECT EXISTS (
    SELECT 1 FROM project
    WHERE organization_id = %(org)s AND lower(slug) = lower(%(slug)s)
      AND id IS DISTINCT FROM %(project_id)s
) OR EXISTS (
    SELECT 1 FROM project_request
    WHERE organization_id = %(org)s AND status = 'pending' AND slug IS NOT NULL
      AND lower(slug) = lower(%(slug)s) AND id <> %(request_id)s
) AS taken
"""


def slug_taken(
    conn: Connection, organization_id: int, slug: str, request_id: int, project_id: int | None
) -> bool:
    """Whether a project (other than project_id) or another pending save holds the slug,
    compared case-insensitively."""
    row = conn.execute(
        SELECT_SLUG_TAKEN,
        {"org": organization_id, "slug": slug, "request_id": request_id, "project_id": project_id},
    ).fetchone()
    assert row is not None
    return bool(row["taken"])


RESERVE_SLUG = "UPDATE project_request SET slug = %s WHERE id = %s"


def reserve_slug(conn: Connection, request_id: int, slug: str) -> None:
    conn.execute(RESERVE_SLUG, (slug, request_id))


SET_REQUEST_PROJECT = "UPDATE project_request SET project_id = %s WHERE id = %s"


def set_request_project(conn: Connection, request_id: int, project_id: int) -> None:
    conn.execute(SET_REQUEST_PROJECT, (project_id, request_id))


SET_PURGE_GROUPS = "UPDATE project_request SET purge_group_ids = %s WHERE id = %s"


def set_purge_groups(conn: Connection, request_id: int, group_ids: list[int]) -> None:
    conn.execute(SET_PURGE_GROUPS, (group_ids, request_id))


FINISH_REQUEST = """
UPDATE project_request SET status = 'done', outcome = %s, finished_at = now()
WHERE id = %s AND status = 'pending'
"""


def finish_request(conn: Connection, request_id: int, outcome: str) -> None:
    conn.execute(FINISH_REQUEST, (outcome, request_id))


FAIL_REQUEST = """
UPDATE project_request SET status = 'failed', error = %s, finished_at = now()
WHERE id = %s AND status <> 'done'
"""


def fail_request(conn: Connection, request_id: int, error: str) -> None:
    """Mark a request failed; its reserved slug is free again."""
    conn.execute(FAIL_REQUEST, (error, request_id))


REOPEN_REQUEST = """
UPDATE project_request SET status = 'pending', error = NULL, finished_at = NULL
WHERE id = %s AND status = 'failed'
"""


def reopen_request(conn: Connection, request_id: int) -> None:
    """A failed request's step is run again (a replay): the request is pending once more."""
    conn.execute(REOPEN_REQUEST, (request_id,))


SELECT_PROJECT = "SELECT * FROM project WHERE id = %s"


def get_project(conn: Connection, project_id: int, for_update: bool = False) -> Project | None:
    sql = SELECT_PROJECT + (" FOR UPDATE" if for_update else "")
    row = conn.execute(sql, (project_id,)).fetchone()
    return None if row is None else Project(**row)


LIST_PROJECTS = "SELECT * FROM project WHERE organization_id = %s ORDER BY lower(slug)"


def list_projects(conn: Connection, organization_id: int) -> list[Project]:
    return [Project(**r) for r in conn.execute(LIST_PROJECTS, (organization_id,))]


INSERT_PROJECT = """
INSERT INTO project (id, organization_id, name, slug) VALUES (%s, %s, %s, %s)
"""
LINK_TEAMS = """
INSERT INTO project_team (project_id, team_id) SELECT %s, unnest(%s::bigint[])
ON CONFLICT DO NOTHING
"""


def insert_project(
    conn: Connection,
    project_id: int,
    organization_id: int,
    name: str,
    slug: str,
    team_ids: list[int],
) -> None:
    conn.execute(INSERT_PROJECT, (project_id, organization_id, name, slug))
    if team_ids:
        conn.execute(LINK_TEAMS, (project_id, team_ids))


RENAME_PROJECT = "UPDATE project SET name = %s, slug = %s WHERE id = %s"


def rename_project(conn: Connection, project_id: int, name: str, slug: str) -> None:
    conn.execute(RENAME_PROJECT, (name, slug, project_id))


DELETE_NOTIFICATION_SETTINGS = """
DELETE FROM notification_setting WHERE scope_type = 'project' AND scope_identifier = %s
"""


def delete_notification_settings(conn: Connection, project_id: int) -> int:
    return conn.execute(DELETE_NOTIFICATION_SETTINGS, (project_id,)).rowcount


SELECT_RECENT_GROUPS = """
SELECT id FROM issue_group
WHERE project_id = %s AND last_seen > now() - make_interval(secs => %s) AND id > %s
ORDER BY id LIMIT %s
"""


def recent_group_ids(
    conn: Connection, project_id: int, window_s: int, after_id: int, limit: int
) -> list[int]:
    """One page (ids above after_id) of the project's groups seen within the window."""
    rows = conn.execute(SELECT_RECENT_GROUPS, (project_id, window_s, after_id, limit))
    return [int(r["id"]) for r in rows]


INSERT_OUTBOX = """
INSERT INTO outbox (shard_scope, shard_identifier, category, object_identifier)
VALUES ('organization', %s, 'PROJECT_UPDATE', %s)
"""


def insert_project_update(conn: Connection, organization_id: int, project_id: int) -> None:
    conn.execute(INSERT_OUTBOX, (organization_id, project_id))


# Every dependent row (teams links, groups, group links, assignees, subscriptions, activity,
# history, delivery effects) goes with it through ON DELETE CASCADE.
DELETE_PROJECT = "DELETE FROM project WHERE id = %s"


def delete_project(conn: Connection, project_id: int) -> None:
    conn.execute(DELETE_PROJECT, (project_id,))


SELECT_GROUPS_OF_PROJECT = "SELECT id FROM issue_group WHERE project_id = %s AND id = ANY(%s)"


def group_ids_of_project(conn: Connection, project_id: int, group_ids: list[int]) -> set[int]:
    """Which of these groups belong to the project."""
    return {int(r["id"]) for r in conn.execute(SELECT_GROUPS_OF_PROJECT, (project_id, group_ids))}
