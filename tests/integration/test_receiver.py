"""The webhook receiver answers exactly as the SPEC section 3 table says (in-process app,
real PostgreSQL and Redis)."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.conftest import Servers, wait_for
from tests.webhooks import (
    EXTERNAL_ID,
    JSON,
    OTHER_EXTERNAL_ID,
    OTHER_SECRET,
    SECRET,
    body,
    delivery_ids_on_broker,
    load_integrations,
    old_secret_use_noted,
    payload,
    url,
)
from worker.domain import tokens
from worker.jira import admin
from worker.receiver.app import UNAUTHORIZED, create_app
from worker.receiver.authcache import AuthCache
from worker.receiver.readiness import PROBE_EVERY_S
from worker.runtime.resources import Resources
from worker.store.db import transaction
from worker.store.queries import deliveries as dq


@pytest.fixture
def client(res: Resources, scene: Callable[[dict[str, Any]], None]) -> Iterator[TestClient]:
    load_integrations(scene, disabled=True)
    with TestClient(create_app(res=res, configure_logs=False)) as c:
        yield c


def stored(res: Resources) -> list[dq.Delivery]:
    with transaction(res.pool) as conn:
        return dq.list_deliveries(conn, None, None, 1000)


def post(client: TestClient, data: Any = None, token: str | None = None, **kw: Any) -> Any:
    headers = kw.pop("headers", JSON)
    content = kw.pop("content", None)
    if content is None:
        content = body(payload() if data is None else data)
    return client.post(url(token), content=content, headers=headers, **kw)


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_accepted_delivery_is_stored_then_queued(
    client: TestClient, res: Resources, servers: Servers
) -> None:
    data = payload("APP-7", timestamp=1_700_000_000_123)
    response = post(client, data)
    assert response.status_code == 202
    delivery_id = int(response.json()["delivery"])
    assert response.json() == {"status": "accepted", "delivery": str(delivery_id)}
    (row,) = stored(res)
    assert (row.id, row.integration_id, row.issue_key, row.event_ts) == (
        delivery_id,
        1,
        "APP-7",
        1_700_000_000_123,
    )
    assert json.loads(row.body) == data
    # Stored queued by this receiver process, which sends its first step right after.
    assert row.status == "queued" and row.sender is not None
    wait_for(
        lambda: delivery_ids_on_broker(servers.env["BROKER_URL"]) == {delivery_id},
        10,
        "the delivery on the broker",
    )


def test_body_is_stored_byte_for_byte(client: TestClient, res: Resources) -> None:
    # Quotes, backslashes, braces, commas and escapes are what an array literal would mangle.
    data = payload("APP-8")
    data["issue"]["fields"]["summary"] = 'a "quoted", {braced} \\ back\\slash \u00e9t\u00e9 \u2603'
    data["comment"] = {"body": 'line\nbreak \\"nested\\" NULL'}
    raw = json.dumps(data, ensure_ascii=False, indent=1)
    response = post(client, content=raw.encode())
    assert response.status_code == 202
    (row,) = stored(res)
    assert row.body == raw


def test_log_names_each_stored_delivery_and_each_refusal(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="jira_sync.receiver")
    delivery_id = int(post(client, payload("APP-9")).json()["delivery"])
    assert post(client, token="not-a-jwt").status_code == 401
    events = [(r.getMessage(), r.__dict__) for r in caplog.records]
    assert any(m == "payload.stored" and f["delivery_ids"] == [delivery_id] for m, f in events)
    refusals = [f for m, f in events if m == "payload.request"]
    assert [f["status"] for f in refusals] == [401]  # a 202 is not logged a second time


BAD_TOKENS = {
    "empty": "",
    "undecodable": "not-a-jwt",
    "garbage segments": "eyJ.eyJ.sig",
    "no id": "{}.{}.{}".format(_b64({"alg": "HS256"}), _b64({"sub": "x"}), "c2ln"),
    "unknown integration": tokens.issue("jira.nowhere.test:key", SECRET),
    "bad signature": tokens.issue(EXTERNAL_ID, "the-wrong-secret-" + "z" * 30),
    "another integration's secret": tokens.issue(EXTERNAL_ID, OTHER_SECRET),
    "alg none": "{}.{}.".format(_b64({"alg": "none"}), _b64({"id": EXTERNAL_ID})),
    "disabled integration": tokens.issue(OTHER_EXTERNAL_ID, OTHER_SECRET),
}


@pytest.mark.parametrize("token", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
def test_every_bad_token_gets_the_same_401(client: TestClient, res: Resources, token: str) -> None:
    response = post(client, token=token)
    assert response.status_code == 401
    assert response.json() == UNAUTHORIZED
    assert stored(res) == []


def test_other_algorithms_signed_with_the_secret_are_refused(
    client: TestClient, res: Resources
) -> None:
    import jwt

    token = jwt.encode({"id": EXTERNAL_ID}, SECRET, algorithm="HS512")
    assert post(client, token=token).status_code == 401
    assert stored(res) == []


def test_token_signed_by_pyjwt_is_accepted(client: TestClient) -> None:
    import jwt

    token = jwt.encode({"id": EXTERNAL_ID}, SECRET, algorithm="HS256")
    assert post(client, token=token).status_code == 202


def test_token_check_comes_before_the_body(client: TestClient) -> None:
    response = post(
        client, token="bad", content=b"not json", headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 401


BAD_BODIES = {
    "not JSON": (b"{not json", "not valid JSON"),
    "not an object": (b"[1, 2]", "JSON object"),
    "not UTF-8": (b'{"a": "\xff"}', "UTF-8"),
    "changelog without issue": (
        body({"changelog": {"id": "1", "items": [{"field": "assignee"}]}}),
        "issue.key",
    ),
    "changelog without issue.key": (
        body({"issue": {"id": "1"}, "changelog": {"items": [{"field": "x"}]}}),
        "issue.key",
    ),
    "changelog not an object": (body({"changelog": "yes"}), "changelog"),
    "timestamp not a number": (body({**payload(), "timestamp": "soon"}), "timestamp"),
    "changelog without timestamp": (
        body({k: v for k, v in payload().items() if k != "timestamp"}),
        "timestamp",
    ),
    "assignee item without issue.fields": (
        body({**payload(), "issue": {"id": "10001", "key": "APP-1"}}),
        "issue.fields",
    ),
    "assignee item without an assignee key": (
        body({**payload(), "issue": {"id": "10001", "key": "APP-1", "fields": {"x": 1}}}),
        "issue.fields.assignee",
    ),
    "changelog.id not a number": (
        body({**payload(), "changelog": {"id": "ten", "items": [{"field": "assignee"}]}}),
        "changelog.id",
    ),
    "changelog item not an object": (
        body({**payload(), "changelog": {"id": "1", "items": ["assignee"]}}),
        "changelog.items[0]",
    ),
    "changelog a list of items": (body({**payload(), "changelog": [{"field": "x"}]}), "changelog"),
}


@pytest.mark.parametrize(("content", "named"), BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_bad_body_gets_400_naming_the_problem(
    client: TestClient, res: Resources, content: bytes, named: str
) -> None:
    response = post(client, content=content)
    assert response.status_code == 400
    assert named in response.json()["detail"]
    assert stored(res) == []


def test_body_over_the_limit_gets_413(client: TestClient, res: Resources) -> None:
    limit = res.settings.webhook_body_limit_bytes
    big = payload()
    big["issue"]["fields"]["description"] = "x" * limit
    assert post(client, big).status_code == 413
    assert stored(res) == []


def test_body_over_the_limit_without_content_length_gets_413(
    client: TestClient, res: Resources
) -> None:
    limit = res.settings.webhook_body_limit_bytes

    def chunks() -> Iterator[bytes]:
        yield b'{"a": "'
        for _ in range(limit // 65536 + 1):
            yield b"x" * 65536
        yield b'"}'

    assert post(client, content=chunks()).status_code == 413
    assert stored(res) == []


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_content_type_not_json_gets_415(
    client: TestClient, res: Resources, content_type: str
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = post(client, headers=headers)
    assert response.status_code == 415
    assert stored(res) == []


def test_json_content_type_with_charset_is_accepted(client: TestClient) -> None:
    headers = {"Content-Type": "application/json; charset=UTF-8"}
    assert post(client, headers=headers).status_code == 202


IGNORED = {
    "no changelog": {"webhookEvent": "jira:issue_updated", "issue": {"key": "APP-1"}},
    "null changelog": {"issue": {"key": "APP-1"}, "changelog": None},
    "empty changelog": {"issue": {"key": "APP-1"}, "changelog": {"id": "1", "items": []}},
    "changelog without items": {"changelog": {"id": "1"}},
    "changelog an empty list": {"issue": {"key": "APP-1"}, "changelog": []},
    "changelog an empty object": {"issue": {"key": "APP-1"}, "changelog": {}},
    "changelog with an empty item list": {"issue": {"key": "APP-1"}, "changelog": {"items": []}},
}


@pytest.mark.parametrize("data", IGNORED.values(), ids=IGNORED.keys())
def test_no_changes_are_ignored(
    client: TestClient, res: Resources, servers: Servers, data: Any
) -> None:
    response = post(client, data)
    assert (response.status_code, response.json()) == (200, {"status": "ignored"})
    assert stored(res) == []
    assert delivery_ids_on_broker(servers.env["BROKER_URL"]) == set()


def test_same_webhook_identifier_is_a_duplicate(client: TestClient, res: Resources) -> None:
    headers = {**JSON, "X-Atlassian-Webhook-Identifier": "delivery-1"}
    assert post(client, payload(), headers=headers).status_code == 202
    response = post(client, payload(), headers=headers)  # another changelog, same identifier
    assert (response.status_code, response.json()) == (200, {"status": "duplicate"})
    assert len(stored(res)) == 1


def test_same_event_without_identifier_is_a_duplicate(client: TestClient, res: Resources) -> None:
    data = payload(changelog_id=42)
    assert post(client, data).status_code == 202
    response = post(client, data)
    assert (response.status_code, response.json()) == (200, {"status": "duplicate"})
    other = payload(changelog_id=43)
    assert post(client, other).status_code == 202
    assert len(stored(res)) == 2


def test_database_down_gets_503_with_retry_after(
    client: TestClient, res: Resources, servers: Servers
) -> None:
    assert servers.pg is not None, "needs the embedded PostgreSQL"
    assert post(client).status_code == 202  # integration secrets now cached
    servers.pg.stop()
    try:
        response = post(client)
        assert response.status_code == 503
        assert response.headers["Retry-After"].isdigit()
        assert response.json()["error"] == "unavailable"
    finally:
        servers.pg.start()
    wait_for(lambda: post(client).status_code == 202, 30, "the receiver to recover")
    assert len(stored(res)) == 2


def test_rotation_accepts_old_and_new_secret_until_finished(
    client: TestClient, res: Resources
) -> None:
    old_token = tokens.issue(EXTERNAL_ID, SECRET)
    new_url = admin.rotate_secret(res, 1).webhook_url
    new_token = new_url.rstrip("/").rsplit("/", 1)[1]
    assert post(client, payload(), token=new_token).status_code == 202
    assert post(client, payload(), token=old_token).status_code == 202
    # The old secret just verified a delivery: finishing now would cut a Jira off.
    wait_for(lambda: old_secret_use_noted(res, 1), 10, "the old secret's use to be noted")
    assert admin.finish_rotation(res, 1) is admin.Finish.OLD_SECRET_IN_USE
    assert admin.finish_rotation(res, 1, force=True) is admin.Finish.FINISHED
    wait_for(
        lambda: post(client, payload(), token=old_token).status_code == 401,
        10,
        "the old secret to stop verifying",
    )
    assert post(client, payload(), token=new_token).status_code == 202


def test_disabling_an_integration_refuses_its_deliveries(
    client: TestClient, res: Resources
) -> None:
    assert post(client).status_code == 202
    admin.disable(res, 1)
    wait_for(lambda: post(client).status_code == 401, 10, "the disabled integration to be refused")


def test_a_load_overtaken_by_a_disable_does_not_keep_the_integration_accepted(
    res: Resources, scene: Callable[[dict[str, Any]], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    load_integrations(scene)
    real_load = AuthCache._load
    raced = []

    def load_then_disable(self: AuthCache, external_id: str) -> Any:
        entry = real_load(self, external_id)  # read while the integration is active
        if not raced:  # ...and disabled before the read is cached
            raced.append(external_id)
            heard = self._changes
            admin.disable(res, 1)
            deadline = time.monotonic() + 10
            while self._changes == heard and time.monotonic() < deadline:
                time.sleep(0.01)  # until the announcement reached the listener
        return entry

    monkeypatch.setattr(AuthCache, "_load", load_then_disable)
    with TestClient(create_app(res=res, configure_logs=False)) as c:
        post(c)  # raced with the disable: either answer is fair
        assert raced
        assert post(c).status_code == 401  # never the stale, active entry


def test_readyz_answers_from_the_background_probe(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = client.app.state.receiver  # type: ignore[attr-defined]
    opened = []
    real = receiver.celery.connection_for_write

    def counted() -> Any:
        opened.append(1)
        return real()

    monkeypatch.setattr(receiver.celery, "connection_for_write", counted)
    started = time.monotonic()
    answers = {client.get("/readyz").status_code for _ in range(50)}
    took_s = time.monotonic() - started
    assert answers == {200}
    assert len(opened) <= took_s / PROBE_EVERY_S + 1  # the probe's, not one per call


def test_healthz_answers(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_reports_database_and_broker(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "database": "ok", "broker": "ok"}


def test_unknown_route_and_method_answer_json(client: TestClient) -> None:
    assert client.get("/nope").json()["error"] == "http_error"
    response = client.get(url())
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/json"


# Real bodies Jira sent once (the `jira_payloads` fixture): the answer each must get.
REAL_BODIES = {
    "server_mm_assigned_on_server.json": (202, None),
    "server_zulip_reassigned_v1.json": (202, None),
    "server_mm_status_resolved_unassigned.json": (202, None),
    "server_mm_status_in_progress.json": (202, None),
    "server_jenkins_status_updated.json": (202, None),
    "server_crystal_status_and_story_points.json": (202, None),
    "server_mm_commented_no_changelog.json": (200, None),
    "server_jenkins_with_comment_no_changelog.json": (200, None),
    "cloud_mm_assigned.json": (202, None),
    "cloud_mm_assigned_nobody.json": (202, None),
    "cloud_mobitel_assigned_no_email.json": (400, "timestamp"),
}


@pytest.mark.parametrize(("name", "expected"), REAL_BODIES.items(), ids=REAL_BODIES.keys())
def test_real_jira_bodies_get_the_answer_the_spec_asks(
    client: TestClient,
    res: Resources,
    jira_payloads: Path,
    name: str,
    expected: tuple[int, str | None],
) -> None:
    status, named = expected
    response = post(client, content=(jira_payloads / name).read_bytes())
    assert response.status_code == status, response.json()
    if named is not None:
        assert named in response.json()["detail"]
    assert len(stored(res)) == (1 if status == 202 else 0)
