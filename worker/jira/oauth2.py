"""Jira Cloud through Atlassian's OAuth 2.0 (3LO) and its API gateway (SPEC 13).

An OAuth 2.0 app's calls, and a service account's scoped API token's, go to the gateway
`{ATLASSIAN_API_URL}/ex/jira/{cloudId}/rest/...`, never to the site's own URL. The cloud id
comes from `/oauth/token/accessible-resources` (OAuth 2.0: the site whose URL is the linked
one) or from the site's `/_edge/tenant_info` (scoped tokens).

Refresh tokens rotate: every refresh returns a new one and spends the old (a spent one is
refused, and reusing it outside Atlassian's short leeway revokes the whole grant). A refresh
happens inside the transaction that holds the integration's credential row locked (SELECT
... FOR UPDATE), and stores the new pair before it commits: a second process that wants a
fresh access token meanwhile waits on the lock, then finds the pair the first one stored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
from oauthlib.oauth2 import OAuth2Error
from requests.auth import AuthBase
from requests_oauthlib import OAuth2Session

from config.settings import Settings
from worker.domain.errors import InvalidInput, JiraRejected, JiraUnavailable, NotFound
from worker.jira.transport import BearerAuth, send
from worker.store.db import transaction
from worker.store.queries import oauth2 as q

if TYPE_CHECKING:
    from worker.runtime.resources import Resources

log = logging.getLogger(__name__)

AUDIENCE = "api.atlassian.com"
# Classic scopes: issues, users and transitions, the dynamic webhooks, and a refresh token.
SCOPES = (
    "read:jira-work",
    "write:jira-work",
    "read:jira-user",
    "manage:jira-webhook",
    "offline_access",
)
# An access token this close to its expiry is refreshed before a call.
REFRESH_MARGIN_S = 60
ACCESSIBLE_RESOURCES_PATH = "/oauth/token/accessible-resources"
TENANT_INFO_PATH = "/_edge/tenant_info"


@dataclass(frozen=True, repr=False)
class Grant:
    """What Atlassian's token endpoint answered: an access token, its life, a refresh token."""

    access_token: str
    refresh_token: str
    expires_in_s: float

    def __repr__(self) -> str:
        return f"Grant(expires_in_s={self.expires_in_s:g}, ***)"


def gateway_url(settings: Settings, cloud_id: str) -> str:
    """Where a Cloud site's REST API answers OAuth 2.0 and scoped-token calls."""
    return f"{settings.atlassian_api_url}/ex/jira/{cloud_id}"


def token_url(settings: Settings) -> str:
    return f"{settings.atlassian_auth_url}/oauth/token"


def authorization_url(settings: Settings, client_id: str, redirect_uri: str, state: str) -> str:
    """The consent page the operator opens (`prompt=consent`: asked every time)."""
    session = OAuth2Session(client_id, redirect_uri=redirect_uri, scope=list(SCOPES))
    url, _ = session.authorization_url(
        f"{settings.atlassian_auth_url}/authorize", state=state, audience=AUDIENCE,
        prompt="consent",
    )  # fmt: skip
    return str(url)


def _token_call(what: str, call: Callable[[], dict[str, Any]]) -> Grant:
    """Run one token-endpoint exchange; map its failures onto the error tree."""
    try:
        token = call()
    except requests.Timeout:
        raise JiraUnavailable(f"Atlassian's token endpoint did not answer ({what})") from None
    except requests.RequestException as exc:
        raise JiraUnavailable(
            f"Atlassian's token endpoint cannot be reached ({what}): {type(exc).__name__}"
        ) from None
    except OAuth2Error as exc:
        detail = f"{exc.error}" + (f": {exc.description}" if exc.description else "")
        raise JiraRejected(f"Atlassian refused the {what} ({detail[:200]})", status=403) from None
    access, refresh = token.get("access_token"), token.get("refresh_token")
    if not isinstance(access, str) or not access:
        raise JiraRejected(f"Atlassian's {what} answer has no access_token")
    if not isinstance(refresh, str) or not refresh:
        raise JiraRejected(
            f"Atlassian's {what} answer has no refresh_token: the app must be granted the "
            "offline_access scope"
        )
    expires_in = token.get("expires_in")
    lifetime_s = float(expires_in) if isinstance(expires_in, int | float) else 3600.0
    return Grant(access, refresh, lifetime_s)


def _answer_hook(response: requests.Response) -> requests.Response:
    """5xx is the endpoint being down (retried), not a refusal."""
    if response.status_code >= 500:
        raise JiraUnavailable(f"Atlassian's token endpoint answered {response.status_code}")
    return response


def _session(client_id: str, redirect_uri: str | None = None) -> OAuth2Session:
    session = OAuth2Session(client_id, redirect_uri=redirect_uri)
    session.register_compliance_hook("access_token_response", _answer_hook)
    session.register_compliance_hook("refresh_token_response", _answer_hook)
    return session


def exchange_code(
    settings: Settings, client_id: str, client_secret: str, code: str, redirect_uri: str
) -> Grant:
    """Trade the code the consent page redirected with for the first token pair."""
    session = _session(client_id, redirect_uri)
    return _token_call(
        "authorization code",
        lambda: session.fetch_token(
            token_url(settings), code=code, client_secret=client_secret,
            include_client_id=True, timeout=settings.jira_timeout_s,
        ),
    )  # fmt: skip


