"""Steps that give up land in the failed-task store, from real worker processes; with
PostgreSQL down, the record waits in Redis until the beat flush writes it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Servers, WorkerProcess, wait_for
from tests.integration.inbound_support import ISSUE_KEY, base_scene, jira_payload, store_raw
from worker.cli import main
from worker.cli.common import EXIT_OK
from worker.runtime.app import app
from worker.runtime.resources import Resources
from worker.services import failures
from worker.store.db import transaction

CHECK_CHANGELOG = "jira_sync.inbound.check_changelog"
FLUSH_SPOOL = "jira_sync.maintenance.flush_failure_spool"


@pytest.fixture
def acme(scene: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    data = base_scene()
    scene(data)
    return data


def store_body(res: Resources, body: str, key: str = "d1") -> int:
    delivery_id = store_raw(res, 1, key, body, ISSUE_KEY, 1000)
    assert delivery_id is not None
    return delivery_id


def records(res: Resources) -> list[dict[str, Any]]:
    with transaction(res.pool) as conn:
        return conn.execute("SELECT * FROM failed_task ORDER BY id").fetchall()


def delivery_row(res: Resources, delivery_id: int) -> dict[str, Any]:
    with transaction(res.pool) as conn:
        row = conn.execute(
            "SELECT status, outcome, failed_task_id FROM webhook_delivery WHERE id = %s",
            (delivery_id,),
        ).fetchone()
    assert row is not None
    return row


def flushed(res: Resources) -> bool:
    """Run the flush as beat does, every few seconds, until the spool is empty (the worker's
    pool reconnects to the restarted PostgreSQL with its own backoff)."""
    if res.redis.llen(failures.SPOOL_KEY) == 0:
        return True
    app.send_task(FLUSH_SPOOL)
    time.sleep(3)
    return False


def retries_logged(worker: WorkerProcess) -> int:
    """How many times the worker's log says a step was retried."""
    return worker.log().count('"step.retry"')


def no_assignee_change_body() -> str:
    payload = jira_payload(None, ts=1000, changelog_id=1)
    status_item = {"field": "status", "fieldtype": "jira", "from": "1", "to": "3",
                   "fromString": "Open", "toString": "Done"}  # fmt: skip
    payload["changelog"]["items"] = [status_item]
    return json.dumps(payload)


def test_permanent_failure_is_recorded_at_once_with_everything_needed_to_replay(
    res: Resources, acme: dict[str, Any], start_worker: Callable[..., WorkerProcess]
) -> None:
    start_worker(concurrency=1)
    delivery_id = store_body(res, "{not json")
    app.send_task(CHECK_CHANGELOG, kwargs={"delivery_ids": [delivery_id]})
    [rec] = wait_for(lambda: records(res), 30, "the failure to be recorded")
    assert rec["task_name"] == CHECK_CHANGELOG
    assert (rec["args"], rec["kwargs"]) == ([], {"delivery_ids": [delivery_id]})
    assert rec["error_type"] == "BadPayload"
    assert "not JSON" in rec["message"]
    assert "BadPayload" in rec["traceback"] and "Traceback" in rec["traceback"]
    assert rec["attempts"] == 1  # permanent: not retried
    assert rec["status"] == "failed"
    assert rec["first_failed_at"] == rec["last_failed_at"]
    assert rec["delivery_id"] == delivery_id
    assert delivery_row(res, delivery_id) == {
        "status": "failed", "outcome": None, "failed_task_id": rec["id"]
    }  # fmt: skip


