"""Jira Server / Data Center client: OAuth 1.0a (RSA-SHA1) link set-up and the signed REST
calls.

Every request carries the OAuth parameters in the Authorization header (requests-oauthlib).
Failures map onto the error tree: 5xx, timeouts and connection errors are JiraUnavailable
(retried by steps), 4xx and malformed answers are JiraRejected (not retried).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from oauthlib.oauth1 import SIGNATURE_RSA
from requests_oauthlib import OAuth1

from worker.domain.errors import InvalidInput, JiraRejected, JiraUnavailable, NotFound
from worker.domain.reconcile import JIRA_TIME_FORMAT
from worker.domain.status import Transition
from worker.store.db import transaction
from worker.store.queries import integrations as q

if TYPE_CHECKING:
    from worker.runtime.resources import Resources

log = logging.getLogger(__name__)

REQUEST_TOKEN_PATH = "/plugins/servlet/oauth/request-token"
AUTHORIZE_PATH = "/plugins/servlet/oauth/authorize"
ACCESS_TOKEN_PATH = "/plugins/servlet/oauth/access-token"
SERVER_INFO_PATH = "/rest/api/2/serverInfo"
# Jira Server 8/9 register webhooks here; Data Center 10 still serves it but ignores its JQL
# filter (JRASERVER-78733) and takes no secret, so 10.x gets the new resource.
LEGACY_WEBHOOK_PATH = "/rest/webhooks/1.0/webhook"
WEBHOOK_PATH = "/rest/jira-webhook/1.0/webhooks"
FIRST_SIGNING_MAJOR = 10
WEBHOOK_EVENTS = ("jira:issue_created", "jira:issue_updated")
SEARCH_PATH = "/rest/api/2/search"
MAX_CONSUMER_KEY_CHARS = 200
BAD_KEY_MESSAGE = "private key must be a PEM-encoded RSA private key"


@dataclass(frozen=True)
class SearchPage:
    """One page of a JQL search: how many issues match in all, and this page's (raw JSON)."""

    total: int
    issues: list[Any]


@dataclass(frozen=True, repr=False)
class TokenPair:
    """An OAuth token and its secret (request or access); the secret never prints."""

    token: str
    secret: str

    def __repr__(self) -> str:
        return f"TokenPair(token={self.token[:4]}..., secret=***)"


@dataclass(frozen=True)
class ServerInfo:
    """What GET /rest/api/2/serverInfo says about the instance."""

    version: str
    major: int
    deployment_type: str
    server_time_ms: int | None = None  # Jira's own clock when it answered

    @property
    def signs_webhooks(self) -> bool:
        """Data Center 10 and later sign webhook bodies registered with a secret."""
        return self.major >= FIRST_SIGNING_MAJOR

    @classmethod
    def from_json(cls, data: Any) -> ServerInfo:
        if not isinstance(data, dict):
            raise JiraRejected("Jira's serverInfo answer is not a JSON object")
        version, numbers = data.get("version"), data.get("versionNumbers")
        if isinstance(numbers, list) and numbers and isinstance(numbers[0], int):
            major = numbers[0]
        elif isinstance(version, str) and version.split(".", 1)[0].isdigit():
            major = int(version.split(".", 1)[0])
        else:
            raise JiraRejected("Jira's serverInfo answer has no version")
        deployment = data.get("deploymentType")
        server_time = data.get("serverTime")
        return cls(
            str(version or major)[:40],
            major,
            str(deployment)[:40] if deployment else "unknown",
            _jira_time_ms(server_time) if isinstance(server_time, str) else None,
        )


def _jira_time_ms(value: str) -> int | None:
    """Jira's `2026-12-06T15:00:00.000+0000` as epoch milliseconds (None: not that form)."""
    try:
        return int(datetime.strptime(value, JIRA_TIME_FORMAT).timestamp() * 1000)
    except ValueError:
        return None


def normalize_base_url(base_url: str) -> str:
    """Strip the trailing slash; refuse anything but an http(s) URL with a host and a valid
    port, without credentials (a password in a URL ends up in logs), query or fragment."""
    url = base_url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        raise InvalidInput("base URL must not carry user:password@ (OAuth signs every request)")
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise InvalidInput(f"base URL must be an http or https URL with a host, got {url!r}")
    if parts.query or parts.fragment:
        raise InvalidInput(f"base URL must not have a query or fragment, got {url!r}")
    return url


