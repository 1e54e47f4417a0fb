"""Linking a Jira Server / Data Center instance (SPEC 2, 11) and managing linked ones.

start()     request token from Jira, pending link stored, authorize URL returned
complete()  the operator authorized: access token, integration + credentials stored,
            organizations linked (both syncs off), Jira's version read, webhook registered
            on the resource that version uses (10.x: with a signing secret, required)
Later:      `worker.jira.admin` manages what is linked.

Nothing is stored when an input or Jira's answer is bad; secrets are stored encrypted and
never logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime
from urllib.parse import urlsplit

from config.settings import Settings
from worker.domain import tokens
from worker.domain.errors import InvalidInput, JiraRejected, JiraSyncError, NotFound
from worker.jira import api, oauth1, oauth2
from worker.jira.transport import SERVER_INFO_PATH, ServerInfo, normalize_base_url, send
from worker.jira.webhooks import WEBHOOK_PREFIX as WEBHOOK_PREFIX  # the receiver's route
from worker.jira.webhooks import describe, install_webhook, integration_of, webhook_url
from worker.runtime.resources import Resources
from worker.store.db import Connection, transaction
from worker.store.queries import integrations as q
from worker.store.queries import oauth2 as q_oauth2

log = logging.getLogger(__name__)

CALLBACK_PATH = "/extensions/jira-server/oauth/callback"
MAX_EXTERNAL_ID_CHARS = 64


@dataclass(frozen=True)
class LinkStarted:
    """A pending link: the operator opens `authorize_url` in Jira before it expires."""

    pending_id: int
    authorize_url: str
    expires_in_s: int


@dataclass(frozen=True, repr=False)
class LinkResult:
    """A completed link; `webhook_url` holds the token, so it is never logged."""

    integration_id: int
    external_id: str
    created: bool
    organizations: list[str]
    webhook_url: str
    webhook_registered: bool
    webhook_error: str | None
    active: bool = True
    server: ServerInfo | None = None
    dynamic_expires_at: datetime | None = None  # OAuth 2.0: when Cloud ends its webhook

    def __repr__(self) -> str:
        return f"LinkResult(integration_id={self.integration_id}, {self.external_id!r})"


def external_id_for(base_url: str, consumer_key: str) -> str:
    """`<host>:<consumer key>`, cut to 64 characters as the original integration did."""
    return f"{urlsplit(base_url).netloc}:{consumer_key}"[:MAX_EXTERNAL_ID_CHARS]


def callback_url(settings: Settings) -> str:
    return settings.public_url + CALLBACK_PATH


def start(
    res: Resources,
    base_url: str,
    consumer_key: str,
    private_key_pem: str,
    organizations: list[str],
    verify_ssl: bool = True,
    enable: bool = False,
) -> LinkStarted:
    """Ask Jira for a request token and remember the pending link. Linking an instance that
    is linked already (same base URL and consumer key) re-links it: fresh secret and
    credentials, one webhook; a disabled integration stays disabled unless `enable`."""
    base = normalize_base_url(base_url)
    key = oauth1.check_consumer_key(consumer_key)
    pem = oauth1.check_private_key(private_key_pem)
    slugs = sorted(set(organizations))
    if not slugs:
        raise InvalidInput("at least one --organization is needed")
    with transaction(res.pool) as conn:
        organization_ids(conn, slugs)
    _refuse_cloud(base, verify_ssl, res.settings.jira_timeout_s)
    request_token = oauth1.get_request_token(
        base,
        key,
        pem,
        callback_url(res.settings),
        verify_ssl=verify_ssl,
        timeout_s=res.settings.jira_timeout_s,
    )
    ttl_s = res.settings.pending_link_ttl_s
    with transaction(res.pool) as conn:
        q.delete_expired_pending_links(conn)
        pending_id = q.insert_pending_link(
            conn,
            request_token.token,
            res.vault.encrypt(request_token.secret),
            base,
            verify_ssl,
            key,
            res.vault.encrypt(pem),
            slugs,
            enable,
            ttl_s,
        )
    log.info("link.started", extra={"pending_link": pending_id, "base_url": base})
    return LinkStarted(pending_id, oauth1.authorize_url(base, request_token.token), ttl_s)


def organization_ids(conn: Connection, slugs: list[str]) -> dict[str, int]:
    found = q.organization_ids(conn, slugs)
    missing = [s for s in slugs if s not in found]
    if missing:
        raise NotFound(f"no such organization: {', '.join(missing)}")
    return found


def complete(res: Resources, oauth_token: str, register_webhook: bool = True) -> LinkResult:
    """Trade the authorized request token for an access token and store the integration."""
    with transaction(res.pool) as conn:
        found = q.get_pending_link(conn, oauth_token)
    if found is None:
        raise NotFound("no pending link for this oauth_token (never started or already completed)")
    pending, expired = found
    if expired:
        with transaction(res.pool) as conn:
            q.delete_pending_link(conn, pending.id)
        raise InvalidInput("the pending link has expired: run `jira-sync integration link` again")
    vault, settings = res.vault, res.settings
    private_key = vault.decrypt(pending.private_key_enc)
    request_token = oauth1.TokenPair(oauth_token, vault.decrypt(pending.request_token_secret_enc))
    access = oauth1.get_access_token(
        pending.base_url,
        pending.consumer_key,
        private_key,
        request_token,
        verifier=oauth_token,  # Jira Server hands the request token back as the verifier
        verify_ssl=pending.verify_ssl,
        timeout_s=settings.jira_timeout_s,
    )
    external_id = external_id_for(pending.base_url, pending.consumer_key)
    host = urlsplit(pending.base_url).netloc
    metadata = {"base_url": pending.base_url, "domain_name": host, "verify_ssl": pending.verify_ssl}
    with transaction(res.pool) as conn:
        if not q.delete_pending_link(conn, pending.id):
            raise NotFound("this link was completed meanwhile")
        org_ids = organization_ids(conn, pending.organizations)
        integration_id, created = q.upsert_integration(
            conn, external_id, host, metadata, vault.encrypt(tokens.new_secret()), pending.enable
        )
        q.upsert_credentials(
            conn,
            q.Credentials(
                integration_id=integration_id,
                consumer_key=pending.consumer_key,
                private_key_enc=pending.private_key_enc,
                access_token_enc=vault.encrypt(access.token),
                access_token_secret_enc=vault.encrypt(access.secret),
            ),
        )
        for org_id in org_ids.values():
            q.link_organization(conn, org_id, integration_id)
        integration = q.get_integration(conn, integration_id)
    assert integration is not None
    client = api.JiraClient.oauth1(
        pending.base_url,
        pending.consumer_key,
        private_key,
        access.token,
        access.secret,
        verify_ssl=pending.verify_ssl,
        timeout_s=settings.jira_timeout_s,
    )
    return registered(res, integration, created, sorted(org_ids), client, register_webhook)


def registered(
    res: Resources,
    integration: q.Integration,
    created: bool,
    organizations: list[str],
    client: api.JiraClient,
    register_webhook: bool,
) -> LinkResult:
    """Register the stored integration's one webhook in Jira (unless told not to) and say
    how the link went; a webhook Jira would not take is reported, never a failed link."""
    vault, settings = res.vault, res.settings
    external_id = integration.external_id
    url = webhook_url(settings, external_id, vault.decrypt(integration.webhook_secret_enc))
    done, error, server, expires_at = False, None, None, None
    try:
        if register_webhook:
            server = install_webhook(res, integration.id, client)
            done = True
            with transaction(res.pool) as conn:
                hooks = q_oauth2.dynamic_webhooks(conn, integration.id)
            expires_at = min((h.expires_at for h in hooks), default=None)
    except JiraRejected as exc:
        error = str(exc)
        if exc.status in (401, 403) and "webhook_jql" in integration.metadata:
            error += (
                " (a dynamic webhook needs the app's manage:jira-webhook scope: add it in the "
                "developer console, link again, or retry with `jira-sync integration configure "
                f"{integration.id} --refresh-server-info`)"
            )
        elif exc.status in (401, 403):
            error += (
                " (registering a webhook needs a Jira administrator: add it by hand in Jira, "
                "System > WebHooks, with the URL `jira-sync integration webhook-url "
                f"{integration.id}` prints)"
            )
    except JiraSyncError as exc:
        error = str(exc)
    finally:
        client.close()
    log.info(
        "integration.linked",
        extra={
            "integration_id": integration.id,
            "external_id": external_id,
            "new_integration": created,
            "webhook_registered": done,
            "webhook_error": error,
            "server_version": server.version if server else None,
        },
    )
    return LinkResult(
        integration.id,
        external_id,
        created,
        organizations,
        url,
        done,
        error,
        active=integration.status == "active",
        server=server,
        dynamic_expires_at=expires_at,
    )


CLOUD_HOST_SUFFIXES = (".atlassian.net", ".jira.com")
# Atlassian's service accounts have addresses of this domain, and only scoped API tokens.
SERVICE_ACCOUNT_DOMAIN = "@serviceaccount.atlassian.com"


def is_cloud(base_url: str, verify_ssl: bool, timeout_s: float) -> bool:
    """Jira Cloud: known by its host, else by serverInfo (which Jira answers without
    credentials); an instance that will not say is taken for Server."""
    if (urlsplit(base_url).hostname or "").endswith(CLOUD_HOST_SUFFIXES):
        return True
    try:
        answer = send("GET", base_url + SERVER_INFO_PATH, None, verify_ssl=verify_ssl,
                      timeout_s=timeout_s)  # fmt: skip
        return ServerInfo.from_json(answer.json()).cloud
    except (JiraSyncError, ValueError):
        return False


def _refuse_cloud(base_url: str, verify_ssl: bool, timeout_s: float) -> None:
    """Jira Cloud no longer accepts OAuth 1.0a for its REST API: say what to use instead,
    before anything is stored."""
    if not is_cloud(base_url, verify_ssl, timeout_s):
        return
    raise InvalidInput(
        f"{base_url} is Jira Cloud, which does not accept OAuth 1.0a: link it with "
        "--email and --api-token-file (an API token of an administrator's account), or "
        "with an OAuth 2.0 app (--oauth2-client-id and --oauth2-client-secret-file)"
    )


def link_with_token(
    res: Resources,
    base_url: str,
    organizations: list[str],
    token: str,
    email: str | None = None,
    expires_on: date | None = None,
    verify_ssl: bool = True,
    enable: bool = False,
    register_webhook: bool = True,
    scoped: bool = False,
) -> LinkResult:
    """Link with a token in one step (SPEC 13): a Cloud site with an API token and its
    account's e-mail, or a Server / Data Center instance with a personal access token (no
    e-mail). Jira's serverInfo, read with the token, proves it and picks the dialect; a
    token of the wrong kind for the instance is refused before anything is stored. Linking
    the same instance again re-links it (fresh webhook secret, new token). A service
    account's token is scoped (`scoped`, or an e-mail of SERVICE_ACCOUNT_DOMAIN): its calls
    go through Atlassian's gateway, to the cloud id the site's tenant_info names."""
    base = normalize_base_url(base_url)
    token = token.strip()
    if not token or not token.isprintable():
        raise InvalidInput("the token file is empty or holds more than one line of text")
    email = (email or "").strip() or None
    if email is not None and "@" not in email:
        raise InvalidInput(f"--email must be the e-mail of the token's account, got {email!r}")
    slugs = sorted(set(organizations))
    if not slugs:
        raise InvalidInput("at least one --organization is needed")
    with transaction(res.pool) as conn:
        organization_ids(conn, slugs)
    timeout_s = res.settings.jira_timeout_s
    scoped = scoped or (email or "").casefold().endswith(SERVICE_ACCOUNT_DOMAIN)
    if scoped and email is None:
        raise InvalidInput("a scoped token needs --email (the service account's)")
    gateway = {}
    if scoped:
        cloud_id = oauth2.tenant_cloud_id(base, verify_ssl, timeout_s)
        gateway = {"cloud_id": cloud_id, "api_url": oauth2.gateway_url(res.settings, cloud_id)}
    api_url = gateway.get("api_url", base)
    auth = api.token_auth(email, token)
    probe = api.JiraClient(api_url, auth, verify_ssl=verify_ssl, timeout_s=timeout_s)
    try:
        server = probe.server_info()
    finally:
        probe.close()
    if email is not None and not server.cloud:
        raise InvalidInput(
            f"{base} is Jira {server.deployment_type} {server.version}: an API token with "
            "--email links Jira Cloud; use --personal-access-token-file (Data Center 8.14+) "
            "or OAuth 1.0a (--consumer-key) here"
        )
    if email is None and server.cloud:
        raise InvalidInput(
            f"{base} is Jira Cloud: link it with --email and --api-token-file (personal "
            "access tokens are Data Center's)"
        )
    kind = "scoped_token" if scoped else "api_token" if email else "pat"
    external_id = external_id_for(base, kind.replace("_", "-"))
    host = urlsplit(base).netloc
    metadata = {
        "base_url": base,
        "domain_name": host,
        "verify_ssl": verify_ssl,
        "deployment_type": server.deployment_type,
        "server_version": server.version,
        **gateway,
    }
    vault = res.vault
    with transaction(res.pool) as conn:
        org_ids = organization_ids(conn, slugs)
        integration_id, created = q.upsert_integration(
            conn, external_id, host, metadata, vault.encrypt(tokens.new_secret()), enable
        )
        q.upsert_credentials(
            conn,
            q.Credentials(
                integration_id,
                auth_kind=kind,
                account_email=email,
                api_token_enc=vault.encrypt(token),
                token_expires_on=expires_on,
            ),
        )
        for org_id in org_ids.values():
            q.link_organization(conn, org_id, integration_id)
        integration = integration_of(conn, integration_id)
    client = api.JiraClient(
        api_url, auth, cloud=server.cloud, verify_ssl=verify_ssl, timeout_s=timeout_s
    )
    return registered(res, integration, created, slugs, client, register_webhook)


def completion_message(result: LinkResult) -> str:
    """What the operator reads after a link (the callback page, the CLI)."""
    done = f"Integration {result.integration_id} ({result.external_id}) is linked to "
    done += f"{', '.join(result.organizations)}; assignee sync is off until configured."
    if not result.active:
        done += " It stays disabled (its webhooks get 401): link again with --enable to turn it on."
    if result.webhook_registered and result.dynamic_expires_at is not None:
        return done + (
            f" A dynamic webhook is registered (JWT-signed; Cloud ends it on "
            f"{result.dynamic_expires_at:%Y-%m-%d} unless refreshed, which beat does well before)."
        )
    if result.webhook_registered and result.server is not None:
        required = (
            ", signature required from the first signed delivery"
            if result.server.signs_webhooks
            else ""
        )
        return done + f" The webhook is registered in {describe(result.server)}{required}."
    return (
        done + f" The webhook could not be registered in Jira ({result.webhook_error}); "
        f"register the URL from `jira-sync integration webhook-url {result.integration_id}`."
    )
