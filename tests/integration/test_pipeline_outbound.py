"""Outbound sync (SPEC 4.6): a change from one Jira is pushed to the other linked Jiras with
forward sync on, OAuth-signed, never echoed back to its source, once per delivery."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tasks.pipeline import OUTBOUND_SYNC
from tests.conftest import WorkerProcess, wait_for
from tests.fakejira import FakeJira, FakeJiraServer
from tests.integration.failure_support import failed_records
from tests.integration.inbound_support import (
    ANN,
    GROUP,
    JIRA,
    PROJECT,
    base_scene,
    count,
    enqueue,
    integration,
    jira_payload,
    outcome_of,
    post,
)
from worker.cli import main
from worker.cli.common import EXIT_OK
from worker.runtime.app import app
from worker.runtime.resources import Resources
from worker.store.db import transaction

OTHER = 2  # a second Jira with the same group linked as OPS-9
THIRD = 3  # a third Jira that does not know Ann
ASSIGNEE_PATH = "/rest/api/2/issue/{key}/assignee"


def fake_server() -> Iterator[FakeJira]:
    server = FakeJiraServer().start()
    server.fake.add_consumer()
    try:
        yield server.fake
    finally:
        server.stop()


@pytest.fixture
def source_jira() -> Iterator[FakeJira]:
    yield from fake_server()


@pytest.fixture
def other_jira() -> Iterator[FakeJira]:
    yield from fake_server()


@pytest.fixture
def third_jira() -> Iterator[FakeJira]:
    yield from fake_server()


def linked(fake: FakeJira, integration_id: int, host: str, forward: bool = True) -> dict[str, Any]:
    data = integration(
        integration_id,
        host,
        [{"organization": "acme", "sync_reverse_assignment": True,
          "sync_forward_assignment": forward}],
        base_url=fake.base_url,
    )  # fmt: skip
    data["access_token"], data["access_token_secret"] = fake.grant_access_token()
    return data


@pytest.fixture
def two_jiras(
    scene: Callable[[dict[str, Any]], None],
    start_worker: Callable[..., WorkerProcess],
    source_jira: FakeJira,
    other_jira: FakeJira,
) -> dict[str, Any]:
    """APP-1 on the source Jira and OPS-9 on the other are linked to one group; both have
    forward sync on, so only loop prevention keeps a change from echoing to its source."""
    for fake in (source_jira, other_jira):
        fake.add_user("ann", "Ann@Acme.test", "Ann A.")
    data = base_scene()
    data["integrations"] = [
        linked(source_jira, JIRA, "jira.acme.test"),
        linked(other_jira, OTHER, "ops.acme.test"),
    ]
    data["external_issues"].append(
        {"id": 8, "integration": OTHER, "organization": "acme", "key": "OPS-9", "groups": [GROUP]}
    )
    scene(data)
    start_worker(concurrency=2)
    return data


def delivery_status(res: Resources, delivery_id: int) -> str:
    with transaction(res.pool) as conn:
        row = conn.execute("SELECT status FROM webhook_delivery WHERE id = %s", (delivery_id,))
        return str(row.fetchone()["status"])  # type: ignore[index]


def side_effects_done(res: Resources, delivery_id: int) -> bool:
    query = (
        "SELECT count(*) FROM delivery_effect WHERE delivery_id = %s"
        " AND side_effects_done_at IS NULL"
    )
    with transaction(res.pool) as conn:
        row = conn.execute(query, (delivery_id,)).fetchone()
    return row is not None and row["count"] == 0


def puts(fake: FakeJira, key: str) -> list[Any]:
    return fake.calls_to(ASSIGNEE_PATH.format(key=key), "PUT")


def test_assignment_is_pushed_to_the_other_jira_signed(
    res: Resources, two_jiras: dict[str, Any], other_jira: FakeJira
) -> None:
    outcome_of(res, post(res, jira_payload(ANN, ts=1000, changelog_id=1)))
    wait_for(lambda: other_jira.assignees.get("OPS-9") == "ann", 15, "the push to OPS-9")
    [call] = puts(other_jira, "OPS-9")
    assert call.signed and call.json() == {"name": "ann"}
    [search] = other_jira.calls_to("/rest/api/2/user/assignable/search")
    assert search.query == {"issueKey": "OPS-9", "username": "ann@acme.test"}


def test_change_is_never_echoed_to_its_source(
    res: Resources, two_jiras: dict[str, Any], source_jira: FakeJira, other_jira: FakeJira
) -> None:
    outcome_of(res, post(res, jira_payload(ANN, ts=1000, changelog_id=1)))
    wait_for(lambda: puts(other_jira, "OPS-9"), 15, "the push to OPS-9")
    # The other Jira announces the change we made: nothing changed, nothing is pushed.
    echo = jira_payload(ANN, ts=2000, changelog_id=5, key="OPS-9")
    assert outcome_of(res, post(res, echo, integration_id=OTHER)) == "unchanged"
    wait_for(lambda: count(res, "SELECT count(*) FROM outbound_call") == 1, 5, "calls settle")
    assert source_jira.calls == []
    assert len(puts(other_jira, "OPS-9")) == 1


def test_unassignment_is_pushed_as_null_name(
    res: Resources, two_jiras: dict[str, Any], other_jira: FakeJira
) -> None:
    outcome_of(res, post(res, jira_payload(ANN, ts=1000, changelog_id=1)))
    wait_for(lambda: puts(other_jira, "OPS-9"), 15, "the first push")
    outcome_of(res, post(res, jira_payload(None, ts=2000, changelog_id=2)))
    wait_for(lambda: len(puts(other_jira, "OPS-9")) == 2, 15, "the unassign push")
    assert puts(other_jira, "OPS-9")[-1].json() == {"name": None}
    assert other_jira.assignees["OPS-9"] is None


def test_replayed_delivery_calls_jira_once(
    res: Resources, two_jiras: dict[str, Any], other_jira: FakeJira
) -> None:
    delivery = post(res, jira_payload(ANN, ts=1000, changelog_id=1))
    outcome_of(res, delivery)
    wait_for(lambda: puts(other_jira, "OPS-9"), 15, "the push")
    with transaction(res.pool) as conn:
        conn.execute("UPDATE webhook_delivery SET status = 'queued' WHERE id = %s", (delivery,))
        conn.execute("DELETE FROM delivery_effect WHERE delivery_id = %s", (delivery,))
    enqueue(res, [delivery])  # re-runs every step; the group step finds nothing new to do
    outcome_of(res, delivery)
    wait_for(lambda: count(res, "SELECT count(*) FROM outbound_call") == 1, 5, "calls settle")
    assert len(puts(other_jira, "OPS-9")) == 1


# On RabbitMQ the retry's countdown goes through Celery's native delayed delivery.
@pytest.mark.broker
def test_jira_5xx_is_retried_until_the_push_lands(
    res: Resources, two_jiras: dict[str, Any], other_jira: FakeJira
) -> None:
    other_jira.fail_status = 503
    outcome_of(res, post(res, jira_payload(ANN, ts=1000, changelog_id=1)))
    wait_for(lambda: len(other_jira.calls) >= 1, 15, "a first, failing attempt")
    other_jira.fail_status = None
    wait_for(lambda: other_jira.assignees.get("OPS-9") == "ann", 20, "the retried push")
    assert len([c for c in puts(other_jira, "OPS-9") if c.status == 204]) == 1


def test_a_slow_jira_holds_no_group_lock_and_the_newest_state_lands_last(
    res: Resources, two_jiras: dict[str, Any], other_jira: FakeJira
) -> None:
    other_jira.delay_s = 5.0  # every request to the other Jira takes 5 s
    first = post(res, jira_payload(ANN, ts=1000, changelog_id=1))
    assert outcome_of(res, first) == "assigned"
    wait_for(lambda: other_jira.calls, 15, "the push for Ann to reach the slow Jira")
    # While that push is in flight, the group changes again: its step does not wait for Jira.
    second = post(res, jira_payload(None, ts=2000, changelog_id=2))
    assert outcome_of(res, second) == "unassigned"
    assert other_jira.calls[0].status == 0, "the first call to Jira is still in flight"
    other_jira.delay_s = 0.0
    wait_for(
        lambda: count(res, "SELECT count(*) FROM outbound_call WHERE status = 'done'") == 2,
        30,
        "both deliveries' pushes to finish",
    )
    assert other_jira.assignees["OPS-9"] is None  # the newest state, whatever the order
    assert puts(other_jira, "OPS-9")[-1].json() == {"name": None}


def test_user_unknown_to_one_jira_fails_that_issue_only(
    res: Resources,
    capsys: pytest.CaptureFixture[str],
    scene: Callable[[dict[str, Any]], None],
    start_worker: Callable[..., WorkerProcess],
    source_jira: FakeJira,
    other_jira: FakeJira,
    third_jira: FakeJira,
) -> None:
    other_jira.add_user("ann", "ann@acme.test")
    data = base_scene()
    data["integrations"] = [
        linked(source_jira, JIRA, "jira.acme.test"),
        linked(other_jira, OTHER, "ops.acme.test"),
        linked(third_jira, THIRD, "legacy.acme.test"),
    ]
    data["external_issues"] += [
        {"id": 8, "integration": OTHER, "organization": "acme", "key": "OPS-9",
         "groups": [GROUP]},
        {"id": 9, "integration": THIRD, "organization": "acme", "key": "OLD-3",
         "groups": [GROUP]},
    ]  # fmt: skip
    scene(data)
    start_worker(concurrency=2)
    delivery = post(res, jira_payload(ANN, ts=1000, changelog_id=1))
    assert outcome_of(res, delivery) == "assigned"
    wait_for(lambda: count(res, "SELECT count(*) FROM outbound_call") == 2, 15, "both calls")
    with transaction(res.pool) as conn:
        rows = conn.execute(
            "SELECT external_issue_id, status FROM outbound_call ORDER BY external_issue_id"
        ).fetchall()
    assert [(r["external_issue_id"], r["status"]) for r in rows] == [(8, "done"), (9, "failed")]
    assert other_jira.assignees == {"OPS-9": "ann"}
    assert puts(third_jira, "OLD-3") == []
    # Never silent: a failed-task record for that issue alone, the delivery reads failed.
    # (The call's row commits before the step records its failure: wait for the record.)
    [record] = wait_for(lambda: failed_records(res), 15, "the failure record")
    assert record["task_name"] == OUTBOUND_SYNC
    assert record["error_type"] == "JiraUserNotFound"
    assert "OLD-3" in record["message"]
    assert record["kwargs"] == {"changes": [[delivery, GROUP]], "external_issue_id": 9}
    assert delivery_status(res, delivery) == "failed"
    assert main(["failed", "list"]) == EXIT_OK
    assert "JiraUserNotFound" in capsys.readouterr().out
    assert main(["deliveries", "show", str(delivery)]) == EXIT_OK
    shown = capsys.readouterr().out
    assert "OPS-9" in shown and "OLD-3" in shown and "no assignable Jira user" in shown
    # Once the user exists in that Jira, a replay pushes to that issue alone.
    third_jira.add_user("ann.l", "ann@acme.test")
    assert main(["failed", "replay", "--all"]) == EXIT_OK
    wait_for(lambda: third_jira.assignees.get("OLD-3") == "ann.l", 15, "the replayed push")
    wait_for(
        lambda: count(res, "SELECT count(*) FROM outbound_call WHERE status = 'done'") == 2,
        10,
        "the replayed call to be recorded done",
    )
    assert len(puts(other_jira, "OPS-9")) == 1
    assert delivery_status(res, delivery) == "done"


def test_jira_4xx_on_the_push_is_a_failed_record_naming_status_and_issue(
    res: Resources, two_jiras: dict[str, Any], other_jira: FakeJira
) -> None:
    path = ASSIGNEE_PATH.format(key="OPS-9")
    other_jira.overrides[path] = (403, '{"errorMessages": ["no permission"]}', "application/json")
    delivery = post(res, jira_payload(ANN, ts=1000, changelog_id=1))
    assert outcome_of(res, delivery) == "assigned"
    wait_for(lambda: failed_records(res), 15, "the refusal to be recorded")
    [record] = failed_records(res)
    assert (record["task_name"], record["error_type"]) == (OUTBOUND_SYNC, "JiraRejected")
    assert "OPS-9" in record["message"] and "403" in record["message"]
    assert count(res, "SELECT count(*) FROM outbound_call WHERE status = 'failed'") == 1


def test_forward_sync_off_pushes_nothing(
    res: Resources,
    scene: Callable[[dict[str, Any]], None],
    start_worker: Callable[..., WorkerProcess],
    source_jira: FakeJira,
    other_jira: FakeJira,
) -> None:
    data = base_scene()
    data["integrations"] = [
        linked(source_jira, JIRA, "jira.acme.test"),
        linked(other_jira, OTHER, "ops.acme.test", forward=False),
    ]
    data["external_issues"].append(
        {"id": 8, "integration": OTHER, "organization": "acme", "key": "OPS-9", "groups": [GROUP]}
    )
    scene(data)
    start_worker(concurrency=2)
    delivery_id = post(res, jira_payload(ANN, ts=1000, changelog_id=1))
    assert outcome_of(res, delivery_id) == "assigned"
    # The side effects run after the delivery is done: wait until they finished.
    wait_for(lambda: side_effects_done(res, delivery_id), 15, "the side effects")
    assert other_jira.calls == []
    assert source_jira.calls == []


def retried_changes(worker: WorkerProcess) -> list[list[list[int]]]:
    """The `changes` of every outbound-sync retry the worker logged."""
    found = []
    for line in worker.log().splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if entry.get("event") == "step.retry" and entry.get("task") == OUTBOUND_SYNC:
                found.append(entry["changes"])
    return found


def test_one_jira_down_retries_its_pushes_alone_and_the_others_finish(
    res: Resources,
    scene: Callable[[dict[str, Any]], None],
    start_worker: Callable[..., WorkerProcess],
    source_jira: FakeJira,
    other_jira: FakeJira,
    third_jira: FakeJira,
) -> None:
    for fake in (other_jira, third_jira):
        fake.add_user("ann", "Ann@Acme.test", "Ann A.")
    data = base_scene()
    data["groups"].append({"id": GROUP + 1, "project": PROJECT, "title": "Second"})
    data["integrations"] = [
        linked(source_jira, JIRA, "jira.acme.test"),
        linked(other_jira, OTHER, "ops.acme.test", forward=False),
        linked(third_jira, THIRD, "ext.acme.test", forward=False),
    ]
    data["external_issues"] += [
        {"id": 8, "integration": JIRA, "organization": "acme", "key": "APP-2",
         "groups": [GROUP + 1]},
        {"id": 9, "integration": OTHER, "organization": "acme", "key": "OPS-9", "groups": [GROUP]},
        {"id": 10, "integration": THIRD, "organization": "acme", "key": "EXT-1",
         "groups": [GROUP + 1]},
    ]  # fmt: skip
    scene(data)
    worker = start_worker(concurrency=1, env={"RETRY_BUDGET_S": "60"})
    first = post(res, jira_payload(ANN, ts=1000, changelog_id=1))
    second = post(res, jira_payload(ANN, ts=1000, changelog_id=2, key="APP-2"))
    assert outcome_of(res, first) == outcome_of(res, second) == "assigned"
    for iid in (OTHER, THIRD):
        assert main(["integration", "configure", str(iid), "--organization", "acme",
                     "--forward-assignment", "on"]) == EXIT_OK  # fmt: skip
    # One message holds a change for each Jira; the first one's Jira is restarting.
    other_jira.fail_status = 503
    app.send_task(OUTBOUND_SYNC, kwargs={"changes": [[first, GROUP], [second, GROUP + 1]]})
    wait_for(lambda: third_jira.assignees.get("EXT-1") == "ann", 15, "the healthy Jira's push")
    wait_for(lambda: retried_changes(worker), 15, "a retry of the failing push")
    assert all(changes == [[first, GROUP]] for changes in retried_changes(worker))
    other_jira.fail_status = None
    wait_for(lambda: other_jira.assignees.get("OPS-9") == "ann", 30, "the push once Jira is back")
    assert failed_records(res) == []
    assert len(puts(third_jira, "EXT-1")) == 1
