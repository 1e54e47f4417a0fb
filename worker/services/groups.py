"""The read model of a group: status, assignee, subscriptions, activity, history, cache
state; and resolving or unresolving a group here (the tracker's side of status sync).

This is the read path of the assignee-exists cache: reading fills it (24 h when an assignee
exists, 60 s when none), as the original system's readers did.
"""

from __future__ import annotations

import time
from typing import Any

from worker import cache
from worker.domain.assignment import Assignee
from worker.domain.errors import NotFound
from worker.domain.model import ActivityType, HistoryStatus, reason_name
from worker.domain.status import GroupStatus, local_order
from worker.runtime.resources import Resources
from worker.store.db import transaction
from worker.store.queries import group_status as q_status
from worker.store.queries import groups as q
from worker.store.queries import inbound as q_inbound


def assignee_exists(res: Resources, group_id: int) -> bool:
    """Whether the group has an assignee, answered from the cache when it holds a value."""
    cached = cache.cached_assignee_exists(res.redis, group_id)
    if cached is not None:
        return cached
    with transaction(res.pool) as conn:
        exists = q_inbound.assignee(conn, group_id) is not None
    cache.fill_assignee_exists(res.redis, group_id, exists)
    return exists


def show_group(res: Resources, group_id: int) -> dict[str, Any]:
    """The stable JSON of `jira-sync group show`."""
    with transaction(res.pool) as conn:
        group = q.get_group(conn, group_id)
        if group is None:
            raise NotFound(f"no such group {group_id}")
        assignee = q_inbound.assignee(conn, group_id)
        subscriptions = q.list_subscriptions(conn, group_id)
        activity = q.list_activity(conn, group_id)
        history = q.list_history(conn, group_id)
    cached_before = cache.cached_assignee_exists(res.redis, group_id)
    if cached_before is None:
        cache.fill_assignee_exists(res.redis, group_id, assignee is not None)
    return {
        "id": group["id"],
        "project": group["project_id"],
        "status": group["status"],
        "resolved_at": group["resolved_at"].isoformat() if group["resolved_at"] else None,
        "assignee": _assignee(assignee),
        "subscriptions": [{**_actor(s), "reason": reason_name(s["reason"])} for s in subscriptions],
        "activity": [
            {"type": ActivityType(a["type"]).name, "user": a["user_id"], "data": a["data"]}
            for a in activity
        ],
        "history": [
            {"status": HistoryStatus(h["status"]).name, "actor": h["actor_id"]} for h in history
        ],
        "assignee_exists_cache": cached_before,
    }


def set_status(res: Resources, group_id: int, status: GroupStatus) -> bool:
    """Resolve or unresolve a group (activity and history by no acting user), as the newest
    status event of the group (an older Jira event replayed later is stale), and ask, in the
    same transaction, for its linked Jira issues to be moved there (again, when it already
    was in that state: someone may have moved them in Jira). False when it already was."""
    with transaction(res.pool) as conn:
        group = q_status.lock_group_status(conn, group_id)
        if group is None:
            raise NotFound(f"no such group {group_id}")
        changed = group.status != status
        if changed:
            ref = q_inbound.GroupRef(group.id, group.project_id)
            q_status.change_group_status(conn, ref, status, {}, None)
            order = local_order(int(time.time() * 1000))
            q_inbound.set_group_event(conn, group.id, order, None, "status")
        q_status.request_status_move(conn, group.id, None)
    return changed


def _assignee(assignee: Assignee | None) -> dict[str, Any] | None:
    if assignee is None:
        return None
    if assignee.user_id is not None:
        return {"type": "user", "id": assignee.user_id}
    return {"type": "team", "id": assignee.team_id}


def _actor(row: dict[str, Any]) -> dict[str, Any]:
    return {"user": row["user_id"]} if row["user_id"] is not None else {"team": row["team_id"]}
