"""The bearer JWT of Cloud's dynamic webhooks (OAuth 2.0 apps): HS256 with the app's client
secret, not expired; tokens made by PyJWT, an implementation this project did not write."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import Any

import jwt
import pytest

from worker.domain import tokens
from worker.receiver import signatures

SECRET = b"ATOA-client-secret-of-the-app-" + b"x" * 40
BODY = b'{"webhookEvent":"jira:issue_updated"}'


def bearer(claims: dict[str, Any] | None = None, secret: bytes = SECRET, **kw: Any) -> str:
    now = int(time.time())
    token = jwt.encode(claims if claims is not None else {"iat": now, "exp": now + 180},
                       secret, algorithm=kw.pop("algorithm", "HS256"), **kw)  # fmt: skip
    return f"Bearer {token}"


def test_a_fresh_token_signed_with_the_client_secret_verifies() -> None:
    assert signatures.matching(BODY, [bearer()], [SECRET], bearer=True) == 0


def test_it_verifies_whatever_the_body_since_the_jwt_signs_none() -> None:
    assert signatures.verify(b"{}", [bearer()], [SECRET], bearer=True)


def test_another_secret_does_not_verify() -> None:
    assert not signatures.verify(BODY, [bearer(secret=b"someone else" * 8)], [SECRET], bearer=True)


def test_an_expired_token_is_refused_past_the_leeway() -> None:
    now = int(time.time())
    assert not signatures.verify(BODY, [bearer({"exp": now - tokens.CLOCK_LEEWAY_S - 5})],
                                 [SECRET], bearer=True)  # fmt: skip
    assert signatures.verify(
        BODY, [bearer({"exp": now - 5})], [SECRET], bearer=True
    )  # clocks differ


def test_a_token_without_exp_is_refused() -> None:
    assert not signatures.verify(BODY, [bearer({"iat": int(time.time())})], [SECRET], bearer=True)


@pytest.mark.parametrize("claim", ["nbf", "iat"])
def test_a_token_from_the_future_is_refused(claim: str) -> None:
    now = int(time.time())
    assert not signatures.verify(
        BODY, [bearer({"exp": now + 600, claim: now + 300})], [SECRET], bearer=True
    )


@pytest.mark.parametrize("exp", [True, "9999999999", None, [1]])
def test_exp_must_be_a_number(exp: Any) -> None:
    assert not signatures.verify(BODY, [bearer({"exp": exp})], [SECRET], bearer=True)


def test_only_hs256_is_accepted() -> None:
    now = int(time.time())
    assert not signatures.verify(
        BODY, [bearer({"exp": now + 60}, algorithm="HS512")], [SECRET], bearer=True
    )
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none"}).encode()).rstrip(b"=")
    claims = base64.urlsafe_b64encode(json.dumps({"exp": now + 60}).encode()).rstrip(b"=")
    unsigned = f"Bearer {header.decode()}.{claims.decode()}."
    assert not signatures.verify(BODY, [unsigned], [SECRET], bearer=True)


def test_a_tampered_token_is_refused() -> None:
    head, claims, signature = bearer()[len("Bearer ") :].split(".")
    later = json.dumps({"exp": int(time.time()) + 86400}).encode()
    forged = base64.urlsafe_b64encode(later).rstrip(b"=").decode()
    assert not signatures.verify(
        BODY, [f"Bearer {head}.{forged}.{signature}"], [SECRET], bearer=True
    )
    assert not signatures.verify(
        BODY, [f"Bearer {head}.{claims}.{signature[:-2]}AA"], [SECRET], bearer=True
    )


def test_two_authorization_headers_or_none_are_refused() -> None:
    assert not signatures.verify(BODY, [bearer(), bearer()], [SECRET], bearer=True)
    assert not signatures.verify(BODY, [], [SECRET], bearer=True)
    assert not signatures.verify(BODY, [bearer()], [], bearer=True)


@dataclass(frozen=True)
class _Auth:
    bearer: bool


class _Headers:
    def __init__(self, **values: str) -> None:
        self._values = values

    def getlist(self, key: str) -> list[str]:
        return [v for k, v in self._values.items() if k.replace("_", "-") == key]


def test_the_signature_header_is_authorization_for_dynamic_webhooks_only() -> None:
    headers = _Headers(authorization="Bearer x", x_hub_signature="sha256=ab")
    assert signatures.sent(headers, _Auth(bearer=True)) == ["Bearer x"]
    assert signatures.sent(headers, _Auth(bearer=False)) == ["sha256=ab"]


def test_a_jwt_is_no_signature_for_an_integration_whose_webhooks_sign_the_body() -> None:
    # X-Hub-Signature integrations (Data Center 10, Cloud admin webhooks): the body must be signed.
    assert signatures.matching(BODY, [bearer()], [SECRET]) is None
    assert signatures.matching(BODY, [bearer()], [SECRET], bearer=True) == 0
