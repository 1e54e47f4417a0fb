"""The webhook inbox: store a delivery durably, then put it on the broker."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from kombu.exceptions import OperationalError as BrokerError

from tasks import pipeline
from worker.db import Connection
from worker.publish import batch_sender
from worker.queries import deliveries as q

log = logging.getLogger(__name__)


def enqueue(app: Celery, conn: Connection, delivery_ids: list[int]) -> list[int]:
    """Send the deliveries' first steps in one round trip and mark them queued. Broker down:
    they stay `received` and the beat sweep sends them later (a delivery sent twice is
    harmless: the steps are idempotent). Returns the ids sent."""
    if not delivery_ids:
        return []
    try:
        with batch_sender(app) as send:
            send(pipeline.delivery_starts(delivery_ids))
    except (BrokerError, ConnectionError, OSError) as exc:
        log.warning(
            "delivery.enqueue_failed",
            extra={"count": len(delivery_ids), "error": type(exc).__name__},
        )
        return []
    q.mark_queued(conn, delivery_ids)
    return delivery_ids


def delivery_view(d: q.Delivery) -> dict[str, Any]:
    """The operator's view of a delivery (CLI `deliveries show`, JSON)."""
    return {
        "id": d.id,
        "integration": d.integration_id,
        "issue_key": d.issue_key,
        "status": d.status,
        "outcome": d.outcome,
        "detail": d.detail,
        "attempts": d.attempts,
        "failed_task": d.failed_task_id,
        "received_at": d.received_at.isoformat(),
        "queued_at": d.queued_at.isoformat() if d.queued_at else None,
        "finished_at": d.finished_at.isoformat() if d.finished_at else None,
    }
