"""Steps: inbound sync (SPEC 4.2) and assign / deassign of one group (4.3-4.5).

Ordering: the sync locks the issue's external_issue rows (one sync per issue at a time) and
plans every affected group; each group step locks its group row and drops an event older than
the newest one applied to that group (`stale`). So the events applied to a group are applied
in Jira timestamp order whatever order the workers run them in, and the newest one decides.
An event that changes nothing for a group (`user-not-found`, decided in the sync) is never
applied to it, so it cannot make an older event stale there (SPEC 8).
Idempotency: delivery_effect records what the sync decided per group and what the group step
did; a redelivered step reads it and only re-sends what follows.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import redis

from tasks import pipeline
from tasks.base import ChangeBatchStep, DeliveryBatchStep, Step, changes_of, delivery_ids_of
from worker import cache
from worker.domain.assignment import (
    PENDING,
    Action,
    Assignee,
    Outcome,
    choose_user,
    decide_change,
    delivery_outcome,
    is_newer,
    subscriptions_to_remove,
)
from worker.domain.errors import BadPayload, NotFound
from worker.domain.event import IssueEvent, parse_event
from worker.domain.model import ActivityType, HistoryStatus
from worker.domain.reconcile import assignee_mark
from worker.runtime.app import app
from worker.store.db import Connection, transaction
from worker.store.queries import deliveries as q_deliveries
from worker.store.queries import inbound as q

log = logging.getLogger(__name__)

CHANGED = frozenset({Outcome.ASSIGNED, Outcome.UNASSIGNED})


@app.task(base=DeliveryBatchStep, bind=True, name=pipeline.SYNC)
def sync(self: Step, *, delivery_ids: list[int] | None = None, **legacy: int) -> list[int]:
    """Plan each delivery's group changes (one transaction per delivery, which locks its
    issue's rows), then send every pending change of the batch on together."""
    pending = [
        change
        for planned in self.each(
            delivery_ids_of(delivery_ids, legacy), lambda d: _sync_one(self, d)
        )
        for change in planned
    ]
    pipeline.after_sync(app, pending)
    return sorted({d for d, _, _ in pending})


def _sync_one(step: Step, delivery_id: int) -> list[tuple[int, int, str]]:
    with transaction(step.resources.pool) as conn:
        if not q.lock_delivery(conn, delivery_id):
            raise NotFound(f"delivery {delivery_id} does not exist")
        delivery = q_deliveries.get_delivery(conn, delivery_id)
        assert delivery is not None
        if delivery.status == "done":
            return []
        planned = q.effects(conn, delivery_id)
        if not planned:
            event = parse_event(delivery.body)
            planned = _plan(conn, delivery_id, delivery.integration_id, event)
        pending = [
            (delivery_id, e.group_id, str(e.action)) for e in planned if e.outcome == PENDING
        ]
        if not pending:
            _finish_if_settled(conn, delivery_id)
    return pending


def _plan(
    conn: Connection, delivery_id: int, integration_id: int, event: IssueEvent
) -> list[q.Effect]:
    """Decide per group what this event asks; an outcome for the whole delivery finishes it."""
    change = decide_change(event)
    if change.action is None:
        assert change.outcome is not None
        _finish(conn, delivery_id, event, change.outcome)
        return []
    # Staleness is decided per group (in the group step), never per issue: an event that
    # changes nothing for a group (user-not-found) must not make older events stale there.
    issues = q.lock_synced_external_issues(conn, integration_id, event.issue_key)
    newer = [issue.id for issue in issues if is_newer(event.order, issue.last_event)]
    if newer:
        mark = assignee_mark(event.assignee_present, event.assignee_email)
        q.mark_issue_event(conn, newer, event.order, mark)
    groups = q.affected_groups(
        conn, [issue.id for issue in issues], sorted({issue.organization_id for issue in issues})
    )
    if not groups:
        _finish(conn, delivery_id, event, Outcome.NO_AFFECTED_GROUPS)
        return []
    if change.action is Action.DEASSIGN:
        planned = [
            q.Effect(delivery_id, group.id, str(Action.DEASSIGN), None, PENDING) for group in groups
        ]
    else:
        assert change.email is not None
        user_teams = q.user_teams_by_email(conn, change.email)
        teams = q.project_teams(conn, sorted({g.project_id for g in groups}))
        planned = []
        for group in groups:
            user_id = choose_user(user_teams, teams.get(group.project_id, set()))
            outcome = PENDING if user_id is not None else str(Outcome.USER_NOT_FOUND)
            planned.append(q.Effect(delivery_id, group.id, str(Action.ASSIGN), user_id, outcome))
    # The delivery row is locked and had no effects: these are exactly what is stored now.
    q.insert_effects(conn, planned)
    return planned


