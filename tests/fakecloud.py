"""A fake Jira Cloud site, modelled on Cloud's documented behaviour where jira-sync depends on
it (SPEC 13; what is verified and what assumed: docs/jira.md, "Jira Cloud"):

- API tokens only: Basic `email:token`; OAuth 1.0a is refused (its endpoints answer 401);
  only serverInfo answers without credentials.
- REST v3: users are account ids (`accountId`), an e-mail is left out for a user whose profile
  hides it; an assignee is set by `{"accountId": ...}` (`name` is refused, as since GDPR).
- Search: the old `/rest/api/2/search` answers 410 Gone; `/rest/api/3/search/jql` pages by
  `nextPageToken` (the result set kept behind the token), pages may be shorter than asked
  (`search_page_cap`), only an absent token ends it, and no `total` is given.
- Admin webhooks on `/rest/webhooks/1.0/webhook`, for administrators only (403 otherwise),
  with a top-level `secret` that signs deliveries (`X-Hub-Signature: sha256=<hex>`) and is
  never listed back; every delivery carries `X-Atlassian-Webhook-Identifier`.
- Rate limits: while `throttle_until` has not passed every call gets 429 with `Retry-After`
  and `RateLimit-Reason`.
- Atlassian's OAuth 2.0 (3LO) server on the same port (point ATLASSIAN_AUTH_URL and
  ATLASSIAN_API_URL at `base_url`): `/authorize` (consent: a redirect with `code` and
  `state`), `/oauth/token` (authorization code and rotating refresh tokens: every refresh
  issues a new refresh token and spends the old; a spent one is refused 403 invalid_grant and
  revokes the grant, as Atlassian does outside its leeway), `/oauth/token/accessible-resources`.
- The API gateway `/ex/jira/{cloud_id}/...`: the only way in for an OAuth 2.0 access token
  (Bearer) and a service account's scoped token (Basic); the site's own URL refuses both.
  `/_edge/tenant_info` names the cloud id without credentials.
- Dynamic webhooks (`/rest/api/3/webhook`, apps only): register, list, refresh, delete; each
  expires `dynamic_webhook_life_s` after its registration or last refresh, and `outgoing`
  sends to the live ones with `Authorization: Bearer <JWT>` (HS256, the app's client secret).

Workflow statuses, transitions and issue GETs are the Server fake's, under /rest/api/3.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import itertools
import json
import re
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import pytest

from tests.fakejira import (
    JQL_UPDATED,
    LEGACY_HOOKS,
    Call,
    FakeJira,
    FakeJiraServer,
    JiraUser,
    Outgoing,
)

Answer = tuple[int, dict[str, str], str]
JSON = {"Content-Type": "application/json"}
ADMIN_EMAIL = "admin@acme.test"


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Answer:
    return status, {**JSON, **(headers or {})}, json.dumps({"errorMessages": [message]})


@dataclass
class FakeCloud(FakeJira):
    """State and behaviour of a Cloud site; tests change the public fields freely."""

    server_version: str = "1001.0.0"
    deployment_type: str = "Cloud"
    search_page_cap: int = 100
    api_tokens: dict[str, str] = field(default_factory=dict)  # e-mail -> token
    admins: set[str] = field(default_factory=set)  # e-mails that may manage webhooks
    hidden_emails: set[str] = field(default_factory=set)  # account ids with e-mail hidden
    # Every call before this time (time.monotonic()) is answered 429.
    throttle_until: float = 0.0
    retry_after_s: int = 2
    _results: dict[str, list[str]] = field(default_factory=dict)  # token -> result set
    cloud_id: str = "4f1c2a9e-7b3d-4c5e-9a8f-0123456789ab"
    oauth_apps: dict[str, str] = field(default_factory=dict)  # client id -> client secret
    # Other sites the consent grants besides this one (accessible-resources lists them too).
    other_sites: list[dict[str, Any]] = field(default_factory=list)
    site_granted: bool = True  # False: the operator consented for other sites only
    access_token_life_s: int = 3600
    bearer_tokens: dict[str, tuple[str, float]] = field(default_factory=dict)  # -> app, expiry
    refresh_tokens: dict[str, str] = field(default_factory=dict)  # token -> its grant
    live_refresh: dict[str, str] = field(default_factory=dict)  # grant -> its current token
    revoked_grants: set[str] = field(default_factory=set)
    refused_refreshes: int = 0
    scoped_tokens: dict[str, str] = field(default_factory=dict)  # service account -> token
    dynamic_webhook_life_s: int = 30 * 86400
    dynamic_webhooks: list[dict[str, Any]] = field(default_factory=list)
    _codes: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # -> app, uri, scope

    def add_api_token(self, email: str = ADMIN_EMAIL, admin: bool = True) -> str:
        token = "ATATT" + uuid.uuid4().hex
        self.api_tokens[email] = token
        if admin:
            self.admins.add(email)
        return token

    def add_account(
        self, account_id: str, email: str | None, display_name: str = "", hidden: bool = False
    ) -> JiraUser:
        """A Cloud user; `name` holds the account id (Cloud has no usernames)."""
        if hidden:
            self.hidden_emails.add(account_id)
        return self.add_user(account_id, email, display_name)

    def throttle(self, seconds: float, retry_after_s: int = 2) -> None:
        """Answer every call 429 for `seconds`, asking to retry after `retry_after_s`."""
        self.retry_after_s = retry_after_s
        self.throttle_until = time.monotonic() + seconds

    def issue_id(self, key: str) -> str:
        """Cloud's id of an issue: not the one Data Center gave it (migration renumbers)."""
        return str(700000 + zlib.crc32(key.encode()) % 1_000_000)

    def linked(self, integration: dict[str, Any]) -> dict[str, Any]:
        """A scene's integration (`load` form) linked to this site as `integration link
        --email --api-token-file` leaves it: the administrator's API token, no OAuth 1.0a."""
        oauth = ("consumer_key", "private_key", "access_token", "access_token_secret")
        kept = {k: v for k, v in integration.items() if k not in oauth}
        token = self.api_tokens[ADMIN_EMAIL]
        return kept | {"deployment_type": "Cloud", "email": ADMIN_EMAIL, "api_token": token}

    def add_oauth_app(self, client_id: str = "jira-sync-app") -> tuple[str, str]:
        """An OAuth 2.0 (3LO) app of the developer console: (client id, client secret)."""
        secret = "ATOA" + uuid.uuid4().hex + uuid.uuid4().hex
        self.oauth_apps[client_id] = secret
        return client_id, secret

    def add_service_account(self, name: str = "sync") -> tuple[str, str]:
        """A service account and its scoped API token: (e-mail, token)."""
        email = f"{name}@serviceaccount.atlassian.com"
        self.scoped_tokens[email] = "ATSTT" + uuid.uuid4().hex
        return email, self.scoped_tokens[email]

    def consent(self, authorize_url: str) -> str:
        """The operator allows the app on Atlassian's consent page: the callback URL (with
        `code` and `state`) the browser is sent to."""
        status, headers, text = self.handle("GET", _path_of(authorize_url), {}, "")
        assert status == 302, text
        return headers["Location"]

    def expire_access_tokens(self) -> None:
        with self._lock:
            self.bearer_tokens = {t: (app, 0.0) for t, (app, _) in self.bearer_tokens.items()}

    def cloud_user(self, user: JiraUser) -> dict[str, Any]:
        data: dict[str, Any] = {
            "accountId": user.name,
            "accountType": "atlassian",
            "displayName": user.display_name or user.name,
            "active": True,
        }
        if user.email is not None and user.name not in self.hidden_emails:
            data["emailAddress"] = user.email
        return data

    def outgoing(self, body: bytes) -> list[Outgoing]:
        """What the site posts to each admin webhook: signed with its `secret` when it has
        one, each with a delivery identifier of its own."""
        posts = []
        with self._lock:
            hooks = list(self.webhooks)
        for hook in hooks:
            headers = {
                "Content-Type": "application/json; charset=UTF-8",
                "X-Atlassian-Webhook-Identifier": str(uuid.uuid4()),
            }
            secret = hook.get("secret")
            if secret:
                digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
                headers["X-Hub-Signature"] = f"sha256={digest}"
            posts.append(Outgoing(hook["url"], headers, body))
        with self._lock:
            live = [h for h in self.dynamic_webhooks if h["expires_ms"] > self.now_ms()]
        for hook in live:
            now = int(time.time())
            token = jwt.encode(
                {"iss": hook["app"], "iat": now, "exp": now + 180},
                self.oauth_apps[hook["app"]],
                algorithm="HS256",
            )
            headers = {
                "Content-Type": "application/json; charset=UTF-8",
                "X-Atlassian-Webhook-Identifier": str(uuid.uuid4()),
                "Authorization": f"Bearer {token}",
            }
            posts.append(Outgoing(hook["url"], headers, body))
        return posts

    # -- request handling -------------------------------------------------------------------

    def _dispatch(self, call: Call, uri: str, headers: dict[str, str]) -> Answer:
        if self.fail_status is not None:
            return self.fail_status, {"Content-Type": "text/html"}, "<html>Jira is down</html>"
        if call.path in self.overrides:
            status, text, content_type = self.overrides[call.path]
            return status, {"Content-Type": content_type}, text
        if call.path.startswith("/plugins/servlet/oauth/"):
            return 401, {"Content-Type": "text/plain"}, "oauth_problem=consumer_key_unknown"
        if call.path == "/authorize" and call.method == "GET":
            return self._authorize(call)
        if call.path == "/oauth/token" and call.method == "POST":
            return self._token(call, headers)
        if call.path == "/_edge/tenant_info" and call.method == "GET":
            return 200, JSON, json.dumps({"cloudId": self.cloud_id})
        if call.path == "/oauth/token/accessible-resources" and call.method == "GET":
            if self._app_of(headers) is None:
                return _error(401, "Unauthorized")
            site = {"id": self.cloud_id, "url": self.base_url, "name": "acme",
                    "scopes": ["read:jira-work", "write:jira-work"]}  # fmt: skip
            return (
                200,
                JSON,
                json.dumps([*self.other_sites, *([site] if self.site_granted else [])]),
            )
        gateway = f"/ex/jira/{self.cloud_id}/"
        if call.path.startswith(gateway):
            return self._gateway(dataclasses.replace(call, path="/" + call.path[len(gateway) :]),
                                 headers)  # fmt: skip
        if time.monotonic() < self.throttle_until:
            return _error(
                429,
                "Rate limit exceeded.",
                {"Retry-After": str(self.retry_after_s), "RateLimit-Reason": "jira-burst-based"},
            )
        email = self._authenticated(headers)
        call.signed = email is not None
        info = call.path in ("/rest/api/2/serverInfo", "/rest/api/3/serverInfo")
        if email is None and not info:
            return _error(401, "Client must be authenticated to access this resource.")
        return self._cloud_rest(call, email)

    def _authenticated(self, headers: dict[str, str]) -> str | None:
        """The account an `Authorization: Basic email:token` names, if its API token is valid."""
        return _basic_account(headers, self.api_tokens)

    def _gateway(self, call: Call, headers: dict[str, str]) -> Answer:
        """api.atlassian.com/ex/jira/{cloud id}: an app's access token or a scoped token."""
        if time.monotonic() < self.throttle_until:
            return _error(429, "Rate limit exceeded.",
                          {"Retry-After": str(self.retry_after_s)})  # fmt: skip
        app = self._app_of(headers)
        caller = f"app:{app}" if app is not None else self._scoped_account(headers)
        if caller is None:
            return _error(401, "Unauthorized; scope does not match")
        if call.path.startswith(DYNAMIC_HOOKS):
            if app is None:
                return _error(403, "The caller isn't an app.")
            return self._dynamic(call, app)
        return self._cloud_rest(call, caller)

    def _app_of(self, headers: dict[str, str]) -> str | None:
        """The app whose live OAuth 2.0 access token `Authorization: Bearer` carries."""
        value = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        if not value.startswith("Bearer "):
            return None
        with self._lock:
            app, expires = self.bearer_tokens.get(value[7:], ("", 0.0))
        return app if app and time.time() < expires else None

    def _scoped_account(self, headers: dict[str, str]) -> str | None:
        """The service account a Basic header names, if its scoped token is valid."""
        return _basic_account(headers, self.scoped_tokens)

    def _authorize(self, call: Call) -> Answer:
        q = call.query
        if q.get("client_id") not in self.oauth_apps or q.get("response_type") != "code":
            return 400, {"Content-Type": "text/plain"}, "unknown client or response type"
        if q.get("audience") != "api.atlassian.com" or not q.get("redirect_uri"):
            return 400, {"Content-Type": "text/plain"}, "audience or redirect_uri missing"
        code = uuid.uuid4().hex
        self._codes[code] = (q["client_id"], q["redirect_uri"], q.get("scope", ""))
        query = urlencode({"code": code, "state": q.get("state", "")})
        return 302, {"Location": f"{q['redirect_uri']}?{query}"}, ""

    def _token(self, call: Call, headers: dict[str, str]) -> Answer:
        """The token endpoint: JSON or form bodies, client id and secret in the body."""
        json_body = "json" in next((v for k, v in headers.items()
                                    if k.lower() == "content-type"), "")  # fmt: skip
        form = call.json() if json_body else {k: v[0] for k, v in parse_qs(call.body).items()}
        app, secret = form.get("client_id", ""), form.get("client_secret", "")
        known = self.oauth_apps.get(app)
        if known is None or not hmac.compare_digest(known, secret):
            return _oauth_error(401, "access_denied", "Unauthorized")
        with self._lock:
            if form.get("grant_type") == "authorization_code":
                found = self._codes.pop(form.get("code", ""), None)
                if found is None or found[:2] != (app, form.get("redirect_uri")):
                    return _oauth_error(403, "invalid_grant", "Invalid authorization code")
                grant = uuid.uuid4().hex
                offline = "offline_access" in found[2].split()
            elif form.get("grant_type") == "refresh_token":
                spent = form.get("refresh_token", "")
                grant = self.refresh_tokens.get(spent, "")
                if not grant or grant in self.revoked_grants or self.live_refresh[grant] != spent:
                    self.refused_refreshes += 1
                    if grant:  # a spent token used again: the whole grant is revoked
                        self.revoked_grants.add(grant)
                    return _oauth_error(403, "invalid_grant", "Unknown or invalid refresh token.")
                offline = True
            else:
                return _oauth_error(400, "unsupported_grant_type", "grant_type")
            access = "oat-" + uuid.uuid4().hex
            self.bearer_tokens[access] = (app, time.time() + self.access_token_life_s)
            answer: dict[str, Any] = {"access_token": access, "token_type": "Bearer",
                                      "expires_in": self.access_token_life_s,
                                      "scope": " ".join(sorted(SCOPES))}  # fmt: skip
            if offline:
                refresh = "ort-" + uuid.uuid4().hex
                self.refresh_tokens[refresh] = grant
                self.live_refresh[grant] = refresh
                answer["refresh_token"] = refresh
        return 200, JSON, json.dumps(answer)

    def _dynamic(self, call: Call, app: str) -> Answer:
        """/rest/api/3/webhook: an app's own dynamic webhooks."""
        method, now = call.method, self.now_ms()
        with self._lock:
            mine = [h for h in self.dynamic_webhooks if h["app"] == app]
            if call.path == DYNAMIC_HOOKS and method == "GET":
                values = [{"id": h["id"], "url": h["url"], "jqlFilter": h["jqlFilter"],
                           "events": h["events"], "expirationDate": h["expires_ms"]}
                          for h in mine]  # fmt: skip
                return 200, JSON, json.dumps({"startAt": 0, "maxResults": 100,
                                              "total": len(values), "isLast": True,
                                              "values": values})  # fmt: skip
            if call.path == DYNAMIC_HOOKS and method == "POST":
                body = call.json()
                results = []
                for wanted in body.get("webhooks", []):
                    if not wanted.get("jqlFilter") or not set(wanted.get("events", [])) <= {
                        "jira:issue_created", "jira:issue_updated", "jira:issue_deleted"
                    }:  # fmt: skip
                        results.append({"errors": ["Invalid JQL or events."]})
                        continue
                    self._webhook_ids += 1
                    self.dynamic_webhooks.append(
                        {"id": self._webhook_ids, "app": app, "url": body["url"],
                         "jqlFilter": wanted["jqlFilter"], "events": wanted["events"],
                         "expires_ms": now + self.dynamic_webhook_life_s * 1000}
                    )  # fmt: skip
                    results.append({"createdWebhookId": self._webhook_ids})
                return 200, JSON, json.dumps({"webhookRegistrationResult": results})
            ids = set(call.json().get("webhookIds", [])) if call.body else set()
            if call.path == DYNAMIC_HOOKS + "/refresh" and method == "PUT":
                expires = now + self.dynamic_webhook_life_s * 1000
                for hook in mine:
                    if hook["id"] in ids:
                        hook["expires_ms"] = expires
                return 200, JSON, json.dumps({"expirationDate": expires})
            if call.path == DYNAMIC_HOOKS and method == "DELETE":
                self.dynamic_webhooks = [
                    h for h in self.dynamic_webhooks if h["app"] != app or h["id"] not in ids
                ]
                return 202, {}, ""
        return _error(404, "not found")

    def _cloud_rest(self, call: Call, email: str | None) -> Answer:
        path, method = call.path, call.method
        if path == "/rest/api/3/serverInfo":
            return self._rest(dataclasses.replace(call, path="/rest/api/2/serverInfo"))
        if path == "/rest/api/2/search":
            return _error(
                410, "The requested API has been removed. Please migrate to /rest/api/3/search/jql."
            )
        if path == "/rest/api/3/search/jql" and method == "GET":
            return self._search_by_token(call)
        if path == LEGACY_HOOKS or path.startswith(LEGACY_HOOKS + "/"):
            if email not in self.admins:
                return _error(403, "Only Jira administrators can manage webhooks.")
            status, out, text = self._rest(call)
            if method == "GET" and status == 200:  # a secret is never listed back
                listed = [{k: v for k, v in h.items() if k != "secret"} for h in json.loads(text)]
                return status, out, json.dumps(listed)
            return status, out, text
        if path in ("/rest/api/3/user/assignable/search", "/rest/api/3/user/search") and (
            method == "GET"
        ):
            needle = call.query.get("query", "").casefold()
            found = [
                self.cloud_user(u)
                for u in self.users
                if needle
                and (
                    needle in u.display_name.casefold()
                    or (needle in (u.email or "").casefold() and u.name not in self.hidden_emails)
                )
            ]
            return 200, JSON, json.dumps(found)
        prefix = "/rest/api/3/issue/"
        if path.startswith(prefix) and path.endswith("/assignee") and method == "PUT":
            key = path[len(prefix) : -len("/assignee")]
            wanted = call.json()
            if "accountId" not in wanted:
                return _error(400, "accountId must be given (names are not supported).")
            account = wanted["accountId"]
            if account is not None and account not in {u.name for u in self.users}:
                return _error(400, f"User '{account}' does not exist.")
            with self._lock:
                self.assignees[key] = account
                if key in self.issues:
                    self.issues[key] = dataclasses.replace(
                        self.issues[key], updated_ms=self.now_ms(), assignee=account
                    )
            return 204, {}, ""
        if path.startswith("/rest/api/3/"):
            return self._rest(dataclasses.replace(call, path="/rest/api/2/" + path[12:]))
        if path == "/rest/api/2/serverInfo":  # Cloud still serves v2's; jira-sync reads it
            return self._rest(call)
        return _error(404, "not found")

    def _search_by_token(self, call: Call) -> Answer:
        """JQL `updated >= ms AND updated <= ms ORDER BY updated ASC, key ASC`, or a project's
        key range (JQL_KEY_RANGE); the first page fixes the result set behind a token, later
        pages read its issues as they are now."""
        if self.on_search is not None:
            self.on_search(self)
        jql = call.query.get("jql", "")
        by_key = JQL_KEY_RANGE.fullmatch(jql.strip())
        rest = (
            JQL_UPDATED.sub("", jql).replace("AND", "").replace("ORDER BY updated ASC, key ASC", "")
        )
        if rest.strip() and by_key is None:
            return _error(400, f"unsupported JQL: {jql}")
        bounds = {op: int(value) for op, value in JQL_UPDATED.findall(jql)}
        low, high = bounds.get(">=", 0), bounds.get("<=", 1 << 62)
        size = min(int(call.query.get("maxResults", 50)), self.search_page_cap)
        fields = set(call.query.get("fields", "").split(",")) - {""}
        token = call.query.get("nextPageToken")
        with self._lock:
            if token is None and by_key is not None:
                project, first, last = (
                    by_key.group(1),
                    _number(by_key.group(2)),
                    _number(by_key.group(3)),
                )
                keys = sorted(
                    (k for k in self.issues
                     if k.split("-")[0] == project and first <= _number(k) <= last),
                    key=_number,
                )  # fmt: skip
                offset = 0
            elif token is None:
                keys = [
                    i.key
                    for i in sorted(
                        (i for i in self.issues.values() if low <= i.updated_ms <= high),
                        key=lambda i: (i.updated_ms, i.key),
                    )
                ]
                offset = 0
            else:
                result_id, _, at = token.partition(":")
                if result_id not in self._results or not at.isdigit():
                    return _error(400, "Invalid nextPageToken.")
                keys, offset = self._results[result_id], int(at)
            chosen = [self.issues[k] for k in keys[offset : offset + size] if k in self.issues]
            page = []
            for issue in chosen:
                if not fields:  # without fields Cloud answers ids alone
                    page.append({"id": self.issue_id(issue.key)})
                    continue
                found = issue.as_json(fields, self.users, self.cloud_user)
                found["id"] = self.issue_id(issue.key)
                status = self.issue_statuses.get(issue.key)
                if "status" in fields and "status" not in issue.hidden and status is not None:
                    found["fields"]["status"] = self.status_json(status)
                page.append(found)
            answer: dict[str, Any] = {"issues": page, "isLast": offset + size >= len(keys)}
            if offset + size < len(keys):
                result_id = token.partition(":")[0] if token else next(_RESULT_IDS)
                self._results[result_id] = keys
                answer["nextPageToken"] = f"{result_id}:{offset + size}"
        return 200, JSON, json.dumps(answer)


