"""Jira Cloud's second and third ways to link (SPEC 13) against the fake Cloud site and its
fake Atlassian OAuth 2.0 server (tests/fakecloud.py): an OAuth 2.0 (3LO) app (consent, the
callback or the CLI, rotating refresh tokens, calls through the gateway, a JWT-signed
dynamic webhook that beat refreshes) and a service account's scoped token."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from starlette.testclient import TestClient

from tasks.maintenance import refresh_dynamic_webhooks
from tests.conftest import WorkerProcess, wait_for
from tests.fakecloud import FakeCloud
from tests.fakejira import FakeJira, rsa_keypair
from tests.integration.conftest import Run
from tests.integration.inbound_support import (
    ANN,
    BOB,
    GROUP,
    base_scene,
    count,
    group_state,
    integration,
    jira_payload,
    outcome_of,
    post,
)
from worker.cli.common import EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE
from worker.domain.errors import JiraRejected
from worker.jira import admin, oauth2
from worker.jira.api import client_for_integration
from worker.receiver import metrics
from worker.receiver.app import create_app
from worker.runtime.app import app as celery_app
from worker.runtime.resources import Resources
from worker.store.db import transaction

CLOUD = 2
ANN_ACCOUNT = "5b912e21fa38ae2c896099ae"
BOB_ACCOUNT = "557058:f58131cb-b67d-43c7-b30d-6b58d40bd077"
CLIENT_ID = "jira-sync-app"
JQL = "project = CLD"


@pytest.fixture
def atlassian(
    res: Resources, fake_cloud: FakeCloud, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    """Atlassian's auth server and gateway are the fake's, for this process and its workers
    (plain HTTP: oauthlib wants HTTPS unless told)."""
    env = {
        "ATLASSIAN_AUTH_URL": fake_cloud.base_url,
        "ATLASSIAN_API_URL": fake_cloud.base_url,
        "OAUTHLIB_INSECURE_TRANSPORT": "1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    before = res.settings
    res.settings = dataclasses.replace(
        before, atlassian_auth_url=fake_cloud.base_url, atlassian_api_url=fake_cloud.base_url
    )
    yield env
    res.settings = before


@pytest.fixture
def orgs(scene: Callable[[dict[str, Any]], None]) -> None:
    scene({"organizations": [{"slug": "acme", "name": "Acme"}]})


@pytest.fixture
def receiver(res: Resources) -> Iterator[TestClient]:
    with TestClient(create_app(res=res, configure_logs=False)) as client:
        yield client


def start_link(run: Run, fake: FakeCloud, tmp_path: Path, *extra: str) -> str:
    """`integration link --oauth2-client-id ...`: the consent URL it prints."""
    secret = tmp_path / "client-secret"
    secret.write_text(fake.oauth_apps[CLIENT_ID] + "\n")
    code, out, err = run("integration", "link", "--base-url", fake.base_url,
                         "--oauth2-client-id", CLIENT_ID, "--oauth2-client-secret-file",
                         str(secret), "--webhook-jql", JQL, "--organization", "acme",
                         *extra)  # fmt: skip
    assert code == EXIT_OK, out + err
    (url,) = [line for line in out.splitlines() if line.startswith(fake.base_url + "/authorize")]
    return url


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def linked_by_consent(
    run: Run, fake: FakeCloud, tmp_path: Path, receiver: TestClient
) -> dict[str, Any]:
    callback = fake.consent(start_link(run, fake, tmp_path))
    page = receiver.get(path_of(callback))
    assert page.status_code == 200 and "Jira Cloud linked" in page.text, page.text
    assert "dynamic webhook is registered" in page.text
    listed = json.loads(run("integration", "list", "--json")[1])
    return next(i for i in listed if i["auth"] == "oauth2")  # type: ignore[no-any-return]


def test_an_oauth2_link_completes_through_the_callback_with_a_dynamic_webhook(
    res: Resources, orgs: None, fake_cloud: FakeCloud, atlassian: dict[str, str], run: Run,
    tmp_path: Path, receiver: TestClient,
) -> None:  # fmt: skip
    fake_cloud.add_oauth_app(CLIENT_ID)
    url = start_link(run, fake_cloud, tmp_path)
    query = parse_qs(urlsplit(url).query)
    assert "offline_access" in query["scope"][0].split() and query["prompt"] == ["consent"]
    assert count(res, "SELECT count(*) FROM integration") == 0  # nothing before the consent
    callback = fake_cloud.consent(url)
    page = receiver.get(path_of(callback))
    assert page.status_code == 200, page.text
    (listed,) = admin.list_view(res)
    assert (listed["auth"], listed["deployment_type"]) == ("oauth2", "Cloud")
    assert listed["token_expires_on"] and listed["dynamic_webhook_expires_at"]
    (hook,) = fake_cloud.dynamic_webhooks
    assert hook["jqlFilter"] == JQL and hook["events"] == ["jira:issue_updated"]
    assert hook["url"] == admin.get_webhook_url(res, listed["id"])
    assert fake_cloud.webhooks == []  # no admin webhook: the app's own dynamic one
    gateway = f"/ex/jira/{fake_cloud.cloud_id}/"
    assert fake_cloud.calls_to(gateway + "rest/api/3/webhook", "POST")
    # Every REST call with the token went through the gateway, never to the site.
    direct = [c for c in fake_cloud.calls if c.path.startswith("/rest/") and c.headers.get(
        "Authorization")]  # fmt: skip
    assert direct == []
    # The consent is spent: the same callback again finds nothing to complete.
    again = receiver.get(path_of(callback))
    assert again.status_code == 400 and "no pending OAuth 2.0 link" in again.text
    _, out, _ = run("integration", "list")
    assert "OAuth 2.0" in out and "dynamic webhook until" in out
    scraped = metrics.scrape(metrics.StoreGauges(res)).decode()
    gauge = "jira_sync_dynamic_webhook_expiry_timestamp_seconds"
    assert f'{gauge}{{integration="{listed["id"]}"}}' in scraped


def test_the_cli_completes_an_oauth2_link_when_the_callback_cannot_be_reached(
    res: Resources, orgs: None, fake_cloud: FakeCloud, atlassian: dict[str, str], run: Run,
    tmp_path: Path,
) -> None:  # fmt: skip
    fake_cloud.add_oauth_app(CLIENT_ID)
    callback = parse_qs(urlsplit(fake_cloud.consent(start_link(run, fake_cloud, tmp_path))).query)
    code, _, err = run("integration", "complete", "--code", callback["code"][0])
    assert code == EXIT_USAGE and "--state" in err
    code, _, err = run("integration", "complete", "--code", "x", "--state", "unknown")
    assert code == EXIT_NOT_FOUND and "no pending OAuth 2.0 link" in err
    code, out, err = run("integration", "complete", "--code", callback["code"][0],
                         "--state", callback["state"][0])  # fmt: skip
    assert code == EXIT_OK, out + err
    assert "dynamic webhook is registered" in out
    assert len(fake_cloud.dynamic_webhooks) == 1


def test_a_consent_whose_exchange_failed_can_be_completed_again(
    res: Resources, orgs: None, fake_cloud: FakeCloud, atlassian: dict[str, str], run: Run,
    tmp_path: Path, receiver: TestClient,
) -> None:  # fmt: skip
    fake_cloud.add_oauth_app(CLIENT_ID)
    callback = fake_cloud.consent(start_link(run, fake_cloud, tmp_path))
    fake_cloud.fail_status = 503  # Atlassian is down when the browser comes back
    page = receiver.get(path_of(callback))
    assert page.status_code == 400 and "503" in page.text
    assert count(res, "SELECT count(*) FROM integration") == 0
    fake_cloud.fail_status = None
    query = parse_qs(urlsplit(callback).query)
    code, out, err = run("integration", "complete", "--code", query["code"][0],
                         "--state", query["state"][0])  # fmt: skip
    assert code == EXIT_OK, out + err
    assert count(res, "SELECT count(*) FROM integration") == 1


def test_a_dynamic_webhook_cloud_refuses_says_which_scope_it_needs(
    res: Resources, orgs: None, fake_cloud: FakeCloud, atlassian: dict[str, str], run: Run,
    tmp_path: Path,
) -> None:  # fmt: skip
    fake_cloud.add_oauth_app(CLIENT_ID)
    refused = json.dumps({"errorMessages": ["Unauthorized; scope does not match"]})
    path = f"/ex/jira/{fake_cloud.cloud_id}/rest/api/3/webhook"
    fake_cloud.overrides[path] = (403, refused, "application/json")
    query = parse_qs(urlsplit(fake_cloud.consent(start_link(run, fake_cloud, tmp_path))).query)
    code, out, err = run("integration", "complete", "--code", query["code"][0],
                         "--state", query["state"][0])  # fmt: skip
    assert code == EXIT_OK, out + err
    assert "could not be registered" in out and "manage:jira-webhook" in out
    assert count(res, "SELECT count(*) FROM integration") == 1  # the link stands
    del fake_cloud.overrides[path]
    (listed,) = admin.list_view(res)
    assert run("integration", "configure", str(listed["id"]), "--refresh-server-info")[0] == 0
    assert len(fake_cloud.dynamic_webhooks) == 1


def test_a_consent_for_another_site_stores_nothing(
    res: Resources, orgs: None, fake_cloud: FakeCloud, atlassian: dict[str, str], run: Run,
    tmp_path: Path, receiver: TestClient,
) -> None:  # fmt: skip
    fake_cloud.add_oauth_app(CLIENT_ID)
    fake_cloud.site_granted = False  # the grant reaches another site only
    fake_cloud.other_sites = [{"id": "0000-other", "url": "https://other.atlassian.net"}]
    callback = fake_cloud.consent(start_link(run, fake_cloud, tmp_path))
    page = receiver.get(path_of(callback))
    assert page.status_code == 400 and "other.atlassian.net" in page.text
    assert count(res, "SELECT count(*) FROM integration") == 0


def test_oauth2_is_for_cloud_and_oauth1_against_cloud_is_still_refused(
    res: Resources, orgs: None, fake_cloud: FakeCloud, fake_jira: FakeJira,
    atlassian: dict[str, str], run: Run, tmp_path: Path,
) -> None:  # fmt: skip
    secret = tmp_path / "secret"
    secret.write_text("s3cret")
    code, _, err = run("integration", "link", "--base-url", fake_jira.base_url,
                       "--oauth2-client-id", CLIENT_ID, "--oauth2-client-secret-file",
                       str(secret), "--webhook-jql", JQL, "--organization", "acme")  # fmt: skip
    assert code == EXIT_USAGE and "is not Jira Cloud" in err
    code, _, err = run("integration", "link", "--base-url", fake_cloud.base_url,
                       "--oauth2-client-id", CLIENT_ID, "--oauth2-client-secret-file",
                       str(secret), "--organization", "acme")  # fmt: skip
    assert code == EXIT_USAGE and "--webhook-jql" in err
    pem = tmp_path / "key.pem"
    pem.write_text(rsa_keypair().private_pem)
    code, _, err = run("integration", "link", "--base-url", fake_cloud.base_url,
                       "--consumer-key", "k", "--private-key-file", str(pem),
                       "--organization", "acme")  # fmt: skip
    assert code == EXIT_USAGE and "does not accept OAuth 1.0a" in err
    assert "--oauth2-client-id" in err
    assert fake_cloud.calls_to("/plugins/servlet/oauth/") == []
    assert count(res, "SELECT count(*) FROM integration") == 0


# -- rotating refresh tokens -------------------------------------------------------------------


def expire_access_token(res: Resources, fake: FakeCloud, integration_id: int) -> None:
    fake.expire_access_tokens()
    with transaction(res.pool) as conn:
        conn.execute(
            "UPDATE integration_credential SET access_expires_at = now() - interval '1 minute' "
            "WHERE integration_id = %s",
            (integration_id,),
        )


def refreshed_at_once(res: Resources, integration_id: int) -> list[Any]:
    """Two threads (two database connections) ask for a valid access token at once."""
    barrier, got = threading.Barrier(2), []

    def refresher() -> None:
        barrier.wait()
        got.append(oauth2.access_token(res, integration_id))

    threads = [threading.Thread(target=refresher) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return got


def test_two_concurrent_refreshers_spend_the_refresh_token_once_and_keep_a_working_token(
    res: Resources, orgs: None, fake_cloud: FakeCloud, atlassian: dict[str, str], run: Run,
    tmp_path: Path, receiver: TestClient,
) -> None:  # fmt: skip
    fake_cloud.add_oauth_app(CLIENT_ID)
    integration_id = linked_by_consent(run, fake_cloud, tmp_path, receiver)["id"]
    for _ in range(2):  # twice: the rotated token stored the first time refreshes again
        expire_access_token(res, fake_cloud, integration_id)
        refreshes_before = len(fake_cloud.calls_to("/oauth/token", "POST"))
        fake_cloud.delay_s = 0.2  # both refreshers are under way at once
        got = refreshed_at_once(res, integration_id)
        fake_cloud.delay_s = 0.0
        assert len(got) == 2 and got[0] == got[1]
        assert len(fake_cloud.calls_to("/oauth/token", "POST")) == refreshes_before + 1
        assert fake_cloud.refused_refreshes == 0 and not fake_cloud.revoked_grants
        client = client_for_integration(res, integration_id)
        assert client.server_info().cloud  # the token works, through the gateway
        client.close()


def test_a_spent_refresh_token_is_refused_and_says_to_link_again(
    res: Resources, orgs: None, fake_cloud: FakeCloud, atlassian: dict[str, str], run: Run,
    tmp_path: Path, receiver: TestClient,
) -> None:  # fmt: skip
    fake_cloud.add_oauth_app(CLIENT_ID)
    integration_id = linked_by_consent(run, fake_cloud, tmp_path, receiver)["id"]
    (spent,) = fake_cloud.live_refresh.values()
    expire_access_token(res, fake_cloud, integration_id)
    oauth2.access_token(res, integration_id)  # rotates: `spent` is now spent
    with pytest.raises(JiraRejected, match="invalid_grant"):
        oauth2._refresh(res.settings, CLIENT_ID, fake_cloud.oauth_apps[CLIENT_ID], spent)
    # As Atlassian does outside its leeway, reusing it revoked the grant: linking again is
    # the only way, and the error says so.
    expire_access_token(res, fake_cloud, integration_id)
    with pytest.raises(JiraRejected, match="link it again with --oauth2-client-id"):
        oauth2.access_token(res, integration_id)


# -- end to end: deliveries, pushes and beat with a Data Center instance and the Cloud site ----


@pytest.fixture
def both(
    res: Resources,
    scene: Callable[[dict[str, Any]], None],
    start_worker: Callable[..., WorkerProcess],
    fake_cloud: FakeCloud,
    fake_jira: FakeJira,
    atlassian: dict[str, str],
    run: Run,
    tmp_path: Path,
    receiver: TestClient,
) -> WorkerProcess:
    """APP-1 on the Data Center fake (integration 1) and CLD-7 on the Cloud site (integration
    2, linked through the OAuth 2.0 app: the scene's row is re-linked by consent) are linked
    to group 100; Ann is mapped on Cloud to her account id. A worker runs."""
    fake_cloud.add_oauth_app(CLIENT_ID)
    fake_cloud.add_account(ANN_ACCOUNT, "ann@acme.test", "Ann A.", hidden=True)
    fake_cloud.add_account(BOB_ACCOUNT, "bob@acme.test", "Bob B.")
    fake_cloud.set_issue("CLD-7", None, fake_cloud.now_ms() - 3_600_000)
    fake_jira.add_consumer()
    data = base_scene()
    dc = data["integrations"][0]
    dc["base_url"] = fake_jira.base_url
    dc["access_token"], dc["access_token_secret"] = fake_jira.grant_access_token()
    dc["organizations"][0]["sync_forward_assignment"] = True
    cloud = fake_cloud.linked(integration(
        CLOUD, "acme.atlassian.net",
        [{"organization": "acme", "sync_reverse_assignment": True,
          "sync_forward_assignment": True}],
        base_url=fake_cloud.base_url,
    ))  # fmt: skip
    host = urlsplit(fake_cloud.base_url).netloc
    cloud["external_id"] = f"{host}:oauth2:{CLIENT_ID}"  # what the OAuth 2.0 link stores
    data["integrations"].append(cloud)
    data["external_issues"].append(
        {"id": 8, "integration": CLOUD, "organization": "acme", "key": "CLD-7", "groups": [GROUP]}
    )
    scene(data)
    assert linked_by_consent(run, fake_cloud, tmp_path, receiver)["id"] == CLOUD
    assert run("users", "map", "--integration", str(CLOUD), "--jira-user", ANN_ACCOUNT,
               "--user", str(ANN))[0] == EXIT_OK  # fmt: skip
    return start_worker(concurrency=2, env=atlassian)


def cloud_body(account: str, ts: int, changelog_id: int) -> bytes:
    assignee = {"accountId": account, "displayName": "Someone", "accountType": "atlassian"}
    body = jira_payload(assignee, ts=ts, changelog_id=changelog_id, key="CLD-7")
    body["changelog"]["items"][0]["to"] = account
    return json.dumps(body).encode()


def delivered(receiver: TestClient, url: str, body: bytes, headers: dict[str, str]) -> Any:
    return receiver.post(path_of(url), content=body, headers=headers)


def test_a_dynamic_webhook_delivery_with_a_valid_jwt_is_applied_and_bad_ones_are_refused(
    res: Resources,
    both: WorkerProcess,
    fake_cloud: FakeCloud,
    fake_jira: FakeJira,
    receiver: TestClient,
) -> None:
    # The change is pushed to Data Center too: Ann exists there, so the delivery ends `done`
    # (without her the push fails and turns it `failed`, however fast that comes).
    fake_jira.add_user("ann", "Ann@Acme.test", "Ann A.")
    body = cloud_body(ANN_ACCOUNT, ts=1000, changelog_id=1)
    (signed,) = fake_cloud.outgoing(body)
    assert signed.headers["Authorization"].startswith("Bearer ")
    secret = fake_cloud.oauth_apps[CLIENT_ID]
    now = int(time.time())
    refused = {
        "unsigned": {k: v for k, v in signed.headers.items() if k != "Authorization"},
        "tampered": {**signed.headers, "Authorization": signed.headers["Authorization"][:-3]
                     + "AAA"},
        "expired": {**signed.headers, "Authorization": "Bearer " + jwt.encode(
            {"iat": now - 900, "exp": now - 600}, secret, algorithm="HS256")},
        "another app": {**signed.headers, "Authorization": "Bearer " + jwt.encode(
            {"iat": now, "exp": now + 60}, "x" * 64, algorithm="HS256")},
    }  # fmt: skip
    for what, headers in refused.items():
        answer = delivered(receiver, signed.url, body, headers)
        assert answer.status_code == 401, what
        assert answer.json()["error"] == "unauthorized", what
    assert count(res, "SELECT count(*) FROM webhook_delivery") == 0
    answer = delivered(receiver, signed.url, body, signed.headers)
    assert answer.status_code == 202, answer.text
    assert outcome_of(res, int(answer.json()["delivery"])) == "assigned"
    assert group_state(res).assignee == ANN
    # Cloud retries a delivery with the same identifier: stored once.
    assert delivered(receiver, signed.url, body, signed.headers).status_code == 200


def test_a_push_to_cloud_goes_through_the_gateway_with_a_refreshed_token(
    res: Resources, both: WorkerProcess, fake_cloud: FakeCloud
) -> None:
    expire_access_token(res, fake_cloud, CLOUD)
    assert outcome_of(res, post(res, jira_payload(BOB, ts=1000, changelog_id=1))) == "assigned"
    wait_for(lambda: fake_cloud.assignees.get("CLD-7") == BOB_ACCOUNT, 15, "the push to Cloud")
    gateway = f"/ex/jira/{fake_cloud.cloud_id}"
    (put,) = fake_cloud.calls_to(gateway + "/rest/api/3/issue/CLD-7/assignee", "PUT")
    assert put.headers["Authorization"].startswith("Bearer ")
    assert fake_cloud.refused_refreshes == 0


def days_left(run: Run) -> int:
    """The Cloud integration's dynamic webhook's days left, as `status` shows them."""
    _, out, _ = run("status", "--json")
    cloud = next(i for i in json.loads(out)["integrations"] if i["id"] == CLOUD)
    return int(cloud["dynamic_webhook"]["days_left"])


def test_beat_refreshes_a_dynamic_webhook_before_it_expires(
    res: Resources, both: WorkerProcess, fake_cloud: FakeCloud, run: Run
) -> None:
    soon_ms = fake_cloud.now_ms() + 2 * 86400 * 1000
    (hook,) = fake_cloud.dynamic_webhooks
    hook["expires_ms"] = soon_ms
    with transaction(res.pool) as conn:
        conn.execute("UPDATE dynamic_webhook SET expires_at = to_timestamp(%s / 1000.0)",
                     (soon_ms,))  # fmt: skip
    _, out, _ = run("status", "--json")
    cloud = next(i for i in json.loads(out)["integrations"] if i["id"] == CLOUD)
    assert cloud["dynamic_webhook"]["days_left"] == 1
    assert any("beat has not refreshed it" in w for w in json.loads(out)["warnings"])
    celery_app.send_task("jira_sync.maintenance.refresh_dynamic_webhooks")
    month_ms = 29 * 86400 * 1000
    wait_for(lambda: hook["expires_ms"] > fake_cloud.now_ms() + month_ms, 30, "the refresh")
    wait_for(lambda: days_left(run) >= 29, 30, "the new expiry recorded")
    assert len(fake_cloud.dynamic_webhooks) == 1  # refreshed in place, not registered again
    _, out, _ = run("status")
    assert "dynamic webhooks (Cloud, OAuth 2.0; beat refreshes them): 2 until" in out
    # Not due any more: the next check (run here) changes nothing.
    calls = len(fake_cloud.calls_to(f"/ex/jira/{fake_cloud.cloud_id}/rest/api/3/webhook"))
    assert refresh_dynamic_webhooks.run() == []
    assert calls == len(fake_cloud.calls_to(f"/ex/jira/{fake_cloud.cloud_id}/rest/api/3/webhook"))


# -- scoped tokens of service accounts -------------------------------------------------------


def test_a_scoped_token_links_and_calls_through_the_gateway(
    res: Resources, orgs: None, fake_cloud: FakeCloud, atlassian: dict[str, str], run: Run,
    tmp_path: Path,
) -> None:  # fmt: skip
    email, token = fake_cloud.add_service_account()
    fake_cloud.admins.add(email)
    token_file = tmp_path / "token"
    token_file.write_text(token)
    code, out, err = run("integration", "link", "--base-url", fake_cloud.base_url, "--email",
                         email, "--api-token-file", str(token_file),
                         "--organization", "acme")  # fmt: skip
    assert code == EXIT_OK, out + err
    (listed,) = admin.list_view(res)
    assert (listed["auth"], listed["deployment_type"]) == ("scoped_token", "Cloud")
    assert len(fake_cloud.webhooks) == 1 and fake_cloud.webhooks[0]["secret"]
    gateway = f"/ex/jira/{fake_cloud.cloud_id}/"
    assert fake_cloud.calls_to("/_edge/tenant_info")
    assert fake_cloud.calls_to(gateway + "rest/webhooks/1.0/webhook", "POST")
    code, out, err = run("reconcile", "run", "--integration", str(listed["id"]), "--since", "1h")
    assert code == EXIT_OK, out + err
    assert fake_cloud.calls_to(gateway + "rest/api/3/search/jql")
    signed = [c for c in fake_cloud.calls if c.headers.get("Authorization")]
    assert signed and all(c.path.startswith(gateway) for c in signed)
