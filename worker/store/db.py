"""The PostgreSQL connection pool, transactions and the migrations runner."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from worker.domain.errors import DatabaseUnavailable
from worker.support.classify import classify

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
# Any two processes running migrate at once queue up behind this lock.
MIGRATION_LOCK_KEY = 0x6A697261_73796E63

Connection = psycopg.Connection[dict[str, Any]]
AsyncConnection = psycopg.AsyncConnection[dict[str, Any]]

RECONNECT_GIVE_UP_S = 8.0


def open_pool(
    url: str, *, min_size: int = 1, max_size: int = 10, timeout_s: float = 5.0
) -> ConnectionPool[Connection]:
    """A pool whose connections return rows as dicts; it does not wait for the server."""
    pool: ConnectionPool[Connection] = ConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout_s,
        kwargs={"row_factory": dict_row, "connect_timeout": 5},
        check=ConnectionPool.check_connection,
        # The pool doubles its delay between reconnection attempts until it gives up; giving
        # up early restarts that at 1 s on the next request, so after an outage it reconnects
        # within seconds instead of minutes.
        reconnect_timeout=RECONNECT_GIVE_UP_S,
        open=False,
        name="jira-sync",
    )
    pool.open(wait=False)
    return pool


async def open_async_pool(
    url: str, *, max_size: int, timeout_s: float = 5.0
) -> AsyncConnectionPool[AsyncConnection]:
    """An event-loop pool of autocommit connections (the receiver's inbox writes: a coroutine
    waits on PostgreSQL without a thread, so no thread competes with the loop for the GIL).
    Reconnects like `open_pool`; call `await pool.close()`."""
    pool: AsyncConnectionPool[AsyncConnection] = AsyncConnectionPool(
        url,
        min_size=1,
        max_size=max_size,
        timeout=timeout_s,
        kwargs={"row_factory": dict_row, "connect_timeout": 5, "autocommit": True},
        check=AsyncConnectionPool.check_connection,
        reconnect_timeout=RECONNECT_GIVE_UP_S,
        open=False,
        name="jira-sync-async",
    )
    await pool.open(wait=False)
    return pool


@asynccontextmanager
async def autocommit_async(
    pool: AsyncConnectionPool[AsyncConnection],
) -> AsyncIterator[AsyncConnection]:
    """`autocommit` on the event loop: each statement commits by itself; errors as there."""
    with _unavailable_when_retryable():
        async with pool.connection() as conn:
            yield conn


@contextmanager
def _unavailable_when_retryable() -> Iterator[None]:
    """A failure worth a retry (the server gone, a lost race) becomes DatabaseUnavailable;
    anything else propagates as it is."""
    try:
        yield
    except (psycopg.Error, PoolTimeout) as exc:
        if classify(exc).retryable:
            raise DatabaseUnavailable(f"{type(exc).__name__}: {exc}") from exc
        raise


@contextmanager
def transaction(pool: ConnectionPool[Connection]) -> Iterator[Connection]:
    """One transaction on a pooled connection; a failure worth a retry (the server gone, a lost
    race) becomes DatabaseUnavailable, anything else propagates as it is."""
    with _unavailable_when_retryable(), pool.connection() as conn, conn.transaction():
        yield conn


@contextmanager
def autocommit(pool: ConnectionPool[Connection]) -> Iterator[Connection]:
    """A pooled connection on which each statement commits by itself: a write that is one
    statement costs one round trip instead of three (BEGIN, it, COMMIT). Errors as in
    `transaction`."""
    with _unavailable_when_retryable(), pool.connection() as conn:
        conn.autocommit = True
        try:
            yield conn
        finally:
            with suppress(psycopg.Error):  # a broken connection is the pool's to drop
                conn.autocommit = False


def migration_files() -> list[Path]:
    return sorted(MIGRATIONS_DIR.glob("[0-9][0-9][0-9][0-9]_*.sql"))


def migrate(url: str) -> list[str]:
    """Apply the migrations not applied yet, each in its own transaction; return their names."""
    applied: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migration ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migration")}
            for path in migration_files():
                if path.stem in done:
                    continue
                with conn.transaction():
                    conn.execute(path.read_text())  # type: ignore[arg-type]
                    conn.execute("INSERT INTO schema_migration (version) VALUES (%s)", (path.stem,))
                applied.append(path.stem)
                log.info("db.migrated", extra={"migration": path.stem})
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    return applied
