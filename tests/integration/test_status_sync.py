"""Inbound status sync (SPEC 10): Jira status moves into and out of the `done` category
resolve and unresolve groups, by the status list Jira serves (signed, cached), in event order
per group and per field, never dropped when Jira cannot be reached."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tasks.pipeline import SYNC_STATUS
from tests.conftest import Servers, WorkerProcess, wait_for
from tests.fakejira import FakeJira
from tests.integration.failure_support import failed_records
from tests.integration.inbound_support import (
    ANN,
    assignee_item,
    enqueue,
    group_state,
    jira_payload,
    post,
    store,
    wait_finished,
)
from tests.integration.status_support import (
    CLOSED,
    IN_PROGRESS,
    OPEN,
    REOPENED,
    RESOLVED,
    STATUS_ACTIVITY,
    fake_jira_for_worker,
    group_status,
    status_item,
    status_outcome,
    status_payload,
    status_scene,
)
from worker.cli import main
from worker.cli.common import EXIT_OK
from worker.domain.model import ActivityType, HistoryStatus
from worker.runtime.resources import Resources

STATUS_PATH = "/rest/api/2/status"
TS = 1_764_000_000_000


@pytest.fixture
def jira(res: Resources, servers: Servers, module_worker: WorkerProcess) -> Iterator[FakeJira]:
    """The fake Jira of this test, with the module's worker idle around it."""
    with fake_jira_for_worker(servers.env["BROKER_URL"]) as fake:
        yield fake


def finish(res: Resources, payload: dict[str, Any]) -> tuple[str, str | None, str | None]:
    delivery_id = post(res, payload)
    wait_finished(res, [delivery_id])
    return status_outcome(res, delivery_id)


def status_rows(res: Resources) -> tuple[list[tuple[int, dict[str, Any]]], list[int]]:
    state = group_state(res)
    return (
        [a for a in state.activity if a[0] in STATUS_ACTIVITY],
        [h for h in state.history if h in (0, 1)],
    )


def test_done_resolves_undone_unresolves_and_other_moves_change_nothing(
    res: Resources, scene: Callable[[dict[str, Any]], None], jira: FakeJira
) -> None:
    scene(status_scene(jira))
    assert finish(res, status_payload(OPEN, RESOLVED, TS, 1)) == (
        "done", "no-assignee-change", "resolved"
    )  # fmt: skip
    assert group_status(res) == ("resolved", True)
    activity, history = status_rows(res)
    assert activity == [
        (int(ActivityType.SET_RESOLVED),
         {"provider": "jira_server", "issueKey": "APP-1", "integrationId": 1})
    ]  # fmt: skip
    assert history == [int(HistoryStatus.RESOLVED)]
    # done -> done and not-done -> not-done: recorded, nothing written.
    assert finish(res, status_payload(RESOLVED, CLOSED, TS + 1, 2))[2] == "no-resolution-change"
    assert finish(res, status_payload(OPEN, IN_PROGRESS, TS + 2, 3))[2] == "no-resolution-change"
    assert group_status(res) == ("resolved", True)
    assert finish(res, status_payload(CLOSED, REOPENED, TS + 3, 4))[2] == "unresolved"
    assert group_status(res) == ("unresolved", False)
    activity, history = status_rows(res)
    assert [a[0] for a in activity] == [
        int(ActivityType.SET_RESOLVED), int(ActivityType.SET_UNRESOLVED)
    ]  # fmt: skip
    assert history == [int(HistoryStatus.RESOLVED), int(HistoryStatus.UNRESOLVED)]
    # The status list was asked for once, signed, then served from the cache.
    calls = jira.calls_to(STATUS_PATH)
    assert [(c.method, c.signed) for c in calls] == [("GET", True)]
    # A status added in Jira since: its unknown id makes the step fetch the list again.
    jira.statuses["10001"] = ("Done", "done")
    assert finish(res, status_payload(REOPENED, "10001", TS + 4, 5))[2] == "resolved"
    assert len(jira.calls_to(STATUS_PATH)) == 2


def test_a_group_already_in_the_target_state_gets_nothing_written(
    res: Resources, scene: Callable[[dict[str, Any]], None], jira: FakeJira
) -> None:
    data = status_scene(jira)
    data["groups"][0].update(status="resolved", resolved_at="2026-01-02T03:04:05Z")
    scene(data)
    assert finish(res, status_payload(OPEN, RESOLVED, TS, 1))[2] == "unchanged"
    assert status_rows(res) == ([], [])
    assert group_status(res) == ("resolved", True)


