"""The only place that knows the order of steps: it builds and sends the chains.

Inbound: check_changelog -> sync -> assign | deassign -> side effects (purge assignee-exists;
deassign also purges owners-debounce; outbound sync). A delivery with a status change runs
sync_status (SPEC 10) between check_changelog and sync (which it skips when the assignee did
not change), then outbound_status for the groups it changed. Group status changed here:
outbound_status moves the linked Jira issues.
Projects: save (slug, id, insert) and delete (settings, outbox + rows, cache purge).

Inbound steps carry batches: check_changelog and sync take `delivery_ids`, the group steps
and side effects take `changes` ([delivery id, group id] pairs), at most PIPELINE_BATCH_SIZE
(200) of them per message. A batch forms only from what is already waiting (the relay sends
what the receiver stored since its last send; a step sends on what it just finished), so at
low load a batch is one delivery and nothing waits for a batch to fill. Every rule holds per
item; a permanent failure of an item is recorded for that item alone (its record replays it
alone).

Steps are sent by their stable names, so this module imports no task module. Each step sends
what follows it only after its own transactions committed, and a redelivered step re-sends it
from the state in the database: a crash between the two never loses the rest of a chain.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

from celery import Celery

from config.settings import get_settings
from worker.runtime.publish import StepCall, batch_sender

CHECK_CHANGELOG = "jira_sync.inbound.check_changelog"
SYNC = "jira_sync.inbound.sync"
ASSIGN = "jira_sync.inbound.assign"
DEASSIGN = "jira_sync.inbound.deassign"
PURGE_ASSIGNEE_EXISTS = "jira_sync.effects.purge_assignee_exists"
PURGE_OWNERS_DEBOUNCE = "jira_sync.effects.purge_owners_debounce"
OUTBOUND_SYNC = "jira_sync.effects.outbound_sync"
SYNC_STATUS = "jira_sync.inbound.sync_status"
OUTBOUND_STATUS = "jira_sync.effects.outbound_status"


GROUP_STEPS = {"assign": ASSIGN, "deassign": DEASSIGN}
# The one list of side effects, in the order they are sent after a group's assignee changed
# (SPEC 4.3, 4.4), each with the actions it follows: caches first, then the other trackers.
# Outbound sync marks a change's side effects done, so it must stay last: a step after it
# could still be running when the change counts as finished.
SIDE_EFFECT_STEPS: tuple[tuple[str, frozenset[str]], ...] = (
    (PURGE_ASSIGNEE_EXISTS, frozenset({"assign", "deassign"})),
    (PURGE_OWNERS_DEBOUNCE, frozenset({"deassign"})),
    (OUTBOUND_SYNC, frozenset({"assign", "deassign"})),
)
if SIDE_EFFECT_STEPS[-1][0] != OUTBOUND_SYNC:
    raise RuntimeError("outbound sync marks a change's side effects done: it must run last")
SIDE_EFFECTS = {
    action: tuple(step for step, follows in SIDE_EFFECT_STEPS if action in follows)
    for action in GROUP_STEPS
}

Change = tuple[int, int]  # (delivery id, group id)
T = TypeVar("T")


def batches(items: Sequence[T]) -> Iterator[list[T]]:
    """Consecutive slices of at most PIPELINE_BATCH_SIZE items."""
    size = get_settings().pipeline_batch_size
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def delivery_starts(delivery_ids: Sequence[int]) -> list[StepCall]:
    """The first step of many stored deliveries: one message per batch of them."""
    return [StepCall(CHECK_CHANGELOG, {"delivery_ids": b}) for b in batches(delivery_ids)]


def _send(app: Celery, calls: list[StepCall]) -> None:
    if calls:
        with batch_sender(app) as send:
            send(calls)


def after_changelog(
    app: Celery, delivery_ids: Sequence[int], status_delivery_ids: Sequence[int] = ()
) -> None:
    """These deliveries ask for an assignee change: run the inbound sync; those that change
    the status run the status sync first."""
    calls = [StepCall(SYNC_STATUS, {"delivery_ids": b}) for b in batches(status_delivery_ids)]
    calls += [StepCall(SYNC, {"delivery_ids": b}) for b in batches(delivery_ids)]
    _send(app, calls)


def outbound_status(
    app: Celery, group_ids: Sequence[int], source_integration_id: int | None = None
) -> None:
    """These groups were resolved or unresolved (here, or by a Jira instance: its issues are
    left alone): move their linked Jira issues."""
    source = (
        {} if source_integration_id is None else {"source_integration_id": source_integration_id}
    )
    _send(app, [StepCall(OUTBOUND_STATUS, {"group_ids": b, **source}) for b in batches(group_ids)])


def after_sync(app: Celery, group_actions: Iterable[tuple[int, int, str]]) -> None:
    """Apply the syncs' decisions: (delivery id, group id, "assign" | "deassign")."""
    _send(app, _group_steps(group_actions))


