"""Jira Cloud (SPEC 13) against the fake Cloud site (tests/fakecloud.py): linking with an API
token, the signed admin webhook, the Cloud dialect for every call (REST v3, account ids, token
paging), and 429s that pause the site for every process."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.conftest import WorkerProcess, wait_for
from tests.fakecloud import ADMIN_EMAIL, FakeCloud
from tests.fakejira import FakeJira, rsa_keypair
from tests.integration.conftest import Run
from tests.integration.inbound_support import (
    ANN,
    BOB,
    GROUP,
    ISSUE_KEY,
    base_scene,
    count,
    finished,
    group_state,
    integration,
    jira_payload,
    outcome_of,
    post,
    wait_failed,
    wait_finished,
)
from tests.integration.status_support import (
    OPEN,
    REOPENED,
    RESOLVED,
    group_status,
    status_outcome,
    status_payload,
)
from worker.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from worker.jira import admin
from worker.receiver.app import create_app
from worker.runtime.resources import Resources
from worker.store.db import transaction

CLOUD = 2  # the Cloud site beside the Data Center instance (JIRA) in end-to-end scenes
ANN_ACCOUNT = "5b912e21fa38ae2c896099ae"
BOB_ACCOUNT = "557058:f58131cb-b67d-43c7-b30d-6b58d40bd077"


@pytest.fixture
def orgs(scene: Callable[[dict[str, Any]], None]) -> None:
    scene({"organizations": [{"slug": "acme", "name": "Acme"}]})


def token_file(tmp_path: Path, token: str) -> Path:
    path = tmp_path / "token"
    path.write_text(token + "\n")
    return path


def link(run: Run, fake: FakeCloud, tmp_path: Path, *extra: str) -> tuple[int, str, str]:
    token = token_file(tmp_path, fake.api_tokens[ADMIN_EMAIL])
    return run("integration", "link", "--base-url", fake.base_url, "--email", ADMIN_EMAIL,
               "--api-token-file", str(token), "--organization", "acme", *extra)  # fmt: skip


def test_a_cloud_site_links_with_an_api_token_and_one_signed_admin_webhook(
    res: Resources, orgs: None, fake_cloud: FakeCloud, run: Run, tmp_path: Path
) -> None:
    code, out, err = link(run, fake_cloud, tmp_path, "--api-token-expires", "2027-03-01")
    assert code == EXIT_OK, out + err
    assert "Cloud" in out and "webhook is registered" in out
    (hook,) = fake_cloud.webhooks
    assert hook["secret"] and hook["events"] == ["jira:issue_created", "jira:issue_updated"]
    (listed,) = admin.list_view(res)
    assert hook["url"] == admin.get_webhook_url(res, listed["id"])
    assert (listed["deployment_type"], listed["auth"], listed["account_email"]) == (
        "Cloud", "api_token", ADMIN_EMAIL
    )  # fmt: skip
    assert listed["token_expires_on"] == "2027-03-01" and listed["signed"]
    # Every call went with the token, none with OAuth; linking again keeps one webhook.
    assert fake_cloud.calls and all(c.signed for c in fake_cloud.calls)
    assert link(run, fake_cloud, tmp_path)[0] == EXIT_OK
    assert len(fake_cloud.webhooks) == 1
    code, out, _ = run("integration", "list")
    assert "API token" in out and "Cloud" in out


def test_oauth1_against_cloud_is_refused_with_what_to_use(
    res: Resources, orgs: None, fake_cloud: FakeCloud, run: Run, tmp_path: Path
) -> None:
    pem = tmp_path / "key.pem"
    pem.write_text(rsa_keypair().private_pem)
    code, _, err = run("integration", "link", "--base-url", fake_cloud.base_url,
                       "--consumer-key", "k", "--private-key-file", str(pem),
                       "--organization", "acme")  # fmt: skip
    assert code == EXIT_USAGE
    assert "does not accept OAuth 1.0a" in err and "--api-token-file" in err
    assert count(res, "SELECT count(*) FROM integration") == 0
    assert fake_cloud.calls_to("/plugins/servlet/oauth/") == []


def test_a_token_of_the_wrong_kind_is_refused_before_anything_is_stored(
    res: Resources, orgs: None, fake_cloud: FakeCloud, fake_jira: FakeJira, run: Run,
    tmp_path: Path,
) -> None:  # fmt: skip
    pat = token_file(tmp_path, "pat-" + "x" * 20)
    fake_jira.personal_tokens.add("pat-" + "x" * 20)
    code, _, err = run("integration", "link", "--base-url", fake_cloud.base_url,
                       "--personal-access-token-file", str(pat),
                       "--organization", "acme")  # fmt: skip
    assert code == EXIT_USAGE and "is Jira Cloud" in err and "--api-token-file" in err
    code, _, err = run("integration", "link", "--base-url", fake_jira.base_url, "--email",
                       "ann@acme.test", "--api-token-file", str(pat),
                       "--organization", "acme")  # fmt: skip
    assert code == EXIT_USAGE and "links Jira Cloud" in err and "--personal-access" in err
    assert count(res, "SELECT count(*) FROM integration") == 0
    code, _, err = run("integration", "link", "--base-url", fake_cloud.base_url,
                       "--email", ADMIN_EMAIL, "--organization", "acme")  # fmt: skip
    assert code == EXIT_USAGE and "--api-token-file" in err


def test_data_center_links_with_a_personal_access_token(
    res: Resources, orgs: None, fake_jira: FakeJira, run: Run, tmp_path: Path
) -> None:
    fake_jira.server_version = "10.3.1"
    fake_jira.personal_tokens.add("NjM0" + "p" * 40)
    pat = token_file(tmp_path, "NjM0" + "p" * 40)
    code, out, err = run("integration", "link", "--base-url", fake_jira.base_url,
                         "--personal-access-token-file", str(pat),
                         "--organization", "acme")  # fmt: skip
    assert code == EXIT_OK, out + err
    (listed,) = admin.list_view(res)
    assert (listed["auth"], listed["account_email"], listed["signed"]) == ("pat", None, True)
    (hook,) = fake_jira.webhooks
    assert hook["configuration"]["SECRET"]  # the Data Center 10 resource and field
    assert all(c.headers.get("Authorization", "").startswith("Bearer ") for c in fake_jira.calls)


def test_a_token_without_admin_rights_links_and_says_how_to_add_the_webhook(
    res: Resources, orgs: None, fake_cloud: FakeCloud, run: Run, tmp_path: Path
) -> None:
    fake_cloud.admins.clear()
    code, out, _ = link(run, fake_cloud, tmp_path)
    assert code == EXIT_FAILED
    assert "needs a Jira administrator" in out and "webhook-url" in out
    assert fake_cloud.webhooks == []
    assert count(res, "SELECT count(*) FROM integration") == 1


@pytest.fixture
def receiver(res: Resources) -> Iterator[TestClient]:
    with TestClient(create_app(res=res, configure_logs=False)) as client:
        yield client


def test_signed_cloud_bodies_are_accepted_and_tampered_or_unsigned_ones_refused(
    res: Resources, orgs: None, fake_cloud: FakeCloud, run: Run, tmp_path: Path,
    receiver: TestClient, jira_payloads: Path,
) -> None:  # fmt: skip
    assert link(run, fake_cloud, tmp_path)[0] == EXIT_OK
    real = (jira_payloads / "cloud_mm_assigned.json").read_bytes()
    (signed,) = fake_cloud.outgoing(real)
    path = signed.url.split("://", 1)[1].split("/", 1)[1]
    assert receiver.post("/" + path, content=real, headers=signed.headers).status_code == 202
    # Cloud retries a failed delivery as the same delivery: stored once.
    again = receiver.post("/" + path, content=real, headers=signed.headers)
    assert again.status_code == 200
    tampered = real.replace(b"TES-41", b"TES-42")
    assert receiver.post("/" + path, content=tampered, headers=signed.headers).status_code == 401
    unsigned = {k: v for k, v in signed.headers.items() if k != "X-Hub-Signature"}
    (other,) = fake_cloud.outgoing(real.replace(b"TES-41", b"TES-43"))
    unsigned["X-Atlassian-Webhook-Identifier"] = other.headers["X-Atlassian-Webhook-Identifier"]
    response = receiver.post("/" + path, content=tampered, headers=unsigned)
    assert response.status_code == 401 and response.json()["error"]
    assert count(res, "SELECT count(*) FROM webhook_delivery") == 1


# -- end to end: a Data Center instance and a Cloud site linked to the same group -------------


def cloud_integration(fake: FakeCloud) -> dict[str, Any]:
    data = integration(
        CLOUD,
        "acme.atlassian.net",
        [{"organization": "acme", "sync_reverse_assignment": True,
          "sync_forward_assignment": True, "sync_status_reverse": True,
          "sync_status_forward": True}],
        base_url=fake.base_url,
    )  # fmt: skip
    return fake.linked(data)


@pytest.fixture
def both(
    res: Resources,
    scene: Callable[[dict[str, Any]], None],
    start_worker: Callable[..., WorkerProcess],
    fake_cloud: FakeCloud,
    fake_jira: FakeJira,
    run: Run,
) -> dict[str, Any]:
    """APP-1 on the Data Center fake (integration 1) and CLD-7 on the Cloud fake (integration
    2) are linked to group 100; Ann is mapped on Cloud to her account id (her e-mail hidden),
    Bob's Cloud e-mail is visible."""
    fake_cloud.add_account(ANN_ACCOUNT, "ann@acme.test", "Ann A.", hidden=True)
    fake_cloud.add_account(BOB_ACCOUNT, "bob@acme.test", "Bob B.")
    fake_cloud.set_issue("CLD-7", None, fake_cloud.now_ms() - 3_600_000)
    fake_cloud.issue_statuses["CLD-7"] = OPEN
    fake_jira.add_consumer()
    data = base_scene()
    data["integrations"][0]["base_url"] = fake_jira.base_url
    token, secret = fake_jira.grant_access_token()
    data["integrations"][0]["access_token"], data["integrations"][0]["access_token_secret"] = (
        token, secret
    )  # fmt: skip
    data["integrations"][0]["organizations"][0]["sync_forward_assignment"] = True
    data["integrations"].append(cloud_integration(fake_cloud))
    data["external_issues"].append(
        {"id": 8, "integration": CLOUD, "organization": "acme", "key": "CLD-7", "groups": [GROUP]}
    )
    scene(data)
    assert run("users", "map", "--integration", str(CLOUD), "--jira-user", ANN_ACCOUNT,
               "--user", str(ANN))[0] == EXIT_OK  # fmt: skip
    # Steps retry for up to 30 s (the tests' default is 2 s): long enough to outlast the 10 s
    # storm below, as the default 120 s does in production.
    start_worker(concurrency=2, env={"RETRY_BUDGET_S": "30"})
    return data


