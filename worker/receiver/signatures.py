"""Webhook body signatures: `X-Hub-Signature: sha256=<lowercase hex>` (Jira Data Center 10 and
Cloud's admin webhooks), the HMAC-SHA256 of the raw request body keyed with the integration's
signing secret; and, for a Cloud site linked through an OAuth 2.0 app, the dynamic webhooks'
`Authorization: Bearer <JWT>`, signed HS256 with the app's client secret and not expired.

The whole header value is compared with the expected one, so only that exact spelling
verifies: `sha1=`, uppercase hex, spaces or a second header are refused. Every candidate
secret is tried with a constant-time comparison, so timing tells nothing about which one
matched (during a rotation: the new one and the previous one).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence
from typing import Protocol

from worker.domain import tokens

HEADER = "x-hub-signature"
BEARER_HEADER = "authorization"
BEARER = "Bearer "


class Headers(Protocol):
    def getlist(self, key: str) -> list[str]: ...


class Signer(Protocol):
    """What decides which header carries an integration's signature."""

    @property
    def bearer(self) -> bool: ...


def sent(headers: Headers, auth: Signer) -> list[str]:
    """The signature headers a delivery carries for this integration: its `Authorization`
    headers when its webhooks are dynamic ones (OAuth 2.0), else its `X-Hub-Signature`."""
    return headers.getlist(BEARER_HEADER if auth.bearer else HEADER)


def verify(
    body: bytes, sent: Sequence[str], candidate_secrets: Sequence[bytes], *, bearer: bool = False
) -> bool:
    """True when exactly one signature header was sent and it signs `body` with one of the
    secrets (`bearer`: it is a JWT that verifies); False for no secret at all."""
    return matching(body, sent, candidate_secrets, bearer=bearer) is not None


def matching(
    body: bytes, sent: Sequence[str], candidate_secrets: Sequence[bytes], *, bearer: bool = False
) -> int | None:
    """The index of the secret whose signature of `body` is the one header sent (0: the
    current secret, 1: the previous one of a rotation), or None. With `bearer` (an OAuth 2.0
    link's dynamic webhooks) the header is `Bearer <JWT>`: it signs no body, but must verify
    with a secret and not have expired; without it, a JWT is no signature (it would not cover
    the body)."""
    if len(sent) != 1:
        return None
    if bearer:
        if not sent[0].startswith(BEARER):
            return None
        token = sent[0][len(BEARER) :].strip()
        secrets = [s.decode() for s in candidate_secrets]
        return tokens.matching_expiring(token, secrets, time.time()) if secrets else None
    given = sent[0].encode("latin-1")  # the header's bytes as the client sent them
    matched = None
    for index, secret in enumerate(candidate_secrets):
        expected = b"sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest().encode()
        if hmac.compare_digest(given, expected) and matched is None:
            matched = index
    return matched