def _group_steps(group_actions: Iterable[tuple[int, int, str]]) -> list[StepCall]:
    by_action: dict[str, list[list[int]]] = {}
    for delivery_id, group_id, action in group_actions:
        by_action.setdefault(action, []).append([delivery_id, group_id])
    return [
        StepCall(GROUP_STEPS[action], {"changes": b})
        for action, changes in sorted(by_action.items())
        for b in batches(changes)
    ]


def after_group_changes(app: Celery, changes: Iterable[tuple[int, int, str]]) -> None:
    """Groups' assignees changed: their side effects, each step over the whole batch."""
    _send(app, side_effects(changes))


def side_effects(changes: Iterable[tuple[int, int, str]]) -> list[StepCall]:
    """The side effects of many (delivery, group, action) changes, batched per step; outbound
    sync, which marks them finished, comes last."""
    by_step: dict[str, list[list[int]]] = {}
    for delivery_id, group_id, action in changes:
        for name in SIDE_EFFECTS[action]:
            by_step.setdefault(name, []).append([delivery_id, group_id])
    return [
        StepCall(name, {"changes": b})
        for name, _ in SIDE_EFFECT_STEPS
        if name in by_step
        for b in batches(by_step[name])
    ]


PROJECT_CHOOSE_SLUG = "jira_sync.projects.choose_slug"
PROJECT_CLAIM_ID = "jira_sync.projects.claim_id"
PROJECT_INSERT = "jira_sync.projects.insert"
PROJECT_DELETE_SETTINGS = "jira_sync.projects.delete_notification_settings"
PROJECT_DELETE = "jira_sync.projects.delete"
PROJECT_PURGE_CACHES = "jira_sync.projects.purge_caches"
# SPEC 5. Every project step takes request_id (delete steps also project_id).
PROJECT_SAVE_STEPS = (PROJECT_CHOOSE_SLUG, PROJECT_CLAIM_ID, PROJECT_INSERT)
PROJECT_DELETE_STEPS = (PROJECT_DELETE_SETTINGS, PROJECT_DELETE, PROJECT_PURGE_CACHES)


def rest_of_chain(step: str) -> list[str]:
    """What runs after `step` for the same delivery or project request, in order (what a
    replay of its failure runs): alternatives joined by " | ", steps side by side by " + "."""
    if step == CHECK_CHANGELOG:
        return [f"{SYNC_STATUS} (if the status changed)", SYNC, *rest_of_chain(SYNC)]
    if step == SYNC_STATUS:
        return [f"{SYNC} (if the assignee changed) + {OUTBOUND_STATUS}", *rest_of_chain(SYNC)]
    if step == SYNC:
        every_effect = [name for name, _ in SIDE_EFFECT_STEPS]
        return [" | ".join(GROUP_STEPS.values()), " + ".join(every_effect)]
    for action, name in GROUP_STEPS.items():
        if step == name:
            return [" + ".join(SIDE_EFFECTS[action])]
    for steps in (PROJECT_SAVE_STEPS, PROJECT_DELETE_STEPS):
        if step in steps:
            return list(steps[steps.index(step) + 1 :])
    return []


def start_project_save(app: Celery, request_id: int) -> None:
    """Run a stored create or rename request: slug, id, insert."""
    app.send_task(PROJECT_SAVE_STEPS[0], kwargs={"request_id": request_id})


def start_project_delete(app: Celery, project_id: int, request_id: int) -> None:
    """Run a stored delete request: notification settings, outbox + rows, cache purge."""
    kwargs = {"project_id": project_id, "request_id": request_id}
    app.send_task(PROJECT_DELETE_STEPS[0], kwargs=kwargs)


def after_project_step(app: Celery, step: str, **kwargs: int) -> None:
    """A project step committed and its request is still pending: send the next step."""
    for steps in (PROJECT_SAVE_STEPS, PROJECT_DELETE_STEPS):
        if step in steps[:-1]:
            app.send_task(steps[steps.index(step) + 1], kwargs=kwargs)
