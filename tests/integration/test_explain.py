"""`jira-sync explain` (SPEC 16) answers "why was this resolved/assigned?" and "why did
nothing happen?" from the rows the pipeline wrote: a stale event, an echo, an unmapped user,
a failed outbound push and a reconcile feed, each in Jira order with the rule that decided it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import Servers, WorkerProcess, wait_for
from tests.fakejira import FakeJira
from tests.integration.conftest import Run
from tests.integration.inbound_support import (
    ANN,
    BOB,
    GROUP,
    JIRA_USERS,
    integration,
    jira_payload,
    outcome_of,
    post,
    wait_finished,
)
from tests.integration.status_support import (
    OPEN,
    RESOLVED,
    fake_jira_for_worker,
    status_payload,
    status_scene,
)
from worker.cli import main
from worker.cli.common import EXIT_NOT_FOUND, EXIT_OK
from worker.runtime.resources import Resources

OTHER = 2


@pytest.fixture
def jira(res: Resources, servers: Servers, module_worker: WorkerProcess) -> Iterator[FakeJira]:
    with fake_jira_for_worker(servers.env["BROKER_URL"]) as fake:
        fake.issue_statuses["APP-1"] = OPEN
        for uid in (ANN, BOB):
            u = JIRA_USERS[uid]
            fake.add_user(u["name"], u["emailAddress"], u["displayName"])
        yield fake


@pytest.fixture
def other(res: Resources, servers: Servers) -> Iterator[FakeJira]:
    with fake_jira_for_worker(servers.env["BROKER_URL"]) as fake:
        yield fake  # knows nobody: every push to it is refused


@pytest.fixture
def linked(
    scene: Callable[[dict[str, Any]], None], jira: FakeJira, other: FakeJira
) -> dict[str, Any]:
    """APP-1 (integration 1, status sync both ways) and OPS-9 (integration 2, forward
    assignee sync) linked to group 100."""
    data = status_scene(jira, reverse=True, forward=True)
    forward = [{"organization": "acme", "sync_forward_assignment": True}]
    second = integration(OTHER, "ops.acme.test", forward, base_url=other.base_url)
    second["access_token"], second["access_token_secret"] = other.grant_access_token()
    data["integrations"].append(second)
    data["external_issues"].append(
        {"id": 8, "integration": OTHER, "organization": "acme", "key": "OPS-9", "groups": [GROUP]}
    )
    scene(data)
    return data


def timeline(run: Run, *args: str) -> list[dict[str, Any]]:
    code, out, err = run("explain", *args, "--json")
    assert code == EXIT_OK, err
    entries: list[dict[str, Any]] = json.loads(out)["timeline"]
    return entries


def test_a_stale_event_and_a_failed_push_are_explained_in_jira_order(
    res: Resources, linked: dict[str, Any], run: Run
) -> None:
    newer = post(res, jira_payload(ANN, ts=2000, changelog_id=2))
    wait_finished(res, [newer])
    older = post(res, jira_payload(BOB, ts=1000, changelog_id=1))  # arrives late
    assert outcome_of(res, older) == "stale"
    # The push to OPS-9 is a side effect that runs after the delivery finished: wait for it.
    entries = wait_for(
        lambda: (
            (found := timeline(run, "issue", "APP-1"))
            and all(e["rule"] != "applied" for e in found)
            and found
        ),
        30,
        "the failed push recorded",
    )
    assert [(e["delivery_id"], e["rule"]) for e in entries] == [(older, "stale"), (newer, "failed")]
    stale, applied = entries
    assert "older (Jira time)" in stale["why"] and stale["groups"] == {str(GROUP): "stale"}
    assert stale["at"].startswith("1970-01-01T00:00:01")
    # Ann was applied here; OPS-9's Jira does not know her: the push failed, with its record.
    assert applied["groups"] == {str(GROUP): "assigned"}
    (push,) = applied["pushes"]
    assert (push["issue_key"], push["integration_id"], push["result"]) == ("OPS-9", OTHER, "failed")
    assert "no assignable Jira user" in push["jira_answer"]
    assert applied["failed_records"] and f"record {applied['failed_records'][0]}" in applied["why"]
    code, out, _ = run("explain", "group", str(GROUP))
    assert code == EXIT_OK and "stale" in out and "push to OPS-9" in out


def test_an_unmapped_user_is_named_by_identity(
    res: Resources, linked: dict[str, Any], run: Run
) -> None:
    hidden = {"accountId": "5b912e21", "displayName": "Ivan I."}
    delivery = post(res, jira_payload(hidden, ts=1000, changelog_id=1))
    assert outcome_of(res, delivery) == "user-not-found"
    (entry,) = timeline(run, "issue", "APP-1", "--integration", "1")
    assert entry["rule"] == "user-not-found"
    assert "Ivan I. (5b912e21)" in entry["why"] and "users unmapped" in entry["why"]


def test_an_echo_of_our_own_move_is_explained_after_the_change_made_here(
    res: Resources, linked: dict[str, Any], jira: FakeJira, run: Run
) -> None:
    assert main(["integration", "map-status", "1", "--organization", "acme",
                 "--jira-project", "APP", "--resolved", RESOLVED,
                 "--unresolved", "4"]) == EXIT_OK  # fmt: skip
    assert run("group", "resolve", str(GROUP))[0] == EXIT_OK
    wait_for(lambda: jira.issue_statuses["APP-1"] == RESOLVED, 20, "APP-1 resolved")
    echo = post(res, status_payload(OPEN, RESOLVED, int(time.time() * 1000), 1))
    wait_finished(res, [echo])
    entries = timeline(run, "group", str(GROUP))
    assert [(e["source"], e["rule"]) for e in entries] == [("here", "applied"), ("webhook", "echo")]
    assert entries[0]["what"] == "resolved here"
    assert entries[1]["what"] == f"status {OPEN} -> {RESOLVED}"
    assert "made itself" in entries[1]["why"]


def test_a_reconcile_feed_is_explained_as_such(
    res: Resources, linked: dict[str, Any], jira: FakeJira, run: Run
) -> None:
    jira.set_issue("APP-1", "ann", int(time.time() * 1000) - 600_000)  # its webhook was lost
    assert run("reconcile", "run", "--integration", "1", "--since", "1h")[0] == EXIT_OK
    (entry,) = wait_for(lambda: [e for e in timeline(run, "issue", "APP-1")
                                 if e["rule"] != "pending"], 30, "the feed applied")  # fmt: skip
    assert entry["source"] == "reconcile" and entry["what"].startswith("assignee -> Ann A.")


def test_unknown_subjects_are_named(res: Resources, linked: dict[str, Any], run: Run) -> None:
    code, _, err = run("explain", "issue", "NOPE-1")
    assert code == EXIT_NOT_FOUND and "no linked Jira issue NOPE-1" in err
    code, _, err = run("explain", "group", "999")
    assert code == EXIT_NOT_FOUND and "no such group: 999" in err
    code, out, _ = run("explain", "issue", "APP-1")
    assert code == EXIT_OK and "nothing has touched it yet" in out