def cloud_body(account: str | None, ts: int, changelog_id: int, key: str = "CLD-7") -> dict:
    """A Cloud `jira:issue_updated` body: the assignee by account id, e-mail hidden."""
    assignee = None if account is None else {"accountId": account, "displayName": "Someone",
                                             "accountType": "atlassian"}  # fmt: skip
    body = jira_payload(assignee, ts=ts, changelog_id=changelog_id, key=key)
    body["changelog"]["items"][0]["to"] = account
    return body


def test_a_cloud_assignment_applies_and_is_pushed_to_data_center(
    res: Resources, both: dict[str, Any], fake_jira: FakeJira
) -> None:
    fake_jira.add_user("ann", "Ann@Acme.test", "Ann A.")
    delivery = post(res, cloud_body(ANN_ACCOUNT, ts=1000, changelog_id=1), integration_id=CLOUD)
    assert outcome_of(res, delivery) == "assigned"
    assert group_state(res).assignee == ANN
    wait_for(lambda: fake_jira.assignees.get(ISSUE_KEY) == "ann", 15, "the push to Data Center")


def test_a_data_center_assignment_is_pushed_to_cloud_by_account_id(
    res: Resources, both: dict[str, Any], fake_cloud: FakeCloud
) -> None:
    assert outcome_of(res, post(res, jira_payload(ANN, ts=1000, changelog_id=1))) == "assigned"
    wait_for(lambda: fake_cloud.assignees.get("CLD-7") == ANN_ACCOUNT, 15, "the push to Cloud")
    (put,) = fake_cloud.calls_to("/rest/api/3/issue/CLD-7/assignee", "PUT")
    assert put.json() == {"accountId": ANN_ACCOUNT}
    # Bob is not mapped: his visible e-mail finds his account id through v3's search.
    assert outcome_of(res, post(res, jira_payload(BOB, ts=2000, changelog_id=2))) == "assigned"
    wait_for(lambda: fake_cloud.assignees.get("CLD-7") == BOB_ACCOUNT, 15, "Bob's push")
    search = fake_cloud.calls_to("/rest/api/3/user/assignable/search")[-1]
    assert search.query == {"issueKey": "CLD-7", "query": "bob@acme.test"}
    assert fake_cloud.calls_to("/rest/api/2/") == []


