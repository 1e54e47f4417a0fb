"""Linking a Jira Server over OAuth 1.0a against the fake Jira (signatures checked by oauthlib)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from starlette.testclient import TestClient

from tests.fakejira import CONSUMER_KEY, FakeJira, rsa_keypair
from tests.webhooks import JSON, body, payload
from worker.domain import tokens
from worker.domain.errors import InvalidInput, JiraRejected, JiraUnavailable, NotFound
from worker.jira import admin, linking
from worker.receiver.app import create_app
from worker.runtime.resources import Resources

ORGS = {
    "organizations": [
        {"slug": "acme", "name": "Acme", "issue_sync_enabled": True},
        {"slug": "beta", "name": "Beta", "issue_sync_enabled": True},
    ]
}


@pytest.fixture
def orgs(scene: Callable[[dict[str, Any]], None]) -> None:
    scene(ORGS)


def counts(res: Resources) -> dict[str, int]:
    tables = ("integration", "integration_credential", "organization_integration", "pending_link")
    with psycopg.connect(res.settings.database_url) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}  # type: ignore[index]


def start(res: Resources, fake: FakeJira, **kw: Any) -> linking.LinkStarted:
    args: dict[str, Any] = {
        "base_url": fake.base_url + "/",
        "consumer_key": CONSUMER_KEY,
        "private_key_pem": rsa_keypair().private_pem,
        "organizations": ["acme", "beta"],
    }
    return linking.start(res, **{**args, **kw})


def request_token_of(started: linking.LinkStarted) -> str:
    return parse_qs(urlsplit(started.authorize_url).query)["oauth_token"][0]


@pytest.fixture
def receiver(res: Resources) -> Iterator[TestClient]:
    with TestClient(create_app(res=res, configure_logs=False)) as client:
        yield client


def test_link_through_the_callback_stores_integration_and_registers_webhook(
    res: Resources, orgs: None, fake_jira: FakeJira, receiver: TestClient
) -> None:
    started = start(res, fake_jira)
    assert started.authorize_url.startswith(
        fake_jira.base_url + "/plugins/servlet/oauth/authorize?"
    )
    callback = urlsplit(fake_jira.approve(request_token_of(started)))
    assert callback.path == linking.CALLBACK_PATH
    page = receiver.get(f"{callback.path}?{callback.query}")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assert "webhook is registered" in page.text
    (integration,) = admin.list_view(res)
    assert integration["external_id"] == f"{urlsplit(fake_jira.base_url).netloc}:{CONSUMER_KEY}"
    assert integration["base_url"] == fake_jira.base_url
    assert [o["organization"] for o in integration["organizations"]] == ["acme", "beta"]
    assert not any(
        o["reverse_assignment"] or o["forward_assignment"] for o in integration["organizations"]
    )
    (hook,) = fake_jira.webhooks
    assert hook["url"] == admin.get_webhook_url(res, integration["id"])
    assert hook["events"] == ["jira:issue_created", "jira:issue_updated"]
    # Only the probe for Jira Cloud (serverInfo, which Jira answers anyone) goes unsigned.
    unsigned = [(c.method, c.path) for c in fake_jira.calls if not c.signed]
    assert unsigned == [("GET", "/rest/api/2/serverInfo")]
    assert counts(res)["pending_link"] == 0


def test_registered_webhook_url_is_accepted_by_the_receiver(
    res: Resources, orgs: None, fake_jira: FakeJira, receiver: TestClient
) -> None:
    result = linking.complete(res, _approved(res, fake_jira))
    path = urlsplit(result.webhook_url).path
    assert receiver.post(path, content=body(payload()), headers=JSON).status_code == 202


def _approved(res: Resources, fake: FakeJira) -> str:
    token = request_token_of(start(res, fake))
    fake.approve(token)
    return token


def test_stored_credentials_are_encrypted(res: Resources, orgs: None, fake_jira: FakeJira) -> None:
    result = linking.complete(res, _approved(res, fake_jira))
    access_token = next(iter(fake_jira.access_tokens))
    with psycopg.connect(res.settings.database_url) as conn:
        row = conn.execute(
            "SELECT i::text, c::text FROM integration i JOIN integration_credential c"
            " ON c.integration_id = i.id WHERE i.id = %s",
            (result.integration_id,),
        ).fetchone()
    assert row is not None
    stored = " ".join(row)
    assert access_token not in stored
    assert "PRIVATE KEY" not in stored
    secret = result.webhook_url.rstrip("/").rsplit("/", 1)[1]
    assert tokens.claimed_id(secret) == result.external_id


def test_complete_without_approval_fails_and_stores_nothing(
    res: Resources, orgs: None, fake_jira: FakeJira
) -> None:
    token = request_token_of(start(res, fake_jira))
    with pytest.raises(JiraRejected, match="401"):
        linking.complete(res, token)
    assert counts(res) == {
        "integration": 0,
        "integration_credential": 0,
        "organization_integration": 0,
        "pending_link": 1,
    }


def test_expired_pending_link_is_refused(res: Resources, orgs: None, fake_jira: FakeJira) -> None:
    token = _approved(res, fake_jira)
    with psycopg.connect(res.settings.database_url) as conn:
        conn.execute("UPDATE pending_link SET expires_at = now() - interval '1 second'")
    with pytest.raises(InvalidInput, match="expired"):
        linking.complete(res, token)
    assert counts(res)["integration"] == 0
    assert fake_jira.calls_to("/plugins/servlet/oauth/access-token") == []


def test_unknown_oauth_token_is_refused(res: Resources, receiver: TestClient) -> None:
    with pytest.raises(NotFound):
        linking.complete(res, "never-issued")
    page = receiver.get(linking.CALLBACK_PATH + "?oauth_token=never-issued")
    assert page.status_code == 400
    assert "Link failed" in page.text


@pytest.mark.parametrize(
    ("pem", "message"),
    [
        ("not a key", "PEM-encoded RSA private key"),
        (
            "-----BEGIN PRIVATE KEY-----\n"
            "MC4CAQAwBQYDK2VwBCIEIBvYV6E1RWpJg6Y8r0bhz3D5Hc6f5vsP6zhWJ3t0Rr6Y\n"
            "-----END PRIVATE KEY-----\n",
            "PEM-encoded RSA private key",
        ),
    ],
    ids=["garbage", "ed25519"],
)
def test_unusable_private_key_is_refused_before_calling_jira(
    res: Resources, orgs: None, fake_jira: FakeJira, pem: str, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        start(res, fake_jira, private_key_pem=pem)
    assert fake_jira.calls == []
    assert counts(res)["pending_link"] == 0


@pytest.mark.parametrize("base_url", ["ftp://jira.test", "jira.test", "https://"])
def test_base_url_must_be_http_or_https(
    res: Resources, orgs: None, fake_jira: FakeJira, base_url: str
) -> None:
    with pytest.raises(InvalidInput, match="http or https"):
        start(res, fake_jira, base_url=base_url)


def test_consumer_key_longer_than_200_is_refused(
    res: Resources, orgs: None, fake_jira: FakeJira
) -> None:
    with pytest.raises(InvalidInput, match="200"):
        start(res, fake_jira, consumer_key="k" * 201)


def test_unknown_organization_is_refused(res: Resources, orgs: None, fake_jira: FakeJira) -> None:
    with pytest.raises(NotFound, match="nowhere"):
        start(res, fake_jira, organizations=["acme", "nowhere"])
    assert fake_jira.calls == []


def test_jira_unreachable_stores_nothing(res: Resources, orgs: None, fake_jira: FakeJira) -> None:
    with pytest.raises(JiraUnavailable, match="cannot be reached"):
        start(res, fake_jira, base_url="http://127.0.0.1:9")
    assert counts(res)["pending_link"] == 0


@pytest.mark.parametrize(
    ("override", "error", "message"),
    [
        ((401, "oauth_problem=consumer_key_unknown", "text/plain"), JiraRejected, "401"),
        ((500, "<html>boom</html>", "text/html"), JiraUnavailable, "500"),
        ((200, "<html>garbage</html>", "text/html"), JiraRejected, "oauth_token"),
        ((200, "oauth_token=abc", "text/plain"), JiraRejected, "oauth_token_secret"),
    ],
    ids=["401", "500", "garbage", "no token secret"],
)
def test_bad_request_token_answer_stores_nothing(
    res: Resources,
    orgs: None,
    fake_jira: FakeJira,
    override: tuple[int, str, str],
    error: type[Exception],
    message: str,
) -> None:
    fake_jira.overrides["/plugins/servlet/oauth/request-token"] = override
    with pytest.raises(error, match=message):
        start(res, fake_jira)
    assert counts(res)["pending_link"] == 0


def test_access_token_answer_without_secret_stores_nothing(
    res: Resources, orgs: None, fake_jira: FakeJira
) -> None:
    token = _approved(res, fake_jira)
    fake_jira.overrides["/plugins/servlet/oauth/access-token"] = (
        200,
        "oauth_token=x",
        "text/plain",
    )
    with pytest.raises(JiraRejected, match="oauth_token_secret"):
        linking.complete(res, token)
    assert counts(res)["integration"] == 0


def test_jira_timeout_is_a_clear_error(res: Resources, orgs: None, fake_jira: FakeJira) -> None:
    fake_jira.delay_s = res.settings.jira_timeout_s + 1
    with pytest.raises(JiraUnavailable, match="did not answer"):
        start(res, fake_jira)
    assert counts(res)["pending_link"] == 0


def test_webhook_registration_failure_keeps_the_link(
    res: Resources, orgs: None, fake_jira: FakeJira
) -> None:
    token = _approved(res, fake_jira)
    fake_jira.overrides["/rest/webhooks/1.0/webhook"] = (403, '{"errorMessages":["no"]}', "x/json")
    result = linking.complete(res, token)
    assert not result.webhook_registered
    assert "webhook-url" in linking.completion_message(result)
    assert counts(res)["integration"] == 1


def _relink(res: Resources, fake: FakeJira, **kw: Any) -> linking.LinkResult:
    token = request_token_of(start(res, fake, **kw))
    fake.approve(token)
    return linking.complete(res, token)


def test_relink_issues_a_fresh_secret_and_retires_the_old_one_at_once(
    res: Resources, orgs: None, fake_jira: FakeJira, receiver: TestClient
) -> None:
    first = linking.complete(res, _approved(res, fake_jira))
    old_path = urlsplit(first.webhook_url).path
    admin.rotate_secret(res, first.integration_id)  # even mid-rotation
    second = _relink(res, fake_jira)
    assert second.integration_id == first.integration_id and not second.created
    assert second.webhook_url != first.webhook_url
    new_path = urlsplit(second.webhook_url).path
    assert receiver.post(old_path, content=body(payload()), headers=JSON).status_code == 401
    assert receiver.post(new_path, content=body(payload()), headers=JSON).status_code == 202


def test_relink_leaves_exactly_one_webhook_in_jira_pointing_at_the_new_url(
    res: Resources, orgs: None, fake_jira: FakeJira
) -> None:
    linking.complete(res, _approved(res, fake_jira))
    linking.complete(res, _approved(res, fake_jira))
    third = _relink(res, fake_jira)
    (hook,) = fake_jira.webhooks
    assert hook["url"] == third.webhook_url
    assert len(fake_jira.calls_to("/rest/webhooks/1.0/webhook", "POST")) == 1
    # Another service's webhook in the same Jira is left alone.
    fake_jira.webhooks.append({"url": "https://elsewhere.test/hook", "self": "x/webhook/99"})
    _relink(res, fake_jira)
    assert [h["url"] for h in fake_jira.webhooks][1] == "https://elsewhere.test/hook"
    assert len(fake_jira.webhooks) == 2


def test_relink_keeps_a_disabled_integration_disabled_unless_enabled(
    res: Resources, orgs: None, fake_jira: FakeJira, receiver: TestClient
) -> None:
    first = linking.complete(res, _approved(res, fake_jira))
    assert admin.disable(res, first.integration_id)
    again = _relink(res, fake_jira)
    assert not again.active
    assert "stays disabled" in linking.completion_message(again)
    path = urlsplit(again.webhook_url).path
    assert receiver.post(path, content=body(payload()), headers=JSON).status_code == 401
    enabled = _relink(res, fake_jira, enable=True)
    assert enabled.active
    path = urlsplit(enabled.webhook_url).path
    assert receiver.post(path, content=body(payload()), headers=JSON).status_code == 202


def test_external_id_is_host_and_consumer_key_cut_to_64() -> None:
    assert (
        linking.external_id_for("https://jira.acme.test:8443", "key") == "jira.acme.test:8443:key"
    )
    assert len(linking.external_id_for("https://jira.acme.test", "k" * 200)) == 64


def test_configure_turns_sync_switches_on(res: Resources, orgs: None, fake_jira: FakeJira) -> None:
    result = linking.complete(res, _approved(res, fake_jira))
    config = admin.configure(res, result.integration_id, "acme", {"reverse": True})
    assert config == {"sync_reverse_assignment": True, "sync_forward_assignment": False}
    with pytest.raises(NotFound, match="nowhere"):
        admin.configure(res, result.integration_id, "nowhere", {"forward": True})
