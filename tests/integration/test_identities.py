"""Identity without e-mail (SPEC 14) end to end: real PostgreSQL, Redis and worker processes.
A Jira user is mapped by its identity (Cloud account id, Server user key); a verified e-mail
fills the map in; one that matches nobody is listed as unmapped and counted by `status`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import WorkerProcess, wait_for
from tests.fakejira import FakeJira
from tests.integration.conftest import Run
from tests.integration.inbound_support import (
    ANN,
    BOB,
    GROUP,
    ISSUE_KEY,
    JIRA,
    base_scene,
    count,
    group_state,
    integration,
    jira_payload,
    outcome_of,
    post,
)
from worker.cli.common import EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE
from worker.receiver.metrics import StoreGauges
from worker.runtime.resources import Resources
from worker.store.db import transaction

OTHER = 2
ACCOUNT = "5b912e21fa38ae2c896099ae"  # the assignee of the real Cloud body, e-mail hidden


@pytest.fixture
def acme(
    scene: Callable[[dict[str, Any]], None], start_worker: Callable[..., WorkerProcess]
) -> dict[str, Any]:
    data = base_scene()
    scene(data)
    start_worker(concurrency=2)
    return data


def cloud_body(jira_payloads: Path, ts: int, changelog_id: int) -> dict[str, Any]:
    """The real Cloud body whose assignee shows only an account id, on our linked issue. Its
    source project rewrote `timestamp` as a string (SOURCES.md); Cloud sends epoch ms."""
    body = json.loads((jira_payloads / "cloud_mobitel_assigned_no_email.json").read_text())
    body["timestamp"], body["changelog"]["id"] = ts, str(changelog_id)
    body["issue"]["key"] = ISSUE_KEY
    assert "emailAddress" not in body["issue"]["fields"]["assignee"]
    return body


def mapping(res: Resources, jira_user: str, integration_id: int = JIRA) -> tuple[int, str] | None:
    with transaction(res.pool) as conn:
        row = conn.execute(
            "SELECT user_id, source FROM jira_user_map WHERE integration_id = %s"
            " AND jira_user = %s",
            (integration_id, jira_user),
        ).fetchone()
    return (int(row["user_id"]), str(row["source"])) if row else None


def unmapped_gauge(res: Resources) -> dict[str, float]:
    """What /metrics reports as jira_sync_unmapped_jira_users, per integration label."""
    gauges = StoreGauges(res)
    gauges.refresh()
    [family] = [f for f in gauges.collect() if f.name == "jira_sync_unmapped_jira_users"]
    return {s.labels["integration"]: s.value for s in family.samples}


def test_a_cloud_assignee_without_email_is_unmapped_then_assigns_once_mapped(
    res: Resources, acme: dict[str, Any], jira_payloads: Path, run: Run
) -> None:
    first = post(res, cloud_body(jira_payloads, ts=1000, changelog_id=1))
    assert outcome_of(res, first) == "user-not-found"
    assert group_state(res).assignee is None

    code, out, _ = run("users", "unmapped", "--json")
    assert code == EXIT_OK
    [seen] = json.loads(out)
    assert (seen["integration_id"], seen["jira_user"]) == (JIRA, ACCOUNT)
    assert (seen["display_name"], seen["deliveries"]) == ("Иванов Иван Иванович", 1)
    code, out, _ = run("status", "--json")
    [linked] = json.loads(out)["integrations"]
    assert linked["unmapped_users"] == 1
    assert any("1 Jira user(s)" in w for w in json.loads(out)["warnings"])
    assert unmapped_gauge(res) == {"1": 1.0}

    code, out, _ = run("users", "map", "--integration", str(JIRA), "--jira-user", ACCOUNT,
                       "--user", "bob@acme.test")  # fmt: skip
    assert code == EXIT_OK, out
    second = post(res, cloud_body(jira_payloads, ts=2000, changelog_id=2))
    assert outcome_of(res, second) == "assigned"
    assert group_state(res).assignee == BOB
    assert json.loads(run("users", "unmapped", "--json")[1]) == []
    code, out, _ = run("status", "--json")
    assert json.loads(out)["integrations"][0]["unmapped_users"] == 0
    assert unmapped_gauge(res) == {}


def test_a_server_user_whose_email_differs_assigns_through_the_map(
    res: Resources, acme: dict[str, Any], run: Run, tmp_path: Path
) -> None:
    elsewhere = {"key": "JIRAUSER10100", "name": "ann.a", "emailAddress": "ann@home.test",
                 "displayName": "Ann A."}  # fmt: skip
    assert outcome_of(res, post(res, jira_payload(elsewhere, ts=1000, changelog_id=1))) == (
        "user-not-found"
    )
    csv = tmp_path / "users.csv"
    csv.write_text(f"display,jira_user,user\nAnn A.,JIRAUSER10100,{ANN}\nBob,bob,bob@acme.test\n")
    code, out, _ = run("users", "import", "--integration", str(JIRA), str(csv))
    assert code == EXIT_OK and "2 mapping(s) stored" in out
    assert outcome_of(res, post(res, jira_payload(elsewhere, ts=2000, changelog_id=2))) == (
        "assigned"
    )
    assert group_state(res).assignee == ANN
    code, out, _ = run("users", "list", "--integration", str(JIRA), "--json")
    assert [(m["jira_user"], m["user_id"], m["source"]) for m in json.loads(out)] == [
        ("JIRAUSER10100", ANN, "import"),
        ("bob", BOB, "import"),
    ]


def test_a_verified_email_match_fills_the_map_for_bodies_without_email(
    res: Resources, acme: dict[str, Any]
) -> None:
    with_email = {"key": "ann", "name": "ann", "emailAddress": "Ann@Acme.test"}
    assert outcome_of(res, post(res, jira_payload(with_email, ts=1000, changelog_id=1))) == (
        "assigned"
    )
    assert mapping(res, "ann") == (ANN, "email")
    assert outcome_of(res, post(res, jira_payload(None, ts=2000, changelog_id=2))) == ("unassigned")
    hidden = {"key": "ann", "name": "ann", "displayName": "Ann A."}
    assert outcome_of(res, post(res, jira_payload(hidden, ts=3000, changelog_id=3))) == ("assigned")
    assert group_state(res).assignee == ANN


def test_the_map_is_consulted_before_the_email(
    res: Resources, acme: dict[str, Any], run: Run
) -> None:
    assert run("users", "map", "--integration", str(JIRA), "--jira-user", "ann",
               "--user", str(BOB))[0] == EXIT_OK  # fmt: skip
    body = jira_payload({"key": "ann", "name": "ann", "emailAddress": "Ann@Acme.test"}, 1000, 1)
    assert outcome_of(res, post(res, body)) == "assigned"
    assert group_state(res).assignee == BOB
    assert mapping(res, "ann") == (BOB, "operator")  # the e-mail match did not replace it


def test_an_import_with_a_bad_row_stores_nothing_and_names_the_line(
    res: Resources, acme: dict[str, Any], run: Run, tmp_path: Path
) -> None:
    csv = tmp_path / "users.csv"
    csv.write_text("jira_user,user\nann,Ann@Acme.test\nzed,zed@nowhere.test\n")
    code, _, err = run("users", "import", "--integration", str(JIRA), str(csv))
    assert code == EXIT_USAGE
    assert "line 3" in err and "zed@nowhere.test" in err
    csv.write_text("jira_user,user\nann,Ann@Acme.test\n")
    code, out, _ = run("users", "import", "--integration", str(JIRA), str(csv), "--dry-run")
    assert code == EXIT_OK and "nothing stored" in out
    assert count(res, "SELECT count(*) FROM jira_user_map") == 0
    code, _, err = run("users", "import", "--integration", "99", str(csv))
    assert code == EXIT_NOT_FOUND and "no such integration: 99" in err
    csv.write_text("account,who\nann,Ann@Acme.test\n")
    code, _, err = run("users", "import", "--integration", str(JIRA), str(csv))
    assert code == EXIT_USAGE and "line 1" in err and "jira_user" in err


def test_unmap_forgets_and_an_unknown_one_is_named(
    res: Resources, acme: dict[str, Any], run: Run
) -> None:
    assert run("users", "map", "--integration", str(JIRA), "--jira-user", "ann",
               "--user", str(ANN))[0] == EXIT_OK  # fmt: skip
    assert run("users", "unmap", "--integration", str(JIRA), "--jira-user", "ann")[0] == EXIT_OK
    assert mapping(res, "ann") is None
    code, _, err = run("users", "unmap", "--integration", str(JIRA), "--jira-user", "ann")
    assert code == EXIT_NOT_FOUND and "'ann' is not mapped" in err
    code, _, err = run("users", "map", "--integration", str(JIRA), "--jira-user", "x",
                       "--user", "nobody")  # fmt: skip
    assert code == EXIT_USAGE and "neither a user id nor an e-mail" in err


def test_outbound_names_the_mapped_jira_user_without_an_email_search(
    res: Resources,
    scene: Callable[[dict[str, Any]], None],
    start_worker: Callable[..., WorkerProcess],
    fake_jira: FakeJira,
    run: Run,
) -> None:
    # On the other Jira Ann is a renamed user: key JIRAUSER10200, name "ann.smith", and her
    # e-mail there is not the one she verified here.
    fake_jira.add_user("ann.smith", "asmith@corp.test", "Ann Smith", key="JIRAUSER10200")
    data = base_scene()
    linked = integration(OTHER, "ops.acme.test", [
        {"organization": "acme", "sync_reverse_assignment": True,
         "sync_forward_assignment": True}], base_url=fake_jira.base_url)  # fmt: skip
    linked["access_token"], linked["access_token_secret"] = fake_jira.grant_access_token()
    data["integrations"].append(linked)
    data["external_issues"].append(
        {"id": 8, "integration": OTHER, "organization": "acme", "key": "OPS-9", "groups": [GROUP]}
    )
    scene(data)
    start_worker(concurrency=2)
    assert run("users", "map", "--integration", str(OTHER), "--jira-user", "JIRAUSER10200",
               "--user", str(ANN))[0] == EXIT_OK  # fmt: skip
    assert outcome_of(res, post(res, jira_payload(ANN, ts=1000, changelog_id=1))) == "assigned"
    wait_for(lambda: fake_jira.assignees.get("OPS-9") == "ann.smith", 15, "the push to OPS-9")
    assert fake_jira.calls_to("/rest/api/2/user/assignable/search") == []
    [lookup] = fake_jira.calls_to("/rest/api/2/user")
    assert lookup.query == {"key": "JIRAUSER10200"}
