"""The webhook inbox: store a delivery durably, then put it on the broker."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from kombu.exceptions import OperationalError as BrokerError

from tasks import pipeline
from worker.db import Connection
from worker.queries import deliveries as q

log = logging.getLogger(__name__)


def enqueue(app: Celery, conn: Connection, delivery_ids: list[int]) -> list[int]:
    """Send each delivery's first step; mark sent ones queued. Broker down: they stay
    `received` and the beat sweep sends them later. Returns the ids sent."""
    sent: list[int] = []
    for delivery_id in delivery_ids:
        try:
            pipeline.start_delivery(app, delivery_id)
        except (BrokerError, ConnectionError, OSError) as exc:
            log.warning(
                "delivery.enqueue_failed",
                extra={"delivery_id": delivery_id, "error": type(exc).__name__},
            )
            break
        sent.append(delivery_id)
    if sent:
        q.mark_queued(conn, sent)
    return sent


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
