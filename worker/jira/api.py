"""The REST client of a linked Jira, in its dialect: Server / Data Center (REST v2, users by
username, offset paging) or Cloud (REST v3, users by account id, token paging; SPEC 13).

Whatever signs the calls (OAuth 1.0a, an API token, a personal access token) is handed in.
A site that answered 429 is paused for every process (the `pause` hook, shared through
Redis): no call goes to it before its `Retry-After` has passed. Failures map onto the error
tree (`worker.jira.transport`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

import requests
from requests.auth import AuthBase, HTTPBasicAuth

from worker import cache
from worker.domain.errors import JiraRejected, JiraThrottled, NotFound
from worker.domain.status import Transition
from worker.jira import oauth1, oauth2
from worker.jira.dynamic import DynamicWebhooks
from worker.jira.transport import SERVER_INFO_PATH, BearerAuth, ServerInfo, send
from worker.store.db import transaction
from worker.store.queries import integrations as q

if TYPE_CHECKING:
    from worker.runtime.resources import Resources

log = logging.getLogger(__name__)

# Jira Server 8/9 and Cloud (admin webhooks) register webhooks here; Data Center 10 still
# serves it but ignores its JQL filter (JRASERVER-78733) and takes no secret, so 10.x gets
# the new resource.
LEGACY_WEBHOOK_PATH = "/rest/webhooks/1.0/webhook"
WEBHOOK_PATH = "/rest/jira-webhook/1.0/webhooks"
WEBHOOK_EVENTS = ("jira:issue_created", "jira:issue_updated")
SEARCH_PATH = "/rest/api/2/search"
# Cloud answers 410 Gone on the old search since 2025: this one pages by token.
CLOUD_SEARCH_PATH = "/rest/api/3/search/jql"


@dataclass(frozen=True)
class SearchPage:
    """One page of a JQL search: how many issues match in all, and this page's (raw JSON)."""

    total: int
    issues: list[Any]


@dataclass(frozen=True)
class TokenPage:
    """One page of Cloud's token-paged search; next_token None: this was the last page."""

    issues: list[Any]
    next_token: str | None


class SitePause(Protocol):
    """The pause a 429 puts on a site, shared by every process."""

    def remaining_s(self) -> float: ...

    def pause(self, seconds: float) -> None: ...


def token_auth(email: str | None, token: str) -> AuthBase:
    """A Cloud API token (Basic, with the account's e-mail) or a Data Center PAT (Bearer)."""
    return HTTPBasicAuth(email, token) if email else BearerAuth(token)


