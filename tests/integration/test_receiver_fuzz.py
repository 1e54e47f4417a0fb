"""Property test: arbitrary and mutated bodies, headers and tokens never get a 5xx, and only
what the SPEC accepts is stored (and so enqueued)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from tests.webhooks import EXTERNAL_ID, OTHER_EXTERNAL_ID, OTHER_SECRET, SECRET, load_integrations
from tests.webhooks import payload as valid_payload
from worker.domain import tokens
from worker.receiver.app import create_app
from worker.runtime.resources import Resources

GOOD_TOKEN = tokens.issue(EXTERNAL_ID, SECRET)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def mutated_token(draw: st.DrawFn) -> str:
    index = draw(st.integers(0, len(GOOD_TOKEN) - 1))
    char = draw(st.sampled_from("ABCabc019-_.=+/ !%é"))
    if char == GOOD_TOKEN[index]:
        char = "Q" if char != "Q" else "R"
    return GOOD_TOKEN[:index] + char + GOOD_TOKEN[index + 1 :]


def _seg(data: Any) -> str:
    import base64

    raw = json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


bad_tokens = st.one_of(
    mutated_token(),
    st.text(max_size=80),
    st.builds(lambda h, p: f"{_seg(h)}.{_seg(p)}.", json_values, json_values),
    st.builds(
        lambda p: tokens.issue(p, SECRET),
        st.text(min_size=1, max_size=64).filter(lambda p: p != EXTERNAL_ID),
    ),
    st.just(tokens.issue(OTHER_EXTERNAL_ID, OTHER_SECRET)),  # disabled integration
    st.just(tokens.issue(EXTERNAL_ID, OTHER_SECRET)),
)


@st.composite
def mutated_payload(draw: st.DrawFn) -> Any:
    data: Any = valid_payload(changelog_id=draw(st.integers(0, 10**6)))
    for _ in range(draw(st.integers(0, 3))):
        path = draw(
            st.sampled_from(
                [
                    ("timestamp",),
                    ("webhookEvent",),
                    ("issue",),
                    ("issue", "key"),
                    ("issue", "id"),
                    ("changelog",),
                    ("changelog", "items"),
                    ("changelog", "id"),
                    ("issue", "fields"),
                    ("issue", "fields", "assignee"),
                ]
            )
        )
        target = data
        for step in path[:-1]:
            target = target.get(step) if isinstance(target, dict) else None
        if isinstance(target, dict):
            if draw(st.booleans()):
                target.pop(path[-1], None)
            else:
                target[path[-1]] = draw(json_values)
    return data


bodies = st.one_of(
    st.binary(max_size=200),
    st.builds(lambda v: json.dumps(v).encode(), json_values),
    st.builds(lambda v: json.dumps(v).encode(), mutated_payload()),
    st.builds(lambda v: json.dumps(v, ensure_ascii=False).encode(), mutated_payload()),
)
content_types = st.sampled_from(
    ["application/json", "application/json; charset=UTF-8", "text/plain", "", "application/x+json"]
) | st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30)
identifiers = st.none() | st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=300
).map(str.strip)


def _not_json(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def acceptable(content_type: str, raw: bytes) -> bool:
    """An independent reading of the SPEC: would this body, with a good token, be stored?"""
    media = content_type.split(";")[0].strip().lower()
    if not (
        media == "application/json"
        or (media.startswith("application/") and media.endswith("+json"))
    ):
        return False
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_not_json)
    except (ValueError, RecursionError):
        return False
    if not isinstance(data, dict) or not isinstance(data.get("changelog"), dict):
        return False
    changelog = data["changelog"]
    items = changelog.get("items")
    if not isinstance(items, list) or not items:
        return False
    if not all(isinstance(i, dict) and isinstance(i.get("field"), str) for i in items):
        return False
    issue = data.get("issue")
    key = issue.get("key") if isinstance(issue, dict) else None
    if not (isinstance(key, str) and key and key.isprintable() and len(key) <= 255):
        return False
    ts = data.get("timestamp")
    if not (type(ts) is int and 0 <= ts < 2**63):
        return False
    cid = changelog.get("id", 0)
    digits = isinstance(cid, str) and re.fullmatch(r"[0-9]{1,18}", cid)
    if not ((type(cid) is int and 0 <= cid < 2**63) or digits):
        return False
    if any(i["field"] == "assignee" for i in items):
        assert isinstance(issue, dict)
        fields = issue.get("fields")
        if not isinstance(fields, dict) or "assignee" not in fields:
            return False
        assignee = fields["assignee"]
        if assignee is not None and not isinstance(assignee, dict):
            return False
        email = assignee.get("emailAddress") if assignee else None
        return email is None or isinstance(email, str)
    return True


@pytest.fixture
def client(res: Resources, scene: Callable[[dict[str, Any]], None]) -> Iterator[TestClient]:
    load_integrations(scene, disabled=True)
    with TestClient(create_app(res=res, configure_logs=False)) as c:
        yield c


def stored_count(res: Resources) -> int:
    with psycopg.connect(res.settings.database_url) as conn:
        row = conn.execute("SELECT count(*) FROM webhook_delivery").fetchone()
    assert row is not None
    return int(row[0])


def post(client: TestClient, token: str, content_type: str, raw: bytes, ident: str | None) -> Any:
    headers: dict[str, bytes] = {"Content-Type": content_type.encode()} if content_type else {}
    if ident:
        headers["X-Atlassian-Webhook-Identifier"] = ident.encode("latin-1")
    return client.post(
        f"/extensions/jira-server/issue-updated/{quote(token, safe='')}/",
        content=raw,
        headers=headers,
    )


FUZZ = settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(token=bad_tokens, content_type=content_types, raw=bodies, ident=identifiers)
def test_bad_tokens_are_always_refused_and_never_stored(
    client: TestClient, res: Resources, token: str, content_type: str, raw: bytes, ident: str | None
) -> None:
    response = post(client, token, content_type, raw, ident)
    assert response.status_code == 401, response.text
    assert stored_count(res) == 0


@FUZZ
@given(content_type=content_types, raw=bodies, ident=identifiers)
def test_good_token_never_gets_5xx_and_stores_only_acceptable_bodies(
    client: TestClient, res: Resources, content_type: str, raw: bytes, ident: str | None
) -> None:
    before = stored_count(res)
    response = post(client, GOOD_TOKEN, content_type, raw, ident)
    assert response.status_code < 500, response.text
    assert response.headers["content-type"] == "application/json"
    if response.status_code == 202:
        assert acceptable(content_type, raw)
        assert stored_count(res) == before + 1
    else:
        assert response.status_code in (200, 400, 413, 415), response.text
        assert stored_count(res) == before
        if response.status_code in (400, 415):
            assert not acceptable(content_type, raw)
