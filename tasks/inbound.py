"""Steps: inbound sync (SPEC 4.2) and assign / deassign of groups (4.3-4.5), each over a batch.

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

import contextlib
import logging
from dataclasses import dataclass

import psycopg
import redis
from psycopg import Pipeline

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
        finished += _finish_settled(conn, settled) if settled else []
    _log_finished(finished)
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


@app.task(base=ChangeBatchStep, bind=True, name=pipeline.ASSIGN)
def assign(self: Step, *, changes: list[list[int]] | None = None, **legacy: int) -> list[int]:
    return _apply_groups(self, changes_of(changes, legacy), Action.ASSIGN)


@app.task(base=ChangeBatchStep, bind=True, name=pipeline.DEASSIGN)
def deassign(self: Step, *, changes: list[list[int]] | None = None, **legacy: int) -> list[int]:
    return _apply_groups(self, changes_of(changes, legacy), Action.DEASSIGN)


def _apply_groups(step: Step, changes: list[tuple[int, int]], action: Action) -> list[int]:
    """Apply the batch in one transaction in group and event order (events of one issue in one
    batch apply in timestamp order), then finish the settled deliveries, commit, purge the
    changed groups' assignee-exists keys at once and send their side effects together.

    Set-wise first: every group row locked in id order (no deadlock between batches) and read
    in one round trip, the changes decided in memory and written in pipeline mode, so the locks
    are held for a few round trips, not one per change. If that fails for good (a constraint,
    say), the batch is applied again change by change, each in a savepoint of its own: the
    change that fails is rolled back and recorded alone, the others apply."""
    events = _events(step, sorted({d for d, _ in changes}))
    in_order = sorted(  # a change sent twice in one batch applies once
        set(changes), key=lambda c: (c[1], events[c[0]].order if c[0] in events else (0, 0), c[0])
    )
    try:
        with transaction(step.resources.pool) as conn, conn.pipeline():
            if not all(d in events for d, _ in changes):
                raise _OneByOne  # an unreadable body: the change that has it names it
            results = _apply_in_memory(conn, in_order, action, events)
            finished = _store_and_finish(conn, results)
    except (psycopg.Error, _OneByOne):  # not worth a retry, or it would be DatabaseUnavailable
        with transaction(step.resources.pool) as conn, conn.pipeline() as pipe:
            results = step.each(in_order, lambda c: _apply_alone(conn, pipe, c, action, events))
            finished = _store_and_finish(conn, results)
    # Logged once committed: a set-wise attempt that was rolled back logs nothing.
    for (delivery_id, group_id), r in results:
        if r.decided_now:
            log.info(
                "group.synced",
                extra={
                    "delivery_id": delivery_id,
                    "group_id": group_id,
                    "issue_key": r.issue_key,
                    "outcome": str(r.outcome),
                },
            )
    _log_finished(finished)
    changed = [change for change, r in results if r.outcome in CHANGED]
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
    issue_key: str | None = None


class _OneByOne(Exception):
    """The batch cannot be applied set-wise: apply it change by change."""


def _apply_in_memory(
    conn: Connection,
    in_order: list[tuple[int, int]],
    action: Action,
    events: dict[int, IssueEvent],
) -> list[tuple[tuple[int, int], Applied]]:
    """Every change of the batch against one read of its groups' state (kept current as the
    changes apply); the writes are queued in the caller's pipeline."""
    groups = q.lock_groups(conn, sorted({g for _, g in in_order}))
    states = q.group_states(conn, in_order)
    return [
        ((d, g), _apply_change(conn, groups.get(g), states, d, g, action, events[d]))
        for d, g in in_order
    ]


def _apply_alone(
    conn: Connection,
    pipe: Pipeline,
    change: tuple[int, int],
    action: Action,
    events: dict[int, IssueEvent],
) -> tuple[tuple[int, int], Applied]:
    """One change in a savepoint of its own, its writes synced inside it (so a failure is
    this change's alone). An event not read with the batch is read here, which names what is
    wrong with its body."""
    delivery_id, group_id = change
    with conn.transaction():
        groups = q.lock_groups(conn, [group_id])
        states = q.group_states(conn, [change])
        event = events.get(delivery_id)
        effect = states.effects.get(change)
        if event is None and group_id in groups and effect and effect.outcome == PENDING:
            delivery = q_deliveries.get_delivery(conn, delivery_id)
            if delivery is None:
                raise NotFound(f"delivery {delivery_id} does not exist")
            event = parse_event(delivery.body)
        applied = _apply_change(
            conn, groups.get(group_id), states, delivery_id, group_id, action, event
        )
        pipe.sync()
    return change, applied