def test_reconciliation_on_cloud_pages_by_token(
    res: Resources, both: dict[str, Any], fake_cloud: FakeCloud, fake_jira: FakeJira, run: Run
) -> None:
    # The fed change is pushed to Data Center too: Ann exists there, so the delivery ends
    # `done` (without her the push fails and turns it `failed`, however fast that comes).
    fake_jira.add_user("ann", "Ann@Acme.test", "Ann A.")
    fake_cloud.search_page_cap = 2
    for n in range(5):  # issues not linked here, but on the same pages
        fake_cloud.set_issue(f"CLD-{100 + n}", BOB_ACCOUNT, fake_cloud.now_ms() - 600_000)
    fake_cloud.set_issue("CLD-7", ANN_ACCOUNT, fake_cloud.now_ms() - 300_000)  # webhook lost
    code, out, _ = run("reconcile", "run", "--integration", str(CLOUD), "--since", "2h")
    assert code == EXIT_OK and "1 change(s) fed" in out, out
    searches = fake_cloud.calls_to("/rest/api/3/search/jql")
    assert len(searches) == 3 and "nextPageToken" not in searches[0].query
    assert all("nextPageToken" in s.query for s in searches[1:])
    assert fake_cloud.calls_to("/rest/api/2/search") == []
    with transaction(res.pool) as conn:
        (fed,) = conn.execute(
            "SELECT id FROM webhook_delivery WHERE source = 'reconcile'"
        ).fetchall()
    assert outcome_of(res, fed["id"]) == "assigned"
    assert group_state(res).assignee == ANN


