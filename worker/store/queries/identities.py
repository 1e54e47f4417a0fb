"""SQL of Jira identities (SPEC 14): the map (integration, Jira user) -> user, and the
identities seen that matched nobody."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from worker.domain.reconcile import IDENTITY_MARK
from worker.store.db import Connection

Identity = tuple[int, str]  # (integration id, Jira user: account id, user key or username)


@dataclass(frozen=True)
class Mapping:
    integration_id: int
    jira_user: str
    user_id: int
    user_name: str
    jira_name: str | None
    source: str
    mapped_at: datetime


@dataclass(frozen=True)
class Unmapped:
    integration_id: int
    jira_user: str
    display_name: str | None
    deliveries: int
    first_seen: datetime
    last_seen: datetime


SELECT_MAPPED = """
SELECT m.integration_id, m.jira_user, m.user_id
FROM jira_user_map m
JOIN unnest(%s::bigint[], %s::text[]) AS wanted(integration_id, jira_user)
  ON m.integration_id = wanted.integration_id AND m.jira_user = wanted.jira_user
"""


def mapped_users(conn: Connection, identities: list[Identity]) -> dict[Identity, int]:
    """The user each identity is mapped to (those mapped), in one statement."""
    if not identities:
        return {}
    ids, users = [i for i, _ in identities], [u for _, u in identities]
    rows = conn.execute(SELECT_MAPPED, (ids, users)).fetchall()
    return {(int(r["integration_id"]), str(r["jira_user"])): int(r["user_id"]) for r in rows}


SELECT_USER_TEAMS_BY_IDS = """
SELECT u.id AS user_id, tm.team_id
FROM app_user u
LEFT JOIN team_member tm ON tm.user_id = u.id AND tm.is_active
WHERE u.is_active AND u.id = ANY(%s)
"""


def user_teams_by_ids(conn: Connection, user_ids: list[int]) -> dict[int, set[int]]:
    """The active users among these, each with the teams they are active members of."""
    found: dict[int, set[int]] = defaultdict(set)
    for row in conn.execute(SELECT_USER_TEAMS_BY_IDS, (sorted(set(user_ids)),)):
        member_of = found[int(row["user_id"])]
        if row["team_id"] is not None:
            member_of.add(int(row["team_id"]))
    return dict(found)


# What an e-mail match fills in: never over a mapping an operator (or an earlier match) made.
INSERT_MAPPINGS = """
INSERT INTO jira_user_map (integration_id, jira_user, user_id, jira_name, source)
SELECT * FROM unnest(%s::bigint[], %s::text[], %s::bigint[], %s::text[], %s::text[])
ON CONFLICT (integration_id, jira_user) DO NOTHING
"""

# An operator's or an import's mapping replaces whatever was there.
UPSERT_MAPPINGS = """
INSERT INTO jira_user_map (integration_id, jira_user, user_id, jira_name, source)
SELECT * FROM unnest(%s::bigint[], %s::text[], %s::bigint[], %s::text[], %s::text[])
ON CONFLICT (integration_id, jira_user) DO UPDATE
SET user_id = EXCLUDED.user_id,
    jira_name = coalesce(EXCLUDED.jira_name, jira_user_map.jira_name),
    source = EXCLUDED.source,
    mapped_at = now()
"""


def add_mappings(
    conn: Connection,
    rows: list[tuple[Identity, int, str | None]],
    source: str,
    replace: bool,
) -> None:
    """Store ((integration, jira user), user id, jira username) rows in one statement, in key
    order (two writers never wait on each other in a circle); replace=False keeps existing."""
    rows = sorted(rows, key=lambda r: r[0])
    if not rows:
        return
    columns = (
        [i for (i, _), _, _ in rows],
        [u for (_, u), _, _ in rows],
        [user for _, user, _ in rows],
        [name for _, _, name in rows],
        [source] * len(rows),
    )
    conn.execute(UPSERT_MAPPINGS if replace else INSERT_MAPPINGS, columns)


DELETE_MAPPING = "DELETE FROM jira_user_map WHERE integration_id = %s AND jira_user = %s"


def delete_mapping(conn: Connection, identity: Identity) -> bool:
    return conn.execute(DELETE_MAPPING, identity).rowcount > 0


SELECT_MAPPINGS = """
SELECT m.integration_id, m.jira_user, m.user_id, u.name AS user_name, m.jira_name, m.source,
       m.mapped_at
FROM jira_user_map m JOIN app_user u ON u.id = m.user_id
WHERE %(integration)s::bigint IS NULL OR m.integration_id = %(integration)s
ORDER BY m.integration_id, m.jira_user
"""


def mappings(conn: Connection, integration_id: int | None) -> list[Mapping]:
    rows = conn.execute(SELECT_MAPPINGS, {"integration": integration_id}).fetchall()
    return [Mapping(**r) for r in rows]


SELECT_JIRA_USER = """
SELECT jira_user, jira_name FROM jira_user_map
WHERE user_id = %s AND integration_id = %s
ORDER BY source = 'email', mapped_at DESC
LIMIT 1
"""


def jira_user_of(
    conn: Connection, user_id: int, integration_id: int
) -> tuple[str, str | None] | None:
    """The Jira identity (and username, if known) a user is mapped to on an integration; an
    operator's or an import's mapping before one filled in by an e-mail match."""
    row = conn.execute(SELECT_JIRA_USER, (user_id, integration_id)).fetchone()
    return (str(row["jira_user"]), row["jira_name"]) if row else None


# One row per identity; a delivery is counted once however many of its groups it touched.
UPSERT_UNMAPPED = """
INSERT INTO jira_user_unmapped (integration_id, jira_user, display_name, email, deliveries)
SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::bigint[])
ON CONFLICT (integration_id, jira_user) DO UPDATE
SET display_name = coalesce(EXCLUDED.display_name, jira_user_unmapped.display_name),
    email = coalesce(EXCLUDED.email, jira_user_unmapped.email),
    deliveries = jira_user_unmapped.deliveries + EXCLUDED.deliveries,
    last_seen = now()
