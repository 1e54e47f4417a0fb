"""Atlassian's OAuth 2.0 (3LO) pieces that decide without a server: the consent URL, which
accessible resource is the linked site, a dynamic webhook's expiry in either spelling."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest

from config.settings import Settings, load_settings
from worker.domain.errors import InvalidInput, JiraRejected
from worker.jira import dynamic, oauth2


def settings() -> Settings:
    return load_settings({"DATABASE_URL": "postgresql://h/db", "REDIS_URL": "redis://h/0",
                          "SECRET_KEY": "s" * 32})  # fmt: skip


def test_the_consent_url_asks_atlassian_for_a_refresh_token_and_consent() -> None:
    url = oauth2.authorization_url(settings(), "client-1", "https://sync.example/cb", "st4te")
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "https://auth.atlassian.com/authorize"
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert query["audience"] == "api.atlassian.com" and query["prompt"] == "consent"
    assert query["response_type"] == "code" and query["state"] == "st4te"
    assert query["client_id"] == "client-1" and query["redirect_uri"] == "https://sync.example/cb"
    assert "offline_access" in query["scope"].split()
    assert "manage:jira-webhook" in query["scope"].split()


def test_the_gateway_holds_the_cloud_id() -> None:
    assert oauth2.gateway_url(settings(), "abc") == "https://api.atlassian.com/ex/jira/abc"


def test_the_linked_site_is_found_among_the_accessible_resources() -> None:
    sites = [
        {"id": "other", "url": "https://other.atlassian.net"},
        {"id": "mine", "url": "https://acme.atlassian.net"},
    ]
    assert oauth2.cloud_id_of("https://ACME.atlassian.net/", sites) == "mine"


def test_a_consent_for_another_site_names_the_sites_it_granted() -> None:
    sites = [{"id": "other", "url": "https://other.atlassian.net"}]
    with pytest.raises(InvalidInput, match=r"other\.atlassian\.net"):
        oauth2.cloud_id_of("https://acme.atlassian.net", sites)
    with pytest.raises(InvalidInput, match="none"):
        oauth2.cloud_id_of("https://acme.atlassian.net", {"not": "a list"})


@pytest.mark.parametrize(
    "value",
    [1796083200000, 1796083200, "1796083200000", "2026-12-01T00:00:00.000+0000"],
)
def test_a_dynamic_webhook_expiry_reads_in_each_spelling(value: object) -> None:
    assert dynamic._expiry(value) == datetime(2026, 12, 1, tzinfo=UTC)


def test_a_dynamic_webhook_without_expiry_is_refused() -> None:
    with pytest.raises(JiraRejected, match="expirationDate"):
        dynamic._expiry(None)


def test_beat_checks_the_dynamic_webhooks_hourly() -> None:
    from config.celery import celery_config
    from tasks import maintenance

    entry = celery_config(settings())["beat_schedule"]["refresh-dynamic-webhooks"]
    assert entry["task"] == "jira_sync.maintenance.refresh_dynamic_webhooks"
    assert entry["schedule"] == 3600
    # Refreshed with 20 of 30 days left: a beat down for up to 20 days loses nothing.
    assert maintenance.DYNAMIC_WEBHOOK_REFRESH_AHEAD_S == 20 * 86400