def check_consumer_key(consumer_key: str) -> str:
    key = consumer_key.strip()
    if not key:
        raise InvalidInput("consumer key must not be empty")
    if len(key) > MAX_CONSUMER_KEY_CHARS:
        raise InvalidInput(f"consumer key must be at most {MAX_CONSUMER_KEY_CHARS} characters")
    return key


def check_private_key(pem: str) -> str:
    """The PEM text if it loads as an RSA private key; InvalidInput otherwise."""
    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError, UnicodeError):
        raise InvalidInput(BAD_KEY_MESSAGE) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise InvalidInput(BAD_KEY_MESSAGE)
    return pem


def authorize_url(base_url: str, request_token: str) -> str:
    """Where the operator approves the link in Jira."""
    return f"{base_url}{AUTHORIZE_PATH}?{urlencode({'oauth_token': request_token})}"


def _send(
    method: str,
    url: str,
    auth: OAuth1,
    *,
    verify_ssl: bool,
    timeout_s: float,
    session: requests.Session | None = None,
    **kwargs: Any,
) -> requests.Response:
    """One signed request; transport failures and 5xx -> JiraUnavailable, 4xx -> JiraRejected."""
    what = f"{method} {urlsplit(url).path}"
    sender: Any = session or requests
    try:
        response: requests.Response = sender.request(
            method, url, auth=auth, verify=verify_ssl, timeout=timeout_s, **kwargs
        )
    except requests.Timeout:
        raise JiraUnavailable(f"Jira did not answer {what} within {timeout_s:g}s") from None
    except requests.RequestException as exc:
        raise JiraUnavailable(f"Jira cannot be reached ({what}): {type(exc).__name__}") from None
    if response.status_code >= 500:
        raise JiraUnavailable(f"Jira answered {response.status_code} to {what}")
    if response.status_code >= 400:
        raise JiraRejected(
            f"Jira answered {response.status_code} to {what}{_problem(response)}",
            status=response.status_code,
        )
    return response


def _problem(response: requests.Response) -> str:
    """Jira's own reason (oauth_problem, errorMessages), short and secret-free."""
    text = response.text[:500]
    problem = parse_qs(text).get("oauth_problem")
    if problem:
        return f": oauth_problem={problem[0][:80]}"
    try:
        data = response.json()
    except ValueError:
        return ""
    if isinstance(data, dict):
        messages = [str(m) for m in data.get("errorMessages") or []]
        errors = data.get("errors")
        if isinstance(errors, dict):
            messages += [f"{k}: {v}" for k, v in errors.items()]
        if messages:
            return ": " + "; ".join(messages)[:200]
    return ""


def _token_pair(response: requests.Response, what: str) -> TokenPair:
    fields = parse_qs(response.text, keep_blank_values=False)
    for name in ("oauth_token", "oauth_token_secret"):
        if not fields.get(name):
            raise JiraRejected(f"Jira's {what} answer has no {name}")
    return TokenPair(fields["oauth_token"][0], fields["oauth_token_secret"][0])


def get_request_token(
    base_url: str,
    consumer_key: str,
    private_key_pem: str,
    callback_url: str,
    *,
    verify_ssl: bool = True,
    timeout_s: float = 10.0,
) -> TokenPair:
    """Step 1 of the link: a request token, signed with the consumer key and private key."""
    oauth = {"callback_uri": callback_url}
    return _token_request(
        base_url, REQUEST_TOKEN_PATH, consumer_key, private_key_pem, oauth, verify_ssl, timeout_s
    )


def get_access_token(
    base_url: str,
    consumer_key: str,
    private_key_pem: str,
    request_token: TokenPair,
    verifier: str,
    *,
    verify_ssl: bool = True,
    timeout_s: float = 10.0,
) -> TokenPair:
    """Step 3: trade the authorized request token (Jira Server: verifier = the token)."""
    oauth = {
        "resource_owner_key": request_token.token,
        "resource_owner_secret": request_token.secret,
        "verifier": verifier,
    }
    return _token_request(
        base_url, ACCESS_TOKEN_PATH, consumer_key, private_key_pem, oauth, verify_ssl, timeout_s
    )


def _token_request(
    base_url: str,
    path: str,
    consumer_key: str,
    private_key_pem: str,
    oauth: dict[str, str],
    verify_ssl: bool,
    timeout_s: float,
) -> TokenPair:
    """POST to one of Jira's OAuth token endpoints, RSA-SHA1 signed; the token pair it gives."""
    auth = OAuth1(consumer_key, signature_method=SIGNATURE_RSA, rsa_key=private_key_pem, **oauth)
    response = _send("POST", base_url + path, auth, verify_ssl=verify_ssl, timeout_s=timeout_s)
    return _token_pair(response, path.rsplit("/", 1)[-1])  # "request-token", "access-token"


