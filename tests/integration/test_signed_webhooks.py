"""Jira Data Center 10: the webhook registered on the API the version uses, signed bodies
verified before parsing (X-Hub-Signature), rotation, the configure switches; a 9.x instance
without signing keeps working. Every refused signature gets the one 401 body of a bad token
and stores nothing."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from prometheus_client import REGISTRY
from starlette.testclient import TestClient

from tests.conftest import receiver_process, wait_for
from tests.fakejira import CONSUMER_KEY, HOOKS_10, LEGACY_HOOKS, FakeJira, rsa_keypair
from tests.webhooks import (
    JSON,
    OTHER_SECRET,
    body,
    load_integrations,
    old_secret_use_noted,
    payload,
    url,
)
from worker.cli import main
from worker.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from worker.jira import admin, linking
from worker.receiver.app import UNAUTHORIZED, create_app
from worker.runtime.resources import Resources
from worker.store.db import transaction
from worker.store.queries import integrations as iq

SIGNING = "signing-secret-" + "s" * 32


def signature(data: bytes, secret: str = SIGNING) -> str:
    return "sha256=" + hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def set_signing(
    res: Resources, integration_id: int, current: str, previous: str | None, require: bool
) -> None:
    vault = res.vault
    with transaction(res.pool) as conn:
        iq.set_signing(
            conn,
            integration_id,
            vault.encrypt(current),
            vault.encrypt(previous) if previous else None,
            require,
        )


def stored_count(res: Resources) -> int:
    with transaction(res.pool) as conn:
        row = conn.execute("SELECT count(*) AS n FROM webhook_delivery").fetchone()
    assert row is not None
    return int(row["n"])


@pytest.fixture
def client(res: Resources) -> Iterator[TestClient]:
    with TestClient(create_app(res=res, configure_logs=False)) as c:
        yield c


@pytest.fixture
def signing(res: Resources, scene: Callable[[dict[str, Any]], None]) -> None:
    """Integrations 1 and 2 (tests/webhooks.py); 1 signs with SIGNING and requires it, 2 signs
    with OTHER_SECRET."""
    load_integrations(scene)
    set_signing(res, 1, SIGNING, None, True)
    set_signing(res, 2, OTHER_SECRET, None, True)


def post(client: TestClient, data: bytes, headers: Any = None) -> Any:
    return client.post(url(), content=data, headers=headers if headers is not None else JSON)


def signed(data: bytes, secret: str = SIGNING) -> dict[str, str]:
    return {**JSON, "X-Hub-Signature": signature(data, secret)}


# -- the receiver ---------------------------------------------------------------------------


def test_signed_body_is_accepted(signing: None, client: TestClient) -> None:
    data = body(payload())
    answer = post(client, data, signed(data))
    assert answer.status_code == 202, answer.text


def test_missing_wrong_or_foreign_signature_gets_the_token_401(
    signing: None, client: TestClient, res: Resources
) -> None:
    data = body(payload())
    other = body(payload())
    answers = {
        "missing": post(client, data),
        "wrong": post(client, data, {**JSON, "X-Hub-Signature": "sha256=" + "0" * 64}),
        "over a different body": post(client, data, signed(other)),
    }
    assert {k: a.status_code for k, a in answers.items()} == dict.fromkeys(answers, 401)
    assert all(a.json() == UNAUTHORIZED for a in answers.values())
    assert stored_count(res) == 0


def abusive(data: bytes) -> dict[str, list[tuple[str, str]]]:
    """Signature headers that must all be refused for `data`."""
    good = signature(data)
    changed = bytearray(data)
    changed[len(changed) // 2] ^= 0x01
    hex_part = good.removeprefix("sha256=")
    return {
        "one byte changed": [("X-Hub-Signature", signature(bytes(changed)))],
        "another integration's secret": [("X-Hub-Signature", signature(data, OTHER_SECRET))],
        "sha1": [("X-Hub-Signature", "sha1=" + hmac.new(SIGNING.encode(), data, "sha1").hexdigest())],  # noqa: E501
        "uppercase hex": [("X-Hub-Signature", "sha256=" + hex_part.upper())],
        "uppercase prefix": [("X-Hub-Signature", "SHA256=" + hex_part)],
        "header twice": [("X-Hub-Signature", good), ("X-Hub-Signature", good)],
        "two values in one header": [("X-Hub-Signature", f"{good}, {good}")],
        "empty": [("X-Hub-Signature", "")],
    }  # fmt: skip


def test_abusive_signatures_all_get_the_one_401(
    signing: None, client: TestClient, res: Resources
) -> None:
    data = body(payload())
    content_type = ("Content-Type", JSON["Content-Type"])
    answers = {
        name: client.post(url(), content=data, headers=[content_type, *headers])
        for name, headers in abusive(data).items()
    }
    bad_token = client.post(url("not.a.token"), content=data, headers=signed(data))
    assert {k: a.status_code for k, a in answers.items()} == dict.fromkeys(answers, 401)
    assert {a.content for a in answers.values()} == {bad_token.content}
    assert stored_count(res) == 0
    # The same body with its one right signature still goes through.
    assert post(client, data, signed(data)).status_code == 202


def test_signature_not_required_lets_unsigned_in_but_still_checks_a_sent_one(
    signing: None, client: TestClient, res: Resources
) -> None:
    assert admin.require_signature(res, 1, False)
    data = body(payload())
    wait_for(lambda: post(client, data).status_code == 202, 5, "unsigned delivery accepted")
    other = body(payload())
    assert post(client, other, {**JSON, "X-Hub-Signature": signature(data)}).status_code == 401
    assert admin.require_signature(res, 1, True)
    wait_for(lambda: post(client, other).status_code == 401, 5, "unsigned refused again")


def test_duplicate_without_identifier_header_is_recognized(
    signing: None, client: TestClient
) -> None:
    event = payload()
    data = body(event)
    assert post(client, data, signed(data)).status_code == 202
    again = body({**event, "webhookEvent": "jira:issue_assigned"})
    answer = post(client, again, signed(again))
    assert (answer.status_code, answer.json()) == (200, {"status": "duplicate"})


def test_uvicorn_receiver_checks_signatures_as_sent_over_http(
    signing: None, res: Resources, settings_env: dict[str, str], tmp_path: Path
) -> None:
    first, second = body(payload()), body(payload())
    twice = [("Content-Type", JSON["Content-Type"])] + [("X-Hub-Signature", signature(second))] * 2
    with receiver_process(settings_env, tmp_path / "receiver.log") as (base, logs):
        assert httpx.post(base + url(), content=first, headers=signed(first)).status_code == 202
        assert httpx.post(base + url(), content=second, headers=twice).status_code == 401
        assert httpx.post(base + url(), content=second, headers=JSON).status_code == 401
        wait_for(lambda: "payload.bad_signature" in logs(), 5, "the refusal logged")
        assert SIGNING not in logs()
    assert stored_count(res) == 1


# -- registration on 9.x and 10.x, against the fake Jira ------------------------------------


@pytest.fixture
def orgs(scene: Callable[[dict[str, Any]], None]) -> None:
    scene({"organizations": [{"slug": "acme", "name": "Acme", "issue_sync_enabled": True}]})


def link(res: Resources, fake: FakeJira) -> linking.LinkResult:
    started = linking.start(res, fake.base_url, CONSUMER_KEY, rsa_keypair().private_pem, ["acme"])
    token = parse_qs(urlsplit(started.authorize_url).query)["oauth_token"][0]
    fake.approve(token)
    return linking.complete(res, token)


def deliver(client: TestClient, fake: FakeJira, event: dict[str, Any]) -> list[int]:
    """Jira sends `event` to every registered webhook; the receiver's status codes."""
    return [
        client.post(urlsplit(o.url).path, content=o.body, headers=o.headers).status_code
        for o in fake.outgoing(body(event))
    ]


