"""Steps: status sync (SPEC 10). Inbound, a Jira status change resolves or unresolves the
affected groups; outbound, a group resolved or unresolved here moves its linked Jira issues
through a workflow transition to the mapped status.

Inbound ordering is per group and per field: each group remembers the newest status event
applied to it (group_status_event), apart from its assignee events, so an older status event
never overrides a newer one whatever order the workers run them in. The status categories
come from Jira's status list, cached in Redis per integration and fetched again when an id is
missing from it; Jira unreachable is retried with backoff and then recorded in the failed-task
store, never dropped. The status part of a delivery is applied in one transaction with its
outcome (webhook_delivery.status_outcome), so a redelivered step only sends on what follows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from tasks import pipeline
from tasks.base import DeliveryBatchStep, GroupBatchStep, Step, delivery_ids_of
from worker.domain.assignment import decide_change, is_newer
from worker.domain.errors import JiraRejected, NotFound
from worker.domain.event import IssueEvent, parse_event
from worker.domain.status import (
    GroupStatus,
    StatusOutcome,
    UnknownStatus,
    choose_transition,
    delivery_status_outcome,
    group_outcome,
    jira_project,
    matches,
    target_status,
)
from worker.jira.api import JiraClient, client_for_integration
from worker.jira.statuses import StatusCategories
from worker.runtime.app import app
from worker.store.db import Connection, transaction
from worker.store.queries import deliveries as q_deliveries
from worker.store.queries import group_status as q
from worker.store.queries import inbound as q_inbound
from worker.store.queries import reconcile as q_reconcile

log = logging.getLogger(__name__)

CHANGED = frozenset({StatusOutcome.RESOLVED, StatusOutcome.UNRESOLVED})


class StatusTargets(StatusCategories):
    """What a status event asks of groups, by its instance's status categories."""

    def target(self, integration_id: int, event: IssueEvent) -> GroupStatus | None:
        assert event.status_to is not None
        wanted = {event.status_to, *([event.status_from] if event.status_from else [])}
        categories = self.of(integration_id, wanted)
        try:
            return target_status(categories, event.status_from, event.status_to)
        except UnknownStatus as exc:
            raise NotFound(
                f"Jira status {exc} is not in integration {integration_id}'s status list"
            ) from None


@dataclass(frozen=True)
class Synced:
    """A delivery's status part applied: whether the assignee sync follows, and the groups it
    resolved or unresolved (whose issues on other instances follow them)."""

    delivery_id: int
    integration_id: int
    forward: bool
    changed: list[int]


@app.task(base=DeliveryBatchStep, bind=True, name=pipeline.SYNC_STATUS)
def sync_status(self: Step, *, delivery_ids: list[int] | None = None, **legacy: int) -> list[int]:
    """Apply each delivery's status change; finish the deliveries whose assignee did not
    change (or cannot be synced) and send the others on to the assignee sync together; send
    the changed groups to the outbound move, per source instance (never moved back there)."""
    categories = StatusTargets(self.resources)
    ids = delivery_ids_of(delivery_ids, legacy)
    synced = self.each(ids, lambda d: _sync_one(self, d, categories))
    forwarded = [s.delivery_id for s in synced if s.forward]
    pipeline.after_changelog(app, forwarded)
    changed: dict[int, set[int]] = {}
    for s in synced:
        changed.setdefault(s.integration_id, set()).update(s.changed)
    for integration_id, group_ids in sorted(changed.items()):
        pipeline.outbound_status(app, sorted(group_ids), source_integration_id=integration_id)
    return forwarded