"""


@dataclass(frozen=True)
class Seen:
    """An unmatched identity as a batch saw it: display name, e-mail, deliveries."""

    display_name: str | None
    email: str | None
    deliveries: int


def record_unmapped(conn: Connection, seen: dict[Identity, Seen]) -> None:
    """Count deliveries whose assignee's identity matched nobody, in key order."""
    if not seen:
        return
    keys = sorted(seen)
    conn.execute(
        UPSERT_UNMAPPED,
        (
            [i for i, _ in keys],
            [u for _, u in keys],
            [seen[k].display_name for k in keys],
            [(seen[k].email or "").lower() or None for k in keys],
            [seen[k].deliveries for k in keys],
        ),
    )


# The marks an unmatched identity left on its issues: `jira-user:<identity>`, or its e-mail.
FORGET_JIRA_ASSIGNEES = """
UPDATE external_issue e SET jira_assignee = NULL
WHERE e.integration_id = %(integration)s
  AND e.jira_assignee IN (
      SELECT %(prefix)s || n.jira_user FROM jira_user_unmapped n
      WHERE n.integration_id = %(integration)s AND n.jira_user = ANY(%(users)s)
      UNION
      SELECT n.email FROM jira_user_unmapped n
      WHERE n.integration_id = %(integration)s AND n.jira_user = ANY(%(users)s)
        AND n.email IS NOT NULL)
"""


def forget_jira_assignees(conn: Connection, integration_id: int, jira_users: list[str]) -> int:
    """Forget the Jira assignee remembered for the issues these (so far unmatched) identities
    were assigned: the next sweep covering them feeds them again. Issues changed."""
    params = {"integration": integration_id, "prefix": IDENTITY_MARK, "users": jira_users}
    return conn.execute(FORGET_JIRA_ASSIGNEES, params).rowcount


SELECT_UNMAPPED = """
SELECT n.integration_id, n.jira_user, n.display_name, n.deliveries, n.first_seen, n.last_seen
FROM jira_user_unmapped n
WHERE (%(integration)s::bigint IS NULL OR n.integration_id = %(integration)s)
  AND NOT EXISTS (SELECT 1 FROM jira_user_map m
                  WHERE m.integration_id = n.integration_id AND m.jira_user = n.jira_user)
ORDER BY n.last_seen DESC, n.integration_id, n.jira_user
"""


def unmapped(conn: Connection, integration_id: int | None) -> list[Unmapped]:
    """Identities seen without a match and still unmapped, the latest seen first."""
    rows = conn.execute(SELECT_UNMAPPED, {"integration": integration_id}).fetchall()
    return [Unmapped(**r) for r in rows]


COUNT_UNMAPPED = """
SELECT n.integration_id, count(*) AS n FROM jira_user_unmapped n
WHERE NOT EXISTS (SELECT 1 FROM jira_user_map m
                  WHERE m.integration_id = n.integration_id AND m.jira_user = n.jira_user)
GROUP BY n.integration_id
"""


def unmapped_counts(conn: Connection) -> dict[int, int]:
    """Per integration, how many identities seen are still unmapped."""
    return {int(r["integration_id"]): int(r["n"]) for r in conn.execute(COUNT_UNMAPPED)}


SELECT_USERS_BY_IDS = "SELECT id FROM app_user WHERE id = ANY(%s)"


def existing_users(conn: Connection, user_ids: list[int]) -> set[int]:
    return {int(r["id"]) for r in conn.execute(SELECT_USERS_BY_IDS, (sorted(set(user_ids)),))}


SELECT_USERS_BY_EMAILS = """
SELECT lower(e.email) AS email, min(u.id) AS user_id, count(DISTINCT u.id) AS users
FROM user_email e JOIN app_user u ON u.id = e.user_id
WHERE e.is_verified AND lower(e.email) = ANY(%s)
GROUP BY lower(e.email)
"""


def users_by_emails(conn: Connection, emails: list[str]) -> dict[str, tuple[int, int]]:
    """Per lower-cased verified e-mail: (lowest user id with it, how many users have it)."""
    rows = conn.execute(SELECT_USERS_BY_EMAILS, (sorted({e.lower() for e in emails}),))
    return {str(r["email"]): (int(r["user_id"]), int(r["users"])) for r in rows}


SELECT_VERIFIED_EMAILS = """
SELECT e.user_id, e.email FROM user_email e JOIN app_user u ON u.id = e.user_id
WHERE e.is_verified AND u.is_active AND e.user_id = ANY(%s) ORDER BY e.user_id, e.id
"""


def verified_emails(conn: Connection, user_ids: list[int]) -> dict[int, list[str]]:
    """Each active user's verified e-mails, in one statement."""
    found: dict[int, list[str]] = defaultdict(list)
    for row in conn.execute(SELECT_VERIFIED_EMAILS, (sorted(set(user_ids)),)):
        found[int(row["user_id"])].append(str(row["email"]))
    return dict(found)