def integration_row(res: Resources, integration_id: int) -> iq.Integration:
    with transaction(res.pool) as conn:
        found = iq.get_integration(conn, integration_id)
    assert found is not None
    return found


def data_center_10(fake: FakeJira) -> FakeJira:
    fake.server_version, fake.deployment_type = "10.3.1", "DataCenter"
    return fake


def test_link_on_9x_registers_unsigned_on_the_old_api_and_keeps_working(
    res: Resources, orgs: None, fake_jira: FakeJira, client: TestClient
) -> None:
    result = link(res, fake_jira)
    assert result.server is not None and result.server.version == "9.12.2"
    assert "unsigned" in linking.completion_message(result)
    (hook,) = fake_jira.webhooks
    assert "configuration" not in hook
    assert fake_jira.calls_to(HOOKS_10) == []
    assert len(fake_jira.calls_to(LEGACY_HOOKS, "POST")) == 1
    (row,) = admin.list_view(res)
    assert (row["server_version"], row["deployment_type"]) == ("9.12.2", "Server")
    assert (row["signed"], row["require_signature"]) == (False, False)
    assert deliver(client, fake_jira, payload()) == [202]


def signature_required(res: Resources, integration_id: int) -> bool:
    return integration_row(res, integration_id).require_signature


def test_link_on_10x_registers_a_signed_webhook_on_the_new_api(
    res: Resources, orgs: None, fake_jira: FakeJira, client: TestClient
) -> None:
    result = link(res, data_center_10(fake_jira))
    assert "bodies signed, signature required from the first signed delivery" in (
        linking.completion_message(result)
    )
    (hook,) = fake_jira.webhooks
    # The one spelling Data Center 10 reads (SPEC 12); the webhook was read back after.
    assert hook["configuration"]["EXCLUDE_BODY"] == "false"
    secret = hook["configuration"]["SECRET"]
    assert hook["url"] == result.webhook_url
    assert fake_jira.calls_to(LEGACY_HOOKS) == []
    assert len(fake_jira.calls_to(HOOKS_10, "GET")) == 2
    stored = integration_row(res, result.integration_id)
    assert stored.signing_secret_enc and secret not in stored.signing_secret_enc
    assert res.vault.decrypt(stored.signing_secret_enc) == secret
    assert stored.metadata["server_version"] == "10.3.1"
    # Not required until Jira has signed a delivery: the token alone verifies until then.
    assert (stored.require_signature, stored.signature_seen_at) == (False, None)
    path = urlsplit(result.webhook_url).path
    assert client.post(path, content=body(payload()), headers=JSON).status_code == 202
    assert deliver(client, fake_jira, payload()) == [202]
    wait_for(lambda: signature_required(res, result.integration_id), 10, "signature required")
    # From then on, unsigned, or signed by anyone else, is refused on the same URL.
    wait_for(
        lambda: client.post(path, content=body(payload()), headers=JSON).status_code == 401,
        5,
        "unsigned refused once a signed delivery arrived",
    )
    assert deliver(client, fake_jira, payload()) == [202]
    # A re-link updates the one webhook in place with a fresh secret, not required until seen.
    again = link(res, fake_jira)
    (hook,) = fake_jira.webhooks
    assert hook["configuration"]["SECRET"] != secret
    assert len(fake_jira.calls_to(HOOKS_10, "POST")) == 1
    assert again.integration_id == result.integration_id
    assert not signature_required(res, result.integration_id)
    assert deliver(client, fake_jira, payload()) == [202]


