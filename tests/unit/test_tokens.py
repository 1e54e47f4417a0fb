"""Webhook JWTs: HS256 only, the `id` claim, rotation (pure, no servers)."""

from __future__ import annotations

import base64
import contextlib
import json

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.domain import tokens

SECRET = tokens.new_secret()
OLD = tokens.new_secret()


def _seg(data: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_issued_token_is_a_standard_hs256_jwt() -> None:
    token = tokens.issue("jira.acme.test:key", SECRET)
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    assert jwt.decode(token, SECRET, algorithms=["HS256"]) == {"id": "jira.acme.test:key"}


def test_claimed_id_reads_the_id_claim() -> None:
    assert tokens.claimed_id(tokens.issue("host:key", SECRET)) == "host:key"


def test_token_verifies_with_its_secret_only() -> None:
    token = tokens.issue("host:key", SECRET)
    assert tokens.verify(token, [SECRET])
    assert not tokens.verify(token, [OLD])


def test_during_rotation_old_and_new_secrets_both_verify() -> None:
    assert tokens.verify(tokens.issue("host:key", SECRET), [SECRET, OLD])
    assert tokens.verify(tokens.issue("host:key", OLD), [SECRET, OLD])


def test_no_candidate_secret_never_verifies() -> None:
    assert not tokens.verify(tokens.issue("host:key", SECRET), [])


@pytest.mark.parametrize("alg", ["none", "HS512", "RS256", "hs256", None])
def test_only_hs256_is_accepted(alg: str | None) -> None:
    token = f"{_seg({'alg': alg})}.{_seg({'id': 'host:key'})}.c2ln"
    with pytest.raises(tokens.InvalidToken):
        tokens.claimed_id(token)


def test_pyjwt_hs512_with_the_right_secret_is_refused() -> None:
    token = jwt.encode({"id": "host:key"}, SECRET + SECRET, algorithm="HS512")
    with pytest.raises(tokens.InvalidToken):
        tokens.claimed_id(token)


@pytest.mark.parametrize(
    "payload", [{}, {"id": 5}, {"id": ""}, {"id": "x" * 65}, {"sub": "host:key"}, ["id"]]
)
def test_missing_or_malformed_id_is_refused(payload: object) -> None:
    with pytest.raises(tokens.InvalidToken):
        tokens.claimed_id(f"{_seg({'alg': 'HS256'})}.{_seg(payload)}.c2ln")


def test_tampered_payload_fails_verification() -> None:
    header, _, signature = tokens.issue("host:key", SECRET).split(".")
    forged = f"{header}.{_seg({'id': 'host:other'})}.{signature}"
    assert tokens.claimed_id(forged) == "host:other"
    assert not tokens.verify(forged, [SECRET])


def test_foreign_characters_in_the_signature_are_not_skipped() -> None:
    header, payload, signature = tokens.issue("host:key", SECRET).split(".")
    assert not tokens.verify(f"{header}.{payload}.{signature[:10]}!{signature[10:]}", [SECRET])


@given(st.text(max_size=300))
def test_arbitrary_text_never_crashes(text: str) -> None:
    with contextlib.suppress(tokens.InvalidToken):
        tokens.claimed_id(text)
    assert tokens.verify(text, [SECRET]) in (True, False)


@given(st.binary(max_size=200))
def test_mutated_tokens_never_verify(noise: bytes) -> None:
    token = tokens.issue("host:key", SECRET)
    mutated = token[:-4] + base64.urlsafe_b64encode(noise).decode()[:4]
    if mutated != token:
        assert not tokens.verify(mutated, [SECRET])


def test_a_second_spelling_of_the_signature_does_not_verify() -> None:
    header, payload, signature = tokens.issue("host:key", SECRET).split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    # The last character of a 43-char segment carries 2 unused bits: flip them.
    last = alphabet[alphabet.index(signature[-1]) ^ 1]
    assert not tokens.verify(f"{header}.{payload}.{signature[:-1]}{last}", [SECRET])