@app.task(base=ChangeBatchStep, bind=True, name=pipeline.ASSIGN)
def assign(self: Step, *, changes: list[list[int]] | None = None, **legacy: int) -> list[int]:
    return _apply_groups(self, changes_of(changes, legacy), Action.ASSIGN)


@app.task(base=ChangeBatchStep, bind=True, name=pipeline.DEASSIGN)
def deassign(self: Step, *, changes: list[list[int]] | None = None, **legacy: int) -> list[int]:
    return _apply_groups(self, changes_of(changes, legacy), Action.DEASSIGN)


def _apply_groups(step: Step, changes: list[tuple[int, int]], action: Action) -> list[int]:
    """Apply the batch in one transaction, each change in a savepoint of its own (a change that
    fails permanently is rolled back and recorded alone), in group and event order: group rows
    are locked in id order (no deadlock between batches) and events of one issue in one batch
    apply in timestamp order; then finish the settled deliveries (rows locked in id order),
    commit, purge the changed groups' assignee-exists keys at once and send their side
    effects together."""
    events = _events(step, sorted({d for d, _ in changes}))
    in_order = sorted(
        changes, key=lambda c: (c[1], events[c[0]].order if c[0] in events else (0, 0), c[0])
    )

    def apply(conn: Connection, change: tuple[int, int]) -> tuple[tuple[int, int], Applied]:
        with conn.transaction():  # a savepoint
            return change, _apply_group(conn, *change, action, events.get(change[0]))

    with transaction(step.resources.pool) as conn:
        results = step.each(in_order, lambda c: apply(conn, c))
        # What became of each change decided now, in one statement before the finishing reads.
        q.set_effect_outcomes(
            conn, [(d, g, str(r.outcome)) for (d, g), r in results if r.decided_now]
        )
        applied = [(change, r.outcome) for change, r in results]
        for delivery_id in sorted({d for (d, _), _ in applied}):
            q.lock_delivery(conn, delivery_id)
            _finish_if_settled(conn, delivery_id)
    changed = [change for change, outcome in applied if outcome in CHANGED]
    if changed:
        _purge_assignee_exists_now(step, [g for _, g in changed])
        pipeline.after_group_changes(app, [(d, g, str(action)) for d, g in changed])
    return [g for _, g in changed]


@dataclass(frozen=True)
class Applied:
    """What became of one group's change (None: the group is gone), and whether it was
    decided now (its outcome is still to be stored) rather than by an earlier run."""

    outcome: Outcome | None
    decided_now: bool = False


def _apply_group(
    conn: Connection,
    delivery_id: int,
    group_id: int,
    action: Action,
    event: IssueEvent | None,
) -> Applied:
    """One group's change (its row locked). `event` is the delivery's, read with the batch
    (None: read it here, which names what is wrong). The caller stores the outcome."""
    group = q.lock_group(conn, group_id)
    effect = q.effect(conn, delivery_id, group_id) if group is not None else None
    if group is None or effect is None:
        # The group was deleted since the sync (its effect row went with it).
        return Applied(None)
    if effect.outcome != PENDING:
        return Applied(Outcome(effect.outcome))  # done before; only re-send what follows
    if event is None:
        delivery = q_deliveries.get_delivery(conn, delivery_id)
        if delivery is None:
            raise NotFound(f"delivery {delivery_id} does not exist")
        event = parse_event(delivery.body)
    if not is_newer(event.order, q.group_event(conn, group_id)):
        outcome = Outcome.STALE
    else:
        q.set_group_event(conn, group_id, event.order, delivery_id)
        if action is Action.ASSIGN:
            assert effect.user_id is not None
            outcome = _assign(conn, group, effect.user_id, event, delivery_id)
        else:
            outcome = _deassign(conn, group, delivery_id)
    log.info(
        "group.synced",
        extra={
            "delivery_id": delivery_id,
            "group_id": group_id,
            "issue_key": event.issue_key,
            "outcome": str(outcome),
        },
    )
    return Applied(outcome, decided_now=True)


