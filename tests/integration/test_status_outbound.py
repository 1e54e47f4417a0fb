"""Outbound status sync (SPEC 10): resolving or unresolving a group here moves its linked Jira
issues through a workflow transition to the mapped status (signed), skips an issue already
there, records a missing mapping or transition as a replayable failure, and Jira's webhook for
our own transition changes nothing."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tasks.pipeline import OUTBOUND_STATUS
from tests.conftest import Servers, WorkerProcess, wait_for
from tests.fakejira import FakeJira, FakeJiraServer
from tests.integration.failure_support import failed_records
from tests.integration.inbound_support import (
    GROUP,
    PROJECT,
    group_state,
    integration,
    post,
    wait_finished,
    wait_idle,
)
from tests.integration.status_support import (
    CLOSED,
    OPEN,
    REOPENED,
    RESOLVED,
    STATUS_ACTIVITY,
    fake_jira_for_worker,
    group_status,
    status_outcome,
    status_payload,
    status_scene,
)
from worker.cli import main
from worker.cli.common import EXIT_NOT_FOUND, EXIT_OK
from worker.domain.model import ActivityType
from worker.runtime.resources import Resources
from worker.store.db import transaction

TRANSITIONS = "/rest/api/2/issue/APP-1/transitions"
OTHER = 2  # a second Jira instance, its issue OPS-9 linked to the same group
TS = 1_764_000_000_000


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture
def jira(res: Resources, servers: Servers, module_worker: WorkerProcess) -> Iterator[FakeJira]:
    """The fake Jira of this test (APP-1 is Open in it), the module's worker idle around it."""
    with fake_jira_for_worker(servers.env["BROKER_URL"]) as fake:
        fake.issue_statuses["APP-1"] = OPEN
        yield fake


def map_status(resolved: str = "Resolved", unresolved: str = "4", project: str = "APP") -> None:
    assert main(["integration", "map-status", "1", "--organization", "acme",
                 "--jira-project", project, "--resolved", resolved,
                 "--unresolved", unresolved]) == EXIT_OK  # fmt: skip


def test_a_project_key_typed_in_lower_case_maps_its_issues(
    res: Resources, scene: Callable[[dict[str, Any]], None], jira: FakeJira
) -> None:
    scene(status_scene(jira, reverse=True, forward=True))
    map_status(project=" app ")
    assert main(["group", "resolve", str(GROUP)]) == EXIT_OK
    moved_to(jira, RESOLVED)


def moved_to(jira: FakeJira, status_id: str) -> None:
    wait_for(lambda: jira.issue_statuses["APP-1"] == status_id, 20, f"APP-1 in {status_id}")


def test_resolve_and_unresolve_move_the_jira_issue_and_its_echo_changes_nothing(
    res: Resources, scene: Callable[[dict[str, Any]], None], jira: FakeJira, servers: Servers
) -> None:
    scene(status_scene(jira, reverse=True, forward=True))
    map_status()
    assert main(["group", "resolve", str(GROUP)]) == EXIT_OK
    moved_to(jira, RESOLVED)
    posts = jira.calls_to(TRANSITIONS, "POST")
    assert [(p.json(), p.signed) for p in posts] == [({"transition": {"id": "75"}}, True)]
    assert all(c.signed for c in jira.calls)
    assert group_status(res) == ("resolved", True)

    # Jira's webhook for the transition we made (sent after it): nothing changes or is written.
    delivery_id = post(res, status_payload(OPEN, RESOLVED, now_ms(), 1))
    wait_finished(res, [delivery_id])
    assert status_outcome(res, delivery_id)[2] == "echo"
    activity = [a for a in group_state(res).activity if a[0] in STATUS_ACTIVITY]
    assert activity == [(int(ActivityType.SET_RESOLVED), {})]

    assert main(["group", "unresolve", str(GROUP)]) == EXIT_OK
    moved_to(jira, REOPENED)
    assert group_status(res) == ("unresolved", False)

    # Already in the mapped status in Jira: looked at, not moved.
    jira.issue_statuses["APP-1"] = RESOLVED
    assert main(["group", "resolve", str(GROUP)]) == EXIT_OK
    wait_idle(servers.env["BROKER_URL"])
    assert len(jira.calls_to(TRANSITIONS, "POST")) == 2
    assert len(jira.calls_to("/rest/api/2/issue/APP-1", "GET")) >= 3
    # Resolving a resolved group: nothing to do.
    assert main(["group", "resolve", str(GROUP)]) == EXIT_OK
    assert main(["group", "resolve", "4242"]) == EXIT_NOT_FOUND


