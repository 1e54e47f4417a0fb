"""SQL for Cloud links through an OAuth 2.0 (3LO) app: pending consents, the rotating token
pair (read and replaced under the credential row's lock) and the dynamic webhooks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from psycopg.types.json import Jsonb

from worker.store.db import Connection


@dataclass(frozen=True, repr=False)
class PendingConsent:
    """An OAuth 2.0 link waiting for the operator's consent, found again by its `state`."""

    id: int
    state: str
    base_url: str
    verify_ssl: bool
    client_id: str
    client_secret_enc: str
    webhook_jql: str
    organizations: list[str]
    enable: bool
    created_at: datetime
    expires_at: datetime

    def __repr__(self) -> str:
        return f"PendingConsent(id={self.id}, base_url={self.base_url!r})"


INSERT_PENDING_CONSENT = """
INSERT INTO pending_oauth2_link (state, base_url, verify_ssl, client_id, client_secret_enc,
                                 webhook_jql, organizations, enable, expires_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now() + make_interval(secs => %s))
RETURNING id
"""


def insert_pending_consent(
    conn: Connection,
    state: str,
    base_url: str,
    verify_ssl: bool,
    client_id: str,
    client_secret_enc: str,
    webhook_jql: str,
    organizations: list[str],
    enable: bool,
    ttl_s: int,
) -> int:
    row = conn.execute(
        INSERT_PENDING_CONSENT,
        (state, base_url, verify_ssl, client_id, client_secret_enc, webhook_jql,
         Jsonb(organizations), enable, ttl_s),
    ).fetchone()  # fmt: skip
    assert row is not None
    return int(row["id"])


SELECT_PENDING_CONSENT = """
SELECT *, expires_at <= now() AS expired FROM pending_oauth2_link WHERE state = %s
"""


def get_pending_consent(conn: Connection, state: str) -> tuple[PendingConsent, bool] | None:
    """The pending consent of a `state` and whether it has expired."""
    row = conn.execute(SELECT_PENDING_CONSENT, (state,)).fetchone()
    if row is None:
        return None
    expired = bool(row.pop("expired"))
    return PendingConsent(**row), expired


DELETE_PENDING_CONSENT = "DELETE FROM pending_oauth2_link WHERE id = %s RETURNING id"


def delete_pending_consent(conn: Connection, pending_id: int) -> bool:
    """Consume a pending consent; False when another completion consumed it first (the
    callback and `integration complete` racing: the integration is stored once)."""
    return conn.execute(DELETE_PENDING_CONSENT, (pending_id,)).fetchone() is not None


DELETE_EXPIRED_CONSENTS = "DELETE FROM pending_oauth2_link WHERE expires_at <= now()"


def delete_expired_consents(conn: Connection) -> int:
    return conn.execute(DELETE_EXPIRED_CONSENTS).rowcount


@dataclass(frozen=True, repr=False)
class TokenPair:
    """An OAuth 2.0 link's tokens as stored (encrypted) and when the access token expires."""

    integration_id: int
    client_id: str
    client_secret_enc: str
    access_token_enc: str
    refresh_token_enc: str
    access_expires_at: datetime
    consented_at: datetime

    def __repr__(self) -> str:
        return f"TokenPair(integration_id={self.integration_id}, ***)"


# The row stays locked until the transaction ends: a second refresher waits here, then reads
# the pair the first one stored instead of spending the refresh token it rotated out.
LOCK_TOKEN_PAIR = """
SELECT integration_id, oauth_client_id AS client_id, oauth_client_secret_enc AS client_secret_enc,
       access_token_enc, refresh_token_enc, access_expires_at, consented_at
FROM integration_credential WHERE integration_id = %s AND auth_kind = 'oauth2'
FOR UPDATE
"""


def lock_token_pair(conn: Connection, integration_id: int) -> TokenPair | None:
    row = conn.execute(LOCK_TOKEN_PAIR, (integration_id,)).fetchone()
    return None if row is None else TokenPair(**row)


# token_expires_on: when the refresh token dies unused (90 idle days, never past 365 days
# from consent), what `integration list` and `status` show and warn of.
STORE_TOKEN_PAIR = """
UPDATE integration_credential
SET access_token_enc = %(access)s, refresh_token_enc = %(refresh)s,
    access_expires_at = now() + make_interval(secs => %(expires_in_s)s),
    token_expires_on = least(now() + interval '90 days', consented_at + interval '365 days')::date
WHERE integration_id = %(integration_id)s AND auth_kind = 'oauth2'
RETURNING access_expires_at
"""


def store_token_pair(
    conn: Connection, integration_id: int, access_enc: str, refresh_enc: str, expires_in_s: float
) -> datetime:
    row = conn.execute(
        STORE_TOKEN_PAIR,
        {"access": access_enc, "refresh": refresh_enc, "expires_in_s": expires_in_s,
         "integration_id": integration_id},
    ).fetchone()  # fmt: skip
    assert row is not None
    return row["access_expires_at"]  # type: ignore[no-any-return]


@dataclass(frozen=True)
class DynamicWebhook:
    """A dynamic webhook registered for an OAuth 2.0 link, and when Cloud stops sending it."""

    integration_id: int
    webhook_id: int
    jql: str
    expires_at: datetime
    refreshed_at: datetime


def replace_dynamic_webhooks(
    conn: Connection, integration_id: int, webhooks: list[tuple[int, str, datetime]]
) -> None:
    """The integration's dynamic webhooks are now these (id, jql, expiry)."""
    conn.execute("DELETE FROM dynamic_webhook WHERE integration_id = %s", (integration_id,))
    for webhook_id, jql, expires_at in webhooks:
        conn.execute(
            "INSERT INTO dynamic_webhook (integration_id, webhook_id, jql, expires_at) "
            "VALUES (%s, %s, %s, %s)",
            (integration_id, webhook_id, jql, expires_at),
        )


SELECT_DYNAMIC_WEBHOOKS = """
SELECT * FROM dynamic_webhook WHERE %(integration_id)s::bigint IS NULL
    OR integration_id = %(integration_id)s ORDER BY integration_id, webhook_id
"""


def dynamic_webhooks(conn: Connection, integration_id: int | None = None) -> list[DynamicWebhook]:
    rows = conn.execute(SELECT_DYNAMIC_WEBHOOKS, {"integration_id": integration_id})
    return [DynamicWebhook(**r) for r in rows]


SELECT_DUE = """
SELECT DISTINCT w.integration_id FROM dynamic_webhook w
JOIN integration i ON i.id = w.integration_id AND i.status = 'active'
WHERE w.expires_at <= now() + make_interval(secs => %s) ORDER BY w.integration_id
"""


def integrations_due(conn: Connection, ahead_s: int) -> list[int]:
    """Active integrations with a dynamic webhook expiring within `ahead_s`."""
    return [int(r["integration_id"]) for r in conn.execute(SELECT_DUE, (ahead_s,))]


SET_EXPIRY = """
UPDATE dynamic_webhook SET expires_at = %s, refreshed_at = now()
WHERE integration_id = %s AND webhook_id = ANY(%s)
"""


def set_expiry(
    conn: Connection, integration_id: int, webhook_ids: list[int], expires_at: datetime
) -> None:
    conn.execute(SET_EXPIRY, (expires_at, integration_id, webhook_ids))