def test_signature_refusals_are_counted_per_integration_for_status_and_metrics(
    res: Resources, orgs: None, fake_jira: FakeJira, client: TestClient
) -> None:
    iid = link(res, data_center_10(fake_jira)).integration_id
    before = refusals_counted(iid)
    assert deliver(client, fake_jira, payload()) == [202]
    (sent,) = fake_jira.outgoing(body(payload()))
    forged = {**sent.headers, "X-Hub-Signature": "sha256=" + "0" * 64}
    path = urlsplit(sent.url).path
    assert client.post(path, content=sent.body, headers=forged).status_code == 401
    assert client.post(path, content=sent.body, headers=forged).status_code == 401

    def seen() -> iq.WebhookSeen | None:
        with transaction(res.pool) as conn:
            return iq.get_webhook_seen(conn, iid)

    noted = wait_for(lambda: (s := seen()) and s.signature_refusals == 2 and s, 10, "refusals")
    assert noted.last_refused_at is not None
    assert refusals_counted(iid) - before == 2


def refusals_counted(integration_id: int) -> float:
    """This process's receiver metric of refused signatures for the integration."""
    labels = {"integration": str(integration_id)}
    found = REGISTRY.get_sample_value("jira_sync_receiver_signature_refusals_total", labels)
    return found or 0.0


def test_refresh_after_an_upgrade_to_10_signs_the_same_webhook(
    res: Resources, orgs: None, fake_jira: FakeJira, client: TestClient
) -> None:
    result = link(res, fake_jira)
    data_center_10(fake_jira)
    server = admin.refresh_server_info(res, result.integration_id)
    assert server.signs_webhooks
    (hook,) = fake_jira.webhooks
    assert hook["configuration"]["SECRET"]
    assert len(fake_jira.calls_to(HOOKS_10 + "/", "PUT")) == 1
    assert deliver(client, fake_jira, payload()) == [202]  # the first signed delivery
    wait_for(
        lambda: (
            client.post(
                urlsplit(result.webhook_url).path, content=body(payload()), headers=JSON
            ).status_code
            == 401
        ),
        5,
        "unsigned refused after the upgrade",
    )
    assert deliver(client, fake_jira, payload()) == [202]
    admin.refresh_server_info(res, result.integration_id)  # idempotent: same secret
    assert fake_jira.webhooks[0]["configuration"] == hook["configuration"]


