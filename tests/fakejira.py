"""A fake Jira Server over real HTTP on 127.0.0.1, in the test process.

Every request is checked by oauthlib's own server-side endpoints (RSA-SHA1 against the
consumer's public key), so a wrong signature is refused by code this project did not write.
It serves the OAuth dance (request token, authorize redirect, access token), server info,
webhook registration, assignable-user search and assignee updates, the status list, an issue's
status and its workflow transitions, the JQL issue search of reconciliation (`issues`:
`updated >= ms AND updated <= ms`, paginated), and records every call. `server_version` picks the
generation: 9.x serves only the old webhook resource; 10.x (Data Center) serves the new one
too, over the same webhooks, and `outgoing` signs the bodies of webhooks registered with a
secret as Data Center 10 does.

Use the `fake_jira` fixture (registered in tests/conftest.py), or `from tests.fakejira import
FakeJira, rsa_keypair`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import hmac
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from oauthlib.common import generate_token
from oauthlib.oauth1 import (
    SIGNATURE_RSA,
    AccessTokenEndpoint,
    RequestTokenEndpoint,
    RequestValidator,
    ResourceEndpoint,
)

CONSUMER_KEY = "jira-sync-test"
LEGACY_HOOKS = "/rest/webhooks/1.0/webhook"
HOOKS_10 = "/rest/jira-webhook/1.0/webhooks"


@dataclass(frozen=True)
class Outgoing:
    """A webhook post as Jira would send it: where, with which headers, which bytes."""

    url: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class KeyPair:
    private_pem: str
    public_pem: str


def _new_keypair() -> KeyPair:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return KeyPair(private, public)


@functools.cache
def rsa_keypair(name: str = "default") -> KeyPair:
    """A 2048-bit RSA key pair, generated once per name per test session."""
    return _new_keypair()


@dataclass
class Call:
    """One HTTP request the fake received."""

    method: str
    path: str
    query: dict[str, str]
    body: str
    headers: dict[str, str]
    signed: bool  # the OAuth signature (or, on the Cloud fake, the API token) verified
    status: int = 0
    at: float = field(default_factory=time.monotonic)  # when it arrived

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class _RequestToken:
    secret: str
    consumer_key: str
    callback: str
    authorized: bool = False


class _Validator(RequestValidator):  # type: ignore[misc]
    """oauthlib's validator over the fake's in-memory state."""

    def __init__(self, fake: FakeJira) -> None:
        super().__init__()
        self.fake = fake
        self._dummy = rsa_keypair("dummy").public_pem

    # Jira keys and tokens do not follow oauthlib's default 20-30 character rules.
    enforce_ssl = False
    allowed_signature_methods = (SIGNATURE_RSA,)
    dummy_client = "dummy-client"
    dummy_request_token = "dummy-request-token"
    dummy_access_token = "dummy-access-token"

    def check_client_key(self, client_key: str) -> bool:
        return 0 < len(client_key) <= 200

    def check_request_token(self, request_token: str) -> bool:
        return 0 < len(request_token) <= 200

    def check_access_token(self, request_token: str) -> bool:
        return 0 < len(request_token) <= 200

    def check_nonce(self, nonce: str) -> bool:
        return 0 < len(nonce) <= 200

    def check_verifier(self, verifier: str) -> bool:
        return 0 < len(verifier) <= 200

    def validate_client_key(self, client_key: str, request: Any) -> bool:
        return client_key in self.fake.consumers

    def get_rsa_key(self, client_key: str, request: Any) -> str:
        return self.fake.consumers.get(client_key, self._dummy)

    def validate_timestamp_and_nonce(
        self, client_key: str, timestamp: str, nonce: str, request: Any, **_: Any
    ) -> bool:
        with self.fake._lock:
            if (client_key, nonce) in self.fake._nonces:
                return False
            self.fake._nonces.add((client_key, nonce))
        return True

    def get_default_realms(self, client_key: str, request: Any) -> list[str]:
        return []

    def validate_requested_realms(self, client_key: str, realms: Any, request: Any) -> bool:
        return True

    def validate_redirect_uri(self, client_key: str, redirect_uri: str, request: Any) -> bool:
        return True

    def save_request_token(self, token: dict[str, str], request: Any) -> None:
        self.fake.request_tokens[token["oauth_token"]] = _RequestToken(
            token["oauth_token_secret"], request.client_key, request.redirect_uri
        )

    def validate_request_token(self, client_key: str, token: str, request: Any) -> bool:
        pending = self.fake.request_tokens.get(token)
        return pending is not None and pending.consumer_key == client_key

    def get_request_token_secret(self, client_key: str, token: str, request: Any) -> str:
        pending = self.fake.request_tokens.get(token)
        return pending.secret if pending else "dummy"

    def validate_verifier(self, client_key: str, token: str, verifier: str, request: Any) -> bool:
        # Jira Server hands the request token back as the verifier.
        pending = self.fake.request_tokens.get(token)
        return pending is not None and pending.authorized and verifier == token

    def get_realms(self, token: str, request: Any) -> list[str]:
        return []

    def invalidate_request_token(self, client_key: str, request_token: str, request: Any) -> None:
        self.fake.request_tokens.pop(request_token, None)

    def save_access_token(self, token: dict[str, str], request: Any) -> None:
        self.fake.access_tokens[token["oauth_token"]] = (
            token["oauth_token_secret"],
            request.client_key,
        )

    def validate_access_token(self, client_key: str, token: str, request: Any) -> bool:
        held = self.fake.access_tokens.get(token)
        return held is not None and held[1] == client_key

    def get_access_token_secret(self, client_key: str, token: str, request: Any) -> str:
        held = self.fake.access_tokens.get(token)
        return held[0] if held else "dummy"

    def validate_realms(self, *args: Any, **kwargs: Any) -> bool:
        return True


@dataclass
class JiraUser:
    name: str
    email: str | None
    display_name: str = ""
    # Jira Server 8+ keys users created since 8.0 (or renamed) as JIRAUSER<n>, not the name.
    user_key: str = ""

    @property
    def key(self) -> str:
        return self.user_key or self.name

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "key": self.key,
            "displayName": self.display_name or self.name,
            "active": True,
        }
        if self.email is not None:
            data["emailAddress"] = self.email
        return data


STATUSES = {
    "1": ("Open", "new"),
    "3": ("In Progress", "indeterminate"),
    "4": ("Reopened", "new"),
    "5": ("Resolved", "done"),
    "6": ("Closed", "done"),
}


@dataclass
class FakeIssue:
    """An issue the search serves: when it was last updated and its assignee's username."""

    key: str
    updated_ms: int
    assignee: str | None = None
    # Fields its project hides (a field configuration without them): left out of answers.
    hidden: frozenset[str] = frozenset()

    def as_json(
        self,
        fields: set[str],
        users: list[JiraUser],
        render: Callable[[JiraUser], dict[str, Any]] = JiraUser.as_json,
    ) -> dict[str, Any]:
        issue_id = str(10000 + sum(map(ord, self.key)))
        data: dict[str, Any] = {}
        fields = fields - self.hidden
        if "assignee" in fields:
            found = [u for u in users if u.name == self.assignee]
            data["assignee"] = render(found[0]) if found else None
        if "updated" in fields:
            data["updated"] = jira_time(self.updated_ms)
        return {"id": issue_id, "key": self.key, "fields": data}


