"""The inbound pipeline end to end (SPEC 4): real PostgreSQL, Redis and worker processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from tasks.pipeline import ASSIGN, CHECK_CHANGELOG, SYNC
from tests.conftest import Servers, WorkerProcess, wait_for
from tests.integration.inbound_support import (
    ANN,
    BOB,
    CY,
    DEE,
    EVE,
    FAY,
    GROUP,
    ISSUE_KEY,
    JIRA,
    JIRA_USERS,
    PROJECT,
    base_scene,
    count,
    declare_queues,
    enqueue,
    group_state,
    jira_payload,
    outcome_of,
    post,
    store,
    wait_idle,
)
from worker import cache
from worker.domain import tokens
from worker.domain.model import ActivityType, HistoryStatus, SubscriptionReason
from worker.jira.linking import WEBHOOK_PREFIX
from worker.receiver.app import create_app
from worker.runtime.app import app
from worker.runtime.resources import Resources
from worker.services import groups
from worker.store.db import transaction

pytestmark = pytest.mark.broker  # run again on RabbitMQ: tests/amqp_leg.py

ASSIGNED = int(SubscriptionReason.ASSIGNED)
COMMENT = int(SubscriptionReason.COMMENT)


@pytest.fixture
def worker(
    res: Resources, servers: Servers, module_worker: WorkerProcess
) -> Iterator[WorkerProcess]:
    declare_queues()
    yield module_worker
    wait_idle(servers.env["BROKER_URL"])


@pytest.fixture
def acme(scene: Callable[[dict[str, Any]], None], worker: WorkerProcess) -> dict[str, Any]:
    data = base_scene()
    scene(data)
    return data


def test_assign_sets_assignee_subscription_activity_and_history(
    res: Resources, acme: dict[str, Any]
) -> None:
    assert outcome_of(res, post(res, jira_payload(ANN, ts=1000, changelog_id=1))) == "assigned"
    state = group_state(res)
    assert state.assignee == ANN
    assert state.subscriptions == {f"user:{ANN}": ASSIGNED}
    assert state.activity == [
        (
            int(ActivityType.ASSIGNED),
            {
                "assignee": str(ANN),
                "assigneeEmail": "Ann@Acme.test",
                "assigneeType": "user",
                "integration": "jira_server",
            },
        )
    ]
    assert state.history == [int(HistoryStatus.ASSIGNED)]


def test_reassign_moves_assigned_subscription_to_new_user(
    res: Resources, acme: dict[str, Any]
) -> None:
    outcome_of(res, post(res, jira_payload(ANN, ts=1000, changelog_id=1)))
    assert outcome_of(res, post(res, jira_payload(BOB, ts=2000, changelog_id=2))) == "assigned"
    state = group_state(res)
    assert state.assignee == BOB
    assert state.subscriptions == {f"user:{BOB}": ASSIGNED}
    assert [a[0] for a in state.activity] == [int(ActivityType.ASSIGNED)] * 2


def test_reassign_within_team_keeps_previous_users_comment_subscription(
    res: Resources, scene: Callable[[dict[str, Any]], None], worker: WorkerProcess
) -> None:
    data = base_scene()
    data["assignees"] = [{"group": GROUP, "user": ANN}]
    data["subscriptions"] = [{"group": GROUP, "user": BOB, "reason": "comment"}]
    scene(data)
    outcome_of(res, post(res, jira_payload(BOB, ts=1000, changelog_id=1)))
    assert outcome_of(res, post(res, jira_payload(CY, ts=2000, changelog_id=2))) == "assigned"
    state = group_state(res)
    assert state.assignee == CY
    assert state.subscriptions == {f"user:{BOB}": COMMENT, f"user:{CY}": ASSIGNED}


def test_unassign_removes_assignee_and_assigned_subscription(
    res: Resources, acme: dict[str, Any]
) -> None:
    outcome_of(res, post(res, jira_payload(ANN, ts=1000, changelog_id=1)))
    assert outcome_of(res, post(res, jira_payload(None, ts=2000, changelog_id=2))) == "unassigned"
    state = group_state(res)
    assert state.assignee is None
    assert state.subscriptions == {}
    assert state.activity[-1] == (int(ActivityType.UNASSIGNED), {})
    assert state.history == [int(HistoryStatus.ASSIGNED), int(HistoryStatus.UNASSIGNED)]


def test_unassign_when_already_unassigned_changes_nothing(
    res: Resources, acme: dict[str, Any]
) -> None:
    assert outcome_of(res, post(res, jira_payload(None, ts=1000, changelog_id=1))) == "unchanged"
    state = group_state(res)
    assert (state.assignee, state.activity, state.history) == (None, [], [])


def test_assignee_without_email_or_identity_is_recorded_and_changes_nothing(
    res: Resources, acme: dict[str, Any]
) -> None:
    faceless = {"displayName": "Ann A."}
    delivery = post(res, jira_payload(faceless, ts=1000, changelog_id=1))
    assert outcome_of(res, delivery) == "missing-assignee-email"
    assert group_state(res).assignee is None


def test_unmapped_assignee_without_email_is_user_not_found(
    res: Resources, acme: dict[str, Any]
) -> None:
    hidden = {"name": "ann", "displayName": "Ann A."}
    delivery = post(res, jira_payload(hidden, ts=1000, changelog_id=1))
    assert outcome_of(res, delivery) == "user-not-found"
    assert group_state(res).assignee is None


@pytest.mark.parametrize(
    "user", [DEE, EVE, FAY], ids=["unverified-email", "inactive-user", "not-on-project-team"]
)
def test_user_who_may_not_be_assigned_is_user_not_found(
    res: Resources, acme: dict[str, Any], user: int
) -> None:
    delivery = post(res, jira_payload(user, ts=1000, changelog_id=1))
    assert outcome_of(res, delivery) == "user-not-found"
    state = group_state(res)
    assert (state.assignee, state.subscriptions, state.activity) == (None, {}, [])


def test_unknown_email_is_user_not_found(res: Resources, acme: dict[str, Any]) -> None:
    stranger = {"name": "zed", "emailAddress": "zed@elsewhere.test", "displayName": "Zed"}
    assert outcome_of(res, post(res, jira_payload(stranger, ts=1, changelog_id=1))) == (
        "user-not-found"
    )


def test_email_matches_case_insensitively(res: Resources, acme: dict[str, Any]) -> None:
    shouting = {**JIRA_USERS[BOB], "emailAddress": "BOB@ACME.TEST"}
    assert outcome_of(res, post(res, jira_payload(shouting, ts=1000, changelog_id=1))) == (
        "assigned"
    )
    assert group_state(res).assignee == BOB


def test_changelog_without_assignee_is_no_assignee_change(
    res: Resources, acme: dict[str, Any]
) -> None:
    status_item = {"field": "status", "fieldtype": "jira", "from": "1", "to": "3"}
    body = jira_payload(ANN, ts=1000, changelog_id=1, items=[status_item])
    assert outcome_of(res, post(res, body)) == "no-assignee-change"
    assert group_state(res).assignee is None


def test_issue_linked_to_no_group_is_no_affected_groups(
    res: Resources, acme: dict[str, Any]
) -> None:
    body = jira_payload(ANN, ts=1000, changelog_id=1, key="APP-404")
    assert outcome_of(res, post(res, body)) == "no-affected-groups"


def test_older_event_after_newer_is_stale_and_changes_nothing(
    res: Resources, acme: dict[str, Any]
) -> None:
    outcome_of(res, post(res, jira_payload(BOB, ts=2000, changelog_id=2)))
    assert outcome_of(res, post(res, jira_payload(ANN, ts=1000, changelog_id=1))) == "stale"
    state = group_state(res)
    assert state.assignee == BOB
    assert len(state.activity) == 1


def test_user_not_found_does_not_make_an_older_event_stale(
    res: Resources, acme: dict[str, Any]
) -> None:
    # In timestamp order: t=1000 assigns Ann, t=2000 names nobody we know (left out for the
    # group, SPEC 8). Arriving newest first, the end state is the same: Ann.
    stranger = {"name": "zed", "emailAddress": "zed@elsewhere.test", "displayName": "Zed"}
    newer = post(res, jira_payload(stranger, ts=2000, changelog_id=2))
    assert outcome_of(res, newer) == "user-not-found"
    assert outcome_of(res, post(res, jira_payload(ANN, ts=1000, changelog_id=1))) == "assigned"
    assert group_state(res).assignee == ANN


def test_one_issue_linked_to_several_groups_assigns_each(
    res: Resources, scene: Callable[[dict[str, Any]], None], worker: WorkerProcess
) -> None:
    data = base_scene()
    data["groups"] += [{"id": 101, "project": PROJECT}, {"id": 102, "project": PROJECT}]
    data["external_issues"][0]["groups"] = [GROUP, 101, 102]
    scene(data)
    delivery = post(res, jira_payload(ANN, ts=1000, changelog_id=1))
    assert outcome_of(res, delivery) == "assigned"
    assert [group_state(res, g).assignee for g in (GROUP, 101, 102)] == [ANN, ANN, ANN]
    assert count(res, "SELECT count(*) FROM activity WHERE delivery_id = %s", delivery) == 3


def test_organization_with_reverse_sync_off_is_left_alone(
    res: Resources, scene: Callable[[dict[str, Any]], None], worker: WorkerProcess
) -> None:
    data = base_scene()
    data["organizations"].append({"slug": "beta", "issue_sync_enabled": True})
    data["teams"].append(
        {"id": 3, "organization": "beta", "slug": "ops", "members": [{"user": ANN}]}
    )
    data["projects"].append({"id": 20, "organization": "beta", "slug": "ops", "name": "Ops",
                             "teams": [3]})  # fmt: skip
    data["groups"].append({"id": 200, "project": 20})
    data["integrations"][0]["organizations"].append(
        {"organization": "beta", "sync_reverse_assignment": False}
    )
    data["external_issues"].append(
        {"id": 8, "integration": JIRA, "organization": "beta", "key": ISSUE_KEY, "groups": [200]}
    )
    scene(data)
    assert outcome_of(res, post(res, jira_payload(ANN, ts=1000, changelog_id=1))) == "assigned"
    assert group_state(res, GROUP).assignee == ANN
    assert group_state(res, 200).assignee is None


def test_read_path_sees_the_assignment_once_the_cache_is_purged(
    res: Resources, acme: dict[str, Any]
) -> None:
    assert groups.assignee_exists(res, GROUP) is False  # fills "no assignee" for 60 s
    outcome_of(res, post(res, jira_payload(ANN, ts=1000, changelog_id=1)))
    wait_for(lambda: cache.cached_assignee_exists(res.redis, GROUP) is None, 10, "the cache purge")
    assert groups.assignee_exists(res, GROUP) is True
    assert res.redis.ttl(cache.assignee_exists_key(GROUP)) > cache.ASSIGNEE_MISSING_TTL_S


def test_unassign_purges_owners_debounce_cache(res: Resources, acme: dict[str, Any]) -> None:
    outcome_of(res, post(res, jira_payload(ANN, ts=1000, changelog_id=1)))
    res.redis.set(cache.owners_debounce_key(GROUP), "1", ex=cache.OWNERS_DEBOUNCE_TTL_S)
    outcome_of(res, post(res, jira_payload(None, ts=2000, changelog_id=2)))
    wait_for(lambda: not res.redis.exists(cache.owners_debounce_key(GROUP)), 10, "owners purge")


def test_same_delivery_processed_twice_changes_nothing_more(
    res: Resources, acme: dict[str, Any]
) -> None:
    delivery = post(res, jira_payload(ANN, ts=1000, changelog_id=1))
    outcome_of(res, delivery)
    for step in (CHECK_CHANGELOG, SYNC):
        app.send_task(step, kwargs={"delivery_ids": [delivery]})
    app.send_task(ASSIGN, kwargs={"changes": [[delivery, GROUP]]})
    # A message of the single-item form sent before batching means the same.
    app.send_task(ASSIGN, kwargs={"delivery_id": delivery, "group_id": GROUP})
    with transaction(res.pool) as conn:  # a replay of a done delivery re-runs every step
        conn.execute("UPDATE webhook_delivery SET status = 'queued' WHERE id = %s", (delivery,))
    enqueue(res, [delivery])
    assert outcome_of(res, delivery) == "assigned"
    wait_idle(res.settings.broker_url)  # every re-sent step ran
    assert len(group_state(res).activity) == 1
    assert len(group_state(res).history) == 1


def test_duplicate_webhook_is_stored_once(res: Resources, acme: dict[str, Any]) -> None:
    body = jira_payload(ANN, ts=1000, changelog_id=1)
    outcome_of(res, post(res, body))
    assert store(res, body) is None


def test_webhook_posted_to_the_receiver_is_assigned(res: Resources, acme: dict[str, Any]) -> None:
    integration = acme["integrations"][0]
    token = tokens.issue(integration["external_id"], integration["webhook_secret"])
    with TestClient(create_app(res=res, configure_logs=False)) as client:
        answer = client.post(
            f"{WEBHOOK_PREFIX}{token}/", json=jira_payload(ANN, ts=1000, changelog_id=1)
        )
        assert answer.status_code == 202, answer.text
        assert outcome_of(res, int(answer.json()["delivery"])) == "assigned"
    assert group_state(res).assignee == ANN
