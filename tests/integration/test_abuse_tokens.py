"""Token abuse the receiver tests do not cover yet: RS256 (a real signature, and the public
key used as an HMAC secret), a pending link that expired before it became an integration, a
secret rotated out. Every bad token gets the same 401 body as every other, and nothing is
stored."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import pytest
from starlette.testclient import TestClient

from tests.fakejira import rsa_keypair
from tests.webhooks import (
    EXTERNAL_ID,
    JSON,
    OTHER_EXTERNAL_ID,
    OTHER_SECRET,
    SECRET,
    body,
    load_integrations,
    payload,
    url,
)
from worker.domain import tokens
from worker.jira import admin
from worker.jira.linking import CALLBACK_PATH
from worker.receiver.app import UNAUTHORIZED, create_app
from worker.receiver.authcache import KNOWN_REFRESH_S, AuthCache
from worker.runtime.resources import Resources
from worker.store.db import transaction
from worker.store.queries import integrations as iq

PENDING_HOST = "jira.pending.test"
PENDING_KEY = "pending-consumer"
PENDING_EXTERNAL_ID = f"{PENDING_HOST}:{PENDING_KEY}"


@pytest.fixture
def client(res: Resources, scene: Callable[[dict[str, Any]], None]) -> Iterator[TestClient]:
    load_integrations(scene, disabled=True)
    with TestClient(create_app(res=res, configure_logs=False)) as c:
        yield c


def stored_count(res: Resources) -> int:
    with transaction(res.pool) as conn:
        row = conn.execute("SELECT count(*) AS n FROM webhook_delivery").fetchone()
    assert row is not None
    return int(row["n"])


def expired_pending_link(res: Resources) -> str:
    """A link started long ago and never completed: its request token."""
    vault = res.vault
    with transaction(res.pool) as conn:
        iq.insert_pending_link(
            conn,
            "expired-request-token",
            vault.encrypt("request-token-secret"),
            f"https://{PENDING_HOST}",
            True,
            PENDING_KEY,
            vault.encrypt(rsa_keypair().private_pem),
            [],
            False,
            30,
        )
        conn.execute("UPDATE pending_link SET expires_at = now() - interval '1 hour'")
    return "expired-request-token"


NONE_HEADER = tokens._b64encode(b'{"alg":"none"}')


def bad_tokens(res: Resources) -> dict[str, str]:
    keys = rsa_keypair()
    public_pem = keys.public_pem
    hs256_with_public_key = tokens.issue(EXTERNAL_ID, public_pem)
    header = tokens._b64encode(b'{"alg":"RS256","typ":"JWT"}')
    claims = tokens._b64encode(f'{{"id":"{EXTERNAL_ID}"}}'.encode())
    rs256_hmac = tokens._signature(f"{header}.{claims}".encode(), public_pem)
    expired_pending_link(res)
    return {
        "alg none": f"{NONE_HEADER}.{claims}.",
        "HS512 with the secret": jwt.encode({"id": EXTERNAL_ID}, SECRET, algorithm="HS512"),
        "RS256 signed with a private key": jwt.encode(
            {"id": EXTERNAL_ID}, keys.private_pem, algorithm="RS256"
        ),
        "RS256 header, HMAC with the public key": f"{header}.{claims}."
        + tokens._b64encode(rs256_hmac),
        "HS256 with the public key as secret": hs256_with_public_key,
        "another integration's secret": tokens.issue(EXTERNAL_ID, OTHER_SECRET),
        "expired pending link": tokens.issue(PENDING_EXTERNAL_ID, SECRET),
        "disabled integration": tokens.issue(OTHER_EXTERNAL_ID, OTHER_SECRET),
    }


def test_every_abusive_token_gets_the_one_401_body(client: TestClient, res: Resources) -> None:
    answers = {
        name: client.post(url(token), content=body(payload()), headers=JSON)
        for name, token in bad_tokens(res).items()
    }
    assert {name: a.status_code for name, a in answers.items()} == dict.fromkeys(answers, 401)
    assert {a.content for a in answers.values()} == {answers["alg none"].content}
    assert answers["alg none"].json() == UNAUTHORIZED
    assert stored_count(res) == 0


def test_rotated_out_secret_gets_the_same_401(client: TestClient, res: Resources) -> None:
    old = tokens.issue(EXTERNAL_ID, SECRET)
    admin.rotate_secret(res, 1)
    admin.finish_rotation(res, 1)
    unknown = client.post(url(tokens.issue("jira.nowhere.test:x", SECRET)), content=b"{}")
    for _ in range(50):  # the receiver's secret cache refreshes within a second
        answer = client.post(url(old), content=body(payload()), headers=JSON)
        if answer.status_code == 401:
            break
    assert answer.status_code == 401
    assert answer.content == unknown.content
    assert stored_count(res) == 0


def test_expired_pending_link_cannot_be_completed_through_the_callback(
    client: TestClient, res: Resources
) -> None:
    request_token = expired_pending_link(res)
    answer = client.get(CALLBACK_PATH, params={"oauth_token": request_token})
    assert answer.status_code == 400
    assert "expired" in answer.text
    with transaction(res.pool) as conn:
        row = conn.execute(
            "SELECT count(*) AS n FROM integration WHERE external_id = %s", (PENDING_EXTERNAL_ID,)
        ).fetchone()
    assert row is not None and row["n"] == 0


def test_tokens_claiming_random_ids_cost_a_bounded_number_of_lookups(
    res: Resources, scene: Callable[[dict[str, Any]], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    load_integrations(scene)
    lookups = {"rows": 0, "ids": 0}
    real_load, real_ids = AuthCache._load, AuthCache._load_ids

    def load(self: AuthCache, external_id: str) -> Any:
        lookups["rows"] += 1
        return real_load(self, external_id)

    def load_ids(self: AuthCache) -> set[str]:
        lookups["ids"] += 1
        return real_ids(self)

    monkeypatch.setattr(AuthCache, "_load", load)
    monkeypatch.setattr(AuthCache, "_load_ids", load_ids)
    with TestClient(create_app(res=res, configure_logs=False)) as client:
        started = time.monotonic()
        for _ in range(50):
            forged = tokens.issue(f"jira-{secrets.token_hex(6)}.test:key", SECRET)
            assert (
                client.post(url(forged), content=body(payload()), headers=JSON).status_code == 401
            )
        took_s = time.monotonic() - started
        assert lookups["rows"] == 0  # no integration row is read for an id nobody has
        assert lookups["ids"] <= took_s / KNOWN_REFRESH_S + 2
        # The integration that exists still answers, its entry never pushed out.
        assert client.post(url(), content=body(payload()), headers=JSON).status_code == 202
