"""SQL of a change's effects: what the inbound sync decided per group and what became of it,
when its side effects are done or stalled, the other linked issues an outbound sync pushes
to, and the outbound calls made (with Jira's answers)."""

from __future__ import annotations

from dataclasses import dataclass

from worker.store.db import Connection


@dataclass(frozen=True)
class Effect:
    """What the inbound sync decided for one group of a delivery, and what became of it."""

    delivery_id: int
    group_id: int
    action: str | None
    user_id: int | None
    outcome: str


INSERT_EFFECTS = """
INSERT INTO delivery_effect (delivery_id, group_id, action, user_id, outcome)
SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::text[], %s::bigint[], %s::text[])
ON CONFLICT (delivery_id, group_id) DO NOTHING
"""


def insert_effects(conn: Connection, planned: list[Effect]) -> None:
    """What the sync decided for each group of a delivery: one statement."""
    columns = zip(
        *((e.delivery_id, e.group_id, e.action, e.user_id, e.outcome) for e in planned),
        strict=True,
    )
    conn.execute(INSERT_EFFECTS, [list(c) for c in columns])


SET_EFFECT_OUTCOMES = """
UPDATE delivery_effect e SET outcome = v.outcome, updated_at = now()
FROM unnest(%s::bigint[], %s::bigint[], %s::text[]) AS v(delivery_id, group_id, outcome)
WHERE e.delivery_id = v.delivery_id AND e.group_id = v.group_id
"""


def set_effect_outcomes(conn: Connection, outcomes: list[tuple[int, int, str]]) -> None:
    """What became of many (delivery, group) changes: one statement."""
    if outcomes:
        columns = [list(c) for c in zip(*outcomes, strict=True)]
        conn.execute(SET_EFFECT_OUTCOMES, columns)


@dataclass(frozen=True)
class OutboundTarget:
    """Another external issue linked to a group, on an integration with forward sync on."""

    external_issue_id: int
    integration_id: int
    key: str


SELECT_OUTBOUND_TARGETS = """
SELECT c.delivery_id, c.group_id, ei.id AS external_issue_id, ei.integration_id, ei.key
FROM unnest(%s::bigint[], %s::bigint[]) AS c(delivery_id, group_id)
JOIN webhook_delivery d ON d.id = c.delivery_id
JOIN group_link gl ON gl.group_id = c.group_id
JOIN external_issue ei ON ei.id = gl.external_issue_id
JOIN organization_integration oi
  ON oi.organization_id = ei.organization_id AND oi.integration_id = ei.integration_id
JOIN integration i ON i.id = ei.integration_id
WHERE ei.integration_id <> d.integration_id
  AND oi.status = 'active' AND i.status = 'active'
  AND coalesce((oi.config ->> 'sync_forward_assignment')::boolean, false)
ORDER BY c.delivery_id, c.group_id, ei.id
"""


def outbound_targets(
    conn: Connection, changes: list[tuple[int, int]]
) -> dict[tuple[int, int], list[OutboundTarget]]:
    """Per (delivery, group) change, the issues to push the group's assignee to, in one query:
    never one on the integration the change came from. Changes with none are left out."""
    rows = conn.execute(SELECT_OUTBOUND_TARGETS, ([d for d, _ in changes], [g for _, g in changes]))
    found: dict[tuple[int, int], list[OutboundTarget]] = {}
    for r in rows:
        change = (int(r.pop("delivery_id")), int(r.pop("group_id")))
        found.setdefault(change, []).append(OutboundTarget(**r))
    return found


MARK_SIDE_EFFECTS_DONE = """
UPDATE delivery_effect e SET side_effects_done_at = now()
FROM unnest(%s::bigint[], %s::bigint[]) AS c(delivery_id, group_id)
WHERE e.delivery_id = c.delivery_id AND e.group_id = c.group_id
  AND e.side_effects_done_at IS NULL
"""


def mark_side_effects_done(conn: Connection, changes: list[tuple[int, int]]) -> None:
    conn.execute(MARK_SIDE_EFFECTS_DONE, ([d for d, _ in changes], [g for _, g in changes]))


SELECT_SIDE_EFFECTS_STALLED = """
SELECT e.delivery_id, e.group_id, e.action FROM delivery_effect e
WHERE e.side_effects_done_at IS NULL AND e.outcome IN ('assigned', 'unassigned')
  AND e.updated_at < now() - make_interval(secs => %s)
  -- A step that gave up is the failed-task store's to replay, not the sweep's.
  AND NOT EXISTS (
      SELECT 1 FROM failed_task f
      WHERE f.delivery_id = e.delivery_id AND f.status IN ('failed', 'parked')
        AND coalesce(f.kwargs ->> 'group_id', f.kwargs -> 'changes' -> 0 ->> 1)
            = e.group_id::text)
ORDER BY e.updated_at LIMIT %s
"""


def side_effects_stalled(
    conn: Connection, older_than_s: float, limit: int
) -> list[tuple[int, int, str]]:
    """Changed groups whose side effects have not finished long after the change: their
    messages may have been lost with the broker's data. (delivery, group, action)."""
    rows = conn.execute(SELECT_SIDE_EFFECTS_STALLED, (older_than_s, limit))
    return [(int(r["delivery_id"]), int(r["group_id"]), str(r["action"])) for r in rows]


TOUCH_EFFECT = """
UPDATE delivery_effect SET updated_at = now() WHERE delivery_id = %s AND group_id = %s
"""


def touch_effects(conn: Connection, pairs: list[tuple[int, int]]) -> None:
    """Restart the stall clock of effects whose side effects were just sent again."""
    for delivery_id, group_id in pairs:
        conn.execute(TOUCH_EFFECT, (delivery_id, group_id))


SELECT_OUTBOUND_CALLED = """
SELECT external_issue_id, status FROM outbound_call WHERE delivery_id = %s AND group_id = %s
"""


def outbound_called(conn: Connection, delivery_id: int, group_id: int) -> dict[int, str]:
    """External issues already called (`done`) or given up on (`failed`) for this delivery and
    group, with that status."""
    rows = conn.execute(SELECT_OUTBOUND_CALLED, (delivery_id, group_id))
    return {int(r["external_issue_id"]): str(r["status"]) for r in rows}


# A replay of a failed call records its new result over the old one.
INSERT_OUTBOUND_CALL = """
INSERT INTO outbound_call (delivery_id, group_id, external_issue_id, status, detail)
VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (delivery_id, group_id, external_issue_id) DO UPDATE
SET status = EXCLUDED.status, detail = EXCLUDED.detail, created_at = now()
"""


def record_outbound_call(
    conn: Connection,
    delivery_id: int,
    group_id: int,
    external_issue_id: int,
    status: str,
    detail: str = "",
) -> None:
    conn.execute(INSERT_OUTBOUND_CALL, (delivery_id, group_id, external_issue_id, status, detail))


SELECT_USER_EMAILS = """
SELECT email FROM user_email WHERE user_id = %s ORDER BY is_verified DESC, id
"""


def user_emails(conn: Connection, user_id: int) -> list[str]:
    """A user's emails, verified ones first: what the Jira user search is asked for."""
    return [str(r["email"]) for r in conn.execute(SELECT_USER_EMAILS, (user_id,))]
