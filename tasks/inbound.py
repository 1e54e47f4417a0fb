"""Step: inbound sync (SPEC 4.2) over a batch: what each delivery asks of each affected group;
the group steps (assign / deassign, 4.3-4.5) are `tasks.groups`.

Ordering: the sync locks the issue's external_issue rows (one sync per issue at a time) and
plans every affected group; each group step locks its group row and drops an event older than
the newest one applied to that group (`stale`). So the events applied to a group are applied
in Jira timestamp order whatever order the workers run them in, and the newest one decides.
An event that changes nothing for a group (`user-not-found`, decided in the sync) is never
applied to it, so it cannot make an older event stale there (SPEC 8).
Idempotency: delivery_effect records what the sync decided per group and what the group step
did; a redelivered step reads it and only re-sends what follows.
Cost: both steps work set-wise in pipeline mode (a handful of round trips per batch, whatever
its size), with a fallback that redoes a batch item by item when it fails for good, so one bad
item is recorded alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from tasks import pipeline
from tasks.base import DeliveryBatchStep, Step, delivery_ids_of
from worker.domain.assignment import (
    PENDING,
    Action,
    Outcome,
    choose_user,
    decide_change,
    delivery_outcome,
    is_newer,
)
from worker.domain.errors import NotFound
from worker.domain.event import IssueEvent, parse_event
from worker.domain.reconcile import assignee_mark
from worker.runtime.app import app
from worker.services import identities
from worker.store.db import Connection, transaction
from worker.store.queries import deliveries as q_deliveries
from worker.store.queries import effects as q_effects
from worker.store.queries import inbound as q
from worker.support.classify import classify

log = logging.getLogger(__name__)

CHANGED = frozenset({Outcome.ASSIGNED, Outcome.UNASSIGNED})


@app.task(base=DeliveryBatchStep, bind=True, name=pipeline.SYNC)
def sync(self: Step, *, delivery_ids: list[int] | None = None, **legacy: int) -> list[int]:
    """Plan the batch's group changes in one transaction (set-wise: a few statements for the
    whole batch), then send every pending change on together. If the batch fails for good
    (a delivery gone, a body that does not parse, a constraint), each delivery is planned
    again in a transaction of its own and the one that fails is recorded alone."""
    ids = delivery_ids_of(delivery_ids, legacy)
    try:
        pending = _sync_batch(self, ids)
    except Exception as exc:
        if classify(exc).retryable or len(ids) < 2:
            raise  # the batch is retried (or, alone, recorded by the step)
        pending = [c for one in self.each(ids, lambda d: _sync_batch(self, [d])) for c in one]
    pipeline.after_sync(app, pending)
    return sorted({d for d, _, _ in pending})


def _sync_batch(step: Step, delivery_ids: list[int]) -> list[tuple[int, int, str]]:
    """Plan the deliveries not planned yet (their rows locked in id order) and return every
    pending (delivery, group, action) change; finish those with nothing pending."""
    with transaction(step.resources.pool) as conn, conn.pipeline():
        locked = q.lock_deliveries_with_effects(conn, delivery_ids, bodies=True)
        missing = sorted(set(delivery_ids) - {d.id for d in locked})
        if missing:
            raise NotFound(f"delivery {missing[0]} does not exist")
        unplanned = [
            (d, parse_event(d.body or "")) for d in locked if d.status != "done" and not d.effects
        ]
        finished, planned = _plan(conn, unplanned)
        for d in locked:
            if d.status != "done" and d.effects:
                planned.extend(d.effects)  # planned by an earlier run: only re-send
        pending = [
            (e.delivery_id, e.group_id, str(e.action)) for e in planned if e.outcome == PENDING
        ]
        busy = {d for d, _, _ in pending}
        settled = sorted({e.delivery_id for e in planned} - busy)
        finished += finish_settled(conn, settled) if settled else []
    log_finished(finished)
    return pending


def _plan(
    conn: Connection, unplanned: list[tuple[q.LockedDelivery, IssueEvent]]
) -> tuple[list[Finished], list[q_effects.Effect]]:
    """Decide per group what each event asks and store it (one INSERT); an outcome for the
    whole delivery finishes it instead. Returns those finished and the effects stored."""
    finished: list[Finished] = []
    acting = []
    for delivery, event in unplanned:
        change = decide_change(event)
        if change.action is None:
            assert change.outcome is not None
            finished.append(_finish(conn, delivery.id, event, change.outcome))
        else:
            acting.append((delivery, event, change))
    if not acting:
        return finished, []
    # Staleness is decided per group (in the group step), never per issue: an event that
    # changes nothing for a group (user-not-found) must not make older events stale there.
    issues = q.lock_synced_issues_of_keys(
        conn, sorted({(d.integration_id, e.issue_key) for d, e, _ in acting})
    )
    _mark_issue_events(
        conn, [(issues.get((d.integration_id, e.issue_key), []), e) for d, e, _ in acting]
    )
    linked = q.linked_groups(conn, sorted({i.id for rows in issues.values() for i in rows}))
    groups_of = {
        d.id: _affected_groups(issues.get((d.integration_id, e.issue_key), []), linked)
        for d, e, _ in acting
    }
    assigning = [
        identities.Wanted(
            d.id,
            d.integration_id,
            c.identity,
            c.email,
            e.assignee_display_name,
            e.assignee_name,
        )
        for d, e, c in acting
        if c.action is Action.ASSIGN and groups_of[d.id]
    ]
    user_teams = identities.candidates(conn, assigning) if assigning else {}
    projects = sorted({g.project_id for gs in groups_of.values() for g in gs})
    teams = q.project_teams(conn, projects) if assigning and projects else {}
    planned: list[q_effects.Effect] = []
    for delivery, event, change in acting:
        groups = groups_of[delivery.id]
        if not groups:
            finished.append(_finish(conn, delivery.id, event, Outcome.NO_AFFECTED_GROUPS))
        elif change.action is Action.DEASSIGN:
            planned += [
                q_effects.Effect(delivery.id, g.id, str(Action.DEASSIGN), None, PENDING)
                for g in groups
            ]
        else:
            candidates = user_teams.get(delivery.id, {})
            for g in groups:
                user_id = choose_user(candidates, teams.get(g.project_id, set()))
                outcome = PENDING if user_id is not None else str(Outcome.USER_NOT_FOUND)
                planned.append(
                    q_effects.Effect(delivery.id, g.id, str(Action.ASSIGN), user_id, outcome)
                )
    if planned:
        # The delivery rows are locked and had no effects: these are exactly what is stored.
        q_effects.insert_effects(conn, planned)
    return finished, planned


def _mark_issue_events(
    conn: Connection, events: list[tuple[list[q.ExternalIssue], IssueEvent]]
) -> None:
    """Each issue row's newest event (for operators) and its Jira assignee as that event left
    it (what the reconciliation sweep compares Jira's with), the batch's events taken in
    order: one UPDATE per row that a newer event reached."""
    last = {i.id: i.last_event for rows, _ in events for i in rows}
    marks: dict[int, IssueEvent] = {}
    for rows, event in sorted(events, key=lambda pair: pair[1].order):
        for issue in rows:
            if is_newer(event.order, last[issue.id]):
                last[issue.id], marks[issue.id] = event.order, event
    for issue_id, event in sorted(marks.items()):
        mark = assignee_mark(event.assignee_present, event.assignee_email, event.assignee_identity)
        q.mark_issue_event(conn, [issue_id], event.order, mark)


def _affected_groups(
    issues: list[q.ExternalIssue], linked: list[q.LinkedGroup]
) -> list[q.GroupRef]:
    return q.in_organizations(linked, {i.id for i in issues}, {i.organization_id for i in issues})


@dataclass(frozen=True)
class Finished:
    """A delivery this transaction finished, to be logged once it commits."""

    delivery_id: int
    issue_key: str | None
    outcome: str


def finish_settled(conn: Connection, delivery_ids: list[int]) -> list[Finished]:
    """Each delivery with no group step pending is done with its groups' outcome (rows locked
    in id order; the writes ride the caller's pipeline, if any)."""
    finished = []
    for delivery in q.lock_deliveries_with_effects(conn, delivery_ids):
        planned = delivery.effects
        if delivery.status == "done" or any(e.outcome == PENDING for e in planned):
            continue
        outcome = delivery_outcome(e.outcome for e in planned)
        detail = {"groups": {str(e.group_id): e.outcome for e in planned}}
        q_deliveries.finish_delivery(conn, delivery.id, outcome, detail)
        finished.append(Finished(delivery.id, delivery.issue_key, outcome))
    return finished


def log_finished(finished: list[Finished]) -> None:
    for f in finished:
        log.info(
            "delivery.finished",
            extra={"delivery_id": f.delivery_id, "issue_key": f.issue_key, "outcome": f.outcome},
        )


def _finish(conn: Connection, delivery_id: int, event: IssueEvent, outcome: Outcome) -> Finished:
    q_deliveries.finish_delivery(conn, delivery_id, outcome)
    return Finished(delivery_id, event.issue_key, str(outcome))
