"""Cloud's dynamic webhooks (SPEC 13), registered by an OAuth 2.0 app on
`/rest/api/3/webhook`: Cloud stops sending one 30 days after its registration or last
refresh. The operations of the Jira client (`api.JiraClient`) that manage them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import requests

from worker.domain.errors import JiraRejected
from worker.jira.transport import jira_instant

DYNAMIC_WEBHOOK_PATH = "/rest/api/3/webhook"
DYNAMIC_WEBHOOK_EVENTS = ("jira:issue_updated",)


class _Client(Protocol):
    def _call(self, method: str, path: str, **kwargs: Any) -> requests.Response: ...

    def _json(self, method: str, path: str, what: str, **kwargs: Any) -> Any: ...

    def _dynamic_webhooks(self) -> list[dict[str, Any]]: ...


class DynamicWebhooks:
    """What a Jira client does with Cloud's dynamic webhooks (mixed into `api.JiraClient`)."""

    def ensure_dynamic_webhook(
        self: _Client, url: str, jql: str, ours: Callable[[str], bool]
    ) -> tuple[int, datetime]:
        """Exactly one dynamic webhook of ours (OAuth 2.0 apps), sending issue updates that
        match `jql` to `url`: one already registered with both is refreshed (its 30 days start
        again), any other of ours deleted; none left: one is registered. Returns its id and
        when Cloud stops sending it."""
        mine = [h for h in self._dynamic_webhooks() if ours(str(h.get("url", "")))]
        kept = next((h for h in mine if h.get("url") == url and h.get("jqlFilter") == jql), None)
        stale = [int(h["id"]) for h in mine if h is not kept and str(h.get("id", "")).isdigit()]
        if stale:
            self._call("DELETE", DYNAMIC_WEBHOOK_PATH, json={"webhookIds": stale})
        if kept is not None:
            webhook_id = int(kept["id"])
            answer = self._json("PUT", DYNAMIC_WEBHOOK_PATH + "/refresh", "webhook refresh",
                                json={"webhookIds": [webhook_id]})  # fmt: skip
            expiry = answer.get("expirationDate") if isinstance(answer, dict) else None
            return webhook_id, _expiry(expiry)
        hook = {"events": list(DYNAMIC_WEBHOOK_EVENTS), "jqlFilter": jql}
        body = {"url": url, "webhooks": [hook]}
        answer = self._json("POST", DYNAMIC_WEBHOOK_PATH, "webhook registration", json=body)
        results = answer.get("webhookRegistrationResult") if isinstance(answer, dict) else None
        first = results[0] if isinstance(results, list) and results else {}
        created = first.get("createdWebhookId") if isinstance(first, dict) else None
        if not isinstance(created, int):
            errors = first.get("errors") if isinstance(first, dict) else None
            raise JiraRejected(f"Jira did not register the dynamic webhook: {errors or answer}")
        listed = {int(h["id"]): h for h in self._dynamic_webhooks() if str(h.get("id")).isdigit()}
        if created not in listed:
            raise JiraRejected("Jira does not list the dynamic webhook it just registered")
        return created, _expiry(listed[created].get("expirationDate"))

    def _dynamic_webhooks(self: _Client) -> list[dict[str, Any]]:
        """Every dynamic webhook this app registered on the site (paged by offset)."""
        found: list[dict[str, Any]] = []
        while True:
            page = self._json("GET", DYNAMIC_WEBHOOK_PATH, "webhook list",
                              params={"startAt": len(found), "maxResults": 100})  # fmt: skip
            values = page.get("values") if isinstance(page, dict) else None
            if not isinstance(values, list):
                raise JiraRejected("Jira's dynamic webhook list has no values")
            found += [h for h in values if isinstance(h, dict)]
            if page.get("isLast", True) or not values:
                return found


def _expiry(value: Any) -> datetime:
    """A dynamic webhook's `expirationDate`: epoch milliseconds (the REST reference's int64)
    or Jira's time text (its examples)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value / 1000 if value > 1e11 else value, UTC)
    if isinstance(value, str):
        if value.isdigit():
            return _expiry(int(value))
        instant = jira_instant(value)
        if instant is not None:
            return instant
    raise JiraRejected(f"Jira's dynamic webhook has no usable expirationDate: {value!r}")
