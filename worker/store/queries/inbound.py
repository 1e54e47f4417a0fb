"""SQL for the inbound pipeline: issues and groups to sync, assignees, subscriptions, activity,
history. The per-group effects of a delivery and what follows a change (outbound calls, side
effects done or stalled) are `effects`."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from worker.domain.assignment import Assignee
from worker.domain.model import ActivityType, HistoryStatus, SubscriptionReason
from worker.store.db import Connection
from worker.store.queries.effects import Effect

REASON_ASSIGNED = int(SubscriptionReason.ASSIGNED)


@dataclass(frozen=True)
class ExternalIssue:
    """An external issue row of the integration a delivery came from, locked for ordering."""

    id: int
    organization_id: int
    last_event_ts: int | None
    last_changelog_id: int | None

    @property
    def last_event(self) -> tuple[int, int] | None:
        """The newest event seen for this issue (ordering itself is kept per group)."""
        if self.last_event_ts is None:
            return None
        return (self.last_event_ts, self.last_changelog_id or 0)


@dataclass(frozen=True)
class GroupRef:
    id: int
    project_id: int


# FOR NO KEY UPDATE serializes writers of a row without blocking inserts that only reference
# it through a foreign key (activity, group_link, outbound_call take FOR KEY SHARE).
LOCK_DELIVERY = "SELECT id FROM webhook_delivery WHERE id = %s FOR NO KEY UPDATE"


def lock_delivery(conn: Connection, delivery_id: int) -> bool:
    """Serialize the steps of one delivery that decide whether it is finished."""
    return conn.execute(LOCK_DELIVERY, (delivery_id,)).fetchone() is not None


LOCK_DELIVERIES = """
SELECT id, status, issue_key, integration_id, {body} AS body
FROM webhook_delivery WHERE id = ANY(%s) ORDER BY id
FOR NO KEY UPDATE
"""
SELECT_DELIVERIES_EFFECTS = """
SELECT delivery_id, group_id, action, user_id, outcome FROM delivery_effect
WHERE delivery_id = ANY(%s) ORDER BY delivery_id, group_id
"""


@dataclass(frozen=True)
class LockedDelivery:
    """A delivery locked to plan it or decide whether it is finished, with every effect
    planned for it (its body only when asked for)."""

    id: int
    status: str
    issue_key: str | None
    integration_id: int
    body: str | None
    effects: list[Effect]


def lock_deliveries_with_effects(
    conn: Connection, delivery_ids: list[int], *, bodies: bool = False
) -> list[LockedDelivery]:
    """Lock the deliveries that exist in id order and read their effects after the locks (two
    statements sent together)."""
    lock = sql.SQL(LOCK_DELIVERIES).format(body=sql.SQL("body" if bodies else "NULL::text"))
    locked_cur = conn.execute(lock, (delivery_ids,))
    effects_cur = conn.execute(SELECT_DELIVERIES_EFFECTS, (delivery_ids,))
    locked, rows = locked_cur.fetchall(), effects_cur.fetchall()
    planned: dict[int, list[Effect]] = defaultdict(list)
    for row in rows:
        planned[int(row["delivery_id"])].append(Effect(**row))
    return [LockedDelivery(**r, effects=planned[int(r["id"])]) for r in locked]


LOCK_SYNCED_ISSUES_OF_KEYS = """
SELECT ei.id, ei.organization_id, ei.last_event_ts, ei.last_changelog_id,
       ei.integration_id, ei.key
FROM external_issue ei
JOIN organization_integration oi
  ON oi.organization_id = ei.organization_id AND oi.integration_id = ei.integration_id
JOIN organization o ON o.id = ei.organization_id
WHERE (ei.integration_id, ei.key) IN (SELECT * FROM unnest(%s::bigint[], %s::text[]))
  AND oi.status = 'active'
  AND coalesce((oi.config ->> 'sync_reverse_assignment')::boolean, false)
  AND o.issue_sync_enabled
