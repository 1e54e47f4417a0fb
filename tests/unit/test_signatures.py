"""Body signatures of Jira Data Center 10, the dedupe key without Jira's identifier header, and
reading serverInfo: pure, no servers."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from worker.domain.errors import JiraRejected
from worker.jira.api import ServerInfo
from worker.receiver import payload, signatures

BODY = b'{"webhookEvent":"jira:issue_updated"}'
SECRET = b"signing-secret"


def signature(body: bytes = BODY, secret: bytes = SECRET) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def test_the_signature_of_the_body_verifies() -> None:
    assert signatures.verify(BODY, [signature()], [SECRET])


def test_either_secret_of_a_rotation_verifies() -> None:
    assert signatures.verify(BODY, [signature(secret=b"old")], [b"new", b"old"])
    assert signatures.verify(BODY, [signature(secret=b"new")], [b"new", b"old"])


@pytest.mark.parametrize(
    "sent",
    [
        [],
        [signature(), signature()],
        [signature(BODY + b" ")],
        [signature(secret=b"another")],
        [signature().upper()],
        ["sha256=" + signature()[7:].upper()],
        ["sha1=" + hmac.new(SECRET, BODY, hashlib.sha1).hexdigest()],
        [signature()[7:]],
        [" " + signature()],
        [signature() + "\u00e9"],
    ],
    ids=[
        "missing", "twice", "other body", "other secret", "all upper", "upper hex", "sha1",
        "no prefix", "leading space", "non-ascii tail",
    ],
)  # fmt: skip
def test_anything_but_the_exact_signature_fails(sent: list[str]) -> None:
    assert not signatures.verify(BODY, sent, [SECRET])


def test_no_secret_verifies_nothing() -> None:
    assert not signatures.verify(BODY, [signature()], [])


def event(**over: object) -> dict[str, object]:
    data: dict[str, object] = {
        "timestamp": 1_700_000_000_000,
        "webhookEvent": "jira:issue_updated",
        "issue": {"id": "10001", "key": "APP-1"},
        "changelog": {"id": "20002", "items": []},
    }
    return {**data, **over}


def test_dedupe_key_without_identifier_is_integration_issue_changelog_and_timestamp() -> None:
    key = payload.dedupe_key(1, None, event())
    assert key == payload.dedupe_key(1, None, event(webhookEvent="jira:issue_created"))
    assert key != payload.dedupe_key(2, None, event())
    assert key != payload.dedupe_key(1, None, event(timestamp=1_700_000_000_001))
    assert key != payload.dedupe_key(1, None, event(changelog={"id": "20003", "items": []}))
    assert key != payload.dedupe_key(1, None, event(issue={"id": "10002", "key": "APP-1"}))
    assert payload.dedupe_key(1, "hook-1", event()) == "id:hook-1"


@pytest.mark.parametrize(
    ("answer", "major", "signs"),
    [
        ({"version": "9.12.2", "versionNumbers": [9, 12, 2], "deploymentType": "Server"}, 9, False),
        ({"version": "10.3.1", "deploymentType": "DataCenter"}, 10, True),
        ({"version": "11.0.0", "versionNumbers": [11, 0, 0]}, 11, True),
        ({"version": "8.20.1"}, 8, False),
    ],
)
def test_server_info_decides_whether_webhooks_are_signed(
    answer: dict[str, object], major: int, signs: bool
) -> None:
    info = ServerInfo.from_json(answer)
    assert (info.major, info.signs_webhooks) == (major, signs)


@pytest.mark.parametrize("answer", [[], {}, {"version": "unknown"}, {"versionNumbers": ["x"]}])
def test_server_info_without_a_version_is_refused(answer: object) -> None:
    with pytest.raises(JiraRejected, match="serverInfo"):
        ServerInfo.from_json(answer)
