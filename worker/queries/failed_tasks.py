"""SQL for the failed-task store."""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb

from worker.db import Connection

UPSERT_FAILED_TASK = """
INSERT INTO failed_task (task_name, task_id, args, kwargs, chain, error_type, message,
                         traceback, attempts, delivery_id, project_id, fingerprint)
VALUES (%(task_name)s, %(task_id)s, %(args)s, %(kwargs)s, %(chain)s, %(error_type)s,
        %(message)s, %(traceback)s, %(attempts)s, %(delivery_id)s, %(project_id)s,
        %(fingerprint)s)
ON CONFLICT (fingerprint) DO UPDATE SET
    task_id = EXCLUDED.task_id, chain = EXCLUDED.chain, error_type = EXCLUDED.error_type,
    message = EXCLUDED.message, traceback = EXCLUDED.traceback,
    attempts = failed_task.attempts + EXCLUDED.attempts, last_failed_at = now(),
    status = 'failed'
RETURNING id
"""


def upsert_failed_task(conn: Connection, fingerprint: str, rec: dict[str, Any]) -> int:
    kwargs = rec["kwargs"]
    row = conn.execute(
        UPSERT_FAILED_TASK,
        {
            **rec,
            "args": Jsonb(rec["args"]),
            "kwargs": Jsonb(kwargs),
            "chain": Jsonb(rec["chain"]),
            "delivery_id": kwargs.get("delivery_id"),
            "project_id": kwargs.get("project_id"),
            "fingerprint": fingerprint,
        },
    ).fetchone()
    assert row is not None
    return int(row["id"])
