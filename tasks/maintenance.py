"""Periodic steps (beat): sweep stored-but-unqueued and stalled deliveries, flush the failure
spool, reconcile each linked Jira whose sweep is due (SPEC 9), and refresh Cloud's dynamic
webhooks before they expire (SPEC 13)."""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from kombu.message import Message

from config.celery import dead_letter_queue
from config.settings import Settings
from tasks import pipeline, relay
from tasks.base import ChangeBatchStep, DeliveryBatchStep, GroupBatchStep, Step
from worker import cache
from worker.domain import retry
from worker.domain.errors import JiraSyncError, JiraUnavailable
from worker.jira import reconcile as sweeps
from worker.jira import webhooks
from worker.jira.api import client_for_integration
from worker.runtime.app import app
from worker.runtime.publish import StepCall, batch_sender
from worker.runtime.resources import Resources
from worker.services import failures
from worker.store.db import transaction
from worker.store.queries import deliveries as q
from worker.store.queries import effects as q_effects
from worker.store.queries import group_status as q_status
from worker.store.queries import oauth2 as q_oauth2
from worker.store.queries import reconcile as q_reconcile

log = logging.getLogger(__name__)

# A delivery this old and still `received` missed the broker when it was accepted.
SWEEP_MIN_AGE_S = 5.0
SWEEP_BATCH = 500
# How long one sweep goes on sending a backlog of unqueued deliveries (the next sweep, every
# SWEEP_INTERVAL_S, takes over).
SWEEP_DRAIN_S = 10.0
DEAD_LETTER_BATCH = 500
# The keyword arguments that hold a batch step's items, as the step classes declare them.
BATCH_KWARGS = tuple(
    str(step.batch_kwarg) for step in (DeliveryBatchStep, ChangeBatchStep, GroupBatchStep)
)


def stalled_after_s(settings: Settings) -> float:
    """worker.domain.retry.stalled_after_s for these settings."""
    return retry.stalled_after_s(
        settings.broker_visibility_timeout_s, settings.retry_budget_s, settings.retry_backoff_max_s
    )


@app.task(base=Step, bind=True, name="jira_sync.maintenance.sweep_deliveries")
def sweep_deliveries(self: Step) -> int:
    settings = self.resources.settings
    unqueued = _send_unqueued(self.resources)
    with transaction(self.resources.pool) as conn:
        stalled = q.stalled_delivery_ids(conn, stalled_after_s(settings), SWEEP_BATCH)
        resent = relay.enqueue(app, conn, stalled)
        changes = q_effects.side_effects_stalled(conn, stalled_after_s(settings), SWEEP_BATCH)
        if changes:
            with batch_sender(app) as send:
                send(pipeline.side_effects(changes))
            q_effects.touch_effects(conn, [(d, g) for d, g, _ in changes])
        moves = q_status.take_stalled_status_moves(conn, stalled_after_s(settings), SWEEP_BATCH)
        by_source: dict[int | None, list[int]] = {}
        for group_id, source in moves:
            by_source.setdefault(source, []).append(group_id)
        for source, group_ids in by_source.items():
            pipeline.outbound_status(app, group_ids, source_integration_id=source)
    cache.record_sweep(self.resources.redis, unqueued, len(resent), len(changes))
    if unqueued or resent or changes or moves:
        log.info(
            "delivery.swept",
            extra={
                "count": unqueued + len(resent),
                "resent": len(resent),
                "side_effects_resent": len(changes),
                "status_moves_resent": len(moves),
            },
        )
    return unqueued + len(resent) + len(changes) + len(moves)


def _send_unqueued(res: Resources) -> int:
    """Send every delivery stored but never queued (the broker was down when it arrived, or
    the receiver that stored it was killed before it sent it), a batch per transaction, for up
    to SWEEP_DRAIN_S: a backlog left by a long broker outage drains at the broker's speed, not
    a batch per sweep. Stops at a send that fails."""
    with transaction(res.pool) as conn:
        released = q.release_silent_senders(conn, res.settings.receiver_silent_after_s)
    if released:
        log.warning("delivery.sender_silent", extra={"count": released})
    sent_in_all, deadline = 0, time.monotonic() + SWEEP_DRAIN_S
    while True:
        with transaction(res.pool) as conn:
            found = q.unqueued_delivery_ids(conn, SWEEP_MIN_AGE_S, SWEEP_BATCH)
            sent = relay.enqueue(app, conn, found)
        sent_in_all += len(sent)
        if len(found) < SWEEP_BATCH or len(sent) < len(found) or time.monotonic() > deadline:
            return sent_in_all


@app.task(base=Step, bind=True, name="jira_sync.maintenance.flush_failure_spool")
def flush_failure_spool(self: Step) -> int:
    written = failures.flush_spool(self.resources)
    if written:
        log.info("failure.spool_flushed", extra={"count": written})
    return written