def _refresh(settings: Settings, client_id: str, client_secret: str, refresh_token: str) -> Grant:
    session = _session(client_id)
    return _token_call(
        "refresh token",
        lambda: session.refresh_token(
            token_url(settings), refresh_token=refresh_token, client_id=client_id,
            client_secret=client_secret, timeout=settings.jira_timeout_s,
        ),
    )  # fmt: skip


def site_key(url: str) -> str:
    """A site URL as compared with accessible-resources' `url`: scheme and host, any case."""
    parts = urlsplit(url.strip().rstrip("/"))
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def cloud_id_of(site_url: str, resources: Any) -> str:
    """The cloud id of the accessible resource whose URL is the linked site's."""
    listed = [r for r in resources if isinstance(r, dict)] if isinstance(resources, list) else []
    for resource in listed:
        if site_key(str(resource.get("url", ""))) == site_key(site_url) and resource.get("id"):
            return str(resource["id"])
    found = ", ".join(str(r.get("url")) for r in listed) or "none"
    raise InvalidInput(
        f"the consent did not grant access to {site_url} (sites granted: {found}): choose that "
        "site on the consent page"
    )


def accessible_cloud_id(settings: Settings, access_token: str, site_url: str) -> str:
    """The linked site's cloud id, from the sites the grant reaches."""
    answer = send(
        "GET", settings.atlassian_api_url + ACCESSIBLE_RESOURCES_PATH, BearerAuth(access_token),
        verify_ssl=True, timeout_s=settings.jira_timeout_s,
    )  # fmt: skip
    try:
        return cloud_id_of(site_url, answer.json())
    except ValueError:
        raise JiraRejected("Atlassian's accessible-resources answer is not JSON") from None


def tenant_cloud_id(site_url: str, verify_ssl: bool, timeout_s: float) -> str:
    """A site's cloud id as its `/_edge/tenant_info` says (no credentials needed)."""
    answer = send("GET", site_url + TENANT_INFO_PATH, None, verify_ssl=verify_ssl,
                  timeout_s=timeout_s)  # fmt: skip
    try:
        cloud_id = answer.json().get("cloudId")
    except (ValueError, AttributeError):
        cloud_id = None
    if not isinstance(cloud_id, str) or not cloud_id.strip():
        raise JiraRejected(f"{site_url}{TENANT_INFO_PATH} names no cloudId: is it a Cloud site?")
    return cloud_id.strip()


def access_token(res: Resources, integration_id: int, min_valid_s: float = REFRESH_MARGIN_S) -> (
    tuple[str, datetime]
):  # fmt: skip
    """An access token valid for at least `min_valid_s`, and when it expires: the stored one,
    or a refreshed one (the new pair stored before the row's lock is released)."""
    vault, settings = res.vault, res.settings
    with transaction(res.pool) as conn:
        pair = q.lock_token_pair(conn, integration_id)
        if pair is None:
            raise NotFound(f"integration {integration_id} is not linked through OAuth 2.0")
        if pair.access_expires_at - datetime.now(UTC) > timedelta(seconds=min_valid_s):
            return vault.decrypt(pair.access_token_enc), pair.access_expires_at
        started = time.monotonic()
        try:
            grant = _refresh(
                settings,
                pair.client_id,
                vault.decrypt(pair.client_secret_enc),
                vault.decrypt(pair.refresh_token_enc),
            )
        except JiraRejected as exc:
            raise JiraRejected(
                f"integration {integration_id}: {exc} (the grant ends after 90 idle days or "
                "365 days, or when revoked): link it again with --oauth2-client-id",
                status=exc.status,
            ) from None
        expires_at = q.store_token_pair(
            conn,
            integration_id,
            vault.encrypt(grant.access_token),
            vault.encrypt(grant.refresh_token),
            grant.expires_in_s,
        )
    log.info(
        "oauth2.refreshed",
        extra={
            "integration_id": integration_id,
            "duration_ms": round((time.monotonic() - started) * 1000, 1),
        },
    )
    return grant.access_token, expires_at


class RefreshingBearer(AuthBase):
    """`Authorization: Bearer` with an OAuth 2.0 link's access token, refreshed (under the
    credential row's lock, shared with every process) when it is about to expire."""

    def __init__(
        self,
        res: Resources,
        integration_id: int,
        token: str | None = None,
        expires_at: datetime | None = None,
    ) -> None:
        """`token` and `expires_at`: the stored access token, used while it is valid without
        taking the row's lock; none given, the first call reads (or refreshes) it."""
        self._res = res
        self._integration_id = integration_id
        self._token = token
        self._expires_at = expires_at or datetime.min.replace(tzinfo=UTC)

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        margin = timedelta(seconds=REFRESH_MARGIN_S)
        if self._token is None or self._expires_at - datetime.now(UTC) <= margin:
            self._token, self._expires_at = access_token(self._res, self._integration_id)
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:
        return f"RefreshingBearer(integration_id={self._integration_id}, ***)"
