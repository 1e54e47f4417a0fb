"""Step: decide what a delivery asks for (SPEC 4.1, handle_assignee_change)."""

from __future__ import annotations

import logging

from tasks import pipeline
from tasks.base import Step
from worker.domain.assignment import decide_change
from worker.domain.errors import NotFound
from worker.domain.event import parse_event
from worker.runtime.app import app
from worker.store.db import transaction
from worker.store.queries import deliveries as q_deliveries

log = logging.getLogger(__name__)


@app.task(base=Step, bind=True, name=pipeline.CHECK_CHANGELOG)
def check_changelog(self: Step, *, delivery_id: int) -> int:
    with transaction(self.resources.pool) as conn:
        delivery = q_deliveries.get_delivery(conn, delivery_id)
        if delivery is None:
            raise NotFound(f"delivery {delivery_id} does not exist")
        if delivery.status == "done":
            return delivery_id
        event = parse_event(delivery.body)
        change = decide_change(event)
        if change.outcome is not None:
            q_deliveries.finish_delivery(conn, delivery_id, change.outcome)
            log.info(
                "delivery.finished",
                extra={
                    "delivery_id": delivery_id,
                    "issue_key": event.issue_key,
                    "outcome": str(change.outcome),
                },
            )
            return delivery_id
    pipeline.after_changelog(app, delivery_id)
    return delivery_id
