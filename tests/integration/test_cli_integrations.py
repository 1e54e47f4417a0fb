"""`jira-sync integration ...` and `jira-sync deliveries ...`: output, exit codes, no secrets."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from starlette.testclient import TestClient

from tests.fakejira import CONSUMER_KEY, FakeJira, rsa_keypair
from tests.integration.conftest import Run
from tests.webhooks import JSON, body, payload
from worker.cli.common import EXIT_NOT_FOUND, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from worker.receiver.app import create_app
from worker.runtime.resources import Resources


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "jira.pem"
    path.write_text(rsa_keypair().private_pem)
    return path


@pytest.fixture
def orgs(scene: Callable[[dict[str, Any]], None]) -> None:
    scene({"organizations": [{"slug": "acme", "name": "Acme", "issue_sync_enabled": True}]})


def link(run: Run, fake: FakeJira, key_file: Path) -> tuple[str, str, str]:
    """`integration link` then `complete`: (both outputs, stdout + stderr, and the new id)."""
    code, out, err = run(
        "integration", "link", "--base-url", fake.base_url, "--consumer-key", CONSUMER_KEY,
        "--private-key-file", str(key_file), "--organization", "acme",
    )  # fmt: skip
    assert code == EXIT_OK, err
    authorize = next(line for line in out.splitlines() if "/oauth/authorize?" in line)
    token = parse_qs(urlsplit(authorize).query)["oauth_token"][0]
    fake.approve(token)
    code, out2, err2 = run("integration", "complete", "--oauth-token", token)
    assert code == EXIT_OK, err2
    (integration,) = json.loads(run("integration", "list", "--json")[1])
    return out + err, out2 + err2, str(integration["id"])


def test_link_and_complete_from_the_command_line(
    run: Run, orgs: None, fake_jira: FakeJira, key_file: Path
) -> None:
    _, completed, integration_id = link(run, fake_jira, key_file)
    assert f"Integration {integration_id} (" in completed
    assert "webhook is registered" in completed
    code, out, _ = run("integration", "list", "--json")
    assert code == EXIT_OK
    (row,) = json.loads(out)
    assert row["status"] == "active"
    assert row["organizations"][0]["organization"] == "acme"


def test_configure_rotate_and_disable(
    run: Run, orgs: None, fake_jira: FakeJira, key_file: Path
) -> None:
    _, _, iid = link(run, fake_jira, key_file)
    code, out, _ = run(
        "integration", "configure", iid, "--organization", "acme",
        "--reverse-assignment", "on", "--forward-assignment", "off",
    )  # fmt: skip
    assert (code, out.strip()) == (
        EXIT_OK,
        f"Integration {iid}, acme: reverse assignment on, forward assignment off, "
        "reverse status off, forward status off",
    )
    (hook,) = fake_jira.webhooks
    assert run("integration", "rotate-secret", iid)[0] == EXIT_OK
    # Jira 9's webhook is given the new URL too: nothing to edit by hand.
    (rotated,) = fake_jira.webhooks
    new_url = run("integration", "webhook-url", iid)[1].strip()
    assert (rotated["id"], rotated["url"]) == (hook["id"], new_url)
    assert rotated["url"] != hook["url"]
    assert "rotating" in run("integration", "list")[1]
    assert run("integration", "rotate-secret", iid)[0] == EXIT_USAGE  # one rotation at a time
    assert "Rotation finished" in run("integration", "rotate-secret", iid, "--finish")[1]
    assert "Nothing to do" in run("integration", "rotate-secret", iid, "--finish")[1]
    assert "disabled" in run("integration", "disable", iid)[1]
    code, out, _ = run("integration", "disable", iid)
    assert (code, "Nothing to do" in out) == (EXIT_OK, True)


def test_webhook_url_prints_the_full_url_the_receiver_accepts(
    run: Run, res: Resources, orgs: None, fake_jira: FakeJira, key_file: Path
) -> None:
    _, _, iid = link(run, fake_jira, key_file)
    code, out, _ = run("integration", "webhook-url", iid)
    assert code == EXIT_OK
    path = urlsplit(out.strip()).path
    with TestClient(create_app(res=res, configure_logs=False)) as client:
        assert client.post(path, content=body(payload()), headers=JSON).status_code == 202


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("integration", "complete", "--oauth-token", "nope"), EXIT_NOT_FOUND, "no pending link"),
        (("integration", "webhook-url", "99"), EXIT_NOT_FOUND, "no such integration"),
        (("integration", "disable", "99"), EXIT_NOT_FOUND, "no such integration"),
        (("deliveries", "show", "99"), EXIT_NOT_FOUND, "no such delivery"),
    ],
)
def test_errors_have_messages_and_exit_codes(
    run: Run, res: Resources, args: tuple[str, ...], code: int, message: str
) -> None:
    got, _, err = run(*args)
    assert got == code
    assert message in err


def test_link_with_a_bad_key_file_is_a_usage_error(
    run: Run, orgs: None, fake_jira: FakeJira, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n")
    code, _, err = run(
        "integration", "link", "--base-url", fake_jira.base_url, "--consumer-key", "k",
        "--private-key-file", str(bad), "--organization", "acme",
    )  # fmt: skip
    assert code == EXIT_USAGE
    assert "private key must be a PEM-encoded RSA private key" in err


@pytest.mark.parametrize(
    ("base_url", "named"),
    [
        ("http://admin:hunter2@jira.acme.test", "user:password@"),
        ("https://admin@jira.acme.test", "user:password@"),
        ("ftp://jira.acme.test", "http or https"),
        ("jira.acme.test", "http or https"),
        ("http://", "with a host"),
        ("http://jira.acme.test:99999", "with a host"),
        ("https://jira.acme.test/?next=x", "query"),
    ],
)
def test_link_refuses_a_base_url_it_cannot_sign_or_store(
    run: Run, orgs: None, fake_jira: FakeJira, key_file: Path, base_url: str, named: str
) -> None:
    code, _, err = run(
        "integration", "link", "--base-url", base_url, "--consumer-key", "k",
        "--private-key-file", str(key_file), "--organization", "acme",
    )  # fmt: skip
    assert code == EXIT_USAGE
    assert named in err
    assert "hunter2" not in err
    assert fake_jira.calls == []


def test_link_with_jira_unreachable_exits_unavailable(run: Run, orgs: None, key_file: Path) -> None:
    code, _, err = run(
        "integration", "link", "--base-url", "http://127.0.0.1:9", "--consumer-key", "k",
        "--private-key-file", str(key_file), "--organization", "acme",
    )  # fmt: skip
    assert code == EXIT_UNAVAILABLE
    assert "cannot be reached" in err


def test_deliveries_list_and_show(run: Run, res: Resources, orgs: None, fake_jira: FakeJira,
                                  key_file: Path) -> None:  # fmt: skip
    _, _, iid = link(run, fake_jira, key_file)
    _, url_out, _ = run("integration", "webhook-url", iid)
    with TestClient(create_app(res=res, configure_logs=False)) as client:
        answer = client.post(urlsplit(url_out.strip()).path, content=body(payload("APP-9")),
                             headers=JSON)  # fmt: skip
    delivery_id = answer.json()["delivery"]
    code, out, _ = run("deliveries", "list", "--json")
    assert code == EXIT_OK
    assert [d["issue_key"] for d in json.loads(out)] == ["APP-9"]
    code, out, _ = run("deliveries", "show", delivery_id, "--json")
    assert code == EXIT_OK
    shown = json.loads(out)
    assert shown["payload"]["issue"]["key"] == "APP-9"
    assert shown["status"] in ("received", "queued")
    assert run("deliveries", "list", "--status", "done")[1].strip() == "No deliveries."


def test_no_secret_reaches_logs_or_cli_output(
    run: Run,
    res: Resources,
    orgs: None,
    fake_jira: FakeJira,
    key_file: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    linked, completed, iid = link(run, fake_jira, key_file)
    outputs = [linked, completed]
    for args in (
        ("integration", "list"),
        ("integration", "list", "--json"),
        ("integration", "rotate-secret", iid),
        ("integration", "rotate-secret", iid, "--finish"),
        ("integration", "configure", iid, "--organization", "acme", "--forward-assignment", "on"),
        ("integration", "disable", iid),
        ("deliveries", "list"),
    ):
        code, out, err = run(*args)
        assert code == EXIT_OK, err
        outputs += [out, err]
    outputs.append(caplog.text)
    text = "\n".join(outputs)

    access_token, (access_secret, _) = next(iter(fake_jira.access_tokens.items()))
    with psycopg.connect(res.settings.database_url) as conn:
        row = conn.execute("SELECT webhook_secret_enc FROM integration").fetchone()
    assert row is not None
    webhook_secret = res.vault.decrypt(row[0])
    _, url_out, _ = run("integration", "webhook-url", iid)
    webhook_token = url_out.strip().rstrip("/").rsplit("/", 1)[1]
    pem_body = rsa_keypair().private_pem.splitlines()[5]
    for name, secret in {
        "access token": access_token,
        "access token secret": access_secret,
        "webhook secret": webhook_secret,
        "webhook token": webhook_token,
        "private key": pem_body,
    }.items():
        assert secret not in text, f"the {name} was printed or logged"


def test_status_switches_and_mapping_from_the_command_line(
    run: Run, orgs: None, fake_jira: FakeJira, key_file: Path
) -> None:
    _, _, iid = link(run, fake_jira, key_file)
    code, out, _ = run(
        "integration", "configure", iid, "--organization", "acme",
        "--reverse-status", "on", "--forward-status", "on",
    )  # fmt: skip
    assert (code, out.strip()) == (
        EXIT_OK,
        f"Integration {iid}, acme: reverse assignment off, forward assignment off, "
        "reverse status on, forward status on",
    )
    (row,) = json.loads(run("integration", "list", "--json")[1])
    assert (
        row["organizations"][0]["reverse_status"],
        row["organizations"][0]["forward_status"],
    ) == (
        True,
        True,
    )
    mapping = ["--jira-project", "APP", "--resolved", "Done", "--unresolved", "Reopened"]
    code, out, _ = run("integration", "map-status", iid, "--organization", "acme", *mapping)
    assert (code, out.strip()) == (
        EXIT_OK,
        f"Integration {iid}, acme, Jira project APP: resolved -> Done, unresolved -> Reopened",
    )
    command = ("integration", "map-status", iid, "--organization", "acme")
    code, _, err = run(*command, "--jira-project", "APP-1", "--resolved", "5", "--unresolved", "4")
    assert code == EXIT_USAGE and "Jira project must be a project key like APP" in err
    code, _, err = run(*command, "--jira-project", "APP", "--resolved", " ", "--unresolved", "4")
    assert code == EXIT_USAGE and "--resolved must name a Jira status" in err
    code, _, err = run("integration", "map-status", "999", "--organization", "acme", *mapping)
    assert code == EXIT_NOT_FOUND
