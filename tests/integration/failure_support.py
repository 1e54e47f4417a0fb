"""Helpers for the failure and replay tests: a scene whose group is also linked to an issue
on a second Jira (the fake one), so that outbound sync really calls Jira, and a snapshot of
everything a delivery can change."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.fakejira import FakeJira
from tests.integration.inbound_support import GROUP, base_scene, integration
from worker.runtime.resources import Resources
from worker.store.db import transaction

ROOT = Path(__file__).parents[2]
OUTBOUND_JIRA = 2
OUTBOUND_ISSUE = 8
OUTBOUND_KEY = "OPS-5"
OUTBOUND_SYNC = "jira_sync.effects.outbound_sync"


def outbound_scene(fake: FakeJira) -> dict[str, Any]:
    """base_scene() plus the fake Jira as a second integration with outbound sync on; its
    issue OPS-5 is linked to the same group as APP-1; Ann and Bob exist in it."""
    data = base_scene()
    token, secret = fake.grant_access_token()
    second = integration(
        OUTBOUND_JIRA,
        "127.0.0.1",
        [{"organization": "acme", "sync_forward_assignment": True}],
        base_url=fake.base_url,
    )
    second["access_token"], second["access_token_secret"] = token, secret
    data["integrations"].append(second)
    data["external_issues"].append(
        {"id": OUTBOUND_ISSUE, "integration": OUTBOUND_JIRA, "organization": "acme",
         "key": OUTBOUND_KEY, "groups": [GROUP]}
    )  # fmt: skip
    if not fake.users:
        fake.add_user("ann", "ann@acme.test", "Ann A.")
        fake.add_user("bob", "bob@acme.test", "Bob B.")
    return data


def end_state(res: Resources, fake: FakeJira) -> dict[str, Any]:
    """Everything the pipeline writes, ids and per-group order included (groups are worked
    on concurrently, so the order across groups is not), but not timestamps."""
    queries = {
        "deliveries": "SELECT id, status, outcome, detail FROM webhook_delivery ORDER BY id",
        "assignee": "SELECT group_id, user_id, team_id FROM group_assignee ORDER BY group_id",
        "subscriptions": "SELECT group_id, user_id, team_id, reason FROM group_subscription"
        " ORDER BY group_id, user_id, team_id",
        "activity": "SELECT group_id, type, user_id, data, delivery_id FROM activity"
        " ORDER BY group_id, id",
        "history": "SELECT group_id, status, delivery_id FROM group_history ORDER BY group_id, id",
        "effects": "SELECT delivery_id, group_id, outcome, action, user_id FROM delivery_effect"
        " ORDER BY delivery_id, group_id",
        "outbound": "SELECT delivery_id, group_id, external_issue_id, status FROM outbound_call"
        " ORDER BY delivery_id, group_id, external_issue_id",
    }
    with transaction(res.pool) as conn:
        state: dict[str, Any] = {k: conn.execute(sql).fetchall() for k, sql in queries.items()}
    state["jira_assignees"] = dict(fake.assignees)
    return state


def jira_sync(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as an operator runs it: a separate process."""
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def failed_records(res: Resources, task: str | None = None) -> list[dict[str, Any]]:
    with transaction(res.pool) as conn:
        return conn.execute(
            "SELECT * FROM failed_task WHERE %(task)s::text IS NULL OR task_name = %(task)s"
            " ORDER BY id",
            {"task": task},
        ).fetchall()
