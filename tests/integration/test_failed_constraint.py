"""A step that hits a constraint violation is recorded at once (no retries); once the cause is
removed, `jira-sync failed replay` brings the state an uninterrupted run gives."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.conftest import Servers, WorkerProcess, clean_state
from tests.fakejira import FakeJira
from tests.integration.failure_support import end_state, failed_records, jira_sync
from tests.integration.inbound_support import (
    ANN,
    BOB,
    JIRA,
    PROJECT,
    base_scene,
    jira_payload,
    post,
    wait_finished,
    wait_idle,
)
from worker.runtime.resources import Resources
from worker.store.db import transaction

# A constraint the assign step's activity row breaks (ASSIGNED = 11), as a bad schema change or
# a rule added by another service would.
BLOCK_ASSIGNED = "ALTER TABLE activity ADD CONSTRAINT test_no_assigned CHECK (type <> 11)"
UNBLOCK = "ALTER TABLE activity DROP CONSTRAINT IF EXISTS test_no_assigned"
OTHER_KEY = "APP-2"
OTHER_GROUP = 101


def run_deliveries(res: Resources) -> list[int]:
    """Ann is assigned in Jira, and Bob on another issue linked to a second group."""
    first = post(res, jira_payload(ANN, ts=1000, changelog_id=1))
    second = post(res, jira_payload(BOB, ts=2000, changelog_id=2, key=OTHER_KEY))
    wait_finished(res, [first, second])
    return [first, second]


def two_issue_scene() -> dict[str, Any]:
    data = base_scene()
    data["groups"].append({"id": OTHER_GROUP, "project": PROJECT, "title": "KeyError"})
    data["external_issues"].append(
        {"id": 9, "integration": JIRA, "organization": "acme", "key": OTHER_KEY,
         "groups": [OTHER_GROUP]}
    )  # fmt: skip
    return data


def test_constraint_violation_is_recorded_then_replayed_to_the_uninterrupted_state(
    res: Resources,
    servers: Servers,
    fake_jira: FakeJira,
    scene: Callable[[dict[str, Any]], None],
    start_worker: Callable[..., WorkerProcess],
    settings_env: dict[str, str],
) -> None:
    start_worker(concurrency=2)
    scene(two_issue_scene())
    run_deliveries(res)
    uninterrupted = end_state(res, fake_jira)

    wait_idle(res.settings.broker_url)  # side-effect steps still running would see no rows
    clean_state(servers.database_url, servers.redis_url)
    scene(two_issue_scene())
    with transaction(res.pool) as conn:
        conn.execute(BLOCK_ASSIGNED)
    try:
        deliveries = run_deliveries(res)
        records = failed_records(res)
        assert [(r["task_name"], r["error_type"]) for r in records] == [
            ("jira_sync.inbound.assign", "CheckViolation"),
            ("jira_sync.inbound.assign", "CheckViolation"),
        ]
        assert {r["attempts"] for r in records} == {1}  # permanent: not retried
        status = wait_finished(res, deliveries)
        assert [status[d].status for d in deliveries] == ["failed", "failed"]
        assert end_state(res, fake_jira)["assignee"] == []  # the transaction left nothing
    finally:
        with transaction(res.pool) as conn:
            conn.execute(UNBLOCK)

    ids = [str(r["id"]) for r in records]
    proc = jira_sync(settings_env, "failed", "replay", *ids)
    assert proc.returncode == 0, proc.stderr
    status = wait_finished(res, deliveries)
    assert [status[d].status for d in deliveries] == ["done", "done"]
    assert end_state(res, fake_jira) == uninterrupted
    assert jira_sync(settings_env, "failed", "replay", "--all").returncode == 0
    assert end_state(res, fake_jira) == uninterrupted