def _sync_one(step: Step, delivery_id: int, categories: StatusTargets) -> Synced:
    """The delivery's status part (once: a redelivered step only re-sends what follows)."""
    pool = step.resources.pool
    with transaction(pool) as conn:
        delivery = q_deliveries.get_delivery(conn, delivery_id)
        if delivery is None:
            raise NotFound(f"delivery {delivery_id} does not exist")
        event = parse_event(delivery.body)
        issues = q.status_synced_issues(conn, delivery.integration_id, event.issue_key)
        groups = q_inbound.affected_groups(
            conn, [i.id for i in issues], sorted({i.organization_id for i in issues})
        )
    # Jira is asked (when the cache cannot answer) with no transaction open.
    needed = delivery.status_outcome is None and delivery.status != "done" and groups
    target = categories.target(delivery.integration_id, event) if needed else None
    change = decide_change(event)
    with transaction(pool) as conn:
        q_inbound.lock_delivery(conn, delivery_id)
        delivery = q_deliveries.get_delivery(conn, delivery_id)
        assert delivery is not None
        done = delivery.status == "done"
        detail = delivery.status_detail
        if delivery.status_outcome is None and not done:
            outcome, detail = _apply(conn, delivery, event, issues, groups, target)
            q.set_status_outcome(conn, delivery_id, outcome, detail)
            log.info(
                "delivery.status_synced",
                extra={
                    "delivery_id": delivery_id,
                    "issue_key": event.issue_key,
                    "outcome": str(outcome),
                },
            )
        finish = not done and change.action is None
        if finish:
            assert change.outcome is not None
            q_deliveries.finish_delivery(conn, delivery_id, change.outcome)
    if finish:
        log.info(
            "delivery.finished",
            extra={
                "delivery_id": delivery_id,
                "issue_key": event.issue_key,
                "outcome": change.outcome,
            },
        )
    changed = [int(g) for g, o in detail.get("groups", {}).items() if o in CHANGED]
    forward = not done and change.action is not None
    return Synced(delivery_id, delivery.integration_id, forward, changed)


def _apply(
    conn: Connection,
    delivery: q_deliveries.Delivery,
    event: IssueEvent,
    issues: list[q.StatusIssue],
    groups: list[q_inbound.GroupRef],
    target: GroupStatus | None,
) -> tuple[StatusOutcome, dict[str, object]]:
    """Move each group (row locked, in id order) to `target` unless a newer status event was
    applied to it; the delivery's status outcome and each group's."""
    if not groups:
        return StatusOutcome.NO_AFFECTED_GROUPS, {}
    assert event.status_to is not None
    # Jira telling of a transition a group's own push made: an echo for that group alone.
    issue_ids = [i.id for i in issues]
    echoes = q.take_echoes(conn, issue_ids, [g.id for g in groups], event.status_to)
    if target is None and not echoes:
        # Not remembered: what the groups reflect is the last status that resolved or
        # unresolved them, and a sweep must still see an issue whose move into or out of
        # done was lost before this one.
        return StatusOutcome.NO_RESOLUTION_CHANGE, {}
    outcomes: dict[str, str] = {}
    for ref in groups:
        group = q.lock_group_status(conn, ref.id)
        if group is None:
            continue  # deleted since it was read
        if not is_newer(event.order, q_inbound.group_event(conn, group.id, "status")):
            outcomes[str(group.id)] = StatusOutcome.STALE
            continue
        q_inbound.set_group_event(conn, group.id, event.order, delivery.id, "status")
        if group.id in echoes:  # counted in the ordering, changes nothing
            outcomes[str(group.id)] = StatusOutcome.ECHO
            continue
        if target is None:
            outcomes[str(group.id)] = StatusOutcome.NO_RESOLUTION_CHANGE
            continue
        outcome = group_outcome(group.status, target)
        if outcome is not StatusOutcome.UNCHANGED:
            data = {
                "provider": "jira_server",
                "issueKey": event.issue_key,
                "integrationId": delivery.integration_id,
            }
            q.change_group_status(conn, ref, target, data, delivery.id)
            q.request_status_move(conn, group.id, delivery.integration_id)
        outcomes[str(group.id)] = outcome
    if any(o != StatusOutcome.STALE for o in outcomes.values()):
        # What the reconciliation sweep compares Jira's status with.
        q_reconcile.remember_jira_status(conn, issue_ids, event.status_to)
    return delivery_status_outcome(outcomes.values()), {"groups": outcomes}