_RESULT_IDS = (f"r{n}" for n in itertools.count(1))
DYNAMIC_HOOKS = "/rest/api/3/webhook"
SCOPES = ("read:jira-work", "write:jira-work", "read:jira-user", "manage:jira-webhook",
          "offline_access")  # fmt: skip


def _oauth_error(status: int, error: str, description: str) -> Answer:
    return status, JSON, json.dumps({"error": error, "error_description": description})


def _path_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


# `project = KEY AND issuekey >= KEY-1 AND issuekey <= KEY-100 ORDER BY issuekey ASC`
JQL_KEY_RANGE = re.compile(
    r"project = (\w+) AND issuekey >= (\w+-\d+) AND issuekey <= (\w+-\d+) ORDER BY issuekey ASC"
)


def _number(key: str) -> int:
    return int(key.rsplit("-", 1)[1])


@pytest.fixture
def fake_cloud() -> Iterator[FakeCloud]:
    """A running fake Jira Cloud site with an administrator's API token
    (`fake.api_tokens[ADMIN_EMAIL]`); `.base_url` to call."""
    server = FakeJiraServer(FakeCloud()).start()
    assert isinstance(server.fake, FakeCloud)
    server.fake.add_api_token()
    try:
        yield server.fake
    finally:
        server.stop()


def _basic_account(headers: dict[str, str], tokens: dict[str, str]) -> str | None:
    """The e-mail an `Authorization: Basic email:token` names, if `tokens` holds that token."""
    value = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
    scheme, _, encoded = value.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        email, _, token = base64.b64decode(encoded).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    known = tokens.get(email)
    return email if known is not None and hmac.compare_digest(known, token) else None
