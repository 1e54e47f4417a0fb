"""SQL for reading a group's assignment and status state (`jira-sync group show`)."""

from __future__ import annotations

from typing import Any

from worker.store.db import Connection

SELECT_GROUP = """
SELECT id, project_id, title, last_seen, status, resolved_at FROM issue_group WHERE id = %s
"""
SELECT_SUBSCRIPTIONS = """
SELECT user_id, team_id, reason FROM group_subscription
WHERE group_id = %s ORDER BY user_id NULLS LAST, team_id
"""
SELECT_ACTIVITY = """
SELECT type, user_id, data FROM activity WHERE group_id = %s ORDER BY created_at, id
"""
SELECT_HISTORY = """
SELECT status, actor_id FROM group_history WHERE group_id = %s ORDER BY created_at, id
"""


def get_group(conn: Connection, group_id: int) -> dict[str, Any] | None:
    return conn.execute(SELECT_GROUP, (group_id,)).fetchone()


def list_subscriptions(conn: Connection, group_id: int) -> list[dict[str, Any]]:
    return conn.execute(SELECT_SUBSCRIPTIONS, (group_id,)).fetchall()


def list_activity(conn: Connection, group_id: int) -> list[dict[str, Any]]:
    return conn.execute(SELECT_ACTIVITY, (group_id,)).fetchall()


def list_history(conn: Connection, group_id: int) -> list[dict[str, Any]]:
    return conn.execute(SELECT_HISTORY, (group_id,)).fetchall()
