"""What the receiver notices about each integration's webhook secrets, written to PostgreSQL
in the background: the first validly signed delivery after a registration (from then on a
signature is required), refused signatures, and deliveries only a rotation's previous secret
verified. Noted in memory on the request path, written by one short transaction at most every
NOTE_EVERY_S; a write that fails is kept for the next one."""

from __future__ import annotations

import logging
from collections import Counter

import anyio.to_thread

from worker.receiver import metrics
from worker.receiver.periodic import Periodic
from worker.runtime.resources import Resources
from worker.store.db import transaction
from worker.store.queries import integrations as iq
from worker.support.classify import classify

log = logging.getLogger("jira_sync.receiver")

NOTE_EVERY_S = 1.0


class Sightings:
    """Per-integration notes of this receiver process, flushed every NOTE_EVERY_S."""

    def __init__(self, res: Resources) -> None:
        self._res = res
        self._signed: set[int] = set()
        self._refusals: Counter[int] = Counter()
        self._previous: set[int] = set()
        self._loop = Periodic(self.flush, NOTE_EVERY_S)

    def signed(self, integration_id: int) -> None:
        """A delivery signed with the integration's secret arrived."""
        self._signed.add(integration_id)

    def refused(self, integration_id: int) -> None:
        """A delivery with a valid token had a missing or wrong signature."""
        self._refusals[integration_id] += 1
        metrics.SIGNATURE_REFUSALS.labels(integration=str(integration_id)).inc()

    def previous_secret(self, integration_id: int) -> None:
        """A delivery verified only with the previous secret of a rotation."""
        self._previous.add(integration_id)

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
        await self.flush()

    async def flush(self) -> None:
        if not (self._signed or self._refusals or self._previous):
            return
        signed, refusals, previous = self._signed, self._refusals, self._previous
        self._signed, self._refusals, self._previous = set(), Counter(), set()
        try:
            await anyio.to_thread.run_sync(self._write, sorted(signed), dict(refusals), previous)
        except Exception as exc:
            if not classify(exc).retryable:
                log.exception("receiver.sightings_failed")
                return
            log.warning("receiver.sightings_deferred", extra={"error": type(exc).__name__})
            self._signed |= signed
            self._refusals.update(refusals)
            self._previous |= previous

    def _write(self, signed: list[int], refusals: dict[int, int], previous: set[int]) -> None:
        with transaction(self._res.pool) as conn:
            iq.note_webhook_seen(conn, signed, refusals, previous)
