"""SQL for linked Jira Server instances: integrations, credentials, pending links."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from psycopg.types.json import Jsonb

from worker.store.db import Connection


@dataclass(frozen=True, repr=False)
class Integration:
    """A linked Jira Server instance; the webhook secrets stay encrypted here."""

    id: int
    provider: str
    external_id: str
    name: str
    metadata: dict[str, Any]
    webhook_secret_enc: str
    previous_webhook_secret_enc: str | None
    status: str
    created_at: datetime
    signing_secret_enc: str | None
    previous_signing_secret_enc: str | None
    require_signature: bool
    signature_seen_at: datetime | None

    def __repr__(self) -> str:
        return f"Integration(id={self.id}, external_id={self.external_id!r}, status={self.status})"


@dataclass(frozen=True, repr=False)
class Credentials:
    """What signs an integration's calls, secrets encrypted at rest: OAuth 1.0a (consumer key,
    private key, access token and secret), an API token (Cloud, with the account's e-mail;
    `scoped_token`: a service account's, through the gateway), a personal access token (Data
    Center) or an OAuth 2.0 app (client id and secret, access and rotating refresh token)."""

    integration_id: int
    consumer_key: str | None = None
    private_key_enc: str | None = None
    access_token_enc: str | None = None
    access_token_secret_enc: str | None = None
    auth_kind: str = "oauth1"
    account_email: str | None = None
    api_token_enc: str | None = None
    token_expires_on: date | None = None
    oauth_client_id: str | None = None
    oauth_client_secret_enc: str | None = None
    refresh_token_enc: str | None = None
    access_expires_at: datetime | None = None
    consented_at: datetime | None = None

    def __repr__(self) -> str:
        return f"Credentials(integration_id={self.integration_id}, ***)"


@dataclass(frozen=True, repr=False)
class PendingLink:
    """A request token waiting for the operator to authorize it in Jira."""

    id: int
    request_token: str
    request_token_secret_enc: str
    base_url: str
    verify_ssl: bool
    consumer_key: str
    private_key_enc: str
    organizations: list[str]
    created_at: datetime
    expires_at: datetime
    enable: bool

    def __repr__(self) -> str:
        return f"PendingLink(id={self.id}, base_url={self.base_url!r})"


@dataclass(frozen=True)
class OrganizationLink:
    """One organization linked to an integration, with its sync switches."""

    organization_id: int
    organization: str
    status: str
    config: dict[str, Any]


SELECT_INTEGRATION = "SELECT * FROM integration WHERE id = %s"


def get_integration(conn: Connection, integration_id: int) -> Integration | None:
    row = conn.execute(SELECT_INTEGRATION, (integration_id,)).fetchone()
    return None if row is None else Integration(**row)


LIST_INTEGRATIONS = "SELECT * FROM integration ORDER BY id"


def list_integrations(conn: Connection) -> list[Integration]:
    return [Integration(**r) for r in conn.execute(LIST_INTEGRATIONS)]


SELECT_CREDENTIALS = "SELECT * FROM integration_credential WHERE integration_id = %s"


def get_credentials(conn: Connection, integration_id: int) -> Credentials | None:
    row = conn.execute(SELECT_CREDENTIALS, (integration_id,)).fetchone()
    return None if row is None else Credentials(**row)


# A re-link issues a fresh secret (the old ones stop verifying at once; a signing secret comes
# with the webhook's registration) and keeps a disabled integration disabled unless asked to
# enable it.
UPSERT_INTEGRATION = """
INSERT INTO integration (external_id, name, metadata, webhook_secret_enc, status)
VALUES (%(external_id)s, %(name)s, %(metadata)s, %(secret)s, 'active')
ON CONFLICT (external_id) DO UPDATE
SET name = EXCLUDED.name, metadata = EXCLUDED.metadata,
    webhook_secret_enc = EXCLUDED.webhook_secret_enc, previous_webhook_secret_enc = NULL,
    signing_secret_enc = NULL, previous_signing_secret_enc = NULL, require_signature = false,
    signature_seen_at = NULL,
    status = CASE WHEN %(enable)s THEN 'active' ELSE integration.status END