def _apply_change(
    conn: Connection,
    group: q.GroupRef | None,
    states: q.GroupStates,
    delivery_id: int,
    group_id: int,
    action: Action,
    event: IssueEvent | None,
) -> Applied:
    """One group's change (its row locked; `states` read after the lock and kept current).
    The caller stores the outcome."""
    effect = states.effects.get((delivery_id, group_id)) if group is not None else None
    if group is None or effect is None:
        # The group was deleted since the sync (its effect row went with it).
        return Applied(None)
    if effect.outcome != PENDING:
        return Applied(Outcome(effect.outcome))  # done before; only re-send what follows
    assert event is not None
    if not is_newer(event.order, states.events.get(group_id)):
        outcome = Outcome.STALE
    else:
        q.set_group_event(conn, group_id, event.order, delivery_id)
        states.events[group_id] = event.order
        if action is Action.ASSIGN:
            assert effect.user_id is not None
            outcome = _assign(conn, group, effect.user_id, event, delivery_id, states)
        else:
            outcome = _deassign(conn, group, delivery_id, states)
    return Applied(outcome, decided_now=True, issue_key=event.issue_key)


def _store_and_finish(
    conn: Connection, results: list[tuple[tuple[int, int], Applied]]
) -> list[Finished]:
    # What became of each change decided now, in one statement before the finishing reads.
    q_effects.set_effect_outcomes(
        conn, [(d, g, str(r.outcome)) for (d, g), r in results if r.decided_now]
    )
    return _finish_settled(conn, sorted({d for (d, _), _ in results}))


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
    conn: Connection,
    group: q.GroupRef,
    user_id: int,
    event: IssueEvent,
    delivery_id: int,
    states: q.GroupStates,
) -> Outcome:
    """SPEC 4.3 in the caller's transaction; the group row is locked."""
    q.subscribe_user(conn, group, user_id)
    previous = states.assignees.get(group.id)
    new = Assignee(user_id=user_id)
    if previous == new:
        return Outcome.UNCHANGED
    q.set_user_assignee(conn, group, user_id)
    states.assignees[group.id] = new
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
        _remove_old_assignees(conn, group.id, previous, new, states)
    return Outcome.ASSIGNED


def _deassign(
    conn: Connection, group: q.GroupRef, delivery_id: int, states: q.GroupStates
) -> Outcome:
    """SPEC 4.4 in the caller's transaction; the group row is locked."""
    previous = states.assignees.pop(group.id, None)
    if previous is None:
        return Outcome.UNCHANGED
    q.delete_assignee(conn, group.id)
    q.insert_activity_and_history(
        conn, group, ActivityType.UNASSIGNED, {}, HistoryStatus.UNASSIGNED, delivery_id
    )
    _remove_old_assignees(conn, group.id, previous, None, states)
    return Outcome.UNASSIGNED


def _remove_old_assignees(
    conn: Connection,
    group_id: int,
    previous: Assignee,
    new: Assignee | None,
    states: q.GroupStates,
) -> None:
    # A team can only be an assignee read with the batch: the batch assigns users.
    removal = subscriptions_to_remove(previous, new, states.team_members)
    if removal.user_ids or removal.team_ids:
        q.delete_assigned_subscriptions(conn, group_id, removal.user_ids, removal.team_ids)


@dataclass(frozen=True)
class Finished:
    """A delivery this transaction finished, to be logged once it commits."""

    delivery_id: int
    issue_key: str | None
    outcome: str


def _finish_settled(conn: Connection, delivery_ids: list[int]) -> list[Finished]:
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


def _log_finished(finished: list[Finished]) -> None:
    for f in finished:
        log.info(
            "delivery.finished",
            extra={"delivery_id": f.delivery_id, "issue_key": f.issue_key, "outcome": f.outcome},
        )


def _finish(conn: Connection, delivery_id: int, event: IssueEvent, outcome: Outcome) -> Finished:
    q_deliveries.finish_delivery(conn, delivery_id, outcome)
    return Finished(delivery_id, event.issue_key, str(outcome))
