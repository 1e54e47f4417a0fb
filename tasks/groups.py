"""Steps: assign / deassign of groups (SPEC 4.3-4.5), each over a batch of changes planned by
the inbound sync (`tasks.inbound`, whose module docstring tells the ordering rules): each group
row locked, an event older than the newest one applied to the group dropped (`stale`), the
changes applied set-wise in pipeline mode, with a fallback that applies them one by one.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import psycopg
import redis
from psycopg import Pipeline

from tasks import pipeline
from tasks.base import ChangeBatchStep, Step, changes_of
from tasks.inbound import CHANGED, Finished, finish_settled, log_finished
from worker import cache
from worker.domain.assignment import (
    PENDING,
    Action,
    Assignee,
    Outcome,
    is_newer,
    subscriptions_to_remove,
)
from worker.domain.errors import BadPayload, NotFound
from worker.domain.event import IssueEvent, parse_event
from worker.domain.model import ActivityType, HistoryStatus
from worker.runtime.app import app
from worker.store.db import Connection, autocommit, transaction
from worker.store.queries import deliveries as q_deliveries
from worker.store.queries import effects as q_effects
from worker.store.queries import inbound as q

log = logging.getLogger(__name__)


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
    log_finished(finished)
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
    changes apply); the batch's final state is queued in the caller's pipeline set-wise."""
    groups = q.lock_groups(conn, sorted({g for _, g in in_order}))
    states = q.group_states(conn, in_order)
    writes = q.GroupWrites()
    applied = [
        ((d, g), _apply_change(writes, groups.get(g), states, d, g, action, events[d]))
        for d, g in in_order
    ]
    writes.flush(conn)
    return applied


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
        writes = q.GroupWrites()
        applied = _apply_change(
            writes, groups.get(group_id), states, delivery_id, group_id, action, event
        )
        writes.flush(conn)
        pipe.sync()
    return change, applied


def _apply_change(
    writes: q.GroupWrites,
    group: q.GroupRef | None,
    states: q.GroupStates,
    delivery_id: int,
    group_id: int,
    action: Action,
    event: IssueEvent | None,
) -> Applied:
    """One group's change (its row locked; `states` read after the lock and kept current),
    its writes added to `writes`. The caller writes them and stores the outcome."""
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
        writes.set_event(group_id, event.order, delivery_id)
        states.events[group_id] = event.order
        if action is Action.ASSIGN:
            assert effect.user_id is not None
            outcome = _assign(writes, group, effect.user_id, event, delivery_id, states)
        else:
            outcome = _deassign(writes, group, delivery_id, states)
    return Applied(outcome, decided_now=True, issue_key=event.issue_key)


def _store_and_finish(
    conn: Connection, results: list[tuple[tuple[int, int], Applied]]
) -> list[Finished]:
    # What became of each change decided now, in one statement before the finishing reads.
    q_effects.set_effect_outcomes(
        conn, [(d, g, str(r.outcome)) for (d, g), r in results if r.decided_now]
    )
    return finish_settled(conn, sorted({d for (d, _), _ in results}))


def _events(step: Step, delivery_ids: list[int]) -> dict[int, IssueEvent]:
    """The batch's deliveries' events, read in one query; an unreadable body is left out (its
    group step reads it again and records what is wrong)."""
    with autocommit(step.resources.pool) as conn:  # a read: no BEGIN and COMMIT round trips
        found = q_deliveries.get_bodies(conn, delivery_ids)
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
    writes: q.GroupWrites,
    group: q.GroupRef,
    user_id: int,
    event: IssueEvent,
    delivery_id: int,
    states: q.GroupStates,
) -> Outcome:
    """SPEC 4.3 in the caller's transaction; the group row is locked."""
    writes.subscribe_user(group, user_id)
    previous = states.assignees.get(group.id)
    new = Assignee(user_id=user_id)
    if previous == new:
        return Outcome.UNCHANGED
    writes.set_user_assignee(group, user_id)
    states.assignees[group.id] = new
    data = {
        "assignee": str(user_id),
        "assigneeEmail": event.assignee_email,
        "assigneeType": "user",
        "integration": "jira_server",
    }
    writes.add_activity_and_history(
        group, ActivityType.ASSIGNED, data, HistoryStatus.ASSIGNED, delivery_id
    )
    if previous is not None:
        _remove_old_assignees(writes, group, previous, new, states)
    return Outcome.ASSIGNED


def _deassign(
    writes: q.GroupWrites, group: q.GroupRef, delivery_id: int, states: q.GroupStates
) -> Outcome:
    """SPEC 4.4 in the caller's transaction; the group row is locked."""
    previous = states.assignees.pop(group.id, None)
    if previous is None:
        return Outcome.UNCHANGED
    writes.delete_assignee(group)
    writes.add_activity_and_history(
        group, ActivityType.UNASSIGNED, {}, HistoryStatus.UNASSIGNED, delivery_id
    )
    _remove_old_assignees(writes, group, previous, None, states)
    return Outcome.UNASSIGNED


def _remove_old_assignees(
    writes: q.GroupWrites,
    group: q.GroupRef,
    previous: Assignee,
    new: Assignee | None,
    states: q.GroupStates,
) -> None:
    # A team can only be an assignee read with the batch: the batch assigns users.
    removal = subscriptions_to_remove(previous, new, states.team_members)
    if removal.user_ids or removal.team_ids:
        writes.delete_assigned_subscriptions(group, removal.user_ids, removal.team_ids)