@app.task(base=GroupBatchStep, bind=True, name=pipeline.OUTBOUND_STATUS)
def outbound_status(
    self: Step,
    *,
    group_ids: list[int] | None = None,
    external_issue_id: int | None = None,
    source_integration_id: int | None = None,
) -> int:
    """Move each group's linked Jira issues (links with forward status sync on) to the status
    mapped for the group's status now, except those on the instance the change came from
    (source_integration_id: it is there already); with external_issue_id, that issue alone
    (the replay of its recorded failure). No mapping, or no transition leading to the mapped
    status, fails that issue alone: recorded in the failed-task store."""
    clients: dict[int, JiraClient] = {}
    try:
        moved = self.each(
            list(group_ids or []),
            lambda g: _move_group(self, g, clients, external_issue_id, source_integration_id),
        )
    finally:
        for client in clients.values():
            client.close()
    return sum(moved)


# Rounds of moves in one step while the group's status keeps changing under it; a status
# still changing after that is left to the step its own change sent.
MAX_ROUNDS = 3


def _move_group(
    step: Step,
    group_id: int,
    clients: dict[int, JiraClient],
    only: int | None,
    source: int | None,
) -> int:
    """Move the group's issues to the mapping of its status, again when the status changed
    while Jira was called: the last move to land carries the newest status."""
    moved = 0
    with transaction(step.resources.pool) as conn:
        requested_at = q.status_move_requested_at(conn, group_id)
    status, targets = _targets(step, group_id)
    for _ in range(MAX_ROUNDS):
        for target in targets:
            replaying_another = only is not None and target.external_issue_id != only
            if target.integration_id == source or replaying_another:
                continue
            try:
                moved += _move(step, clients, target, group_id, status == GroupStatus.RESOLVED)
            except (JiraRejected, NotFound) as exc:  # permanent for this issue only
                step.record_item_failure(
                    exc,
                    {"group_ids": [group_id], "external_issue_id": target.external_issue_id},
                    f"{target.key} on integration {target.integration_id}: {exc}",
                )
        now, targets = _targets(step, group_id)
        if now == status:
            break
        status = now
    if requested_at is not None and only is None:  # the pending move asked for is done
        with transaction(step.resources.pool) as conn:
            q.finish_status_move(conn, group_id, requested_at)
    return moved


def _targets(step: Step, group_id: int) -> tuple[str | None, list[q.StatusTarget]]:
    """The group's status now and the issues to move (none when the group is gone)."""
    with transaction(step.resources.pool) as conn:
        status = q.group_status(conn, group_id)
        return status, q.status_targets(conn, group_id) if status is not None else []


def _move(
    step: Step,
    clients: dict[int, JiraClient],
    target: q.StatusTarget,
    group_id: int,
    resolved: bool,
) -> int:
    """Move one issue to its mapped status; 0 when it is already there."""
    wanted = target.resolved_status if resolved else target.unresolved_status
    context = {"issue_key": target.key, "integration_id": target.integration_id}
    if wanted is None:
        raise NotFound(
            f"no status mapping for organization {target.organization}, Jira project "
            f"{jira_project(target.key)} (integration map-status)"
        )
    if target.integration_id not in clients:
        clients[target.integration_id] = client_for_integration(
            step.resources, target.integration_id
        )
    client = clients[target.integration_id]
    current = client.issue_status(target.key)
    if matches(current, wanted):
        with transaction(step.resources.pool) as conn:
            q_reconcile.remember_jira_status(conn, [target.external_issue_id], str(current["id"]))
        log.info("outbound.status_unchanged", extra={**context, "status": wanted})
        return 0
    transition = choose_transition(client.transitions(target.key), wanted)
    if transition is None:
        raise JiraRejected(f"no transition of {target.key} leads to status {wanted!r}")
    # Recorded before the call: Jira's webhook for it may arrive before the call returns.
    # A transition that fails leaves no marker: no echo will come for it.
    marker = (target.external_issue_id, group_id, str(transition.to.get("id")))
    with transaction(step.resources.pool) as conn:
        q.record_status_push(conn, *marker)
    try:
        client.transition(target.key, transition.id)
    except Exception:
        with transaction(step.resources.pool) as conn:
            q.drop_status_push(conn, *marker)
        raise
    with transaction(step.resources.pool) as conn:  # the sweep must not feed this move back
        q_reconcile.remember_jira_status(conn, [target.external_issue_id], marker[2])
    log.info("outbound.status_moved", extra={**context, "status": wanted})
    return 1