@pytest.fixture
def other_jira(jira: FakeJira, scene: Callable[[dict[str, Any]], None]) -> Iterator[FakeJira]:
    """A second Jira whose OPS-9 (Open) is linked to the group too; status sync on both ways
    on both instances."""
    other = FakeJiraServer().start()
    try:
        other.fake.add_consumer()
        other.fake.issue_statuses["OPS-9"] = OPEN
        data = status_scene(jira, reverse=True, forward=True)
        second = integration(
            OTHER, "ops.acme.test",
            [{"organization": "acme", "sync_status_reverse": True, "sync_status_forward": True}],
            base_url=other.fake.base_url,
        )  # fmt: skip
        second["access_token"], second["access_token_secret"] = other.fake.grant_access_token()
        data["integrations"].append(second)
        data["external_issues"].append(
            {"id": 8, "integration": OTHER, "organization": "acme", "key": "OPS-9",
             "groups": [GROUP]}
        )  # fmt: skip
        scene(data)
        yield other.fake
    finally:
        other.stop()


def map_other_status() -> None:
    assert main(["integration", "map-status", str(OTHER), "--organization", "acme",
                 "--jira-project", "OPS", "--resolved", "Closed",
                 "--unresolved", "Open"]) == EXIT_OK  # fmt: skip


def test_a_status_change_from_one_jira_moves_the_other_jiras_issue_not_its_own(
    res: Resources, jira: FakeJira, other_jira: FakeJira
) -> None:
    map_status()
    map_other_status()
    delivery_id = post(res, status_payload(OPEN, RESOLVED, TS, 1))
    wait_finished(res, [delivery_id])
    assert status_outcome(res, delivery_id)[2] == "resolved"
    wait_for(lambda: other_jira.issue_statuses["OPS-9"] == CLOSED, 20, "OPS-9 closed")
    # The source already is where the change came from: not asked, not moved.
    assert jira.calls_to("/rest/api/2/issue") == []
    assert jira.issue_statuses["APP-1"] == OPEN


def test_a_failed_move_replays_without_moving_the_instance_the_change_came_from(
    res: Resources, jira: FakeJira, other_jira: FakeJira
) -> None:
    map_status()  # the source's project is mapped; OPS is not: its move fails
    delivery_id = post(res, status_payload(OPEN, RESOLVED, TS, 1))
    wait_finished(res, [delivery_id])
    [record] = wait_for(lambda: failed_records(res, OUTBOUND_STATUS), 20, "the failure")
    assert record["kwargs"]["source_integration_id"] == 1  # kept with the item
    map_other_status()
    assert main(["failed", "replay", str(record["id"])]) == EXIT_OK
    wait_for(lambda: other_jira.issue_statuses["OPS-9"] == CLOSED, 20, "OPS-9 closed")
    assert jira.calls_to("/rest/api/2/issue") == []  # the source was never moved
    assert jira.issue_statuses["APP-1"] == OPEN


