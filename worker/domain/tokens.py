"""Webhook URL tokens: a JWT (HS256 only) whose `id` claim names the integration.

Verification is two-phase because the secret depends on the claim: `claimed_id` reads the
`id` without trusting it, then `verify` checks the signature against every secret the
integration currently accepts (during a rotation: the new one and the previous one). Every
candidate is checked, with a constant-time comparison, so timing tells nothing about which
secret matched, and an unknown integration is verified against a dummy secret.

Why not PyJWT: the receiver needs the claim before it knows which secrets to try, must refuse
every header but exactly HS256 before any key is used, and runs this on every request; these
fifty lines do only that, with bounds on the token's size and characters that PyJWT does not
set. The tests check interoperability against PyJWT (a dev dependency only).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Sequence

ALGORITHM = "HS256"
MAX_TOKEN_CHARS = 2048
MAX_ID_CHARS = 64
SECRET_BYTES = 32
_DUMMY_SECRET = secrets.token_urlsafe(SECRET_BYTES)
_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")


class InvalidToken(Exception):
    """Raised when a token is empty, undecodable, not HS256, lacks `id` or fails to verify."""


def new_secret() -> str:
    """A fresh random webhook signing secret (43 URL-safe characters)."""
    return secrets.token_urlsafe(SECRET_BYTES)


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    # Strict alphabet: the stdlib decoder would silently skip foreign characters.
    if not _SEGMENT.fullmatch(text) or len(text) % 4 == 1:
        raise InvalidToken("token is not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidToken("token is not base64url") from None


def _signature(signing_input: bytes, secret: str) -> bytes:
    return hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()


def issue(external_id: str, secret: str) -> str:
    """The token that goes in the webhook URL of an integration."""
    header = _b64encode(
        json.dumps({"alg": ALGORITHM, "typ": "JWT"}, separators=(",", ":")).encode()
    )
    payload = _b64encode(json.dumps({"id": external_id}, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode("ascii")
    return f"{header}.{payload}.{_b64encode(_signature(signing_input, secret))}"


def _json_object(segment: str) -> dict[str, object]:
    try:
        value = json.loads(_b64decode(segment))
    except (ValueError, RecursionError):
        raise InvalidToken("token segment is not JSON") from None
    if not isinstance(value, dict):
        raise InvalidToken("token segment is not a JSON object")
    return value


def claimed_id(token: str) -> str:
    """The `id` claim of a well-formed HS256 token, not yet verified."""
    if not token or len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
        raise InvalidToken("token is not a JWT")
    header_seg, payload_seg, _ = token.split(".")
    header = _json_object(header_seg)
    # Only HS256: "none", RS256 and friends are refused before any key is looked up.
    if header.get("alg") != ALGORITHM:
        raise InvalidToken("token algorithm is not HS256")
    integration_id = _json_object(payload_seg).get("id")
    if (
        not isinstance(integration_id, str)
        or not 0 < len(integration_id) <= MAX_ID_CHARS
        or not integration_id.isprintable()  # no NUL, control or lone surrogate characters
    ):
        raise InvalidToken("token has no id claim")
    return integration_id


def verify(token: str, candidate_secrets: Sequence[str]) -> bool:
    """True when the token is signed by one of the secrets."""
    return matching(token, candidate_secrets) is not None


def matching(token: str, candidate_secrets: Sequence[str]) -> int | None:
    """The index of the secret that signed the token (0: the current one, 1: the previous
    one of a rotation), or None; constant-time in which one. An empty list (unknown
    integration) still costs one comparison, against a dummy."""
    parts = token.split(".")
    if len(parts) != 3 or not all(_SEGMENT.fullmatch(p) for p in parts):
        return None
    header_seg, payload_seg, signature_seg = parts
    # Compared in canonical base64url form, so no second spelling of a signature verifies.
    given = signature_seg.encode("ascii")
    signing_input = f"{header_seg}.{payload_seg}".encode("ascii")
    matched = None
    for index, secret in enumerate(candidate_secrets or [_DUMMY_SECRET]):
        expected = _b64encode(_signature(signing_input, secret)).encode("ascii")
        if hmac.compare_digest(given, expected) and candidate_secrets and matched is None:
            matched = index
    return matched


# Clocks of Atlassian and this host may differ by this much (exp, nbf, iat).
CLOCK_LEEWAY_S = 30


def matching_expiring(
    token: str, candidate_secrets: Sequence[str], now_s: float, leeway_s: float = CLOCK_LEEWAY_S
) -> int | None:
    """A bearer JWT of Cloud's dynamic webhooks (signed with the OAuth 2.0 app's client
    secret): the index of the secret that signed it, or None. Only HS256 (refused before any
    key is used), and an `exp` claim that has not passed; `nbf` and `iat`, when present, must
    not be in the future (each within `leeway_s`)."""
    if not token or len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
        return None
    header_seg, payload_seg, _ = token.split(".")
    try:
        if _json_object(header_seg).get("alg") != ALGORITHM:
            return None
        claims = _json_object(payload_seg)
    except InvalidToken:
        return None
    used = matching(token, candidate_secrets)
    if used is None:
        return None
    expires = _seconds(claims.get("exp"))
    if expires is None or now_s > expires + leeway_s:
        return None
    for name in ("nbf", "iat"):
        if name in claims:
            moment = _seconds(claims[name])
            if moment is None or moment > now_s + leeway_s:
                return None
    return used


def _seconds(value: object) -> float | None:
    """A NumericDate claim (seconds since the epoch, an int or a float, never a bool)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