def jira_time(ms: int) -> str:
    """Epoch milliseconds as Jira writes times: `2026-12-06T15:00:00.000+0000`."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}+0000"


JQL_UPDATED = re.compile(r"updated\s*(>=|<=)\s*(\d+)")


@dataclass
class FakeJira:
    """State and behaviour of the fake; tests change the public fields freely."""

    consumers: dict[str, str] = field(default_factory=dict)  # consumer key -> public PEM
    users: list[JiraUser] = field(default_factory=list)
    assignees: dict[str, str | None] = field(default_factory=dict)
    issues: dict[str, FakeIssue] = field(default_factory=dict)
    # The most issues one search page answers, whatever maxResults asks (Jira caps it too).
    search_page_cap: int = 1000
    webhooks: list[dict[str, Any]] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    request_tokens: dict[str, _RequestToken] = field(default_factory=dict)
    access_tokens: dict[str, tuple[str, str]] = field(default_factory=dict)
    # Personal access tokens (Data Center 8.14+), sent as `Authorization: Bearer <token>`.
    personal_tokens: set[str] = field(default_factory=set)
    # Answer every request with this status (e.g. 500) until set back to None.
    fail_status: int | None = None
    # Per path: (status, body, content type) answered instead of the normal behaviour.
    overrides: dict[str, tuple[int, str, str]] = field(default_factory=dict)
    delay_s: float = 0.0
    # Status id -> (name, status category key), as GET /rest/api/2/status lists them.
    statuses: dict[str, tuple[str, str]] = field(default_factory=lambda: dict(STATUSES))
    # Issue key -> its status id; an issue not listed does not exist.
    issue_statuses: dict[str, str] = field(default_factory=dict)
    # Statuses no workflow transition leads to (every other status is one transition away).
    unreachable_statuses: set[str] = field(default_factory=set)
    # Statuses whose transition is listed but refused when made, as when the workflow's
    # screen requires a field (Jira answers 400 with the field's error).
    refused_transitions: set[str] = field(default_factory=set)
    base_url: str = ""
    server_version: str = "9.12.2"
    deployment_type: str = "Server"
    # Jira's own clock, ahead of ours by this much (negative: behind): serverInfo's
    # `serverTime` and the `updated` of an issue changed without a given time.
    clock_offset_ms: int = 0
    # Called before each search is answered (as if someone edited issues meanwhile).
    on_search: Callable[[FakeJira], None] | None = None
    _webhook_ids: int = 0
    _nonces: set[tuple[str, str]] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        validator = _Validator(self)
        self._request_token_endpoint = RequestTokenEndpoint(validator)
        self._access_token_endpoint = AccessTokenEndpoint(validator)
        self._resource_endpoint = ResourceEndpoint(validator)

    # -- helpers for tests ------------------------------------------------------------------

    def add_consumer(
        self, consumer_key: str = CONSUMER_KEY, keys: KeyPair | None = None
    ) -> KeyPair:
        """Register an application link (consumer key + public key) as a Jira admin would."""
        keys = keys or rsa_keypair()
        self.consumers[consumer_key] = keys.public_pem
        return keys

    def grant_access_token(self, consumer_key: str = CONSUMER_KEY) -> tuple[str, str]:
        """An access token as if the OAuth dance had happened: (token, secret)."""
        token, secret = generate_token(), generate_token()
        self.access_tokens[token] = (secret, consumer_key)
        return token, secret

    def add_user(
        self, name: str, email: str | None, display_name: str = "", key: str = ""
    ) -> JiraUser:
        user = JiraUser(name, email, display_name, key)
        self.users.append(user)
        return user

    def set_status(self, key: str, status_id: str, updated_ms: int | None = None) -> None:
        """Move an issue to a status in Jira (its `updated` moves to now unless given)."""
        with self._lock:
            self.issue_statuses[key] = status_id
            if key in self.issues:
                when = self.now_ms() if updated_ms is None else updated_ms
                self.issues[key] = dataclasses.replace(self.issues[key], updated_ms=when)

    def set_issue(self, key: str, assignee: str | None, updated_ms: int | None = None) -> None:
        """Change an issue in Jira (its `updated` moves to now unless given)."""
        when = self.now_ms() if updated_ms is None else updated_ms
        with self._lock:
            self.issues[key] = FakeIssue(key, when, assignee)

    def approve(self, request_token: str) -> str:
        """The operator clicks "Allow": returns the callback URL Jira redirects to."""
        pending = self.request_tokens[request_token]
        pending.authorized = True
        joiner = "&" if "?" in pending.callback else "?"
        query = urlencode({"oauth_token": request_token, "oauth_verifier": request_token})
        return f"{pending.callback}{joiner}{query}"

    def now_ms(self) -> int:
        """Jira's clock."""
        return int(time.time() * 1000) + self.clock_offset_ms

    @property
    def major(self) -> int:
        return int(self.server_version.split(".")[0])

    def outgoing(self, body: bytes) -> list[Outgoing]:
        """What Jira posts to each registered webhook for an event with this body: signed
        (`X-Hub-Signature: sha256=<hex>`) when Jira is 10.x and the webhook was given a secret
        in `configuration.SECRET`. Data Center reads that spelling only: a secret under any
        other field is kept as given but signs nothing (public Data Center 10 integrations
        register `{"SECRET": ..., "EXCLUDE_BODY": "false"}` and report unsigned bodies
        otherwise, e.g. OpenHands' Jira DC integration; SPEC 12)."""
        posts = []
        with self._lock:
            hooks = list(self.webhooks)
        for hook in hooks:
            headers = {"Content-Type": "application/json; charset=UTF-8"}
            secret = (hook.get("configuration") or {}).get("SECRET")
            if secret and self.major >= 10:
                digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
                headers["X-Hub-Signature"] = f"sha256={digest}"
            posts.append(Outgoing(hook["url"], headers, body))
        return posts

    def calls_to(self, path_prefix: str, method: str | None = None) -> list[Call]:
        with self._lock:
            return [
                c
                for c in self.calls
                if c.path.startswith(path_prefix) and (method is None or c.method == method)
            ]

    # -- request handling -------------------------------------------------------------------

    def handle(
        self, method: str, raw_path: str, headers: dict[str, str], body: str
    ) -> tuple[int, dict[str, str], str]:
        uri = f"http://{headers.get('Host', '127.0.0.1')}{raw_path}"
        parts = urlsplit(raw_path)
        path = unquote(parts.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        call = Call(method, path, query, body, dict(headers), signed=False)
        with self._lock:
            self.calls.append(call)
        if self.delay_s:
            time.sleep(self.delay_s)
        status, out_headers, out_body = self._dispatch(call, uri, headers)
        call.status = status
        return status, out_headers, out_body

    def _dispatch(
        self, call: Call, uri: str, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], str]:
        if self.fail_status is not None:
            return self.fail_status, {"Content-Type": "text/html"}, "<html>Jira is down</html>"
        if call.path in self.overrides:
            status, text, content_type = self.overrides[call.path]
            return status, {"Content-Type": content_type}, text
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        if call.path == "/plugins/servlet/oauth/request-token" and call.method == "POST":
            h, b, s = self._request_token_endpoint.create_request_token_response(
                uri, http_method=call.method, body=call.body, headers=headers
            )
            call.signed = s == 200
            return s, {**form, **(h or {})}, b or "oauth_problem=signature_invalid"
        if call.path == "/plugins/servlet/oauth/access-token" and call.method == "POST":
            h, b, s = self._access_token_endpoint.create_access_token_response(
                uri, http_method=call.method, body=call.body, headers=headers
            )
            call.signed = s == 200
            return s, {**form, **(h or {})}, b or "oauth_problem=signature_invalid"
        if call.path == "/plugins/servlet/oauth/authorize" and call.method == "GET":
            token = call.query.get("oauth_token", "")
            if token not in self.request_tokens:
                return 400, {"Content-Type": "text/plain"}, "unknown request token"
            return 302, {"Location": self.approve(token)}, ""
        bearer = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        if bearer.startswith("Bearer ") and bearer[7:] in self.personal_tokens:
            call.signed = True
            return self._rest(call)
        valid = False
        if not bearer or bearer.startswith("OAuth "):  # Basic or an unknown token: not OAuth
            valid, _ = self._resource_endpoint.validate_protected_resource_request(
                uri, http_method=call.method, body=call.body, headers=headers
            )
        call.signed = bool(valid)
        anonymous = call.method == "GET" and call.path == "/rest/api/2/serverInfo"
        if not valid and not anonymous:  # serverInfo answers anyone, as Jira's does
            return 401, {"Content-Type": "text/plain"}, "oauth_problem=signature_invalid"
        return self._rest(call)

    def _rest(self, call: Call) -> tuple[int, dict[str, str], str]:
        json_type = {"Content-Type": "application/json"}
        if call.path == "/rest/api/2/serverInfo" and call.method == "GET":
            numbers = [int(n) for n in self.server_version.split(".")]
            info = {
                "baseUrl": self.base_url,
                "version": self.server_version,
                "versionNumbers": numbers,
                "deploymentType": self.deployment_type,
                "buildNumber": 100000 + numbers[0],
                "serverTime": jira_time(self.now_ms()),
                "serverTitle": "Fake Jira",
            }
            return 200, json_type, json.dumps(info)
        hooks_path = next(
            (p for p in (LEGACY_HOOKS, HOOKS_10) if f"{call.path}/".startswith(f"{p}/")), None
        )
        if hooks_path == HOOKS_10 and self.major < 10:
            hooks_path = None  # Jira 9 has no such resource
        if hooks_path is not None and call.path == hooks_path and call.method == "POST":
            with self._lock:
                self._webhook_ids += 1
                hook = {
                    **call.json(),
                    "id": self._webhook_ids,
                    "self": f"{self.base_url}{LEGACY_HOOKS}/{self._webhook_ids}",
                }
                self.webhooks.append(hook)
            return 201, json_type, json.dumps(hook)
        if hooks_path is not None and call.path == hooks_path and call.method == "GET":
            with self._lock:
                return 200, json_type, json.dumps(self.webhooks)
        if (
            hooks_path is not None
            and call.path.startswith(hooks_path + "/")
            and call.method in ("PUT", "DELETE")
        ):
            webhook_id = call.path.rsplit("/", 1)[1]
            with self._lock:
                found = [
                    h
                    for h in self.webhooks
                    if str(h.get("id")) == webhook_id or h["self"].endswith(f"/{webhook_id}")
                ]
                if not found:
                    return 404, json_type, json.dumps({"errorMessages": ["no such webhook"]})
                index = self.webhooks.index(found[0])
                if call.method == "DELETE":
                    del self.webhooks[index]
                    return 204, {}, ""
                kept = {k: found[0][k] for k in ("id", "self") if k in found[0]}
                self.webhooks[index] = {**call.json(), **kept}
                return 200, json_type, json.dumps(self.webhooks[index])
        if call.path == "/rest/api/2/user" and call.method == "GET":
            # Jira Server's user resource: one user by `username` or by `key`; 404 when none.
            wanted_key, wanted_name = call.query.get("key"), call.query.get("username")
            for u in self.users:
                if (wanted_key and u.key == wanted_key) or (wanted_name and u.name == wanted_name):
                    return 200, json_type, json.dumps(u.as_json())
            missing = {"errorMessages": ["The user named '{0}' does not exist"], "errors": {}}
            return 404, json_type, json.dumps(missing)
        if call.path == "/rest/api/2/user/assignable/search" and call.method == "GET":
            needle = call.query.get("username", "").casefold()
            found = [
                u.as_json()
                for u in self.users
                if needle
                and (
                    needle in u.name.casefold()
                    or needle in (u.email or "").casefold()
                    or needle in u.display_name.casefold()
                )
            ]
            return 200, json_type, json.dumps(found)
        prefix, suffix = "/rest/api/2/issue/", "/assignee"
        if call.path.startswith(prefix) and call.path.endswith(suffix) and call.method == "PUT":
            key = call.path[len(prefix) : -len(suffix)]
            name = call.json().get("name")
            if name is not None and name not in {u.name for u in self.users}:
                error = {
                    "errorMessages": [],
                    "errors": {"assignee": f"User '{name}' does not exist."},
                }
                return 400, json_type, json.dumps(error)
            with self._lock:
                self.assignees[key] = name
                if key in self.issues:
                    self.issues[key] = dataclasses.replace(
                        self.issues[key], updated_ms=self.now_ms(), assignee=name
                    )
            return 204, {}, ""
        if call.path == "/rest/api/2/search" and call.method == "GET":
            return self._search(call)
        if call.path == "/rest/api/2/status" and call.method == "GET":
            listed = [self.status_json(status_id) for status_id in self.statuses]
            return 200, json_type, json.dumps(listed)
        if call.path.startswith(prefix):
            return self._issue(call, call.path[len(prefix) :])
        return 404, json_type, json.dumps({"errorMessages": ["not found"]})

    def status_json(self, status_id: str) -> dict[str, Any]:
        name, category = self.statuses[status_id]
        return {"id": status_id, "name": name, "statusCategory": {"key": category}}

    def _issue(self, call: Call, rest: str) -> tuple[int, dict[str, str], str]:
        """GET an issue's status, GET its transitions, POST one."""
        json_type = {"Content-Type": "application/json"}
        key, _, sub = rest.partition("/")
        with self._lock:
            current = self.issue_statuses.get(key)
            if current is None:
                return 404, json_type, json.dumps({"errorMessages": ["Issue Does Not Exist"]})
            targets = [
                s for s in self.statuses if s != current and s not in self.unreachable_statuses
            ]
            if not sub and call.method == "GET":
                body = {"key": key, "fields": {"status": self.status_json(current)}}
                return 200, json_type, json.dumps(body)
            if sub == "transitions" and call.method == "GET":
                listed = [
                    {"id": f"7{s}", "name": f"To {self.statuses[s][0]}", "to": self.status_json(s)}
                    for s in targets
                ]
                return 200, json_type, json.dumps({"transitions": listed})
            if sub == "transitions" and call.method == "POST":
                wanted = str(call.json().get("transition", {}).get("id", ""))
                found = [s for s in targets if f"7{s}" == wanted]
                if not found:
                    error = {"errorMessages": [f"Transition id '{wanted}' is not valid"]}
                    return 400, json_type, json.dumps(error)
                if found[0] in self.refused_transitions:
                    error = {
                        "errorMessages": [],
                        "errors": {"resolution": "Resolution is required."},
                    }
                    return 400, json_type, json.dumps(error)
                self.issue_statuses[key] = found[0]
                if key in self.issues:  # a transition updates the issue, as any edit does
                    self.issues[key] = dataclasses.replace(
                        self.issues[key], updated_ms=self.now_ms()
                    )
                return 204, {}, ""
        return 404, json_type, json.dumps({"errorMessages": ["not found"]})

    def _search(self, call: Call) -> tuple[int, dict[str, str], str]:
        """JQL `updated >= ms AND updated <= ms` (either bound optional), ordered by updated then
        key, from startAt, at most maxResults (capped) issues, with `total` counted when the
        page is read, as Jira Server does; any other JQL is a 400."""
        json_type = {"Content-Type": "application/json"}
        if self.on_search is not None:
            self.on_search(self)
        jql = call.query.get("jql", "")
        bounds = {op: int(value) for op, value in JQL_UPDATED.findall(jql)}
        rest = (
            JQL_UPDATED.sub("", jql).replace("AND", "").replace("ORDER BY updated ASC, key ASC", "")
        )
        if rest.strip():
            return 400, json_type, json.dumps({"errorMessages": [f"unsupported JQL: {jql}"]})
        low, high = bounds.get(">=", 0), bounds.get("<=", 1 << 62)
        start_at = int(call.query.get("startAt", 0))
        size = min(int(call.query.get("maxResults", 50)), self.search_page_cap)
        fields = set(call.query.get("fields", "").split(","))
        with self._lock:
            matching = sorted(
                (i for i in self.issues.values() if low <= i.updated_ms <= high),
                key=lambda i: (i.updated_ms, i.key),
            )
            page = [i.as_json(fields, self.users) for i in matching[start_at : start_at + size]]
            for found in page:  # the issue's workflow status, when asked for and not hidden
                status = self.issue_statuses.get(found["key"])
                hidden = self.issues[found["key"]].hidden
                if "status" in fields and "status" not in hidden and status is not None:
                    found["fields"]["status"] = self.status_json(status)
        answer = {"startAt": start_at, "maxResults": size, "total": len(matching), "issues": page}
        return 200, json_type, json.dumps(answer)


def _handler_for(fake: FakeJira) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
            status, headers, text = fake.handle(self.command, self.path, dict(self.headers), body)
            data = text.encode()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


class FakeJiraServer:
    """Runs a FakeJira on a free port of 127.0.0.1 in a background thread."""

    def __init__(self, fake: FakeJira | None = None) -> None:
        self.fake = fake or FakeJira()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self.fake))
        self._httpd.daemon_threads = True
        self.fake.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def start(self) -> FakeJiraServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def fake_jira() -> Iterator[FakeJira]:
    """A running fake Jira Server with the default consumer registered; `.base_url` to call."""
    server = FakeJiraServer().start()
    server.fake.add_consumer()
    try:
        yield server.fake
    finally:
        server.stop()
