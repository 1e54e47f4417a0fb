"""After a PostgreSQL outage the pool is serving again within seconds, however long it was."""

from __future__ import annotations

import time

import pytest

from tests.conftest import Servers
from worker.domain.errors import DatabaseUnavailable
from worker.store.db import open_pool, transaction

OUTAGE_S = 20.0
BACK_WITHIN_S = 6.0


def test_pool_reconnects_within_seconds_after_a_long_outage(servers: Servers) -> None:
    assert servers.pg is not None, "needs the embedded PostgreSQL"
    pool = open_pool(servers.database_url, timeout_s=1.0)
    try:
        with transaction(pool) as conn:
            conn.execute("SELECT 1")
        servers.pg.stop()
        try:
            deadline = time.monotonic() + OUTAGE_S
            while time.monotonic() < deadline:  # callers keep asking while it is down
                with pytest.raises(DatabaseUnavailable), transaction(pool) as conn:
                    conn.execute("SELECT 1")
        finally:
            servers.pg.start()
        back = time.monotonic()
        while True:
            try:
                with transaction(pool) as conn:
                    conn.execute("SELECT 1")
                break
            except DatabaseUnavailable:
                assert time.monotonic() - back < BACK_WITHIN_S * 3, "the pool never came back"
        assert time.monotonic() - back < BACK_WITHIN_S
    finally:
        pool.close()
