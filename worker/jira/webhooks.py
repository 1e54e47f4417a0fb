"""A linked instance's one webhook (SPEC 2, 11, 13): its URL (the token names the integration),
and its registration on the resource the instance uses: an admin webhook on Jira Server 8/9
and Cloud (API tokens), Data Center 10's signed one, or, for a Cloud site linked through an
OAuth 2.0 app, a dynamic webhook that expires after 30 days and is refreshed by beat.
"""

from __future__ import annotations

import logging
from datetime import datetime
from urllib.parse import urlsplit

from config.settings import Settings
from worker.domain import tokens
from worker.domain.errors import NotFound
from worker.jira import api
from worker.jira.transport import ServerInfo
from worker.runtime.resources import Resources
from worker.store.db import Connection, transaction
from worker.store.queries import integrations as q
from worker.store.queries import oauth2 as q_oauth2

log = logging.getLogger(__name__)

WEBHOOK_PREFIX = "/extensions/jira-server/issue-updated/"


def webhook_url(settings: Settings, external_id: str, secret: str) -> str:
    return f"{settings.public_url}{WEBHOOK_PREFIX}{tokens.issue(external_id, secret)}/"


def masked(url: str) -> str:
    """A webhook URL with its token shortened, for output that must not reveal it."""
    head, _, token = url.rstrip("/").rpartition("/")
    return f"{head}/{token[:8]}.../"


def install_webhook(res: Resources, integration_id: int, client: api.JiraClient) -> ServerInfo:
    """Read Jira's version (stored in the metadata) and register the integration's one webhook
    on the resource that version uses, then read it back. On 10.x it carries the current
    signing secret, or a new one, required from the first delivery signed with it (until then
    `status` says a signature is expected, not seen yet); on 8/9 it carries none, and any
    stored one is dropped."""
    server = client.server_info()
    with transaction(res.pool) as conn:
        integration = integration_of(conn, integration_id)
        info = {"server_version": server.version, "deployment_type": server.deployment_type}
        q.merge_metadata(conn, integration_id, info)
        creds = q.get_credentials(conn, integration_id)
    if creds is not None and creds.auth_kind == "oauth2":
        install_dynamic_webhook(res, integration, client)
        return server
    vault, current = res.vault, integration.signing_secret_enc
    secret = None
    if server.signs_webhooks:
        secret = vault.decrypt(current) if current else tokens.new_secret()
    external_id = integration.external_id
    client.ensure_webhook(
        f"jira-sync ({urlsplit(res.settings.public_url).netloc})",
        webhook_url(res.settings, external_id, vault.decrypt(integration.webhook_secret_enc)),
        lambda hook_url: is_ours(hook_url, external_id),
        signing_secret=secret,
    )
    # Stored once Jira has it: a delivery signed meanwhile passes on its token alone.
    if (secret is None) != (current is None):
        # Cloud documents its admin webhooks' secret: signatures are required at once.
        with transaction(res.pool) as conn:
            encrypted = None if secret is None else vault.encrypt(secret)
            q.start_signing(conn, integration_id, encrypted, require=server.cloud)
    log.info(
        "integration.webhook_registered",
        extra={
            "integration_id": integration_id,
            "server_version": server.version,
            "signed": secret is not None,
        },
    )
    return server


def install_dynamic_webhook(
    res: Resources, integration: q.Integration, client: api.JiraClient
) -> datetime:
    """An OAuth 2.0 link's one dynamic webhook (its JQL filter from the link), registered or
    refreshed, and recorded with its expiry (beat refreshes it well before). Its deliveries
    carry a JWT signed with the app's client secret; no signing secret is ours to give."""
    external_id = integration.external_id
    url = webhook_url(res.settings, external_id, res.vault.decrypt(integration.webhook_secret_enc))
    jql = str(integration.metadata.get("webhook_jql") or "")
    webhook_id, expires_at = client.ensure_dynamic_webhook(
        url, jql, lambda hook_url: is_ours(hook_url, external_id)
    )
    with transaction(res.pool) as conn:
        q_oauth2.replace_dynamic_webhooks(conn, integration.id, [(webhook_id, jql, expires_at)])
    log.info(
        "integration.dynamic_webhook",
        extra={"integration_id": integration.id, "webhook_id": webhook_id,
               "expires_at": expires_at.isoformat()},
    )  # fmt: skip
    return expires_at


def describe(server: ServerInfo) -> str:
    """One phrase for the operator: the version and what it means for the webhook."""
    signing = "bodies signed" if server.signs_webhooks else "unsigned (8/9 API)"
    return f"Jira {server.version} ({server.deployment_type}): {signing}"


def is_ours(hook_url: str, external_id: str) -> bool:
    """Whether a webhook registered in Jira is this integration's (its URL carries our path
    and a token whose claim names this integration)."""
    path = urlsplit(hook_url).path
    if not path.startswith(WEBHOOK_PREFIX):
        return False
    try:
        return tokens.claimed_id(path[len(WEBHOOK_PREFIX) :].strip("/")) == external_id
    except tokens.InvalidToken:
        return False


def integration_of(conn: Connection, integration_id: int) -> q.Integration:
    """The integration, or NotFound naming the id."""
    integration = q.get_integration(conn, integration_id)
    if integration is None:
        raise NotFound(f"no such integration: {integration_id}")
    return integration
