"""Step: decide what each delivery of a batch asks for (SPEC 4.1, handle_assignee_change; a
status change, SPEC 10, goes to the status sync first, which finishes or forwards it)."""

from __future__ import annotations

import logging

from tasks import pipeline
from tasks.base import DeliveryBatchStep, Step, delivery_ids_of
from worker.domain.assignment import decide_change
from worker.domain.errors import NotFound
from worker.domain.event import parse_event
from worker.runtime.app import app
from worker.store.db import transaction
from worker.store.queries import deliveries as q_deliveries

log = logging.getLogger(__name__)


@app.task(base=DeliveryBatchStep, bind=True, name=pipeline.CHECK_CHANGELOG)
def check_changelog(
    self: Step, *, delivery_ids: list[int] | None = None, **legacy: int
) -> list[int]:
    """Finish each delivery that asks for no assignee or status change; send those with a
    status change to the status sync and the others to one sync. One query reads the batch,
    one transaction writes its outcomes."""
    ids = delivery_ids_of(delivery_ids, legacy)
    with transaction(self.resources.pool) as conn:
        found = {d.id: d for d in q_deliveries.get_deliveries(conn, ids)}

    status_changes: list[int] = []

    def decide(delivery_id: int) -> tuple[int, str | None, str] | None:
        """(id, the outcome that finishes it or None to sync it, issue key); None if done or
        if its status changed (the status sync takes it on)."""
        delivery = found.get(delivery_id)
        if delivery is None:
            raise NotFound(f"delivery {delivery_id} does not exist")
        if delivery.status == "done":
            return None
        event = parse_event(delivery.body)
        if event.status_changed:
            status_changes.append(delivery_id)
            return None
        change = decide_change(event)
        return delivery_id, None if change.outcome is None else str(change.outcome), event.issue_key

    decided = [d for d in self.each(ids, decide) if d is not None]
    finished = [(d, outcome, key) for d, outcome, key in decided if outcome is not None]
    if finished:
        with transaction(self.resources.pool) as conn:
            q_deliveries.finish_deliveries(conn, [(d, o) for d, o, _ in finished])
        for delivery_id, outcome, issue_key in finished:
            log.info(
                "delivery.finished",
                extra={"delivery_id": delivery_id, "issue_key": issue_key, "outcome": outcome},
            )
    to_sync = [d for d, outcome, _ in decided if outcome is None]
    pipeline.after_changelog(app, to_sync, status_changes)
    return to_sync + status_changes
