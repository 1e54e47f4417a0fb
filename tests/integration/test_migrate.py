"""Moving a project from Data Center to Cloud (SPEC 15) with a fake Data Center and a fake
Cloud (same keys, different ids): 1,000 linked issues move with one search per 100 keys,
missing ones stay and are listed, a second run finishes the job, a run killed midway and run
again ends as one clean run; afterwards a Data Center webhook for a moved issue changes nothing
(`migrated`), a Cloud one applies whatever the Data Center clock said, and another project on
Data Center still syncs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import WorkerProcess, wait_for
from tests.fakecloud import FakeCloud
from tests.fakejira import FakeJira
from tests.integration.conftest import Run
from tests.integration.inbound_support import (
    ANN,
    BOB,
    GROUP,
    JIRA,
    JIRA_USERS,
    PROJECT,
    base_scene,
    count,
    group_state,
    integration,
    jira_payload,
    outcome_of,
    post,
)
from worker.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from worker.runtime.resources import Resources
from worker.store.db import transaction

CLOUD = 2
ISSUES = 1_000
FIRST_GROUP = 10_000


def cloud_link(fake: FakeCloud) -> dict[str, Any]:
    data = integration(CLOUD, "acme.atlassian.net", [
        {"organization": "acme", "sync_reverse_assignment": True,
         "sync_forward_assignment": False}], base_url=fake.base_url)  # fmt: skip
    return fake.linked(data)


@pytest.fixture
def moving(
    scene: Callable[[dict[str, Any]], None], fake_jira: FakeJira, fake_cloud: FakeCloud
) -> dict[str, Any]:
    """MIG-1..MIG-1000 linked on Data Center (integration 1), each to a group of its own;
    APP-1 (another project) stays on Data Center. Cloud has MIG-1..MIG-998 (new ids)."""
    data = base_scene()
    data["integrations"][0]["base_url"] = fake_jira.base_url
    data["integrations"].append(cloud_link(fake_cloud))
    data["groups"] += [{"id": FIRST_GROUP + n, "project": PROJECT} for n in range(1, ISSUES + 1)]
    data["external_issues"] += [
        {"id": 100 + n, "integration": JIRA, "organization": "acme", "key": f"MIG-{n}",
         "groups": [FIRST_GROUP + n]}
        for n in range(1, ISSUES + 1)
    ]  # fmt: skip
    scene(data)
    for n in range(1, ISSUES - 1):
        fake_cloud.set_issue(f"MIG-{n}", None, fake_cloud.now_ms())
    return data


def on(res: Resources, integration_id: int) -> dict[str, tuple[int, str | None]]:
    """The MIG issues linked on an integration: key -> (external issue id, Jira issue id)."""
    with transaction(res.pool) as conn:
        rows = conn.execute(
            "SELECT id, key, jira_issue_id FROM external_issue"
            " WHERE integration_id = %s AND key LIKE 'MIG-%%'",
            (integration_id,),
        ).fetchall()
    return {str(r["key"]): (int(r["id"]), r["jira_issue_id"]) for r in rows}


def links(res: Resources) -> set[tuple[int, int]]:
    with transaction(res.pool) as conn:
        rows = conn.execute("SELECT group_id, external_issue_id FROM group_link").fetchall()
    return {(int(r["group_id"]), int(r["external_issue_id"])) for r in rows}


def migrate(run: Run, *extra: str) -> tuple[int, str, str]:
    return run("integration", "migrate", "--from", str(JIRA), "--to", str(CLOUD),
               "--project", "MIG", *extra)  # fmt: skip


def test_a_project_of_1000_issues_moves_and_missing_ones_wait_for_the_next_run(
    res: Resources, moving: dict[str, Any], fake_cloud: FakeCloud, run: Run
) -> None:
    before = links(res)
    code, out, _ = migrate(run, "--dry-run")
    assert code == EXIT_FAILED and "998 linked issue(s) would move" in out
    assert "2 not found on the Cloud site" in out and "MIG-999, MIG-1000" in out
    assert (
        len(on(res, JIRA)) == ISSUES and count(res, "SELECT count(*) FROM project_migration") == 0
    )

    fake_cloud.calls.clear()
    code, out, _ = migrate(run)
    assert code == EXIT_FAILED and "998 linked issue(s) moved" in out, out
    searches = fake_cloud.calls_to("/rest/api/3/search/jql")
    assert len(searches) == 10  # one per 100 keys: not a call per issue
    moved = on(res, CLOUD)
    assert len(moved) == 998 and set(on(res, JIRA)) == {"MIG-999", "MIG-1000"}
    assert all(jira_id == fake_cloud.issue_id(key) for key, (_, jira_id) in moved.items())
    assert links(res) == before  # groups, and each group's link row, kept as they were

    fake_cloud.set_issue("MIG-999", None, fake_cloud.now_ms())
    fake_cloud.set_issue("MIG-1000", None, fake_cloud.now_ms())
    code, out, _ = migrate(run)
    assert code == EXIT_OK and "2 linked issue(s) moved" in out
    assert len(on(res, CLOUD)) == ISSUES and on(res, JIRA) == {}
    assert links(res) == before
    code, out, _ = migrate(run)  # again: nothing left to move, nothing duplicated
    assert code == EXIT_OK and "0 linked issue(s) moved" in out
    code, out, _ = run("integration", "list", "--json")
    (source,) = [i for i in json.loads(out) if i["id"] == JIRA]
    assert source["moved_projects"] == [
        {"project": "MIG", "to": CLOUD, "moved": ISSUES, "missing": [], "finished": True}
    ]
    _, out, _ = run("status", "--json")
    (shown,) = [i for i in json.loads(out)["integrations"] if i["id"] == JIRA]
    assert shown["moved_projects"] == [
        {"project": "MIG", "to": CLOUD, "missing": 0, "finished": True}
    ]


def test_after_the_move_data_center_changes_nothing_cloud_applies_and_other_projects_sync(
    res: Resources, moving: dict[str, Any], fake_cloud: FakeCloud, run: Run,
    start_worker: Callable[..., WorkerProcess],
) -> None:  # fmt: skip
    start_worker(concurrency=2)
    group = FIRST_GROUP + 5
    # Before the move, Data Center's clock is far ahead of Cloud's.
    dc_event = jira_payload(ANN, ts=10_000_000, changelog_id=1, key="MIG-5")
    assert outcome_of(res, post(res, dc_event)) == "assigned"
    assert migrate(run)[0] == EXIT_FAILED  # two issues missing: the others moved
    late_dc = jira_payload(BOB, ts=20_000_000, changelog_id=2, key="MIG-5")
    assert outcome_of(res, post(res, late_dc)) == "migrated"
    assert group_state(res, group).assignee == ANN
    bob = {"accountId": "acc-bob", "emailAddress": JIRA_USERS[BOB]["emailAddress"],
           "displayName": "Bob B."}  # fmt: skip
    cloud_event = jira_payload(bob, ts=5_000, changelog_id=1, key="MIG-5")  # Cloud's clock
    assert outcome_of(res, post(res, cloud_event, integration_id=CLOUD)) == "assigned"
    assert group_state(res, group).assignee == BOB
    # A missing issue is still linked on Data Center and syncs there; so does APP-1.
    still = jira_payload(BOB, ts=30_000_000, changelog_id=3, key="MIG-999")
    assert outcome_of(res, post(res, still)) == "assigned"
    assert outcome_of(res, post(res, jira_payload(BOB, ts=1_000, changelog_id=4))) == "assigned"
    assert group_state(res, GROUP).assignee == BOB
    _, out, _ = run("explain", "issue", "MIG-5", "--json")
    rules = [(e["integration_id"], e["rule"]) for e in json.loads(out)["timeline"]]
    assert (JIRA, "migrated") in rules and (CLOUD, "applied") in rules


def test_a_run_killed_midway_and_run_again_ends_as_one_clean_run(
    res: Resources, moving: dict[str, Any], fake_cloud: FakeCloud, run: Run,
    settings_env: dict[str, str], tmp_path: Path,
) -> None:  # fmt: skip
    before = links(res)
    fake_cloud.delay_s = 0.3  # each search takes a while: the kill lands between pages
    cmd = [sys.executable, "-m", "worker.cli", "integration", "migrate", "--from", str(JIRA),
           "--to", str(CLOUD), "--project", "MIG"]  # fmt: skip
    log = (tmp_path / "migrate.log").open("wb")
    proc = subprocess.Popen(cmd, env=settings_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: len(on(res, CLOUD)) >= 200, 30, "a few pages moved")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert 200 <= len(on(res, CLOUD)) < 998, "killed midway"
    fake_cloud.delay_s = 0.0
    assert migrate(run)[0] == EXIT_FAILED  # the two missing issues
    moved = on(res, CLOUD)
    assert len(moved) == 998 and set(on(res, JIRA)) == {"MIG-999", "MIG-1000"}
    assert all(jira_id == fake_cloud.issue_id(key) for key, (_, jira_id) in moved.items())
    assert links(res) == before
    assert count(res, "SELECT count(*) FROM external_issue") == ISSUES + 1


def test_bad_migrations_are_refused_with_what_to_fix(
    res: Resources, moving: dict[str, Any], run: Run
) -> None:
    code, _, err = run("integration", "migrate", "--from", "1", "--to", "1", "--project", "MIG")
    assert code == EXIT_USAGE and "two integrations" in err
    code, _, err = run("integration", "migrate", "--from", "2", "--to", "1", "--project", "MIG")
    assert code == EXIT_USAGE and "not a Jira Cloud site" in err
    code, _, err = migrate(run, "--project", "mig-1")
    assert code == EXIT_USAGE and "project key" in err


def test_users_mapped_on_data_center_are_seeded_on_cloud_by_visible_email(
    res: Resources, moving: dict[str, Any], fake_cloud: FakeCloud, run: Run
) -> None:
    fake_cloud.add_account("acc-ann", JIRA_USERS[ANN]["emailAddress"], "Ann A.")
    fake_cloud.add_account("acc-bob", JIRA_USERS[BOB]["emailAddress"], "Bob B.", hidden=True)
    for jira_user, user in (("JIRAUSER10100", ANN), ("JIRAUSER10101", BOB)):
        assert run("users", "map", "--integration", str(JIRA), "--jira-user", jira_user,
                   "--user", str(user))[0] == EXIT_OK  # fmt: skip
    code, out, _ = run("users", "seed", "--from", str(JIRA), "--to", str(CLOUD), "--dry-run")
    assert code == EXIT_OK and "1 user(s) would be mapped" in out
    code, out, _ = run("users", "seed", "--from", str(JIRA), "--to", str(CLOUD))
    assert code == EXIT_OK and "1 user(s) mapped" in out
    assert f"show no e-mail on the Cloud site: {BOB}" in out and "users import" in out
    _, out, _ = run("users", "list", "--integration", str(CLOUD), "--json")
    assert [(m["jira_user"], m["user_id"], m["source"]) for m in json.loads(out)] == [
        ("acc-ann", ANN, "email")
    ]