def test_fixed_delivery_replayed_finishes_and_a_second_replay_changes_nothing(
    res: Resources,
    acme: dict[str, Any],
    start_worker: Callable[..., WorkerProcess],
    capsys: pytest.CaptureFixture[str],
) -> None:
    start_worker(concurrency=1)
    delivery_id = store_body(res, "{not json")
    app.send_task(CHECK_CHANGELOG, kwargs={"delivery_id": delivery_id})
    wait_for(lambda: records(res), 30, "the failure to be recorded")
    with transaction(res.pool) as conn:
        conn.execute(
            "UPDATE webhook_delivery SET body = %s WHERE id = %s",
            (no_assignee_change_body(), delivery_id),
        )
    assert main(["failed", "replay", "--all"]) == EXIT_OK
    done = wait_for(
        lambda: delivery_row(res, delivery_id)["status"] == "done", 30, "the replayed delivery"
    )
    assert done
    assert delivery_row(res, delivery_id)["outcome"] == "no-assignee-change"
    assert [r["status"] for r in records(res)] == ["replayed"]
    capsys.readouterr()
    assert main(["failed", "replay", "--all"]) == EXIT_OK
    assert "Nothing to do" in capsys.readouterr().out


def test_a_step_outlasts_a_postgres_outage_shorter_than_its_retry_budget(
    res: Resources,
    servers: Servers,
    acme: dict[str, Any],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    assert servers.pg is not None, "needs the embedded PostgreSQL"
    # Backoffs of at most 1 s: the step retries more often than Celery's default limit of 3
    # allows before the outage ends; the budget is time, so the outage passes. No beat runs
    # here, so nothing but the step's own retries can finish the delivery.
    worker = start_worker(concurrency=1, env={"RETRY_BUDGET_S": "30", "RETRY_BACKOFF_MAX_S": "1"})
    delivery_id = store_body(res, no_assignee_change_body())
    servers.pg.stop()
    try:
        app.send_task(CHECK_CHANGELOG, kwargs={"delivery_id": delivery_id})
        wait_for(lambda: retries_logged(worker) > 4, 60, "more than four retries")
    finally:
        servers.pg.start()
        res.pool.check()  # this process's own connections died with the server
    wait_for(lambda: delivery_row(res, delivery_id)["status"] == "done", 60, "the retried step")
    assert "raised unexpected" not in worker.log()
    assert delivery_row(res, delivery_id)["outcome"] == "no-assignee-change"
    assert records(res) == []
    assert res.redis.llen(failures.SPOOL_KEY) == 0


def test_failure_while_postgres_is_down_is_spooled_then_written_by_the_flush(
    res: Resources,
    servers: Servers,
    acme: dict[str, Any],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    assert servers.pg is not None, "needs the embedded PostgreSQL"
    start_worker(concurrency=1, env={"RETRY_BUDGET_S": "0.5", "RETRY_BACKOFF_MAX_S": "1"})
    delivery_id = store_body(res, no_assignee_change_body())
    servers.pg.stop()
    try:
        app.send_task(CHECK_CHANGELOG, kwargs={"delivery_id": delivery_id})
        wait_for(lambda: res.redis.llen(failures.SPOOL_KEY), 60, "the record to be spooled")
    finally:
        servers.pg.start()
        res.pool.check()  # this process's own connections died with the server
    [spooled] = [json.loads(raw) for raw in res.redis.lrange(failures.SPOOL_KEY, 0, -1)]
    assert spooled["task_name"] == CHECK_CHANGELOG
    assert spooled["error_type"] == "DatabaseUnavailable"

    wait_for(lambda: flushed(res), 90, "the beat flush to empty the spool")
    [rec] = records(res)
    assert rec["kwargs"] == {"delivery_id": delivery_id}
    assert rec["error_type"] == "DatabaseUnavailable"
    assert rec["attempts"] == 2  # the first try and one retry
    assert rec["last_failed_at"].isoformat() == spooled["failed_at"]  # when it failed, not now
    assert delivery_row(res, delivery_id)["failed_task_id"] == rec["id"]

    assert main(["failed", "replay", str(rec["id"])]) == EXIT_OK
    wait_for(lambda: delivery_row(res, delivery_id)["status"] == "done", 30, "the replay")
    assert delivery_row(res, delivery_id)["outcome"] == "no-assignee-change"