def test_with_the_switch_off_jira_is_not_asked_and_nothing_changes(
    res: Resources, scene: Callable[[dict[str, Any]], None], jira: FakeJira
) -> None:
    scene(status_scene(jira, reverse=False))
    assert finish(res, status_payload(OPEN, RESOLVED, TS, 1)) == (
        "done", "no-assignee-change", "no-affected-groups"
    )  # fmt: skip
    assert group_status(res) == ("unresolved", False)
    assert jira.calls == []


def test_one_delivery_changing_assignee_and_status_applies_both(
    res: Resources,
    scene: Callable[[dict[str, Any]], None],
    jira: FakeJira,
    capsys: pytest.CaptureFixture[str],
) -> None:
    scene(status_scene(jira))
    items = [assignee_item("ann"), status_item(OPEN, RESOLVED)]
    assert finish(res, jira_payload(ANN, TS, 1, items=items)) == ("done", "assigned", "resolved")
    state = group_state(res)
    assert state.assignee == ANN
    assert sorted(a[0] for a in state.activity) == [
        int(ActivityType.SET_RESOLVED), int(ActivityType.ASSIGNED)
    ]  # fmt: skip
    assert group_status(res) == ("resolved", True)
    capsys.readouterr()
    assert main(["deliveries", "list", "--status-outcome", "resolved"]) == EXIT_OK
    assert "assigned, status resolved" in capsys.readouterr().out


def test_in_one_batch_only_the_status_change_goes_to_the_status_sync(
    res: Resources, scene: Callable[[dict[str, Any]], None], jira: FakeJira
) -> None:
    scene(status_scene(jira))
    # One check_changelog message carries both deliveries of the same issue.
    assignee_only = store(res, jira_payload(ANN, TS, 1))
    status_only = store(res, status_payload(OPEN, RESOLVED, TS + 1000, 2))
    assert assignee_only is not None and status_only is not None
    enqueue(res, [assignee_only, status_only])
    wait_finished(res, [assignee_only, status_only])
    assert status_outcome(res, assignee_only) == ("done", "assigned", None)
    assert status_outcome(res, status_only) == ("done", "no-assignee-change", "resolved")


def test_an_older_status_event_never_overrides_a_newer_one_whatever_the_assignee_events(
    res: Resources, scene: Callable[[dict[str, Any]], None], jira: FakeJira
) -> None:
    scene(status_scene(jira))
    assert finish(res, status_payload(RESOLVED, REOPENED, TS + 2000, 2))[2] == "unchanged"
    assert finish(res, status_payload(OPEN, RESOLVED, TS + 1000, 1))[2] == "stale"
    assert group_status(res) == ("unresolved", False)
    # Ordering is per field: an assignee event older than the status events still applies.
    assert finish(res, jira_payload(ANN, TS, 3))[1] == "assigned"
    assert status_rows(res) == ([], [])


def test_jira_unreachable_is_retried_recorded_and_replayed_not_dropped(
    res: Resources, scene: Callable[[dict[str, Any]], None], jira: FakeJira
) -> None:
    scene(status_scene(jira))
    jira.overrides[STATUS_PATH] = (503, "<html>down</html>", "text/html")
    delivery_id = post(res, status_payload(OPEN, RESOLVED, TS, 1))
    records = wait_for(lambda: failed_records(res, SYNC_STATUS), 30, "the failure record")
    assert records[0]["error_type"] == "JiraUnavailable"
    assert records[0]["attempts"] > 1  # retried with backoff before giving up
    assert status_outcome(res, delivery_id)[0] != "done"
    assert group_status(res) == ("unresolved", False)

    del jira.overrides[STATUS_PATH]  # Jira is back
    assert main(["failed", "replay", str(records[0]["id"])]) == EXIT_OK
    assert wait_finished(res, [delivery_id])[delivery_id].status == "done"
    assert status_outcome(res, delivery_id)[2] == "resolved"
    assert group_status(res) == ("resolved", True)


def test_a_status_jira_does_not_list_even_after_a_refresh_is_a_recorded_failure(
    res: Resources, scene: Callable[[dict[str, Any]], None], jira: FakeJira
) -> None:
    scene(status_scene(jira))
    delivery_id = post(res, status_payload(OPEN, "999", TS, 1))
    records = wait_for(lambda: failed_records(res, SYNC_STATUS), 30, "the failure record")
    assert (records[0]["error_type"], records[0]["attempts"]) == ("NotFound", 1)
    assert "Jira status 999 is not in integration 1's status list" in records[0]["message"]
    assert status_outcome(res, delivery_id)[0] == "failed"
    assert group_status(res) == ("unresolved", False)