def test_rotation_keeps_both_signing_secrets_until_finished(
    res: Resources,
    orgs: None,
    fake_jira: FakeJira,
    client: TestClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    result = link(res, data_center_10(fake_jira))
    in_flight = fake_jira.outgoing(body(payload()))  # signed with the old secret and URL
    rotation = admin.rotate_secret(res, result.integration_id)
    assert rotation.signed and rotation.jira_error is None
    (hook,) = fake_jira.webhooks
    assert hook["url"] == rotation.webhook_url
    assert deliver(client, fake_jira, payload()) == [202]  # new URL, new secret
    (old,) = in_flight
    path = urlsplit(old.url).path
    assert client.post(path, content=old.body, headers=old.headers).status_code == 202
    # The old URL and secret just verified a delivery: --finish refuses until --force.
    iid = result.integration_id
    wait_for(lambda: old_secret_use_noted(res, iid), 10, "the old secret's use to be noted")
    code, out, _ = run(capsys, "integration", "rotate-secret", str(iid), "--finish")
    assert (code, out.startswith("Not finished"), "--force" in out) == (EXIT_FAILED, True, True)
    code, out, _ = run(capsys, "integration", "rotate-secret", str(iid), "--finish", "--force")
    assert (code, out.startswith("Rotation finished")) == (EXIT_OK, True)
    # The old URL is gone; the old signature on the new URL is refused too.
    late = fake_jira.outgoing(body(payload()))[0]
    stale = {**late.headers, "X-Hub-Signature": old.headers["X-Hub-Signature"]}
    wait_for(
        lambda: (
            client.post(urlsplit(late.url).path, content=old.body, headers=stale).status_code == 401
        ),
        5,
        "old signing secret refused",
    )
    assert deliver(client, fake_jira, payload()) == [202]


# -- the command line -----------------------------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_configure_switches(
    res: Resources, orgs: None, fake_jira: FakeJira, capsys: pytest.CaptureFixture[str]
) -> None:
    iid = str(link(res, fake_jira).integration_id)
    code, _, err = run(capsys, "integration", "configure", iid, "--require-signature", "on")
    assert code == EXIT_USAGE and "--refresh-server-info" in err
    code, _, err = run(capsys, "integration", "configure", iid)
    assert code == EXIT_USAGE and "nothing to configure" in err
    code, _, err = run(capsys, "integration", "configure", iid, "--reverse-assignment", "on")
    assert code == EXIT_USAGE and "--organization" in err
    data_center_10(fake_jira)
    code, out, _ = run(capsys, "integration", "configure", iid, "--refresh-server-info")
    assert code == EXIT_OK
    assert "Jira 10.3.1 (DataCenter): bodies signed" in out
    # Required from the first signed delivery, or when the operator says so.
    code, out, _ = run(capsys, "integration", "configure", iid, "--require-signature", "on")
    assert (code, out.strip()) == (EXIT_OK, f"Integration {iid}: signature required")
    code, out, _ = run(capsys, "integration", "configure", iid, "--require-signature", "off")
    assert (code, out.strip()) == (
        EXIT_OK,
        f"Integration {iid}: signature not required (checked when sent)",
    )
    assert not integration_row(res, int(iid)).require_signature
    code, out, _ = run(capsys, "integration", "list")
    assert "active signed" in out and "required" not in out


def test_rotation_that_cannot_reach_jira_says_how_to_retry(
    res: Resources, orgs: None, fake_jira: FakeJira, capsys: pytest.CaptureFixture[str]
) -> None:
    iid = link(res, data_center_10(fake_jira)).integration_id
    fake_jira.fail_status = 503
    code, out, _ = run(capsys, "integration", "rotate-secret", str(iid))
    assert code == EXIT_FAILED
    assert f"configure {iid} --refresh-server-info" in out
    fake_jira.fail_status = None
    assert run(capsys, "integration", "configure", str(iid), "--refresh-server-info")[0] == EXIT_OK
    stored = integration_row(res, iid)
    assert stored.signing_secret_enc and stored.previous_signing_secret_enc
    (hook,) = fake_jira.webhooks
    assert hook["configuration"]["SECRET"] == res.vault.decrypt(stored.signing_secret_enc)
