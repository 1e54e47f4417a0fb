"""Jira answers 500 until told otherwise: outbound steps land in the failed-task store after
their retries; once Jira is back, `jira-sync failed replay --all` brings everything to the
state an uninterrupted run gives, and replaying again changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Servers, WorkerProcess, clean_state, wait_for
from tests.fakejira import FakeJira
from tests.integration.failure_support import (
    OUTBOUND_KEY,
    OUTBOUND_SYNC,
    end_state,
    failed_records,
    jira_sync,
    outbound_scene,
)
from tests.integration.inbound_support import (
    ANN,
    BOB,
    broker_busy,
    jira_payload,
    post,
    wait_finished,
)
from worker.domain.retry import may_retry
from worker.runtime.resources import Resources
from worker.store.db import transaction

pytestmark = pytest.mark.broker  # run again on RabbitMQ: tests/amqp_leg.py


def outbound_done(res: Resources, count: int) -> bool:
    with transaction(res.pool) as conn:
        row = conn.execute("SELECT count(*) AS n FROM outbound_call WHERE status = 'done'")
        found = row.fetchone()
    return found is not None and found["n"] >= count


def run_deliveries(res: Resources) -> list[int]:
    """Ann is assigned in Jira, then Bob."""
    first = post(res, jira_payload(ANN, ts=1000, changelog_id=1))
    wait_finished(res, [first])
    second = post(res, jira_payload(BOB, ts=2000, changelog_id=2))
    return [first, second]


def test_replay_after_jira_outage_equals_an_uninterrupted_run(
    res: Resources,
    servers: Servers,
    fake_jira: FakeJira,
    scene: Callable[[dict[str, Any]], None],
    start_worker: Callable[..., WorkerProcess],
    settings_env: dict[str, str],
) -> None:
    start_worker(concurrency=2)

    # Uninterrupted: Jira up the whole time.
    scene(outbound_scene(fake_jira))
    run_deliveries(res)
    wait_for(lambda: outbound_done(res, 2), 60, "both outbound calls")
    uninterrupted = end_state(res, fake_jira)
    assert uninterrupted["jira_assignees"] == {OUTBOUND_KEY: "bob"}

    # Interrupted: same scene and deliveries, Jira answering 500 until told otherwise.
    clean_state(servers.database_url, servers.redis_url)
    fake_jira.assignees.clear()
    scene(outbound_scene(fake_jira))
    fake_jira.fail_status = 500
    deliveries = run_deliveries(res)
    records = wait_for(
        lambda: len(failed_records(res, OUTBOUND_SYNC)) == 2 and failed_records(res),
        90,
        "both outbound steps to give up",
    )
    assert {r["error_type"] for r in records} == {"JiraUnavailable"}
    budget, cap = float(settings_env["RETRY_BUDGET_S"]), float(settings_env["RETRY_BACKOFF_MAX_S"])
    retries = next(r for r in range(100) if not may_retry(r, budget, cap))
    assert {r["attempts"] for r in records} == {retries + 1}
    assert {r["delivery_id"] for r in records} == set(deliveries)
    status = wait_finished(res, deliveries)
    assert {d.status for d in status.values()} == {"failed"}
    assert fake_jira.assignees == {}

    fake_jira.fail_status = None
    proc = jira_sync(settings_env, "failed", "replay", "--all")
    assert proc.returncode == 0, proc.stderr
    assert "replayed 2" in proc.stdout
    wait_for(lambda: outbound_done(res, 2), 60, "the replayed outbound calls")
    assert end_state(res, fake_jira) == uninterrupted
    assert [r["status"] for r in failed_records(res)] == ["replayed", "replayed"]

    # Replaying again: nothing to do; forced, the steps run again and change nothing.
    puts = len(fake_jira.calls_to("/rest/api/2/issue/", "PUT"))
    again = jira_sync(settings_env, "failed", "replay", "--all")
    assert (again.returncode, "Nothing to do" in again.stdout) == (0, True)
    ids = [str(r["id"]) for r in records]
    forced = jira_sync(settings_env, "failed", "replay", "--force", *ids)
    assert forced.returncode == 0, forced.stderr
    assert "replayed 2" in forced.stdout
    wait_for(
        lambda: all(r["status"] == "replayed" for r in failed_records(res)) and _queues_empty(res),
        30,
        "the forced replays to run",
    )
    assert end_state(res, fake_jira) == uninterrupted
    assert len(fake_jira.calls_to("/rest/api/2/issue/", "PUT")) == puts


def _queues_empty(res: Resources) -> bool:
    return broker_busy(res.settings.broker_url) == 0
