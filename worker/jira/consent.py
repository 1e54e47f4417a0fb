"""Linking a Jira Cloud site through an OAuth 2.0 (3LO) app (SPEC 13), in two steps like
OAuth 1.0a's:

start()     the site is checked to be Cloud, the pending consent stored (client secret
            encrypted) under a random `state`, and Atlassian's consent URL returned
complete()  the operator consented: the code is traded for the first token pair, the site's
            cloud id read from the grant's accessible resources, the integration stored, and
            its dynamic webhook registered (expires after 30 days; beat refreshes it)

Called by the receiver's callback (OAUTH2_CALLBACK_PATH) or `integration complete --code
--state`; the consent is consumed when the integration is stored, so the first to get there
stores it and an exchange that failed (Atlassian unreachable) can be tried again. Nothing is
stored when an input or Atlassian's answer is bad.
"""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlsplit

from config.settings import Settings
from worker.domain import tokens
from worker.domain.errors import InvalidInput, NotFound
from worker.jira import api, linking, oauth2, webhooks
from worker.jira.transport import BearerAuth, normalize_base_url
from worker.runtime.resources import Resources
from worker.store.db import transaction
from worker.store.queries import integrations as q
from worker.store.queries import oauth2 as q_oauth2

log = logging.getLogger(__name__)

OAUTH2_CALLBACK_PATH = "/extensions/jira-cloud/oauth2/callback"
MAX_CLIENT_ID_CHARS = 200
MAX_JQL_CHARS = 1000
# A refresh token dies after this many days unused (Atlassian's inactivity expiry).
REFRESH_IDLE_DAYS = 90


def redirect_uri(settings: Settings) -> str:
    """The callback URL the app's developer-console settings must name."""
    return settings.public_url + OAUTH2_CALLBACK_PATH


def start(
    res: Resources,
    base_url: str,
    client_id: str,
    client_secret: str,
    organizations: list[str],
    webhook_jql: str,
    verify_ssl: bool = True,
    enable: bool = False,
) -> linking.LinkStarted:
    """Remember the pending consent and return the URL the operator opens to give it."""
    base = normalize_base_url(base_url)
    client_id, client_secret = client_id.strip(), client_secret.strip()
    if not client_id or len(client_id) > MAX_CLIENT_ID_CHARS or not client_id.isprintable():
        raise InvalidInput("--oauth2-client-id must be the app's client id (one line of text)")
    if not client_secret or not client_secret.isprintable():
        raise InvalidInput("the client secret file is empty or holds more than one line of text")
    jql = " ".join(webhook_jql.split())
    if not jql or len(jql) > MAX_JQL_CHARS:
        raise InvalidInput(
            "--webhook-jql must name the issues the dynamic webhook sends (for example "
            "'project = APP' or 'project IN (APP, OPS)')"
        )
    slugs = sorted(set(organizations))
    if not slugs:
        raise InvalidInput("at least one --organization is needed")
    with transaction(res.pool) as conn:
        linking.organization_ids(conn, slugs)
    if not linking.is_cloud(base, verify_ssl, res.settings.jira_timeout_s):
        raise InvalidInput(
            f"{base} is not Jira Cloud: OAuth 2.0 apps link Cloud sites; use --consumer-key "
            "(OAuth 1.0a) or --personal-access-token-file here"
        )
    # Hex: a URL-safe token may begin with "-", which `integration complete --state S` would
    # take for an option.
    state = secrets.token_hex(tokens.SECRET_BYTES)
    ttl_s = res.settings.pending_link_ttl_s
    with transaction(res.pool) as conn:
        q_oauth2.delete_expired_consents(conn)
        pending_id = q_oauth2.insert_pending_consent(
            conn, state, base, verify_ssl, client_id, res.vault.encrypt(client_secret), jql,
            slugs, enable, ttl_s,
        )  # fmt: skip
    log.info("link.oauth2_started", extra={"pending_link": pending_id, "base_url": base})
    url = oauth2.authorization_url(res.settings, client_id, redirect_uri(res.settings), state)
    return linking.LinkStarted(pending_id, url, ttl_s)


def complete(
    res: Resources, code: str, state: str, register_webhook: bool = True
) -> linking.LinkResult:
    """Trade the consent's code for tokens, find the site's cloud id, store the integration
    and register its dynamic webhook."""
    if not code.strip() or not state.strip():
        raise InvalidInput("the callback carries no code or no state")
    with transaction(res.pool) as conn:
        found = q_oauth2.get_pending_consent(conn, state.strip())
    if found is None:
        raise NotFound("no pending OAuth 2.0 link for this state (never started or completed)")
    pending, expired = found
    if expired:
        with transaction(res.pool) as conn:
            q_oauth2.delete_pending_consent(conn, pending.id)
        raise InvalidInput("the pending link has expired: run `jira-sync integration link` again")
    vault, settings = res.vault, res.settings
    secret = vault.decrypt(pending.client_secret_enc)
    grant = oauth2.exchange_code(
        settings, pending.client_id, secret, code.strip(), redirect_uri(settings)
    )
    cloud_id = oauth2.accessible_cloud_id(settings, grant.access_token, pending.base_url)
    api_url = oauth2.gateway_url(settings, cloud_id)
    timeout_s = settings.jira_timeout_s
    probe = api.JiraClient(api_url, BearerAuth(grant.access_token), timeout_s=timeout_s)
    try:
        server = probe.server_info()
    finally:
        probe.close()
    if not server.cloud:
        raise InvalidInput(f"{pending.base_url} says it is {server.deployment_type}, not Cloud")
    host = urlsplit(pending.base_url).netloc
    external_id = linking.external_id_for(pending.base_url, f"oauth2:{pending.client_id}")
    metadata = {
        "base_url": pending.base_url,
        "domain_name": host,
        "verify_ssl": pending.verify_ssl,
        "deployment_type": server.deployment_type,
        "server_version": server.version,
        "cloud_id": cloud_id,
        "api_url": api_url,
        "webhook_jql": pending.webhook_jql,
    }
    now = datetime.now(UTC)
    with transaction(res.pool) as conn:
        # Consumed only now: a failed exchange (Atlassian unreachable) can be completed again.
        if not q_oauth2.delete_pending_consent(conn, pending.id):
            raise NotFound("this link was completed meanwhile")
        org_ids = linking.organization_ids(conn, pending.organizations)
        integration_id, created = q.upsert_integration(
            conn, external_id, host, metadata, vault.encrypt(tokens.new_secret()), pending.enable
        )
        q.upsert_credentials(
            conn,
            q.Credentials(
                integration_id,
                auth_kind="oauth2",
                access_token_enc=vault.encrypt(grant.access_token),
                oauth_client_id=pending.client_id,
                oauth_client_secret_enc=pending.client_secret_enc,
                refresh_token_enc=vault.encrypt(grant.refresh_token),
                access_expires_at=now + timedelta(seconds=grant.expires_in_s),
                consented_at=now,
                token_expires_on=date.today() + timedelta(days=REFRESH_IDLE_DAYS),
            ),
        )
        for org_id in org_ids.values():
            q.link_organization(conn, org_id, integration_id)
        integration = webhooks.integration_of(conn, integration_id)
    log.info("link.oauth2_consented", extra={"integration_id": integration_id})
    client = api.JiraClient(
        api_url, oauth2.RefreshingBearer(res, integration_id), cloud=True, timeout_s=timeout_s
    )
    slugs = sorted(org_ids)
    return linking.registered(res, integration, created, slugs, client, register_webhook)
