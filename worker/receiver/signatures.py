"""Webhook body signatures (Jira Data Center 10): `X-Hub-Signature: sha256=<lowercase hex>`,
the HMAC-SHA256 of the raw request body keyed with the integration's signing secret.

The whole header value is compared with the expected one, so only that exact spelling
verifies: `sha1=`, uppercase hex, spaces or a second header are refused. Every candidate
secret is tried with a constant-time comparison, so timing tells nothing about which one
matched (during a rotation: the new one and the previous one).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

HEADER = "x-hub-signature"


def verify(body: bytes, sent: Sequence[str], candidate_secrets: Sequence[bytes]) -> bool:
    """True when exactly one signature header was sent and it signs `body` with one of the
    secrets; False for no secret at all."""
    return matching(body, sent, candidate_secrets) is not None


def matching(body: bytes, sent: Sequence[str], candidate_secrets: Sequence[bytes]) -> int | None:
    """The index of the secret whose signature of `body` is the one header sent (0: the
    current secret, 1: the previous one of a rotation), or None."""
    if len(sent) != 1:
        return None
    given = sent[0].encode("latin-1")  # the header's bytes as the client sent them
    matched = None
    for index, secret in enumerate(candidate_secrets):
        expected = b"sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest().encode()
        if hmac.compare_digest(given, expected) and matched is None:
            matched = index
    return matched