class JiraClient:
    """REST calls signed with consumer key, private key, access token and access secret."""

    def __init__(
        self,
        base_url: str,
        consumer_key: str,
        private_key_pem: str,
        access_token: str,
        access_token_secret: str,
        verify_ssl: bool = True,
        timeout_s: float = 10.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.verify_ssl = verify_ssl
        self.timeout_s = timeout_s
        self._auth = OAuth1(
            consumer_key,
            signature_method=SIGNATURE_RSA,
            rsa_key=private_key_pem,
            resource_owner_key=access_token,
            resource_owner_secret=access_token_secret,
        )
        self._session = requests.Session()

    def __repr__(self) -> str:
        return f"JiraClient({self.base_url!r})"

    def close(self) -> None:
        self._session.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return _send(
            method,
            self.base_url + path,
            self._auth,
            verify_ssl=self.verify_ssl,
            timeout_s=self.timeout_s,
            session=self._session,
            **kwargs,
        )

    def find_assignable_username(self, issue_key: str, email: str) -> str | None:
        """The Jira username of the assignable user whose email equals `email` (any case)."""
        response = self._call(
            "GET",
            "/rest/api/2/user/assignable/search",
            params={"issueKey": issue_key, "username": email},
        )
        try:
            users = response.json()
        except ValueError:
            raise JiraRejected("Jira's assignable-user search answer is not JSON") from None
        if not isinstance(users, list):
            raise JiraRejected("Jira's assignable-user search answer is not a list")
        wanted = email.casefold()
        for user in users:
            if not isinstance(user, dict):
                continue
            address, name = user.get("emailAddress"), user.get("name")
            if isinstance(address, str) and address.casefold() == wanted and name:
                return str(name)
        return None

    def username_of_key(self, user_key: str) -> str:
        """The username of the user with this user key (Server/Data Center: `GET /user?key=`)."""
        response = self._call("GET", "/rest/api/2/user", params={"key": user_key})
        try:
            user = response.json()
        except ValueError:
            raise JiraRejected("Jira's user answer is not JSON") from None
        name = user.get("name") if isinstance(user, dict) else None
        if not isinstance(name, str) or not name:
            raise JiraRejected(f"Jira's user answer for key {user_key!r} names no username")
        return name

    def set_assignee(self, issue_key: str, name: str | None) -> None:
        """Assign the issue to a Jira username, or unassign it with None."""
        self._call(
            "PUT", f"/rest/api/2/issue/{quote(issue_key, safe='')}/assignee", json={"name": name}
        )

    def search(
        self, jql: str, fields: Sequence[str], start_at: int, max_results: int
    ) -> SearchPage:
        """One page of a JQL search: the matching issues from `start_at`, and how many match."""
        params = {
            "jql": jql,
            "fields": ",".join(fields),
            "startAt": start_at,
            "maxResults": max_results,
        }
        try:
            data = self._call("GET", SEARCH_PATH, params=params).json()
        except ValueError:
            raise JiraRejected("Jira's search answer is not JSON") from None
        issues = data.get("issues") if isinstance(data, dict) else None
        total = data.get("total") if isinstance(data, dict) else None
        if not isinstance(issues, list) or isinstance(total, bool) or not isinstance(total, int):
            raise JiraRejected("Jira's search answer has no issues list or total")
        return SearchPage(total, issues)

    def status_categories(self) -> dict[str, str]:
        """Every status of the instance: its id -> its status category key (`done`, ...)."""
        statuses = self._json("GET", "/rest/api/2/status", "status list")
        if not isinstance(statuses, list):
            raise JiraRejected("Jira's status list is not a list")
        found = {}
        for status in statuses:
            category = status.get("statusCategory") if isinstance(status, dict) else None
            if isinstance(category, dict) and status.get("id") is not None:
                found[str(status["id"])] = str(category.get("key", ""))
        return found

    def issue_status(self, issue_key: str) -> dict[str, Any]:
        """The issue's current status object (id, name, statusCategory)."""
        issue = self._json("GET", _issue_path(issue_key), "issue", params={"fields": "status"})
        status = issue.get("fields", {}).get("status") if isinstance(issue, dict) else None
        if not isinstance(status, dict):
            raise JiraRejected(f"Jira's answer for {issue_key} has no fields.status")
        return status

    def transitions(self, issue_key: str) -> list[Transition]:
        """The workflow transitions the issue can take now, each with its target status."""
        found = self._json("GET", _issue_path(issue_key) + "/transitions", "transition list")
        listed = found.get("transitions") if isinstance(found, dict) else None
        if not isinstance(listed, list):
            raise JiraRejected(f"Jira's transition list for {issue_key} is malformed")
        return [
            Transition(str(t["id"]), t["to"])
            for t in listed
            if isinstance(t, dict) and t.get("id") is not None and isinstance(t.get("to"), dict)
        ]

    def transition(self, issue_key: str, transition_id: str) -> None:
        """Move the issue through one workflow transition."""
        self._call(
            "POST",
            _issue_path(issue_key) + "/transitions",
            json={"transition": {"id": transition_id}},
        )

    def _json(self, method: str, path: str, what: str, **kwargs: Any) -> Any:
        try:
            return self._call(method, path, **kwargs).json()
        except ValueError:
            raise JiraRejected(f"Jira's {what} answer is not JSON") from None

    def server_info(self) -> ServerInfo:
        """The instance's version and deployment type."""
        try:
            data = self._call("GET", SERVER_INFO_PATH).json()
        except ValueError:
            raise JiraRejected("Jira's serverInfo answer is not JSON") from None
        return ServerInfo.from_json(data)

    def ensure_webhook(
        self,
        name: str,
        url: str,
        ours: Callable[[str], bool],
        signing_secret: str | None = None,
    ) -> dict[str, Any]:
        """Exactly one webhook of ours in Jira, sending issue events to `url` (it holds the
        token): the first registered one whose URL `ours` recognizes is updated in place, any
        other of ours is deleted, and one is created when there is none. With a signing secret
        it is registered on Data Center 10's resource, the secret in `configuration.SECRET`
        (the one field Jira reads: given under another it keeps none and sends unsigned
        bodies); without, on the resource of Jira Server 8/9. Returns the webhook as Jira
        lists it afterwards, read back."""
        path = LEGACY_WEBHOOK_PATH if signing_secret is None else WEBHOOK_PATH
        body: dict[str, Any] = {
            "name": name,
            "url": url,
            "events": list(WEBHOOK_EVENTS),
            "excludeBody": False,
        }
        if signing_secret is not None:
            body |= {
                "active": True,
                "configuration": {"SECRET": signing_secret, "EXCLUDE_BODY": "false"},
            }
        mine = self._our_webhooks(path, ours)
        if not mine:
            self._call("POST", path, json=body)
        else:
            first, *extra = (f"{path}/{_webhook_id(h)}" for h in mine)
            self._call("PUT", first, json=body)
            for hook_path in extra:
                self._call("DELETE", hook_path)
        registered = [h for h in self._our_webhooks(path, ours) if h.get("url") == url]
        if not registered:
            raise JiraRejected("Jira does not list the webhook it was just given")
        return registered[0]

    def _our_webhooks(self, path: str, ours: Callable[[str], bool]) -> list[dict[str, Any]]:
        try:
            listed = self._call("GET", path).json()
        except ValueError:
            raise JiraRejected("Jira's webhook list is not JSON") from None
        hooks = [h for h in listed if isinstance(h, dict)] if isinstance(listed, list) else []
        return [h for h in hooks if ours(str(h.get("url", "")))]


def _issue_path(issue_key: str) -> str:
    return f"/rest/api/2/issue/{quote(issue_key, safe='')}"


def _webhook_id(hook: dict[str, Any]) -> str:
    """A listed webhook's id: `id` (Data Center 10), else the end of its `self` link."""
    webhook_id = str(hook.get("id") or str(hook.get("self", "")).rstrip("/").rsplit("/", 1)[-1])
    if not webhook_id.isdigit():
        raise JiraRejected(f"Jira listed a webhook without a usable id: {hook.get('self')}")
    return webhook_id


def client_for_integration(res: Resources, integration_id: int) -> JiraClient:
    """A client for a linked instance, with its credentials read and decrypted."""
    with transaction(res.pool) as conn:
        integration = q.get_integration(conn, integration_id)
        creds = q.get_credentials(conn, integration_id)
    if integration is None or creds is None:
        raise NotFound(f"integration {integration_id} has no stored credentials")
    metadata = integration.metadata
    return JiraClient(
        base_url=str(metadata["base_url"]),
        consumer_key=creds.consumer_key,
        private_key_pem=res.vault.decrypt(creds.private_key_enc),
        access_token=res.vault.decrypt(creds.access_token_enc),
        access_token_secret=res.vault.decrypt(creds.access_token_secret_enc),
        verify_ssl=bool(metadata.get("verify_ssl", True)),
        timeout_s=res.settings.jira_timeout_s,
    )
