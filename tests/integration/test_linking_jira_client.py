"""The Jira REST client against the fake Jira Server (signatures verified by oauthlib)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.fakejira import CONSUMER_KEY, FakeJira, rsa_keypair
from worker.domain.errors import JiraRejected, JiraUnavailable
from worker.jira import api
from worker.runtime.resources import Resources


def client(fake: FakeJira, private_pem: str | None = None, timeout_s: float = 5.0) -> Any:
    token, secret = fake.grant_access_token()
    return api.JiraClient.oauth1(
        fake.base_url,
        CONSUMER_KEY,
        private_pem or rsa_keypair().private_pem,
        token,
        secret,
        verify_ssl=True,
        timeout_s=timeout_s,
    )


def test_assignable_username_matches_email_case_insensitively(fake_jira: FakeJira) -> None:
    fake_jira.add_user("ann", "Ann@Acme.Test")
    fake_jira.add_user("annie", "annie@acme.test")
    assert client(fake_jira).find_assignable_user("APP-1", "ann@acme.test") == "ann"
    (call,) = fake_jira.calls_to("/rest/api/2/user/assignable/search")
    assert call.signed
    assert call.query == {"issueKey": "APP-1", "username": "ann@acme.test"}


def test_assignable_username_is_none_when_no_email_matches(fake_jira: FakeJira) -> None:
    fake_jira.add_user("bob", None)
    assert client(fake_jira).find_assignable_user("APP-1", "bob@acme.test") is None


def test_set_assignee_puts_the_name_signed(fake_jira: FakeJira) -> None:
    fake_jira.add_user("ann", "ann@acme.test")
    c = client(fake_jira)
    c.set_assignee("APP-1", "ann")
    c.set_assignee("APP-2", None)
    assert fake_jira.assignees == {"APP-1": "ann", "APP-2": None}
    assert all(call.signed for call in fake_jira.calls_to("/rest/api/2/issue/"))


def test_wrong_private_key_is_rejected_by_signature_check(fake_jira: FakeJira) -> None:
    with pytest.raises(JiraRejected, match="401"):
        client(fake_jira, rsa_keypair("intruder").private_pem).set_assignee("APP-1", None)
    assert fake_jira.assignees == {}


def test_server_error_is_retryable(fake_jira: FakeJira) -> None:
    fake_jira.fail_status = 500
    with pytest.raises(JiraUnavailable, match="500"):
        client(fake_jira).set_assignee("APP-1", None)


def test_unknown_user_is_a_permanent_rejection(fake_jira: FakeJira) -> None:
    with pytest.raises(JiraRejected, match="does not exist"):
        client(fake_jira).set_assignee("APP-1", "nobody")


def test_timeout_is_retryable(fake_jira: FakeJira) -> None:
    fake_jira.delay_s = 1.5
    with pytest.raises(JiraUnavailable, match="did not answer"):
        client(fake_jira, timeout_s=0.5).find_assignable_user("APP-1", "a@b.test")


def test_unreachable_jira_is_retryable() -> None:
    c = api.JiraClient.oauth1(
        "http://127.0.0.1:9", CONSUMER_KEY, rsa_keypair().private_pem, "t", "s"
    )
    with pytest.raises(JiraUnavailable, match="cannot be reached"):
        c.set_assignee("APP-1", None)


def test_client_for_integration_decrypts_stored_credentials(
    fake_jira: FakeJira, res: Resources, scene: Callable[[dict[str, Any]], None]
) -> None:
    token, secret = fake_jira.grant_access_token()
    scene(
        {
            "integrations": [
                {
                    "id": 3,
                    "external_id": f"127.0.0.1:{CONSUMER_KEY}",
                    "base_url": fake_jira.base_url + "/",
                    "consumer_key": CONSUMER_KEY,
                    "private_key": rsa_keypair().private_pem,
                    "access_token": token,
                    "access_token_secret": secret,
                    "webhook_secret": "w" * 32,
                }
            ]
        }
    )
    fake_jira.add_user("ann", "ann@acme.test")
    c = api.client_for_integration(res, 3)
    assert c.find_assignable_user("APP-1", "ANN@acme.test") == "ann"
    assert fake_jira.calls_to("/rest/api/2/user/assignable/search")[0].signed