class JiraClient(DynamicWebhooks):
    """REST calls to one Jira, signed by `auth`, in its dialect (`cloud`)."""

    def __init__(
        self,
        base_url: str,
        auth: AuthBase,
        *,
        cloud: bool = False,
        verify_ssl: bool = True,
        timeout_s: float = 10.0,
        pause: SitePause | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.cloud = cloud
        self.verify_ssl = verify_ssl
        self.timeout_s = timeout_s
        self._auth = auth
        self._pause = pause
        self._session = requests.Session()

    @classmethod
    def oauth1(
        cls,
        base_url: str,
        consumer_key: str,
        private_key_pem: str,
        access_token: str,
        access_token_secret: str,
        verify_ssl: bool = True,
        timeout_s: float = 10.0,
    ) -> JiraClient:
        """A Server / Data Center client signing with OAuth 1.0a."""
        auth = oauth1.signer(consumer_key, private_key_pem, access_token, access_token_secret)
        return cls(base_url, auth, verify_ssl=verify_ssl, timeout_s=timeout_s)

    def __repr__(self) -> str:
        return f"JiraClient({self.base_url!r}, cloud={self.cloud})"

    @property
    def api(self) -> str:
        """The REST API of its dialect: `/rest/api/3` on Cloud, `/rest/api/2` otherwise."""
        return "/rest/api/3" if self.cloud else "/rest/api/2"

    def close(self) -> None:
        self._session.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        if self._pause is not None:
            waiting_s = self._pause.remaining_s()
            if waiting_s > 0:
                raise JiraThrottled(
                    f"Jira at {self.base_url} asked to wait (429): {waiting_s:.1f}s left",
                    retry_after_s=waiting_s,
                )
        try:
            return send(
                method,
                self.base_url + path,
                self._auth,
                verify_ssl=self.verify_ssl,
                timeout_s=self.timeout_s,
                session=self._session,
                **kwargs,
            )
        except JiraThrottled as exc:
            if self._pause is not None:
                self._pause.pause(exc.retry_after_s)
            raise

    def _issue_path(self, issue_key: str) -> str:
        return f"{self.api}/issue/{quote(issue_key, safe='')}"

    def find_assignable_user(self, issue_key: str, email: str) -> str | None:
        """The assignable user whose e-mail equals `email` (any case): their username on
        Server / Data Center, their account id on Cloud (where a hidden e-mail matches
        nothing: map the user instead, SPEC 14)."""
        query = {"query" if self.cloud else "username": email}
        users = self._json(
            "GET",
            f"{self.api}/user/assignable/search",
            "assignable-user search",
            params={"issueKey": issue_key, **query},
        )
        if not isinstance(users, list):
            raise JiraRejected("Jira's assignable-user search answer is not a list")
        wanted = email.casefold()
        for user in users:
            if not isinstance(user, dict):
                continue
            address, who = user.get("emailAddress"), user.get(self._user_field)
            if isinstance(address, str) and address.casefold() == wanted and who:
                return str(who)
        return None

    def find_account(self, email: str) -> str | None:
        """Cloud: the account whose visible e-mail equals `email` (any case), by `GET
        /rest/api/3/user/search?query=`; None when none shows it."""
        users = self._json("GET", f"{self.api}/user/search", "user search", params={"query": email})
        wanted = email.casefold()
        for user in users if isinstance(users, list) else []:
            address = user.get("emailAddress") if isinstance(user, dict) else None
            if isinstance(address, str) and address.casefold() == wanted and user.get("accountId"):
                return str(user["accountId"])
        return None

    @property
    def _user_field(self) -> str:
        """How this dialect names a user in requests: `accountId` on Cloud, else `name`."""
        return "accountId" if self.cloud else "name"

    def username_of_key(self, user_key: str) -> str:
        """The username of the user with this user key (Server/Data Center: `GET /user?key=`)."""
        user = self._json("GET", "/rest/api/2/user", "user", params={"key": user_key})
        name = user.get("name") if isinstance(user, dict) else None
        if not isinstance(name, str) or not name:
            raise JiraRejected(f"Jira's user answer for key {user_key!r} names no username")
        return name

    def set_assignee(self, issue_key: str, user: str | None) -> None:
        """Assign the issue to a user (username, or account id on Cloud); None unassigns."""
        self._call("PUT", self._issue_path(issue_key) + "/assignee", json={self._user_field: user})

    def search_by_token(
        self, jql: str, fields: Sequence[str], next_token: str | None, max_results: int
    ) -> TokenPage:
        """One page of Cloud's search (`/rest/api/3/search/jql`): only an absent
        `nextPageToken` ends the results; a page shorter than asked does not."""
        params: dict[str, Any] = {
            "jql": jql,
            "fields": ",".join(fields),
            "maxResults": max_results,
        }
        if next_token:
            params["nextPageToken"] = next_token
        data = self._json("GET", CLOUD_SEARCH_PATH, "search", params=params)
        issues = data.get("issues") if isinstance(data, dict) else None
        if not isinstance(issues, list):
            raise JiraRejected("Jira's search answer has no issues list")
        token = data.get("nextPageToken")
        return TokenPage(issues, str(token) if token else None)

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
        statuses = self._json("GET", f"{self.api}/status", "status list")
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
        issue = self._json("GET", self._issue_path(issue_key), "issue", params={"fields": "status"})
        status = issue.get("fields", {}).get("status") if isinstance(issue, dict) else None
        if not isinstance(status, dict):
            raise JiraRejected(f"Jira's answer for {issue_key} has no fields.status")
        return status

    def transitions(self, issue_key: str) -> list[Transition]:
        """The workflow transitions the issue can take now, each with its target status."""
        found = self._json("GET", self._issue_path(issue_key) + "/transitions", "transition list")
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
            self._issue_path(issue_key) + "/transitions",
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
        other of ours is deleted, and one is created when there is none. On Cloud it is an
        admin webhook on the 1.0 resource, the secret in its top-level `secret` field (Cloud's
        "secure admin webhooks"; Cloud never lists it back). Elsewhere, with a signing secret
        it is registered on Data Center 10's resource, the secret in `configuration.SECRET`
        (the one field Jira reads: given under another it keeps none and sends unsigned
        bodies); without, on the resource of Jira Server 8/9. Returns the webhook as Jira
        lists it afterwards, read back."""
        path = LEGACY_WEBHOOK_PATH if signing_secret is None or self.cloud else WEBHOOK_PATH
        body: dict[str, Any] = {
            "name": name,
            "url": url,
            "events": list(WEBHOOK_EVENTS),
            "excludeBody": False,
        }
        if signing_secret is not None and self.cloud:
            body["secret"] = signing_secret
        elif signing_secret is not None:
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


def _webhook_id(hook: dict[str, Any]) -> str:
    """A listed webhook's id: `id` (Data Center 10), else the end of its `self` link."""
    webhook_id = str(hook.get("id") or str(hook.get("self", "")).rstrip("/").rsplit("/", 1)[-1])
    if not webhook_id.isdigit():
        raise JiraRejected(f"Jira listed a webhook without a usable id: {hook.get('self')}")
    return webhook_id


def client_for_integration(res: Resources, integration_id: int) -> JiraClient:
    """A client for a linked instance, in its dialect, with its credentials read and
    decrypted, sharing the site's 429 pause with every other process."""
    with transaction(res.pool) as conn:
        integration = q.get_integration(conn, integration_id)
        creds = q.get_credentials(conn, integration_id)
    if integration is None or creds is None:
        raise NotFound(f"integration {integration_id} has no stored credentials")
    metadata, vault = integration.metadata, res.vault
    if creds.auth_kind == "oauth1":
        assert creds.consumer_key and creds.private_key_enc
        assert creds.access_token_enc and creds.access_token_secret_enc
        auth = oauth1.signer(
            creds.consumer_key,
            vault.decrypt(creds.private_key_enc),
            vault.decrypt(creds.access_token_enc),
            vault.decrypt(creds.access_token_secret_enc),
        )
    elif creds.auth_kind == "oauth2":
        assert creds.access_token_enc is not None
        stored = vault.decrypt(creds.access_token_enc)
        auth = oauth2.RefreshingBearer(res, integration_id, stored, creds.access_expires_at)
    else:
        assert creds.api_token_enc is not None
        auth = token_auth(creds.account_email, vault.decrypt(creds.api_token_enc))
    # OAuth 2.0 and scoped tokens go through Atlassian's gateway, not the site's URL.
    return JiraClient(
        str(metadata.get("api_url") or metadata["base_url"]),
        auth,
        cloud=str(metadata.get("deployment_type", "")).casefold() == "cloud",
        verify_ssl=bool(metadata.get("verify_ssl", True)),
        timeout_s=res.settings.jira_timeout_s,
        pause=cache.SitePause(res.redis, integration_id),
    )
