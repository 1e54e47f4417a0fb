"""Reconciliation (SPEC 9) against the fake Jira's search: a change whose webhook never
arrived is fed through the pipeline as a `reconcile` delivery; one already delivered, or made
by our own outbound push, feeds nothing; ordering against real webhooks holds; a crash between
pages and a Jira outage lose nothing and move the watermark only over whole windows."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from tasks.maintenance import RECONCILE
from tests.conftest import Servers, WorkerProcess, wait_for
from tests.fakejira import FakeJira, FakeJiraServer
from tests.integration.failure_support import failed_records
from tests.integration.inbound_support import (
    ANN,
    BOB,
    GROUP,
    JIRA,
    JIRA_USERS,
    PROJECT,
    base_scene,
    declare_queues,
    enqueue,
    group_state,
    integration,
    jira_payload,
    outcome_of,
    post,
    wait_finished,
    wait_idle,
)
from tests.integration.status_support import OPEN, REOPENED, RESOLVED, group_status, status_payload
from worker.cli import main
from worker.cli.common import EXIT_NOT_FOUND, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from worker.jira import reconcile as sweeps
from worker.runtime.app import app
from worker.runtime.resources import Resources
from worker.store.db import transaction

OTHER = 2
SETTLE_S = 60  # RECONCILE_SETTLE_S's default


@pytest.fixture(scope="module")
def jira_server() -> Iterator[FakeJira]:
    server = FakeJiraServer().start()
    try:
        yield server.fake
    finally:
        server.stop()


@pytest.fixture
def jira(
    res: Resources,
    servers: Servers,
    module_worker: WorkerProcess,
    jira_server: FakeJira,
    scene: Callable[[dict[str, Any]], None],
) -> Iterator[FakeJira]:
    """The fake Jira, reset, holding Ann and Bob; APP-1..APP-3 linked to groups 100..102
    on integration 1, which points at it."""
    fake = jira_server
    fake.consumers.clear()
    fake.add_consumer()
    fake.users.clear()
    for uid in (ANN, BOB):
        u = JIRA_USERS[uid]
        fake.add_user(u["name"], u["emailAddress"], u["displayName"])
    fake.issues.clear()
    fake.calls.clear()
    fake.fail_status, fake.search_page_cap = None, 1000
    fake.clock_offset_ms, fake.on_search = 0, None
    fake.issue_statuses.clear()
    fake.overrides.clear()
    data = base_scene()
    data["integrations"] = [linked(fake, JIRA, "jira.acme.test")]
    for n in (1, 2):
        data["groups"].append({"id": GROUP + n, "project": PROJECT, "title": f"Error {n}"})
        data["external_issues"].append(
            {"id": 7 + n, "integration": JIRA, "organization": "acme", "key": f"APP-{n + 1}",
             "groups": [GROUP + n]}
        )  # fmt: skip
    scene(data)
    declare_queues()
    yield fake
    wait_idle(servers.env["BROKER_URL"])


def linked(fake: FakeJira, integration_id: int, host: str) -> dict[str, Any]:
    data = integration(
        integration_id,
        host,
        [{"organization": "acme", "sync_reverse_assignment": True,
          "sync_forward_assignment": True}],
        base_url=fake.base_url,
    )  # fmt: skip
    data["access_token"], data["access_token_secret"] = fake.grant_access_token()
    return data


def now_ms(ago_s: float = 0) -> int:
    """A moment `ago_s` before the newest a sweep reads now: Jira's clock (the fake's is ours)
    less the settle margin."""
    return int((time.time() - SETTLE_S - ago_s) * 1000)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["reconcile", *args])
    out, err = capsys.readouterr()
    return code, out, err


def fed(res: Resources) -> list[dict[str, Any]]:
    with transaction(res.pool) as conn:
        return conn.execute(
            "SELECT id, issue_key, event_ts, body FROM webhook_delivery "
            "WHERE source = 'reconcile' ORDER BY id"
        ).fetchall()


def status(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    code, out, _ = run(capsys, "status", "--json")
    assert code == EXIT_OK
    [view] = [v for v in json.loads(out) if v["integration"] == JIRA]
    return view


def test_a_missed_assign_is_fed_and_applied_once(
    res: Resources, jira: FakeJira, capsys: pytest.CaptureFixture[str]
) -> None:
    jira.set_issue("APP-1", "ann", now_ms(10))
    jira.set_issue("APP-2", "bob", now_ms(86_400))  # before the first window: not read
    jira.set_issue("NOPE-1", "bob", now_ms(5))  # not linked to any group
    code, out, _ = run(capsys, "run", "--dry-run")
    assert code == EXIT_OK and "1 change(s) would feed" in out and "APP-1" in out
    assert fed(res) == []
    code, out, _ = run(capsys, "run")
    assert code == EXIT_OK and "1 linked issue(s) checked, 1 change(s) fed" in out
    [delivery] = fed(res)
    assert (
        delivery["issue_key"] == "APP-1" and delivery["event_ts"] == jira.issues["APP-1"].updated_ms
    )
    assert outcome_of(res, delivery["id"]) == "assigned"
    assert group_state(res, GROUP).assignee == ANN
    searches = jira.calls_to("/rest/api/2/search")
    assert searches and all(c.signed for c in searches)
    assert searches[0].query["fields"] == "assignee,updated,status"
    # The next sweep re-reads the overlap: the change is known now, nothing is fed.
    code, out, _ = run(capsys, "run")
    assert "0 change(s) fed" in out and len(fed(res)) == 1
    view = status(capsys)
    assert view["enabled"] and view["watermark"] and view["last_error"] is None
    assert view["issues_checked"] == 1 and view["changes_found"] == 0


def test_a_missed_unassign_is_fed_and_applied(
    res: Resources, jira: FakeJira, capsys: pytest.CaptureFixture[str]
) -> None:
    assert outcome_of(res, post(res, jira_payload(ANN, ts=now_ms(60), changelog_id=1))) == (
        "assigned"
    )
    jira.set_issue("APP-1", None, now_ms(10))  # its webhook never arrived
    assert run(capsys, "run")[0] == EXIT_OK
    [delivery] = fed(res)
    assert outcome_of(res, delivery["id"]) == "unassigned"
    assert group_state(res, GROUP).assignee is None


def test_a_change_the_webhook_delivered_feeds_nothing(
    res: Resources, jira: FakeJira, capsys: pytest.CaptureFixture[str]
) -> None:
    jira.set_issue("APP-1", "ann", now_ms(10))
    webhook = jira_payload(ANN, ts=jira.issues["APP-1"].updated_ms + 3, changelog_id=1)
    assert outcome_of(res, post(res, webhook)) == "assigned"
    code, out, _ = run(capsys, "run")
    assert code == EXIT_OK and "1 linked issue(s) checked, 0 change(s) fed" in out
    assert fed(res) == []


def test_an_older_webhook_arriving_after_the_reconcile_event_is_stale(
    res: Resources, jira: FakeJira, capsys: pytest.CaptureFixture[str]
) -> None:
    jira.set_issue("APP-1", "bob", now_ms(10))
    run(capsys, "run")
    [delivery] = fed(res)
    assert outcome_of(res, delivery["id"]) == "assigned"
    late = post(res, jira_payload(ANN, ts=now_ms(30), changelog_id=7))
    assert outcome_of(res, late) == "stale"
    assert group_state(res, GROUP).assignee == BOB


def test_a_crash_between_pages_rereads_the_window_and_feeds_each_issue_once(
    res: Resources, jira: FakeJira, capsys: pytest.CaptureFixture[str]
) -> None:
    for n, name in enumerate(("ann", "bob", "ann")):
        jira.set_issue(f"APP-{n + 1}", name, now_ms(30 - n))
    jira.search_page_cap = 2  # three pages of two, then one

    class Crash(Exception):
        pass

    def crash(ids: list[int]) -> None:
        raise Crash  # the process dies once the first page is committed

    with pytest.raises(Crash):
        sweeps.sweep(res, JIRA, crash)
    assert [d["issue_key"] for d in fed(res)] == ["APP-1", "APP-2"]  # durable, not yet sent
    assert status(capsys)["watermark"] is None
    code, out, _ = run(capsys, "run")
    assert code == EXIT_OK and "3 linked issue(s) checked, 1 change(s) fed" in out
    deliveries = fed(res)
    assert [d["issue_key"] for d in deliveries] == ["APP-1", "APP-2", "APP-3"]
    enqueue(res, [d["id"] for d in deliveries[:2]])  # as beat's sweep of unqueued ones does
    done = wait_finished(res, [d["id"] for d in deliveries])
    assert {f.outcome for f in done.values()} == {"assigned"}
    assert [group_state(res, GROUP + n).assignee for n in range(3)] == [ANN, BOB, ANN]
    assert status(capsys)["watermark"] is not None


def test_jira_down_then_back(
    res: Resources, jira: FakeJira, capsys: pytest.CaptureFixture[str]
) -> None:
    jira.set_issue("APP-1", "ann", now_ms(10))
    jira.fail_status = 503
    code, _, err = run(capsys, "run")
    assert code == EXIT_UNAVAILABLE and "integration 1 (jira.acme.test:" in err and "503" in err
    view = status(capsys)
    assert "Jira unavailable, tried again at the next run" in view["last_error"]
    assert view["watermark"] is None and fed(res) == []
    jira.fail_status = None
    assert run(capsys, "run")[0] == EXIT_OK
    [delivery] = fed(res)
    assert outcome_of(res, delivery["id"]) == "assigned"
    view = status(capsys)
    assert view["last_error"] is None and view["watermark"] is not None


def test_beat_sweeps_each_due_integration_that_has_it_on(
    res: Resources, jira: FakeJira, capsys: pytest.CaptureFixture[str]
) -> None:
    jira.set_issue("APP-1", "ann", now_ms(10))
    assert main(["integration", "configure", str(JIRA), "--reconcile", "off"]) == EXIT_OK
    assert "reconciliation off" in capsys.readouterr().out
    app.send_task("jira_sync.maintenance.reconcile_due")
    wait_idle(res.settings.broker_url)
    assert jira.calls_to("/rest/api/2/search") == [] and not status(capsys)["enabled"]
    main(["integration", "configure", str(JIRA), "--reconcile", "on", "--reconcile-interval", "60"])
    assert "reconciliation on, every 60 s" in capsys.readouterr().out
    app.send_task("jira_sync.maintenance.reconcile_due")
    wait_for(lambda: fed(res), 15, "the due sweep to feed APP-1")
    assert outcome_of(res, fed(res)[0]["id"]) == "assigned"
    assert status(capsys)["interval_s"] == 60


def test_a_refusing_jira_is_a_failure_record_naming_the_integration(
    res: Resources, jira: FakeJira, capsys: pytest.CaptureFixture[str]
) -> None:
    jira.overrides["/rest/api/2/search"] = (401, "oauth_problem=token_rejected", "text/plain")
    app.send_task(RECONCILE, kwargs={"integration_id": JIRA})
    [record] = wait_for(lambda: failed_records(res), 15, "the failure record")
    assert record["task_name"] == RECONCILE and record["kwargs"] == {"integration_id": JIRA}
    assert "integration 1 (jira.acme.test:" in record["message"] and "401" in record["message"]
    assert "Jira refused" in status(capsys)["last_error"]


def test_our_own_outbound_push_is_not_fed_back(
    res: Resources,
    jira: FakeJira,
    scene: Callable[[dict[str, Any]], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = base_scene()
    data["integrations"].append(linked(jira, OTHER, "ops.acme.test"))
    data["integrations"][0] = linked(jira, JIRA, "jira.acme.test")
    data["external_issues"].append(
        {"id": 20, "integration": OTHER, "organization": "acme", "key": "OPS-9", "groups": [GROUP]}
    )
    scene(data)
    jira.set_issue("OPS-9", None, now_ms(120))
    jira.set_issue("APP-1", "ann", now_ms(10))
    outcome_of(res, post(res, jira_payload(ANN, ts=now_ms(9), changelog_id=1)))
    wait_for(lambda: jira.issues["OPS-9"].assignee == "ann", 15, "the push to OPS-9")
    code, out, _ = run(capsys, "run", "--since", "10m")
    assert code == EXIT_OK and out.count("0 change(s) fed") == 2, out


def test_a_window_matching_too_many_issues_is_narrowed_and_read_whole(
    res: Resources, jira: FakeJira, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(3):  # four minutes apart
        jira.set_issue(f"APP-{n + 1}", "bob", now_ms(720 - 240 * n))
    monkeypatch.setattr(res, "settings", replace(res.settings, reconcile_window_max_results=1))
    result = sweeps.sweep(res, JIRA, lambda ids: enqueue(res, ids), since_ms=now_ms(900))
    assert [f.issue_key for f in result.fed] == ["APP-1", "APP-2", "APP-3"]
    assert result.requests > 3  # narrowed windows, each searched again
    jql = [c.query["jql"] for c in jira.calls_to("/rest/api/2/search")]
    assert len(set(jql)) > 3
    wait_finished(res, [f.delivery_id for f in result.fed if f.delivery_id])
    assert [group_state(res, GROUP + n).assignee for n in range(3)] == [BOB, BOB, BOB]
    with transaction(res.pool) as conn:
        row = conn.execute("SELECT watermark_ms FROM reconcile_state").fetchone()
    assert row is not None and row["watermark_ms"] == result.end_ms


@pytest.mark.parametrize(
    ("argv", "code", "names"),
    [
        (["integration", "configure", "1"], EXIT_USAGE, "nothing to configure"),
        (["integration", "configure", "1", "--reverse-assignment", "on"], EXIT_USAGE,
         "--organization"),
        (["integration", "configure", "1", "--reconcile-interval", "5"], EXIT_USAGE, "at least 10"),
        (["integration", "configure", "9", "--reconcile", "on"], EXIT_NOT_FOUND, "integration: 9"),
        (["reconcile", "run", "--integration", "9"], EXIT_NOT_FOUND, "integration: 9"),
        (["reconcile", "run", "--since", "2999-01-01T00:00:00Z"], EXIT_USAGE, "in the future"),
    ],
)  # fmt: skip
def test_bad_reconcile_arguments_name_what_to_fix(
    res: Resources,
    scene: Callable[[dict[str, Any]], None],
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    code: int,
    names: str,
) -> None:
    scene(base_scene())
    assert main(argv) == code
    assert names in capsys.readouterr().err


def test_a_disabled_integration_is_never_swept(
    res: Resources, jira: FakeJira, capsys: pytest.CaptureFixture[str]
) -> None:
    jira.set_issue("APP-1", "ann", now_ms(10))
    assert main(["integration", "disable", str(JIRA)]) == EXIT_OK
    code, out, _ = run(capsys, "run", "--integration", str(JIRA))
    assert code == EXIT_OK and "Nothing to do" in out
    assert sweeps.sweep(res, JIRA, lambda ids: None).requests == 0  # e.g. a replayed sweep
    assert jira.calls_to("/rest/api/2/search") == [] and fed(res) == []
    assert not status(capsys)["enabled"]


# -- SPEC 12: keyset pages, Jira's clock, --since, unusable issues, stale feeds ------------


def many_linked(scene: Callable[[dict[str, Any]], None], jira: FakeJira, count: int) -> list[str]:
    """APP-1..APP-count linked to groups of their own on integration 1."""
    data = base_scene()
    data["integrations"] = [linked(jira, JIRA, "jira.acme.test")]
    data["groups"] = [
        {"id": GROUP + n, "project": PROJECT, "title": f"Error {n}"} for n in range(count)
    ]
    data["external_issues"] = [
        {"id": 7 + n, "integration": JIRA, "organization": "acme", "key": f"APP-{n + 1}",
         "groups": [GROUP + n]}
        for n in range(count)
    ]  # fmt: skip
    scene(data)
    return [f"APP-{n + 1}" for n in range(count)]


def test_issues_edited_while_a_sweep_pages_are_neither_skipped_nor_read_twice(
    res: Resources, jira: FakeJira, scene: Callable[[dict[str, Any]], None]
) -> None:
    keys = many_linked(scene, jira, 400)
    for n, key in enumerate(keys):  # a second apart, oldest first
        jira.set_issue(key, "bob", now_ms(1000 - n * 2))
    jira.search_page_cap = 50
    searches = 0

    def someone_edits_an_issue_already_read(fake: FakeJira) -> None:
        nonlocal searches
        searches += 1
        if searches > 2:  # after serverInfo's window, the first page was read
            oldest = min(fake.issues.values(), key=lambda i: i.updated_ms)
            fake.set_issue(oldest.key, "ann")  # updated now: it leaves the window

    jira.on_search = someone_edits_an_issue_already_read
    result = sweeps.sweep(res, JIRA, lambda ids: None, since_ms=now_ms(1200), dry_run=True)
    read = [f.issue_key for f in result.fed]
    assert sorted(read) == sorted(keys)  # every issue once: none skipped, none twice
    assert searches > 8


def test_a_window_ends_at_jiras_clock_not_ours(
    res: Resources, jira: FakeJira, capsys: pytest.CaptureFixture[str]
) -> None:
    jira.clock_offset_ms = -300_000  # Jira's clock five minutes behind ours
    assert run(capsys, "run")[0] == EXIT_OK and fed(res) == []
    # Changed in Jira after that sweep, stamped by Jira's clock (settled by the next sweep).
    jira.set_issue("APP-1", "ann", jira.now_ms() - (SETTLE_S + 5) * 1000)
    code, out, _ = run(capsys, "run")
    assert code == EXIT_OK and "1 change(s) fed" in out, out
    [delivery] = fed(res)
    assert outcome_of(res, delivery["id"]) == "assigned"


def test_since_never_moves_the_watermark_past_time_it_did_not_read(
    res: Resources, jira: FakeJira, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "run")[0] == EXIT_OK
    backlog_from = status(capsys)["watermark"]
    code, _, _ = run(capsys, "run", "--since", "1m")  # starts after the watermark
    assert code == EXIT_OK
    assert status(capsys)["watermark"] == backlog_from
    code, _, _ = run(capsys, "run", "--since", "2h")  # covers it: the watermark moves
    assert code == EXIT_OK
    assert status(capsys)["watermark"] > backlog_from


def test_an_issue_hiding_its_assignee_stops_no_sweep(
    res: Resources, jira: FakeJira, capsys: pytest.CaptureFixture[str]
) -> None:
    jira.set_issue("NOPE-1", "bob", now_ms(12))  # not linked: never read further than its key
    jira.set_issue("APP-2", "bob", now_ms(11))  # linked, but its project hides the field
    jira.set_issue("APP-1", "ann", now_ms(10))
    for key in ("NOPE-1", "APP-2"):
        jira.issues[key] = replace(jira.issues[key], hidden=frozenset({"assignee"}))
    code, out, _ = run(capsys, "run")
    assert code == EXIT_OK and "1 change(s) fed" in out, out
    [delivery] = fed(res)
    assert delivery["issue_key"] == "APP-1"
    view = status(capsys)
    assert view["last_error"] is None
    assert [u["key"] for u in view["unusable"]] == ["APP-2"]
    assert "assignee" in view["unusable"][0]["reason"]


def test_a_state_whose_feed_ended_stale_is_fed_again_by_a_later_sweep(
    res: Resources, jira: FakeJira, capsys: pytest.CaptureFixture[str]
) -> None:
    # Jira stamped Bob's assignment earlier than the webhook of Ann's, which it made first
    # (the nodes of a cluster whose clocks differ): Bob's feed is stale against Ann's event.
    jira.set_issue("APP-1", "bob", now_ms(30))
    webhook = jira_payload(ANN, ts=now_ms(25), changelog_id=1)
    assert outcome_of(res, post(res, webhook)) == "assigned"
    assert run(capsys, "run")[0] == EXIT_OK
    [first] = fed(res)
    assert outcome_of(res, first["id"]) == "stale"
    assert run(capsys, "run")[0] == EXIT_OK
    first_again, again = fed(res)
    assert first_again["id"] == first["id"]
    assert outcome_of(res, again["id"]) == "assigned"
    assert group_state(res, GROUP).assignee == BOB


def status_sync_on(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["integration", "configure", str(JIRA), "--organization", "acme",
                 "--reverse-status", "on"]) == EXIT_OK  # fmt: skip
    capsys.readouterr()


def test_a_lost_move_to_done_is_reconciled_and_resolves_the_group(
    res: Resources, jira: FakeJira, capsys: pytest.CaptureFixture[str]
) -> None:
    status_sync_on(capsys)
    jira.set_issue("APP-1", None, now_ms(20))
    jira.set_status("APP-1", RESOLVED, now_ms(10))  # its webhook never arrived
    assert run(capsys, "run")[0] == EXIT_OK
    [delivery] = fed(res)
    wait_finished(res, [delivery["id"]])
    assert group_status(res, GROUP) == ("resolved", True)
    # Known now: the next sweep feeds nothing.
    code, out, _ = run(capsys, "run")
    assert code == EXIT_OK and "0 change(s) fed" in out, out


def test_a_lost_reopen_is_reconciled_and_unresolves_the_group(
    res: Resources, jira: FakeJira, capsys: pytest.CaptureFixture[str]
) -> None:
    status_sync_on(capsys)
    resolved = post(res, status_payload(OPEN, RESOLVED, now_ms(60), 1))
    wait_finished(res, [resolved])
    assert group_status(res, GROUP) == ("resolved", True)
    jira.set_issue("APP-1", None, now_ms(60))
    jira.set_status("APP-1", REOPENED, now_ms(10))  # reopened; that webhook was lost
    assert run(capsys, "run")[0] == EXIT_OK
    [delivery] = fed(res)
    items = json.loads(delivery["body"])["changelog"]["items"]
    assert {"field": "status", "fieldtype": "jira", "from": RESOLVED, "to": REOPENED} in items
    wait_finished(res, [delivery["id"]])
    assert group_status(res, GROUP) == ("unresolved", False)


def test_mapping_an_unmatched_identity_lets_the_next_sweep_bring_its_issue_into_line(
    res: Resources, jira: FakeJira, capsys: pytest.CaptureFixture[str]
) -> None:
    # Ann is JIRAUSER10300 on this Jira, her profile hides her e-mail: nothing matches her.
    jira.add_user("ann.h", None, "Ann H.", key="JIRAUSER10300")
    jira.set_issue("APP-1", "ann.h", now_ms(10))
    hidden = {"key": "JIRAUSER10300", "name": "ann.h", "displayName": "Ann H."}
    webhook = jira_payload(hidden, ts=jira.issues["APP-1"].updated_ms, changelog_id=1)
    assert outcome_of(res, post(res, webhook)) == "user-not-found"
    code, out, _ = run(capsys, "run")
    assert code == EXIT_OK and "0 change(s) fed" in out  # Jira agrees with what was seen
    assert main(["users", "map", "--integration", str(JIRA), "--jira-user", "JIRAUSER10300",
                 "--user", str(ANN)]) == EXIT_OK  # fmt: skip
    capsys.readouterr()
    code, out, _ = run(capsys, "run", "--since", "2h")
    assert code == EXIT_OK and "1 change(s) fed" in out, out
    [delivery] = fed(res)
    assert outcome_of(res, delivery["id"]) == "assigned"
    assert group_state(res, GROUP).assignee == ANN
