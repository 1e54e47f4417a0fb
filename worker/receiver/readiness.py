"""The receiver's readiness, probed in the background: `/readyz` answers from the last probe
instead of opening a broker connection and a transaction per call on the thread pool that
webhook INSERTs need. The probe checks the database and the broker every PROBE_EVERY_S; an
answer older than STALE_AFTER_S (the probe itself stuck) counts as not ready."""

from __future__ import annotations

import time
from typing import Any

import anyio.to_thread
from celery import Celery

from worker.receiver.periodic import Periodic
from worker.runtime.resources import Resources
from worker.store.db import transaction

PROBE_EVERY_S = 1.0
STALE_AFTER_S = 10.0


class Readiness:
    """The last probe's findings: each check's "ok" or why not, and when."""

    def __init__(self, res: Resources, celery: Celery) -> None:
        self._res, self._celery = res, celery
        self._checks: dict[str, str] = {"database": "not probed yet", "broker": "not probed yet"}
        self._probed_at = -1e9
        self._loop = Periodic(self.probe, PROBE_EVERY_S)

    async def start(self) -> None:
        """Probe once (the first /readyz is then current), then every PROBE_EVERY_S."""
        await self.probe()
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def probe(self) -> None:
        checks = {}
        for name, check in (("database", self._database), ("broker", self._broker)):
            try:
                await anyio.to_thread.run_sync(check)
                checks[name] = "ok"
            except Exception as exc:
                checks[name] = f"unreachable ({type(exc).__name__})"
        self._checks, self._probed_at = checks, time.monotonic()

    def answer(self) -> tuple[bool, dict[str, Any]]:
        """Whether the receiver is ready, and the body of `/readyz`."""
        checks = dict(self._checks)
        age_s = time.monotonic() - self._probed_at
        if age_s > STALE_AFTER_S:
            checks["probe"] = f"last probe {age_s:.0f} s ago"
        ready = all(v == "ok" for v in checks.values())
        return ready, {"status": "ready" if ready else "not ready", **checks}

    def _database(self) -> None:
        with transaction(self._res.pool) as conn:
            conn.execute("SELECT 1")

    def _broker(self) -> None:
        # A fresh connection on whichever broker is configured (Redis or RabbitMQ).
        with self._celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1)
