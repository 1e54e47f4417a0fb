"""Step: decide what each delivery of a batch asks for (SPEC 4.1, handle_assignee_change; a
status change, SPEC 10, with groups to act on goes to the status sync first, which finishes
or forwards it)."""

from __future__ import annotations

import logging

from tasks import pipeline
from tasks.base import DeliveryBatchStep, Step, delivery_ids_of
from worker.domain.assignment import decide_change
from worker.domain.errors import NotFound
from worker.domain.event import IssueEvent, parse_event
from worker.runtime.app import app
from worker.store.db import autocommit, transaction
from worker.store.queries import deliveries as q_deliveries
from worker.store.queries import group_status as q_status
from worker.store.queries import migration as q_migration

log = logging.getLogger(__name__)


@app.task(base=DeliveryBatchStep, bind=True, name=pipeline.CHECK_CHANGELOG)
def check_changelog(
    self: Step, *, delivery_ids: list[int] | None = None, **legacy: int
) -> list[int]:
    """Finish each delivery that asks for no assignee or status change; send those whose
    status change has groups to act on to the status sync, and the others to one sync. One
    query reads the batch, one finds which of its issues sync their status, one transaction
    writes its outcomes. A status change of an issue no organization syncs the status of is
    settled here (`no-affected-groups`), without a step of its own."""
    ids = delivery_ids_of(delivery_ids, legacy)
    with autocommit(self.resources.pool) as conn:  # reads: no BEGIN and COMMIT round trips
        found = {d.id: d for d in q_deliveries.get_bodies(conn, ids)}

    def read(delivery_id: int) -> tuple[int, IssueEvent] | None:
        """The delivery's event; None if it is done already."""
        delivery = found.get(delivery_id)
        if delivery is None:
            raise NotFound(f"delivery {delivery_id} does not exist")
        return None if delivery.status == "done" else (delivery_id, parse_event(delivery.body))

    events = dict(e for e in self.each(ids, read) if e is not None)
    status_keys = {
        (found[d].integration_id, e.issue_key) for d, e in events.items() if e.status_changed
    }
    with autocommit(self.resources.pool) as conn:
        synced = q_status.status_synced_keys(conn, status_keys) if status_keys else set()
        # An issue whose project moved to Cloud, arriving from the instance it left (SPEC 15).
        migrated = q_migration.migrated_deliveries(
            conn, [(d, found[d].integration_id, e.issue_key) for d, e in events.items()]
        )
    moved = [(d, "migrated", events.pop(d).issue_key) for d in sorted(migrated)]
    changes_status = {d for d, e in events.items() if e.status_changed}
    to_status = {
        d for d in changes_status if (found[d].integration_id, events[d].issue_key) in synced
    }
    status_changes = sorted(to_status)
    settled_status = sorted(changes_status - to_status)
    decided = [
        (d, decide_change(e).outcome, e.issue_key) for d, e in events.items() if d not in to_status
    ]
    finished = [(d, str(outcome), key) for d, outcome, key in decided if outcome is not None]
    finished += moved
    if finished or settled_status:
        with transaction(self.resources.pool) as conn:
            q_status.set_no_affected_groups(conn, settled_status)
            if finished:
                q_deliveries.finish_deliveries(conn, [(d, o) for d, o, _ in finished])
        for delivery_id, outcome, issue_key in finished:
            log.info(
                "delivery.finished",
                extra={"delivery_id": delivery_id, "issue_key": issue_key, "outcome": outcome},
            )
    to_sync = [d for d, outcome, _ in decided if outcome is None]
    pipeline.after_changelog(app, to_sync, status_changes)
    return to_sync + status_changes