@app.task(base=Step, bind=True, name="jira_sync.maintenance.drain_dead_letters")
def drain_dead_letters(self: Step) -> int:
    """RabbitMQ: move the messages that reached their delivery limit (each delivery ended
    with the worker gone, never acknowledged) into the failed-task store, where `failed
    list` shows them and `failed replay` runs them again. A batch becomes one record per
    item, each delivery pointing at its own (so beat's sweep does not send it again); a
    message is acknowledged only once all its records are written or spooled, else it goes
    back to the dead-letter queue for the next drain."""
    moved = 0
    with app.connection_for_write() as conn:
        queue = dead_letter_queue().bind(conn.default_channel)
        queue.declare()
        while moved < DEAD_LETTER_BATCH:
            message = queue.get(no_ack=False, accept=["json"])
            if message is None:
                break
            kept = [
                failures.record_durably(self.resources, r) for r in dead_letter_records(message)
            ]
            if not all(kept):
                message.reject(requeue=True)
                log.error("dead_letter.kept_in_queue", extra={"task": message.headers.get("task")})
                break
            message.ack()
            moved += 1
    if moved:
        log.warning("dead_letter.drained", extra={"count": moved})
    return moved


def dead_letter_records(message: Message) -> list[failures.FailureRecord]:
    """A dead-lettered message's records: one per item of a batch step's message."""
    whole = dead_letter_record(message)
    for key in BATCH_KWARGS:
        items = whole.kwargs.get(key)
        if isinstance(items, list) and len(items) > 1:
            return [replace(whole, kwargs={**whole.kwargs, key: [item]}) for item in items]
    return [whole]


def dead_letter_record(message: Message) -> failures.FailureRecord:
    """A dead-lettered Celery message as a failed-task record (protocol 2: the task name
    and id in the headers, [args, kwargs, embed] in the body)."""
    headers = message.headers or {}
    deliveries = headers.get("x-delivery-count") or headers.get("x-death", [{}])[0].get("count")
    try:
        args, kwargs = message.decode()[:2]
        note = ""
    except Exception as exc:  # a body this service cannot read is still recorded
        args, kwargs, note = [], {}, f"; its body could not be read ({type(exc).__name__})"
    return failures.FailureRecord(
        task_name=str(headers.get("task", "unknown")),
        task_id=str(headers.get("id", "")),
        args=list(args),
        kwargs=dict(kwargs),
        error_type="DeliveryLimitExceeded",
        message=(
            f"the broker delivered this message {deliveries or 'too many'} times without an "
            f"acknowledgement (its worker died each time){note}"
        ),
        traceback="",
        attempts=int(deliveries or 0),
    )


RECONCILE = "jira_sync.maintenance.reconcile"


@app.task(base=Step, bind=True, name="jira_sync.maintenance.reconcile_due")
def reconcile_due(self: Step) -> list[int]:
    """Send one reconciliation per integration whose sweep is due (each claimed until its
    next run, so no two beats send the same one)."""
    with transaction(self.resources.pool) as conn:
        due = q_reconcile.claim_due(conn, self.resources.settings.reconcile_interval_s)
    if due:
        with batch_sender(app) as send:
            send([StepCall(RECONCILE, {"integration_id": i}) for i in due])
    return due


@app.task(base=Step, bind=True, name=RECONCILE)
def reconcile(self: Step, *, integration_id: int) -> int:
    """Sweep one integration. Jira down: said in the log and in `reconcile status`, and tried
    again at its next run; Jira refusing (401, 403): a failure record naming it."""
    res = self.resources
    try:
        result = sweeps.sweep(res, integration_id, lambda ids: relay.enqueue_stored(app, res, ids))
    except JiraUnavailable as exc:
        log.warning(
            "reconcile.jira_unavailable",
            extra={"integration_id": integration_id, "error": str(exc)},
        )
        return 0
    return len(result.fed)


# A dynamic webhook lives 30 days from its last refresh; it is refreshed with this much left.
DYNAMIC_WEBHOOK_REFRESH_AHEAD_S = 20 * 86400


@app.task(base=Step, bind=True, name="jira_sync.maintenance.refresh_dynamic_webhooks")
def refresh_dynamic_webhooks(self: Step) -> list[int]:
    """Refresh (or register again, when Cloud no longer lists it) the dynamic webhook of every
    OAuth 2.0 link that has DYNAMIC_WEBHOOK_REFRESH_AHEAD_S left; one site failing is logged
    and tried again at the next check, never stopping the others."""
    res = self.resources
    with transaction(res.pool) as conn:
        due = q_oauth2.integrations_due(conn, DYNAMIC_WEBHOOK_REFRESH_AHEAD_S)
    refreshed = []
    for integration_id in due:
        try:
            client = client_for_integration(res, integration_id)
            try:
                webhooks.install_webhook(res, integration_id, client)
            finally:
                client.close()
        except JiraSyncError as exc:
            log.warning(
                "webhook.refresh_failed",
                extra={"integration_id": integration_id, "error": str(exc)},
            )
            continue
        refreshed.append(integration_id)
    if refreshed:
        log.info("webhook.refreshed", extra={"integrations": refreshed})
    return refreshed
