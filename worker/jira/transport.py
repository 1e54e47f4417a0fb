"""How every call to Jira goes out and what its answer means, whatever signs it: transport
failures and 5xx are JiraUnavailable (retried by steps), 429 is JiraThrottled (retried no
sooner than Jira's `Retry-After`), other 4xx and malformed answers are JiraRejected (not
retried). Also the base URL rule and what serverInfo says about an instance.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from requests.auth import AuthBase

from worker.domain.errors import InvalidInput, JiraRejected, JiraThrottled, JiraUnavailable
from worker.domain.reconcile import JIRA_TIME_FORMAT

SERVER_INFO_PATH = "/rest/api/2/serverInfo"
FIRST_SIGNING_MAJOR = 10
# A 429 without a usable Retry-After waits this long; one asking more is capped.
DEFAULT_RETRY_AFTER_S = 10.0
MAX_RETRY_AFTER_S = 3600.0


@dataclass(frozen=True)
class ServerInfo:
    """What GET /rest/api/2/serverInfo says about the instance."""

    version: str
    major: int
    deployment_type: str
    server_time_ms: int | None = None  # Jira's own clock when it answered

    @property
    def cloud(self) -> bool:
        """Jira Cloud (serverInfo's `deploymentType`), spoken to in the Cloud dialect."""
        return self.deployment_type.casefold() == "cloud"

    @property
    def signs_webhooks(self) -> bool:
        """Cloud (admin webhooks) and Data Center 10 and later sign webhook bodies registered
        with a secret."""
        return self.cloud or self.major >= FIRST_SIGNING_MAJOR

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
    instant = jira_instant(value)
    return None if instant is None else int(instant.timestamp() * 1000)


def jira_instant(value: str) -> datetime | None:
    """Jira's `2026-12-06T15:00:00.000+0000` as an aware datetime (None: not that form)."""
    try:
        return datetime.strptime(value, JIRA_TIME_FORMAT)
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


def send(
    method: str,
    url: str,
    auth: AuthBase | None,
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
    if response.status_code == 429:
        wait_s = retry_after_s(response)
        reason = response.headers.get("RateLimit-Reason", "")[:80]
        raise JiraThrottled(
            f"Jira throttled {what} (429{', ' + reason if reason else ''}): retry after "
            f"{wait_s:g}s",
            retry_after_s=wait_s,
        )
    if response.status_code >= 400:
        raise JiraRejected(
            f"Jira answered {response.status_code} to {what}{problem(response)}",
            status=response.status_code,
        )
    return response


def problem(response: requests.Response) -> str:
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


def retry_after_s(response: requests.Response) -> float:
    """Jira's `Retry-After` in seconds (an HTTP date is not sent by Jira: the default)."""
    raw = response.headers.get("Retry-After", "").strip()
    try:
        value = float(raw)
    except ValueError:
        return DEFAULT_RETRY_AFTER_S
    return min(max(value, 0.0), MAX_RETRY_AFTER_S)


class BearerAuth(AuthBase):
    """`Authorization: Bearer <token>`: a Data Center personal access token (8.14+), or an
    OAuth 2.0 access token."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:
        return "BearerAuth(***)"