RETURNING id, (xmax = 0) AS created
"""


def upsert_integration(
    conn: Connection,
    external_id: str,
    name: str,
    metadata: dict[str, Any],
    webhook_secret_enc: str,
    enable: bool,
) -> tuple[int, bool]:
    """Store a linked instance (or re-link one). Returns (id, created)."""
    row = conn.execute(
        UPSERT_INTEGRATION,
        {
            "external_id": external_id,
            "name": name,
            "metadata": Jsonb(metadata),
            "secret": webhook_secret_enc,
            "enable": enable,
        },
    ).fetchone()
    assert row is not None
    return int(row["id"]), bool(row["created"])


UPSERT_CREDENTIALS = """
INSERT INTO integration_credential
    (integration_id, consumer_key, private_key_enc, access_token_enc, access_token_secret_enc,
     auth_kind, account_email, api_token_enc, token_expires_on, oauth_client_id,
     oauth_client_secret_enc, refresh_token_enc, access_expires_at, consented_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (integration_id) DO UPDATE
SET consumer_key = EXCLUDED.consumer_key, private_key_enc = EXCLUDED.private_key_enc,
    access_token_enc = EXCLUDED.access_token_enc,
    access_token_secret_enc = EXCLUDED.access_token_secret_enc,
    auth_kind = EXCLUDED.auth_kind, account_email = EXCLUDED.account_email,
    api_token_enc = EXCLUDED.api_token_enc, token_expires_on = EXCLUDED.token_expires_on,
    oauth_client_id = EXCLUDED.oauth_client_id,
    oauth_client_secret_enc = EXCLUDED.oauth_client_secret_enc,
    refresh_token_enc = EXCLUDED.refresh_token_enc,
    access_expires_at = EXCLUDED.access_expires_at, consented_at = EXCLUDED.consented_at
"""


def upsert_credentials(conn: Connection, creds: Credentials) -> None:
    c = creds
    conn.execute(
        UPSERT_CREDENTIALS,
        (c.integration_id, c.consumer_key, c.private_key_enc, c.access_token_enc,
         c.access_token_secret_enc, c.auth_kind, c.account_email, c.api_token_enc,
         c.token_expires_on, c.oauth_client_id, c.oauth_client_secret_enc, c.refresh_token_enc,
         c.access_expires_at, c.consented_at),
    )  # fmt: skip


SET_WEBHOOK_SECRETS = """
UPDATE integration SET webhook_secret_enc = %s, previous_webhook_secret_enc = %s WHERE id = %s
"""


def set_webhook_secrets(
    conn: Connection, integration_id: int, current_enc: str, previous_enc: str | None
) -> None:
    conn.execute(SET_WEBHOOK_SECRETS, (current_enc, previous_enc, integration_id))


SET_SIGNING = """
UPDATE integration
SET signing_secret_enc = %s, previous_signing_secret_enc = %s, require_signature = %s
WHERE id = %s
"""


def set_signing(
    conn: Connection,
    integration_id: int,
    current_enc: str | None,
    previous_enc: str | None,
    require: bool,
) -> None:
    """The body-signing secrets (Jira Data Center 10) and whether a signature is required."""
    conn.execute(SET_SIGNING, (current_enc, previous_enc, require, integration_id))


# A new signing secret given to Jira: signatures are required from its first signed delivery
# (Data Center 10, whose field for it is not documented), or at once (Cloud's documented one).
START_SIGNING = """
UPDATE integration
SET signing_secret_enc = %s, previous_signing_secret_enc = NULL, require_signature = %s,
    signature_seen_at = NULL
WHERE id = %s
"""


def start_signing(
    conn: Connection, integration_id: int, secret_enc: str | None, require: bool = False
) -> None:
    """A signing secret just registered in Jira (None: none); unless `require`, not required
    until it is seen."""
    conn.execute(START_SIGNING, (secret_enc, require and secret_enc is not None, integration_id))


# Only the first signed delivery after a registration turns the requirement on: once an
# operator has turned it off (`configure --require-signature off`) it stays off.
NOTE_SIGNATURE_SEEN = """
UPDATE integration SET require_signature = true, signature_seen_at = now()
WHERE id = ANY(%s) AND signature_seen_at IS NULL AND signing_secret_enc IS NOT NULL
"""

NOTE_WEBHOOK_SEEN = """
INSERT INTO integration_webhook_seen AS s
    (integration_id, signature_refusals, last_refused_at, previous_secret_used_at)
SELECT i.id, r.refusals,
       CASE WHEN r.refusals > 0 THEN now() END, CASE WHEN r.previous THEN now() END
FROM unnest(%s::bigint[], %s::bigint[], %s::boolean[]) AS r (id, refusals, previous)
JOIN integration i ON i.id = r.id
ON CONFLICT (integration_id) DO UPDATE
SET signature_refusals = s.signature_refusals + EXCLUDED.signature_refusals,
    last_refused_at = coalesce(EXCLUDED.last_refused_at, s.last_refused_at),
    previous_secret_used_at = coalesce(EXCLUDED.previous_secret_used_at, s.previous_secret_used_at)
"""


def note_webhook_seen(
    conn: Connection, signed: list[int], refusals: dict[int, int], previous: set[int]
) -> None:
    """What the receiver saw since its last note: integrations whose first signed delivery
    arrived, signature refusals per integration, integrations a previous secret verified."""
    if signed:
        conn.execute(NOTE_SIGNATURE_SEEN, (signed,))
    ids = sorted(set(refusals) | previous)
    if ids:
        conn.execute(
            NOTE_WEBHOOK_SEEN,
            (ids, [refusals.get(i, 0) for i in ids], [i in previous for i in ids]),
        )


FORGET_PREVIOUS_SECRET_USE = """
UPDATE integration_webhook_seen SET previous_secret_used_at = NULL WHERE integration_id = %s
"""


def forget_previous_secret_use(conn: Connection, integration_id: int) -> None:
    """A new rotation starts: what an older rotation's previous secret verified is moot."""
    conn.execute(FORGET_PREVIOUS_SECRET_USE, (integration_id,))


@dataclass(frozen=True)
class WebhookSeen:
    """What the receivers noted of an integration's webhook deliveries."""

    integration_id: int
    signature_refusals: int
    last_refused_at: datetime | None
    previous_secret_used_at: datetime | None


SELECT_WEBHOOK_SEEN = "SELECT * FROM integration_webhook_seen WHERE integration_id = %s"


def get_webhook_seen(conn: Connection, integration_id: int) -> WebhookSeen | None:
    row = conn.execute(SELECT_WEBHOOK_SEEN, (integration_id,)).fetchone()
    return None if row is None else WebhookSeen(**row)


MERGE_METADATA = "UPDATE integration SET metadata = metadata || %s WHERE id = %s"


def merge_metadata(conn: Connection, integration_id: int, changes: dict[str, Any]) -> None:
    conn.execute(MERGE_METADATA, (Jsonb(changes), integration_id))


SET_INTEGRATION_STATUS = "UPDATE integration SET status = %s WHERE id = %s"


def set_integration_status(conn: Connection, integration_id: int, status: str) -> None:
    conn.execute(SET_INTEGRATION_STATUS, (status, integration_id))


LINK_ORGANIZATION = """
INSERT INTO organization_integration (organization_id, integration_id)
VALUES (%s, %s)
ON CONFLICT (organization_id, integration_id) DO UPDATE SET status = 'active'
"""


def link_organization(conn: Connection, organization_id: int, integration_id: int) -> None:
    """Link (or re-activate) an organization; a new link starts with both syncs off."""
    conn.execute(LINK_ORGANIZATION, (organization_id, integration_id))


SELECT_ORGANIZATION_LINKS = """
SELECT oi.organization_id, o.slug AS organization, oi.status, oi.config
FROM organization_integration oi JOIN organization o ON o.id = oi.organization_id
WHERE oi.integration_id = %s ORDER BY o.slug
"""


def organization_links(conn: Connection, integration_id: int) -> list[OrganizationLink]:
    return [
        OrganizationLink(**r) for r in conn.execute(SELECT_ORGANIZATION_LINKS, (integration_id,))
    ]


UPDATE_ORGANIZATION_CONFIG = """
UPDATE organization_integration SET config = config || %s
WHERE integration_id = %s AND organization_id = %s
"""


def update_organization_config(
    conn: Connection, integration_id: int, organization_id: int, changes: dict[str, Any]
) -> bool:
    """Merge `changes` into the link's config; False when the organization is not linked."""
    cur = conn.execute(
        UPDATE_ORGANIZATION_CONFIG, (Jsonb(changes), integration_id, organization_id)
    )
    return cur.rowcount == 1


SELECT_ORGANIZATION_IDS = "SELECT id, slug FROM organization WHERE slug = ANY(%s)"


def organization_ids(conn: Connection, slugs: list[str]) -> dict[str, int]:
    """slug -> id for the slugs that exist."""
    return {r["slug"]: int(r["id"]) for r in conn.execute(SELECT_ORGANIZATION_IDS, (slugs,))}


INSERT_PENDING_LINK = """
INSERT INTO pending_link (request_token, request_token_secret_enc, base_url, verify_ssl,
                          consumer_key, private_key_enc, organizations, enable, expires_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now() + make_interval(secs => %s))
RETURNING id
"""


def insert_pending_link(
    conn: Connection,
    request_token: str,
    request_token_secret_enc: str,
    base_url: str,
    verify_ssl: bool,
    consumer_key: str,
    private_key_enc: str,
    organizations: list[str],
    enable: bool,
    ttl_s: int,
) -> int:
    row = conn.execute(
        INSERT_PENDING_LINK,
        (
            request_token,
            request_token_secret_enc,
            base_url,
            verify_ssl,
            consumer_key,
            private_key_enc,
            Jsonb(organizations),
            enable,
            ttl_s,
        ),
    ).fetchone()
    assert row is not None
    return int(row["id"])


SELECT_PENDING_LINK = """
SELECT *, expires_at <= now() AS expired FROM pending_link WHERE request_token = %s
"""


def get_pending_link(conn: Connection, request_token: str) -> tuple[PendingLink, bool] | None:
    """The pending link of a request token and whether it has expired."""
    row = conn.execute(SELECT_PENDING_LINK, (request_token,)).fetchone()
    if row is None:
        return None
    expired = bool(row.pop("expired"))
    return PendingLink(**row), expired


DELETE_PENDING_LINK = "DELETE FROM pending_link WHERE id = %s RETURNING id"


def delete_pending_link(conn: Connection, pending_id: int) -> bool:
    """Consume a pending link; False when another completion consumed it first."""
    return conn.execute(DELETE_PENDING_LINK, (pending_id,)).fetchone() is not None


DELETE_EXPIRED_PENDING_LINKS = "DELETE FROM pending_link WHERE expires_at <= now()"


def delete_expired_pending_links(conn: Connection) -> int:
    return conn.execute(DELETE_EXPIRED_PENDING_LINKS).rowcount


# Every integration's external id: what a webhook token may claim.
SELECT_EXTERNAL_IDS = "SELECT external_id FROM integration"

SELECT_WEBHOOK_AUTH = """
SELECT i.id, i.status, i.webhook_secret_enc, i.previous_webhook_secret_enc,
       i.signing_secret_enc, i.previous_signing_secret_enc, i.require_signature,
       i.signature_seen_at IS NOT NULL AS signature_seen,
       CASE WHEN c.auth_kind = 'oauth2' THEN c.oauth_client_secret_enc END AS bearer_secret_enc
FROM integration i LEFT JOIN integration_credential c ON c.integration_id = i.id
WHERE i.external_id = %s
"""


def get_webhook_auth(conn: Connection, external_id: str) -> dict[str, Any] | None:
    """What the receiver needs to verify a token and a body signature: id, status, whether a
    signature is required and the encrypted secrets (an OAuth 2.0 link's client secret, which
    signs its dynamic webhooks' bearer JWTs, among them)."""
    row: dict[str, Any] | None = conn.execute(SELECT_WEBHOOK_AUTH, (external_id,)).fetchone()
    return row


@dataclass(frozen=True)
class Auth:
    """How an integration signs its calls, without a secret: for lists and warnings."""

    integration_id: int
    auth_kind: str
    account_email: str | None
    token_expires_on: date | None


SELECT_AUTHS = """
SELECT integration_id, auth_kind, account_email, token_expires_on FROM integration_credential
"""


def auths(conn: Connection) -> dict[int, Auth]:
    return {int(r["integration_id"]): Auth(**r) for r in conn.execute(SELECT_AUTHS)}