def _events(step: Step, delivery_ids: list[int]) -> dict[int, IssueEvent]:
    """The batch's deliveries' events, read in one query; an unreadable body is left out (its
    group step reads it again and records what is wrong)."""
    with transaction(step.resources.pool) as conn:
        found = q_deliveries.get_deliveries(conn, delivery_ids)
    events = {}
    for delivery in found:
        with contextlib.suppress(BadPayload):
            events[delivery.id] = parse_event(delivery.body)
    return events


def _purge_assignee_exists_now(step: Step, group_ids: list[int]) -> None:
    # Right after the commit, so no reader sees a stale "no assignee" even while the queue is
    # backed up; the purge step that follows is the retried guarantee when Redis is down now.
    with contextlib.suppress(redis.RedisError):
        cache.purge_assignee_exists(step.resources.redis, group_ids)


def _assign(
    conn: Connection, group: q.GroupRef, user_id: int, event: IssueEvent, delivery_id: int
) -> Outcome:
    """SPEC 4.3 in the caller's transaction; the group row is locked."""
    q.subscribe_user(conn, group, user_id)
    previous = q.assignee(conn, group.id)
    new = Assignee(user_id=user_id)
    if previous == new:
        return Outcome.UNCHANGED
    q.set_user_assignee(conn, group, user_id)
    data = {
        "assignee": str(user_id),
        "assigneeEmail": event.assignee_email,
        "assigneeType": "user",
        "integration": "jira_server",
    }
    q.insert_activity_and_history(
        conn, group, ActivityType.ASSIGNED, data, HistoryStatus.ASSIGNED, delivery_id
    )
    if previous is not None:
        _remove_old_assignees(conn, group.id, previous, new)
    return Outcome.ASSIGNED


def _deassign(conn: Connection, group: q.GroupRef, delivery_id: int) -> Outcome:
    """SPEC 4.4 in the caller's transaction; the group row is locked."""
    previous = q.assignee(conn, group.id)
    if previous is None:
        return Outcome.UNCHANGED
    q.delete_assignee(conn, group.id)
    q.insert_activity_and_history(
        conn, group, ActivityType.UNASSIGNED, {}, HistoryStatus.UNASSIGNED, delivery_id
    )
    _remove_old_assignees(conn, group.id, previous, None)
    return Outcome.UNASSIGNED


def _remove_old_assignees(
    conn: Connection, group_id: int, previous: Assignee, new: Assignee | None
) -> None:
    teams = {t for t in (previous.team_id, new.team_id if new else None) if t is not None}
    removal = subscriptions_to_remove(previous, new, q.team_members(conn, teams))
    if removal.user_ids or removal.team_ids:
        q.delete_assigned_subscriptions(conn, group_id, removal.user_ids, removal.team_ids)


def _finish_if_settled(conn: Connection, delivery_id: int) -> None:
    """Once no group step is pending, the delivery is done with its groups' outcome."""
    planned = q.effects(conn, delivery_id)
    if any(e.outcome == PENDING for e in planned):
        return
    delivery = q_deliveries.get_delivery(conn, delivery_id)
    if delivery is None or delivery.status == "done":
        return
    outcome = delivery_outcome(e.outcome for e in planned)
    detail = {"groups": {str(e.group_id): e.outcome for e in planned}}
    q_deliveries.finish_delivery(conn, delivery_id, outcome, detail)
    log.info(
        "delivery.finished",
        extra={"delivery_id": delivery_id, "issue_key": delivery.issue_key, "outcome": outcome},
    )


def _finish(conn: Connection, delivery_id: int, event: IssueEvent, outcome: Outcome) -> None:
    q_deliveries.finish_delivery(conn, delivery_id, outcome)
    log.info(
        "delivery.finished",
        extra={"delivery_id": delivery_id, "issue_key": event.issue_key, "outcome": str(outcome)},
    )
