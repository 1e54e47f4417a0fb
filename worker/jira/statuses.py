"""Each linked Jira's status id -> status category key (`done`, ...): from Redis, or from
Jira's status list when nothing is cached or an id is missing (a status added since), at most
one fetch per integration for the life of one `StatusCategories` (a step run, a sweep)."""

from __future__ import annotations

import logging
from collections.abc import Collection

from worker import cache
from worker.jira.api import client_for_integration
from worker.runtime.resources import Resources

log = logging.getLogger(__name__)


class StatusCategories:
    """Status categories per integration, read once and fetched again at most once."""

    def __init__(self, res: Resources) -> None:
        self.res = res
        self.known: dict[int, dict[str, str]] = {}
        self.fetched: set[int] = set()

    def of(self, integration_id: int, wanted: Collection[str]) -> dict[str, str]:
        """The integration's categories, holding every wanted id if Jira lists it."""
        categories = self.known.get(integration_id)
        if categories is None:
            categories = cache.cached_status_categories(self.res.redis, integration_id)
        stale = categories is None or not set(wanted) <= categories.keys()
        if stale and integration_id not in self.fetched:
            categories = self._fetch(integration_id)
        categories = self.known[integration_id] = categories or {}
        return categories

    def _fetch(self, integration_id: int) -> dict[str, str]:
        client = client_for_integration(self.res, integration_id)
        try:
            categories = client.status_categories()
        finally:
            client.close()
        self.fetched.add(integration_id)
        ttl_s = self.res.settings.status_categories_ttl_s
        cache.fill_status_categories(self.res.redis, integration_id, categories, ttl_s)
        log.info(
            "status.categories_fetched",
            extra={"integration_id": integration_id, "statuses": len(categories)},
        )
        return categories
