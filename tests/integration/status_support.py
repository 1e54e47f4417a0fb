"""Helpers for the status sync tests: a scene whose Jira is the fake one (status list,
transitions, signed requests), status items, and a group's status as stored."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from tests.fakejira import FakeJira, FakeJiraServer
from tests.integration.inbound_support import (
    GROUP,
    base_scene,
    declare_queues,
    jira_payload,
    wait_idle,
)
from worker.domain.model import ActivityType, HistoryStatus
from worker.runtime.resources import Resources
from worker.store.db import transaction

OPEN, IN_PROGRESS, REOPENED, RESOLVED, CLOSED = "1", "3", "4", "5", "6"
STATUS_ACTIVITY = (int(ActivityType.SET_RESOLVED), int(ActivityType.SET_UNRESOLVED))
STATUS_HISTORY = (int(HistoryStatus.RESOLVED), int(HistoryStatus.UNRESOLVED))


@contextlib.contextmanager
def fake_jira_for_worker(broker_url: str) -> Iterator[FakeJira]:
    """A fake Jira for one test, the module's worker left idle before it stops."""
    declare_queues()
    server = FakeJiraServer().start()
    server.fake.add_consumer()
    try:
        yield server.fake
    finally:
        wait_idle(broker_url)
        server.stop()


def status_scene(fake: FakeJira, reverse: bool = True, forward: bool = False) -> dict[str, Any]:
    """base_scene() with its Jira served by the fake, status sync switched as asked."""
    data = base_scene()
    jira = data["integrations"][0]
    jira["base_url"] = fake.base_url
    jira["access_token"], jira["access_token_secret"] = fake.grant_access_token()
    jira["organizations"][0].update(sync_status_reverse=reverse, sync_status_forward=forward)
    return data


def status_item(old: str | None, new: str) -> dict[str, Any]:
    return {"field": "status", "fieldtype": "jira", "from": old, "fromString": None,
            "to": new, "toString": None}  # fmt: skip


def status_payload(
    old: str | None, new: str, ts: int, changelog_id: int, key: str = "APP-1"
) -> dict[str, Any]:
    """A status-only `jira:issue_updated` body (the assignee did not change)."""
    return jira_payload(None, ts, changelog_id, key=key, items=[status_item(old, new)])


def group_status(res: Resources, group_id: int = GROUP) -> tuple[str, bool]:
    """(status, whether resolved_at is set)."""
    with transaction(res.pool) as conn:
        row = conn.execute(
            "SELECT status, resolved_at FROM issue_group WHERE id = %s", (group_id,)
        ).fetchone()
    assert row is not None
    return str(row["status"]), row["resolved_at"] is not None


def status_outcome(res: Resources, delivery_id: int) -> tuple[str, str | None, str | None]:
    """(delivery status, outcome, status outcome)."""
    with transaction(res.pool) as conn:
        row = conn.execute(
            "SELECT status, outcome, status_outcome FROM webhook_delivery WHERE id = %s",
            (delivery_id,),
        ).fetchone()
    assert row is not None
    return row["status"], row["outcome"], row["status_outcome"]