ORDER BY ei.id
FOR NO KEY UPDATE OF ei
"""


def lock_synced_issues_of_keys(
    conn: Connection, keys: list[tuple[int, str]]
) -> dict[tuple[int, str], list[ExternalIssue]]:
    """The rows of these (integration, issue key) pairs in organizations with inbound sync on
    (SPEC 4.2), by pair: one statement, every row locked in id order (two batches never
    deadlock)."""
    rows = conn.execute(
        LOCK_SYNCED_ISSUES_OF_KEYS, ([i for i, _ in keys], [k for _, k in keys])
    ).fetchall()
    found: dict[tuple[int, str], list[ExternalIssue]] = defaultdict(list)
    for r in rows:
        found[(int(r.pop("integration_id")), str(r.pop("key")))].append(ExternalIssue(**r))
    return found


MARK_ISSUE_EVENT = """
UPDATE external_issue SET last_event_ts = %s, last_changelog_id = %s, jira_assignee = %s
WHERE id = ANY(%s)
"""


def mark_issue_event(
    conn: Connection, issue_ids: list[int], order: tuple[int, int], jira_assignee: str | None
) -> None:
    """The newest event seen of the issues (for operators), and their Jira assignee as that
    event left it (what the reconciliation sweep compares Jira's with): one statement."""
    conn.execute(MARK_ISSUE_EVENT, (order[0], order[1], jira_assignee, issue_ids))


SELECT_LINKED_GROUPS = """
SELECT gl.external_issue_id, g.id, g.project_id, p.organization_id
FROM group_link gl
JOIN issue_group g ON g.id = gl.group_id
JOIN project p ON p.id = g.project_id
WHERE gl.external_issue_id = ANY(%s)
"""


@dataclass(frozen=True)
class LinkedGroup:
    external_issue_id: int
    group: GroupRef
    organization_id: int


def linked_groups(conn: Connection, issue_ids: list[int]) -> list[LinkedGroup]:
    """Every group linked to these external issues, with its project's organization (what
    `in_organizations` filters on), for many issues in one statement."""
    return [
        LinkedGroup(int(r["external_issue_id"]), GroupRef(r["id"], r["project_id"]),
                    int(r["organization_id"]))
        for r in conn.execute(SELECT_LINKED_GROUPS, (issue_ids,))
    ]  # fmt: skip


def in_organizations(
    linked: list[LinkedGroup], issue_ids: Collection[int], organization_ids: Collection[int]
) -> list[GroupRef]:
    """The groups an issue's rows affect: linked to one of the rows, in a project of one of
    the rows' organizations; in id order."""
    found = {
        lg.group.id: lg.group
        for lg in linked
        if lg.external_issue_id in issue_ids and lg.organization_id in organization_ids
    }
    return [found[g] for g in sorted(found)]


def affected_groups(
    conn: Connection, issue_ids: list[int], organization_ids: list[int]
) -> list[GroupRef]:
    """The groups one issue's rows affect (see in_organizations)."""
    return in_organizations(linked_groups(conn, issue_ids), set(issue_ids), set(organization_ids))


SELECT_USER_TEAMS_BY_EMAILS = """
SELECT DISTINCT lower(e.email) AS email, u.id AS user_id, tm.team_id
FROM app_user u
JOIN user_email e ON e.user_id = u.id
LEFT JOIN team_member tm ON tm.user_id = u.id AND tm.is_active
WHERE u.is_active AND e.is_verified AND lower(e.email) = ANY(%s)
"""


def user_teams_by_emails(conn: Connection, emails: list[str]) -> dict[str, dict[int, set[int]]]:
    """Per email (lower-cased), the active users with it verified, each with the teams they are
    active members of: one statement for many emails."""
    found: dict[str, dict[int, set[int]]] = defaultdict(dict)
    for row in conn.execute(SELECT_USER_TEAMS_BY_EMAILS, (sorted({e.lower() for e in emails}),)):
        member_of = found[str(row["email"])].setdefault(int(row["user_id"]), set())
        if row["team_id"] is not None:
            member_of.add(int(row["team_id"]))
    return found


SELECT_PROJECT_TEAMS = "SELECT project_id, team_id FROM project_team WHERE project_id = ANY(%s)"


def project_teams(conn: Connection, project_ids: list[int]) -> dict[int, set[int]]:
    teams: dict[int, set[int]] = defaultdict(set)
    for row in conn.execute(SELECT_PROJECT_TEAMS, (project_ids,)):
        teams[int(row["project_id"])].add(int(row["team_id"]))
    return teams


LOCK_GROUP = "SELECT id, project_id FROM issue_group WHERE id = %s FOR NO KEY UPDATE"


def lock_group(conn: Connection, group_id: int) -> GroupRef | None:
    """Every change to a group's assignee holds this lock, so they apply one at a time."""
    row = conn.execute(LOCK_GROUP, (group_id,)).fetchone()
    return None if row is None else GroupRef(**row)


LOCK_GROUPS = """
SELECT id, project_id FROM issue_group WHERE id = ANY(%s) ORDER BY id FOR NO KEY UPDATE
"""


def lock_groups(conn: Connection, group_ids: list[int]) -> dict[int, GroupRef]:
    """Lock a batch's group rows in id order (two batches never deadlock); the ones that
    exist, by id."""
    return {int(r["id"]): GroupRef(**r) for r in conn.execute(LOCK_GROUPS, (group_ids,))}


@dataclass
class GroupStates:
    """What applying a batch of changes to locked groups reads first: each change's effect,
    each group's newest applied event and assignee, and the members of the assignees' teams.
    A batch applying its changes in order keeps `events` and `assignees` up to date."""

    effects: dict[tuple[int, int], Effect]
    events: dict[int, tuple[int, int]]
    assignees: dict[int, Assignee]
    team_members: dict[int, set[int]]


SELECT_PAIR_EFFECTS = """
SELECT e.delivery_id, e.group_id, e.action, e.user_id, e.outcome
FROM delivery_effect e
JOIN unnest(%s::bigint[], %s::bigint[]) AS v(delivery_id, group_id) USING (delivery_id, group_id)
"""
SELECT_GROUP_EVENTS = """
SELECT group_id, event_ts, changelog_id FROM {table} WHERE group_id = ANY(%s)
"""
SELECT_ASSIGNEES = "SELECT group_id, user_id, team_id FROM group_assignee WHERE group_id = ANY(%s)"
SELECT_ASSIGNEE_TEAM_MEMBERS = """
SELECT team_id, user_id FROM team_member
WHERE team_id IN (SELECT team_id FROM group_assignee WHERE group_id = ANY(%s))
"""


def group_states(conn: Connection, pairs: list[tuple[int, int]]) -> GroupStates:
    """The state of the (delivery, group) pairs' groups, read after their locks: four
    statements sent together (one round trip in pipeline mode), each seeing what the lock
    holders before it committed."""
    group_ids = sorted({g for _, g in pairs})
    cursors = (
        conn.execute(SELECT_PAIR_EFFECTS, ([d for d, _ in pairs], [g for _, g in pairs])),
        conn.execute(_event_sql(SELECT_GROUP_EVENTS, "assignee"), (group_ids,)),
        conn.execute(SELECT_ASSIGNEES, (group_ids,)),
        conn.execute(SELECT_ASSIGNEE_TEAM_MEMBERS, (group_ids,)),
    )
    effects_rows, event_rows, assignee_rows, member_rows = (c.fetchall() for c in cursors)
    members: dict[int, set[int]] = defaultdict(set)
    for row in member_rows:
        members[int(row["team_id"])].add(int(row["user_id"]))
    return GroupStates(
        effects={(int(r["delivery_id"]), int(r["group_id"])): Effect(**r) for r in effects_rows},
        events={
            int(r["group_id"]): (int(r["event_ts"]), int(r["changelog_id"])) for r in event_rows
        },
        assignees={
            int(r["group_id"]): Assignee(user_id=r["user_id"], team_id=r["team_id"])
            for r in assignee_rows
        },
        team_members=members,
    )


# The newest event applied to a group, one table per field it orders: an assignee event and
# a status event never make each other stale.
EVENT_TABLES = {"assignee": "group_applied_event", "status": "group_status_event"}
SELECT_GROUP_EVENT = "SELECT event_ts, changelog_id FROM {table} WHERE group_id = %s"
UPSERT_GROUP_EVENT = """
INSERT INTO {table} (group_id, event_ts, changelog_id, delivery_id)
VALUES (%s, %s, %s, %s)
ON CONFLICT (group_id) DO UPDATE SET
    event_ts = EXCLUDED.event_ts, changelog_id = EXCLUDED.changelog_id,
    delivery_id = EXCLUDED.delivery_id, applied_at = now()
"""


def _event_sql(template: str, field: str) -> sql.Composed:
    return sql.SQL(template).format(table=sql.Identifier(EVENT_TABLES[field]))


def group_event(conn: Connection, group_id: int, field: str = "assignee") -> tuple[int, int] | None:
    """The order (Jira timestamp, changelog id) of the newest `field` event applied."""
    row = conn.execute(_event_sql(SELECT_GROUP_EVENT, field), (group_id,)).fetchone()
    return None if row is None else (int(row["event_ts"]), int(row["changelog_id"]))


def set_group_event(
    conn: Connection,
    group_id: int,
    order: tuple[int, int],
    delivery_id: int | None,
    field: str = "assignee",
) -> None:
    conn.execute(_event_sql(UPSERT_GROUP_EVENT, field), (group_id, *order, delivery_id))


SELECT_ASSIGNEE = "SELECT user_id, team_id FROM group_assignee WHERE group_id = %s"


def assignee(conn: Connection, group_id: int) -> Assignee | None:
    row = conn.execute(SELECT_ASSIGNEE, (group_id,)).fetchone()
    return None if row is None else Assignee(user_id=row["user_id"], team_id=row["team_id"])


# The activity and the history row of one change, in one statement (a data-modifying WITH
# runs whether or not the main statement reads it); one of a type per delivery and group.
INSERT_ACTIVITY_AND_HISTORY = """
WITH activity_row AS (
    INSERT INTO activity (group_id, project_id, type, user_id, data, delivery_id)
    VALUES (%(group_id)s, %(project_id)s, %(type)s, NULL, %(data)s, %(delivery_id)s)
    ON CONFLICT (delivery_id, group_id, type) WHERE delivery_id IS NOT NULL DO NOTHING
)
INSERT INTO group_history (group_id, project_id, status, actor_id, delivery_id)
VALUES (%(group_id)s, %(project_id)s, %(status)s, NULL, %(delivery_id)s)
ON CONFLICT (delivery_id, group_id, status) WHERE delivery_id IS NOT NULL DO NOTHING
"""


def insert_activity_and_history(
    conn: Connection,
    group: GroupRef,
    type_: ActivityType,
    data: dict[str, Any],
    status: HistoryStatus,
    delivery_id: int | None,
) -> None:
    """A change's activity (by the system: no acting user) and history row (None: a change
    made here, not by a delivery)."""
    conn.execute(
        INSERT_ACTIVITY_AND_HISTORY,
        {
            "group_id": group.id,
            "project_id": group.project_id,
            "type": int(type_),
            "data": Jsonb(data),
            "status": int(status),
            "delivery_id": delivery_id,
        },
    )


# -- a batch's writes, set-wise ---------------------------------------------------------------

# Binary parameters (%b): arrays of numbers dump faster than their text form.
UPSERT_GROUP_EVENTS = """
INSERT INTO {table} (group_id, event_ts, changelog_id, delivery_id)
SELECT * FROM unnest(%b::bigint[], %b::bigint[], %b::bigint[], %b::bigint[])
ON CONFLICT (group_id) DO UPDATE SET
    event_ts = EXCLUDED.event_ts, changelog_id = EXCLUDED.changelog_id,
    delivery_id = EXCLUDED.delivery_id, applied_at = now()
"""
UPSERT_USER_ASSIGNEES = """
INSERT INTO group_assignee (group_id, project_id, user_id, team_id)
SELECT g, p, u, NULL FROM unnest(%b::bigint[], %b::bigint[], %b::bigint[]) AS v(g, p, u)
ON CONFLICT (group_id) DO UPDATE SET
    user_id = EXCLUDED.user_id, team_id = NULL, created_at = now()
"""
DELETE_ASSIGNEES = "DELETE FROM group_assignee WHERE group_id = ANY(%b)"
SUBSCRIBE_USERS = """
INSERT INTO group_subscription (group_id, project_id, user_id, reason)
SELECT g, p, u, %s FROM unnest(%b::bigint[], %b::bigint[], %b::bigint[]) AS v(g, p, u)
ON CONFLICT (group_id, user_id) DO NOTHING
"""
UNSUBSCRIBE_ASSIGNED = """
DELETE FROM group_subscription s
USING unnest(%b::bigint[], %b::bigint[], %b::bigint[]) AS v(g, u, t)
WHERE s.group_id = v.g AND s.reason = %s AND (s.user_id = v.u OR s.team_id = v.t)
"""
INSERT_ACTIVITIES_AND_HISTORIES = """
WITH v AS (
    SELECT * FROM unnest(%b::bigint[], %b::bigint[], %b::smallint[], %b::jsonb[], %b::smallint[],
                         %b::bigint[]) WITH ORDINALITY AS v(g, p, type, data, status, d, n)
), activity_rows AS (
    INSERT INTO activity (group_id, project_id, type, user_id, data, delivery_id)
    SELECT g, p, type, NULL, data, d FROM v ORDER BY n
    ON CONFLICT (delivery_id, group_id, type) WHERE delivery_id IS NOT NULL DO NOTHING
)
INSERT INTO group_history (group_id, project_id, status, actor_id, delivery_id)
SELECT g, p, status, NULL, d FROM v ORDER BY n
ON CONFLICT (delivery_id, group_id, status) WHERE delivery_id IS NOT NULL DO NOTHING
"""


@dataclass
class GroupWrites:
    """What a batch of changes does to its locked groups, kept in memory and written in a few
    statements (`flush`), one per table, instead of several per change.

    Only the final state matters where a later write replaces an earlier one: a group's
    newest event and its assignee, and per (group, user or team) the last of "subscribe as
    assigned" and "drop the assigned subscription" (each sequence of the two ends as its last
    one would leave it: a subscribe never replaces another reason's row, a drop only removes
    `assigned` rows). Activity and history rows are all kept, in the order written."""

    events: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    assignees: dict[int, tuple[int, int | None]] = field(default_factory=dict)
    subscriptions: dict[tuple[int, int | None, int | None], tuple[int, bool]] = field(
        default_factory=dict
    )
    activities: list[tuple[int, int, int, Jsonb, int, int]] = field(default_factory=list)

    def set_event(self, group_id: int, order: tuple[int, int], delivery_id: int) -> None:
        self.events[group_id] = (*order, delivery_id)

    def subscribe_user(self, group: GroupRef, user_id: int) -> None:
        self.subscriptions[(group.id, user_id, None)] = (group.project_id, True)

    def set_user_assignee(self, group: GroupRef, user_id: int) -> None:
        self.assignees[group.id] = (group.project_id, user_id)

    def delete_assignee(self, group: GroupRef) -> None:
        self.assignees[group.id] = (group.project_id, None)

    def add_activity_and_history(
        self,
        group: GroupRef,
        type_: ActivityType,
        data: dict[str, Any],
        status: HistoryStatus,
        delivery_id: int,
    ) -> None:
        self.activities.append(
            (group.id, group.project_id, int(type_), Jsonb(data), int(status), delivery_id)
        )

    def delete_assigned_subscriptions(
        self, group: GroupRef, user_ids: Collection[int], team_ids: Collection[int]
    ) -> None:
        for user_id in user_ids:
            self.subscriptions[(group.id, user_id, None)] = (group.project_id, False)
        for team_id in team_ids:
            self.subscriptions[(group.id, None, team_id)] = (group.project_id, False)

    def flush(self, conn: Connection) -> None:
        """Queue the statements on `conn` (sent together in pipeline mode) and start over."""
        if self.events:
            groups, rows = list(self.events), list(self.events.values())
            conn.execute(
                _event_sql(UPSERT_GROUP_EVENTS, "assignee"),
                (groups, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]),
            )
        users = [(g, p, u) for g, (p, u) in self.assignees.items() if u is not None]
        if users:
            conn.execute(UPSERT_USER_ASSIGNEES, tuple(map(list, zip(*users, strict=True))))
        gone = [g for g, (_, u) in self.assignees.items() if u is None]
        if gone:
            conn.execute(DELETE_ASSIGNEES, (gone,))
        subscribe = [(g, p, u) for (g, u, _), (p, on) in self.subscriptions.items() if on]
        if subscribe:
            conn.execute(
                SUBSCRIBE_USERS, (REASON_ASSIGNED, *map(list, zip(*subscribe, strict=True)))
            )
        drop = [(g, u, t) for (g, u, t), (_, on) in self.subscriptions.items() if not on]
        if drop:
            conn.execute(
                UNSUBSCRIBE_ASSIGNED, (*map(list, zip(*drop, strict=True)), REASON_ASSIGNED)
            )
        if self.activities:
            conn.execute(
                INSERT_ACTIVITIES_AND_HISTORIES,
                tuple(map(list, zip(*self.activities, strict=True))),
            )
        self.events, self.assignees, self.subscriptions, self.activities = {}, {}, {}, []