def test_a_429_storm_fails_nothing_and_no_process_calls_before_retry_after(
    res: Resources, both: dict[str, Any], fake_cloud: FakeCloud, run: Run
) -> None:
    fake_cloud.set_issue("CLD-7", ANN_ACCOUNT, fake_cloud.now_ms() - 300_000)
    fake_cloud.throttle(10, retry_after_s=2)
    # A sweep (from this process) and outbound pushes (from the worker) meet the storm.
    code, out, err = run("reconcile", "run", "--integration", str(CLOUD), "--since", "2h")
    assert code != EXIT_OK and "429" in err + out
    for n, user in enumerate((BOB, ANN)):
        delivery = post(res, jira_payload(user, ts=1000 + n, changelog_id=n + 1))
        assert outcome_of(res, delivery, timeout_s=60) == "assigned"
    wait_for(lambda: fake_cloud.assignees.get("CLD-7") == ANN_ACCOUNT, 60, "the pushes land")
    wait_for(lambda: time_passed(fake_cloud), 15, "the storm to end")
    code, out, err = run("reconcile", "run", "--integration", str(CLOUD), "--since", "2h")
    assert code == EXIT_OK, out + err
    assert count(res, "SELECT count(*) FROM failed_task") == 0
    refused = [c for c in fake_cloud.calls if c.status == 429]
    assert refused, "the storm was met"
    for answer in refused:
        later = [c.at - answer.at for c in fake_cloud.calls if c.at > answer.at + 0.3]
        assert not [gap for gap in later if gap < 2 - 0.05], "a call came before Retry-After"


