"""The receiver's cache of webhook secrets (URL token and body signing) per integration,
kept fresh by PostgreSQL notifications with a short TTL as the fallback."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import anyio.to_thread
import psycopg

from worker.runtime.resources import Resources
from worker.store.db import transaction
from worker.store.queries import integrations as iq

log = logging.getLogger("jira_sync.receiver")

AUTH_CACHE_TTL_S = 5.0
INTEGRATION_CHANNEL = "jira_sync_integration"
LISTEN_RETRY_MIN_S = 0.5
LISTEN_RETRY_MAX_S = 10.0
AUTH_CACHE_MAX = 10_000
# The shortest time between two reads of every integration's id for unknown claims.
KNOWN_REFRESH_S = 0.1


@dataclass(frozen=True, repr=False)
class WebhookAuth:
    """What verifying a token and a body signature needs: the integration's id and state,
    its plain URL-token secrets and body-signing secrets (none unless it signs), and whether
    a delivery without a signature is refused. A Cloud site linked through an OAuth 2.0 app
    (`bearer`) signs its dynamic webhooks with a JWT in `Authorization`, keyed with the app's
    client secret (its one signing secret, always required)."""

    integration_id: int
    external_id: str
    active: bool
    secrets: tuple[str, ...]
    signing_secrets: tuple[bytes, ...]
    require_signature: bool
    signature_seen: bool  # a signed delivery arrived since the signing secret was registered
    bearer: bool = False


class AuthCache:
    """Integration secrets by external id, kept a few seconds so a delivery costs no lookup.

    `listen` keeps a PostgreSQL connection on the channel the integration table's trigger
    notifies (migration 0008): a disable, a rotation or a re-link drops the cached entry in
    every receiver process as the change commits. Whenever that connection is (re)opened the
    whole cache is dropped, since changes made while nobody listened were not heard; while it
    is down, entries still expire after AUTH_CACHE_TTL_S.

    While it listens it also holds every integration's external id (read when the connection
    opens, added to as rows are announced): a token claiming an id not on it is refused after
    one read of every id (shared by all such requests, at most every KNOWN_REFRESH_S), so
    random ids cost a bounded number of queries and never push real entries out. A load that
    an announcement overtook (a disable committed while the row was being read) is read again
    instead of cached.
    """

    def __init__(self, res: Resources) -> None:
        self._res = res
        self._entries: dict[str, WebhookAuth | None] = {}
        self._fetched: dict[str, float] = {}
        self._known: set[str] | None = None  # None: not listening, every id is looked up
        self._changes = 0  # announcements heard: a load they overtook is not cached
        self._known_lock = asyncio.Lock()
        self._known_read_at = -1e9
        self.listening = asyncio.Event()

    def forget(self, external_id: str | None = None) -> None:
        """Drop one integration's entry, or every entry."""
        self._changes += 1
        if external_id is None:
            self._entries.clear()
            self._fetched.clear()
        else:
            self._entries.pop(external_id, None)
            self._fetched.pop(external_id, None)

    async def listen(self) -> None:
        """Forget entries as their integrations change, until cancelled; reconnects."""
        delay_s = LISTEN_RETRY_MIN_S
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self._res.settings.database_url, autocommit=True, connect_timeout=5
                )
                async with conn:
                    await conn.execute(f"LISTEN {INTEGRATION_CHANNEL}")
                    cursor = await conn.execute(iq.SELECT_EXTERNAL_IDS)
                    self._known = {str(row[0]) for row in await cursor.fetchall()}
                    self.forget()
                    self.listening.set()
                    delay_s = LISTEN_RETRY_MIN_S
                    async for notice in conn.notifies():
                        self._known.add(notice.payload)
                        self.forget(notice.payload)
            except (psycopg.Error, OSError) as exc:
                log.warning("receiver.listen_lost", extra={"error": type(exc).__name__})
            self._known = None
            self.listening.clear()
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, LISTEN_RETRY_MAX_S)

    async def get(self, external_id: str, *, refresh: bool = False) -> WebhookAuth | None:
        if not await self._may_exist(external_id):
            return None
        now = time.monotonic()
        if not refresh and now - self._fetched.get(external_id, -1e9) < AUTH_CACHE_TTL_S:
            return self._entries[external_id]
        changes = self._changes
        entry = await anyio.to_thread.run_sync(self._load, external_id)
        if self._changes != changes:  # an announcement came while the row was read
            changes = self._changes
            entry = await anyio.to_thread.run_sync(self._load, external_id)
            if self._changes != changes:
                return entry  # changing still: used once, not kept
        if len(self._entries) >= AUTH_CACHE_MAX:
            self.forget()
        self._entries[external_id], self._fetched[external_id] = entry, time.monotonic()
        return entry

    async def _may_exist(self, external_id: str) -> bool:
        """False only for an id no integration has: known from the listener's list, or, for
        an id not on it (linked a moment ago, not announced yet), from a read of every id
        that began after this request asked. Those reads run one at a time, at most every
        KNOWN_REFRESH_S, each answering every request waiting: random ids cost a bounded
        number of queries, whatever their number."""
        if self._known is None or external_id in self._known:
            return True
        asked_at = time.monotonic()
        async with self._known_lock:
            if self._known is None:
                return True
            if self._known_read_at < asked_at:
                since_s = time.monotonic() - self._known_read_at
                await asyncio.sleep(max(0.0, KNOWN_REFRESH_S - since_s))
                started = time.monotonic()
                ids = await anyio.to_thread.run_sync(self._load_ids)
                if self._known is not None:
                    self._known |= ids
                self._known_read_at = started
            return self._known is None or external_id in self._known

    def _load_ids(self) -> set[str]:
        with transaction(self._res.pool) as conn:
            return {str(r["external_id"]) for r in conn.execute(iq.SELECT_EXTERNAL_IDS)}

    def age_s(self, external_id: str) -> float:
        return time.monotonic() - self._fetched.get(external_id, -1e9)

    def _load(self, external_id: str) -> WebhookAuth | None:
        with transaction(self._res.pool) as conn:
            row = iq.get_webhook_auth(conn, external_id)
        if row is None:
            return None
        vault = self._res.vault
        secrets = [vault.decrypt(row["webhook_secret_enc"])]
        if row["previous_webhook_secret_enc"]:
            secrets.append(vault.decrypt(row["previous_webhook_secret_enc"]))
        signing = tuple(
            vault.decrypt(row[column]).encode()
            for column in ("signing_secret_enc", "previous_signing_secret_enc")
            if row[column]
        )
        bearer = row["bearer_secret_enc"] is not None
        if bearer:  # the client secret signs the JWT of every dynamic webhook delivery
            signing = (vault.decrypt(row["bearer_secret_enc"]).encode(),)
        return WebhookAuth(
            int(row["id"]),
            external_id,
            row["status"] == "active",
            tuple(secrets),
            signing,
            bearer or bool(row["require_signature"]),
            bool(row["signature_seen"]),
            bearer,
        )
