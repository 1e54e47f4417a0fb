"""Sending stored deliveries to the broker: one round trip per batch, then marked queued.

Used by the receiver's background publisher, by beat's sweep of unqueued deliveries and by
the reconciliation sweep."""

from __future__ import annotations

import logging

from celery import Celery
from kombu.exceptions import OperationalError as BrokerError

from tasks import pipeline
from worker.runtime.publish import batch_sender
from worker.runtime.resources import Resources
from worker.store.db import Connection, autocommit
from worker.store.queries import deliveries as q

log = logging.getLogger(__name__)


def send_starts(app: Celery, delivery_ids: list[int]) -> bool:
    """Send the deliveries' first steps in one round trip; False (logged) when the broker
    cannot take them: they stay `received` and the beat sweep sends them later (a delivery
    sent twice is harmless: the steps are idempotent)."""
    try:
        with batch_sender(app) as send:
            send(pipeline.delivery_starts(delivery_ids))
    except (BrokerError, ConnectionError, OSError) as exc:
        log.warning(
            "delivery.enqueue_failed",
            extra={"count": len(delivery_ids), "error": type(exc).__name__},
        )
        return False
    return True


def enqueue(app: Celery, conn: Connection, delivery_ids: list[int]) -> list[int]:
    """Send the deliveries' first steps in one round trip and mark them queued. Returns the
    ids sent (none when the broker is down, see `send_starts`)."""
    if not delivery_ids or not send_starts(app, delivery_ids):
        return []
    q.mark_queued(conn, delivery_ids)
    return delivery_ids


def enqueue_stored(app: Celery, res: Resources, delivery_ids: list[int]) -> None:
    """Send deliveries just committed and mark them queued; what cannot be sent
    (broker or database down) stays `received` for the beat sweep."""
    try:
        with autocommit(res.pool) as conn:  # the one UPDATE after the send commits by itself
            enqueue(app, conn, delivery_ids)
    except Exception as exc:
        log.warning(
            "delivery.enqueue_deferred",
            extra={"count": len(delivery_ids), "error": type(exc).__name__},
        )