def time_passed(fake: FakeCloud) -> bool:
    return time.monotonic() > fake.throttle_until


def test_status_shows_a_throttled_site(
    res: Resources, both: dict[str, Any], fake_cloud: FakeCloud, run: Run
) -> None:
    fake_cloud.throttle(30, retry_after_s=20)
    run("reconcile", "run", "--integration", str(CLOUD), "--since", "1h")
    _, out, _ = run("status", "--json")
    cloud = next(i for i in json.loads(out)["integrations"] if i["id"] == CLOUD)
    assert cloud["throttled_s"] is not None and 0 < cloud["throttled_s"] <= 20
    assert any("asked every process to wait (429)" in w for w in json.loads(out)["warnings"])


def test_status_syncs_both_ways_on_cloud(
    res: Resources, both: dict[str, Any], fake_cloud: FakeCloud, run: Run
) -> None:
    resolved = post(res, status_payload(OPEN, RESOLVED, 1000, 1, key="CLD-7"), CLOUD)
    wait_finished(res, [resolved])
    assert status_outcome(res, resolved)[2] == "resolved"
    assert group_status(res) == ("resolved", True)
    assert fake_cloud.calls_to("/rest/api/3/status")  # its categories, read in v3
    assert run("integration", "map-status", str(CLOUD), "--organization", "acme",
               "--jira-project", "CLD", "--resolved", RESOLVED,
               "--unresolved", REOPENED)[0] == EXIT_OK  # fmt: skip
    assert run("group", "unresolve", str(GROUP))[0] == EXIT_OK
    wait_for(lambda: fake_cloud.issue_statuses["CLD-7"] == REOPENED, 20, "CLD-7 reopened")
    (moved,) = fake_cloud.calls_to("/rest/api/3/issue/CLD-7/transitions", "POST")
    assert moved.signed and moved.json() == {"transition": {"id": f"7{REOPENED}"}}
    assert fake_cloud.calls_to("/rest/api/2/") == []


def test_a_push_cloud_refused_is_recorded_and_replays_once_fixed(
    res: Resources, both: dict[str, Any], fake_cloud: FakeCloud, run: Run
) -> None:
    # Ann is mapped to an account the site does not have (yet): Cloud answers 400.
    fake_cloud.users = [u for u in fake_cloud.users if u.name != ANN_ACCOUNT]
    delivery = post(res, jira_payload(ANN, ts=1000, changelog_id=1))
    done = wait_failed(res, delivery)  # one of its pushes was refused
    assert (done.status, done.outcome) == ("failed", "assigned")
    _, out, _ = run("failed", "list", "--json")
    (record,) = json.loads(out)["records"]
    assert "outbound_sync" in json.dumps(record) and "CLD-7" in json.dumps(record)
    fake_cloud.add_account(ANN_ACCOUNT, "ann@acme.test", "Ann A.", hidden=True)
    assert run("failed", "replay", "--all")[0] == EXIT_OK
    wait_for(lambda: fake_cloud.assignees.get("CLD-7") == ANN_ACCOUNT, 30, "the replayed push")
    wait_for(lambda: finished(res, [delivery])[delivery].status == "done", 30, "the delivery")
    assert len(fake_cloud.calls_to("/rest/api/3/issue/CLD-7/assignee", "PUT")) == 2
