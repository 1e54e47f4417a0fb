"""`autocommit`: each statement commits by itself, and the connection goes back to the pool
as `transaction` expects it, after success and after an error alike."""

from __future__ import annotations

import psycopg
import pytest

from tests.conftest import Servers
from worker.store.db import autocommit, open_pool, transaction


def test_each_statement_commits_and_the_pool_gets_its_connection_back_unchanged(
    servers: Servers,
) -> None:
    pool = open_pool(servers.database_url, max_size=1)  # one connection: the same one each time
    try:
        with transaction(pool) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS autocommit_probe (n int UNIQUE)")
            conn.execute("TRUNCATE autocommit_probe")
        with psycopg.connect(servers.database_url) as other, autocommit(pool) as conn:
            conn.execute("INSERT INTO autocommit_probe VALUES (1)")
            # Committed before the block ends: another session sees it.
            assert other.execute("SELECT count(*) FROM autocommit_probe").fetchone() == (1,)
        with pytest.raises(psycopg.errors.UniqueViolation), autocommit(pool) as conn:
            conn.execute("INSERT INTO autocommit_probe VALUES (1)")
        with transaction(pool) as conn:
            assert conn.autocommit is False
            conn.execute("INSERT INTO autocommit_probe VALUES (2)")
            conn.execute("DROP TABLE autocommit_probe")
    finally:
        pool.close()