def test_no_mapping_and_no_transition_are_replayable_failures(
    res: Resources, scene: Callable[[dict[str, Any]], None], jira: FakeJira
) -> None:
    scene(status_scene(jira, reverse=False, forward=True))
    assert main(["group", "resolve", str(GROUP)]) == EXIT_OK
    records = wait_for(lambda: failed_records(res, OUTBOUND_STATUS), 20, "the failure record")
    assert (records[0]["error_type"], records[0]["kwargs"]["group_ids"]) == ("NotFound", [GROUP])
    assert "no status mapping for organization acme, Jira project APP" in records[0]["message"]
    assert jira.calls_to(TRANSITIONS, "POST") == []

    map_status()
    jira.unreachable_statuses.add(RESOLVED)  # the workflow has no way to Resolved from Open
    assert main(["failed", "replay", str(records[0]["id"])]) == EXIT_OK
    records = wait_for(
        lambda: [r for r in failed_records(res, OUTBOUND_STATUS) if r["error_type"] != "NotFound"],
        20,
        "the second failure record",
    )
    assert records[0]["error_type"] == "JiraRejected"
    assert "no transition of APP-1 leads to status 'Resolved'" in records[0]["message"]

    jira.unreachable_statuses.clear()
    assert main(["failed", "replay", str(records[0]["id"])]) == EXIT_OK
    moved_to(jira, RESOLVED)


def test_with_forward_status_sync_off_jira_is_not_called(
    res: Resources, scene: Callable[[dict[str, Any]], None], jira: FakeJira, servers: Servers
) -> None:
    scene(status_scene(jira, reverse=True, forward=False))
    map_status()
    assert main(["group", "resolve", str(GROUP)]) == EXIT_OK
    wait_idle(servers.env["BROKER_URL"])
    assert jira.calls == []
    assert failed_records(res, OUTBOUND_STATUS) == []
    assert group_status(res) == ("resolved", True)


# -- SPEC 12: echoes per push, local changes in the ordering, pending moves ------------------


def two_groups_on_app_1(jira: FakeJira) -> dict[str, Any]:
    """Groups 100 and 101 both linked to APP-1, status sync on both ways."""
    data = status_scene(jira, reverse=True, forward=True)
    data["groups"].append({"id": GROUP + 1, "project": PROJECT, "title": "Second"})
    data["external_issues"][0]["groups"] = [GROUP, GROUP + 1]
    return data


def markers(res: Resources) -> list[tuple[int, str]]:
    with transaction(res.pool) as conn:
        rows = conn.execute("SELECT group_id, status_id FROM status_push ORDER BY 1, 2")
        return [(int(r["group_id"]), str(r["status_id"])) for r in rows]


def pending_moves(res: Resources) -> list[int]:
    with transaction(res.pool) as conn:
        rows = conn.execute("SELECT group_id FROM status_move_pending ORDER BY 1")
        return [int(r["group_id"]) for r in rows]


def test_an_echo_is_one_groups_own_and_still_resolves_the_others(
    res: Resources, scene: Callable[[dict[str, Any]], None], jira: FakeJira
) -> None:
    scene(two_groups_on_app_1(jira))
    map_status()
    assert main(["group", "resolve", str(GROUP)]) == EXIT_OK
    moved_to(jira, RESOLVED)
    assert markers(res) == [(GROUP, RESOLVED)]
    # Jira's webhook for that transition: the echo of group 100's push; group 101 did not
    # push, and its issue was resolved: it follows.
    delivery_id = post(res, status_payload(OPEN, RESOLVED, now_ms(), 1))
    wait_finished(res, [delivery_id])
    assert group_status(res, GROUP + 1) == ("resolved", True)
    assert group_status(res, GROUP) == ("resolved", True)
    with transaction(res.pool) as conn:
        row = conn.execute(
            "SELECT status_detail FROM webhook_delivery WHERE id = %s", (delivery_id,)
        ).fetchone()
    assert row is not None
    assert row["status_detail"]["groups"] == {str(GROUP): "echo", str(GROUP + 1): "resolved"}
    assert markers(res) == []


