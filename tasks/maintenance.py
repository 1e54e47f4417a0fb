"""Periodic steps (beat): sweep stored-but-unqueued deliveries, flush the failure spool."""

from __future__ import annotations

import logging

from tasks.base import Step
from worker import failures, inbox
from worker.app import app
from worker.db import transaction
from worker.queries import deliveries as q

log = logging.getLogger(__name__)

# A delivery this old and still `received` missed the broker when it was accepted.
SWEEP_MIN_AGE_S = 5.0
SWEEP_BATCH = 500


@app.task(base=Step, bind=True, name="jira_sync.maintenance.sweep_deliveries")
def sweep_deliveries(self: Step) -> int:
    with transaction(self.resources.pool) as conn:
        ids = q.unqueued_delivery_ids(conn, SWEEP_MIN_AGE_S, SWEEP_BATCH)
        sent = inbox.enqueue(app, conn, ids)
    if sent:
        log.info("delivery.swept", extra={"count": len(sent)})
    return len(sent)


@app.task(base=Step, bind=True, name="jira_sync.maintenance.flush_failure_spool")
def flush_failure_spool(self: Step) -> int:
    written = failures.flush_spool(self.resources)
    if written:
        log.info("failure.spool_flushed", extra={"count": written})
    return written