def test_a_transition_that_fails_leaves_no_marker(
    res: Resources, scene: Callable[[dict[str, Any]], None], jira: FakeJira
) -> None:
    scene(status_scene(jira, reverse=True, forward=True))
    map_status()
    jira.refused_transitions.add(RESOLVED)  # listed, but Jira answers 400 when it is made
    assert main(["group", "resolve", str(GROUP)]) == EXIT_OK
    wait_for(lambda: failed_records(res, OUTBOUND_STATUS), 20, "the failed move")
    assert markers(res) == []
    # Jira's own later move to Resolved is a change, not an echo: nothing swallows it.
    assert main(["group", "unresolve", str(GROUP)]) == EXIT_OK
    delivery_id = post(res, status_payload(OPEN, RESOLVED, now_ms() + 1000, 2))
    wait_finished(res, [delivery_id])
    assert status_outcome(res, delivery_id)[2] == "resolved"


def test_resolve_then_unresolve_here_ends_as_jira_does(
    res: Resources, scene: Callable[[dict[str, Any]], None], jira: FakeJira
) -> None:
    scene(status_scene(jira, reverse=True, forward=True))
    map_status()
    assert main(["group", "resolve", str(GROUP)]) == EXIT_OK
    moved_to(jira, RESOLVED)
    assert main(["group", "unresolve", str(GROUP)]) == EXIT_OK
    moved_to(jira, REOPENED)
    # Both webhooks arrive after both moves, in Jira's order.
    first = post(res, status_payload(OPEN, RESOLVED, now_ms(), 1))
    second = post(res, status_payload(RESOLVED, REOPENED, now_ms() + 1, 2))
    wait_finished(res, [first, second])
    # Either order of processing: the older echo may find the newer one applied (stale).
    assert status_outcome(res, first)[2] in ("echo", "stale")
    assert status_outcome(res, second)[2] == "echo"
    assert group_status(res) == ("unresolved", False)
    assert jira.issue_statuses["APP-1"] == REOPENED


def test_an_older_jira_event_replayed_after_a_change_made_here_is_stale(
    res: Resources, scene: Callable[[dict[str, Any]], None], jira: FakeJira
) -> None:
    scene(status_scene(jira, reverse=True, forward=False))
    assert main(["group", "resolve", str(GROUP)]) == EXIT_OK
    # Jira's reopen from before that resolve (its webhook failed then, replayed now).
    delivery_id = post(res, status_payload(RESOLVED, REOPENED, now_ms() - 60_000, 1))
    wait_finished(res, [delivery_id])
    assert status_outcome(res, delivery_id)[2] == "stale"
    assert group_status(res) == ("resolved", True)


def test_a_move_left_unsent_is_sent_by_beat_and_resolve_sends_it_again(
    res: Resources,
    scene: Callable[[dict[str, Any]], None],
    jira: FakeJira,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tasks import pipeline
    from tasks.maintenance import stalled_after_s, sweep_deliveries

    scene(status_scene(jira, reverse=True, forward=True))
    map_status()

    def broker_down(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("the broker is down")

    monkeypatch.setattr(pipeline, "outbound_status", broker_down)
    assert main(["group", "resolve", str(GROUP)]) == EXIT_OK  # committed, the move unsent
    monkeypatch.undo()
    assert pending_moves(res) == [GROUP]
    with transaction(res.pool) as conn:
        conn.execute(
            "UPDATE status_move_pending SET requested_at = now() - make_interval(secs => %s)",
            (stalled_after_s(res.settings) + 1,),
        )
    sweep_deliveries.run()
    moved_to(jira, RESOLVED)
    wait_for(lambda: pending_moves(res) == [], 20, "the pending move to be done")
    # Someone moves the issue back in Jira; resolving the resolved group moves it again.
    jira.issue_statuses["APP-1"] = OPEN
    assert main(["group", "resolve", str(GROUP)]) == EXIT_OK
    moved_to(jira, RESOLVED)
