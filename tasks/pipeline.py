"""The only place that knows the order of steps: it builds and sends the chains.

Inbound: check_changelog -> sync -> assign | deassign (per group) -> side effects
(purge assignee-exists; deassign also purges owners-debounce; outbound sync).
Projects: save (slug, id, insert) and delete (settings, outbox + rows, cache purge).
Steps are sent by their stable names, so this module imports no task module. Each step sends
what follows it only after its own transaction committed, and a redelivered step re-sends it
from the state in the database: a crash between the two never loses the rest of a chain.
"""

from __future__ import annotations

from collections.abc import Iterable

from celery import Celery

from worker.runtime.publish import StepCall

CHECK_CHANGELOG = "jira_sync.inbound.check_changelog"
SYNC = "jira_sync.inbound.sync"
ASSIGN = "jira_sync.inbound.assign"
DEASSIGN = "jira_sync.inbound.deassign"
PURGE_ASSIGNEE_EXISTS = "jira_sync.effects.purge_assignee_exists"
PURGE_OWNERS_DEBOUNCE = "jira_sync.effects.purge_owners_debounce"
OUTBOUND_SYNC = "jira_sync.effects.outbound_sync"

GROUP_STEPS = {"assign": ASSIGN, "deassign": DEASSIGN}
# After a group's assignee changed (SPEC 4.3, 4.4): caches first, then the other trackers.
SIDE_EFFECTS = {
    "assign": (PURGE_ASSIGNEE_EXISTS, OUTBOUND_SYNC),
    "deassign": (PURGE_ASSIGNEE_EXISTS, PURGE_OWNERS_DEBOUNCE, OUTBOUND_SYNC),
}


def delivery_starts(delivery_ids: Iterable[int]) -> list[StepCall]:
    """The first steps of many stored deliveries, to send in one batch."""
    return [StepCall(CHECK_CHANGELOG, {"delivery_id": d}) for d in delivery_ids]


def after_changelog(app: Celery, delivery_id: int) -> None:
    """The delivery asks for an assignee change: run the inbound sync."""
    app.send_task(SYNC, kwargs={"delivery_id": delivery_id})


def after_sync(app: Celery, delivery_id: int, group_actions: Iterable[tuple[int, str]]) -> None:
    """Apply the sync's decision to each group: (group id, "assign" | "deassign")."""
    for group_id, action in group_actions:
        app.send_task(
            GROUP_STEPS[action], kwargs={"delivery_id": delivery_id, "group_id": group_id}
        )


def after_group_change(app: Celery, delivery_id: int, group_id: int, action: str) -> None:
    """A group's assignee changed: its side effects, each its own retryable step."""
    for name in SIDE_EFFECTS[action]:
        app.send_task(name, kwargs={"delivery_id": delivery_id, "group_id": group_id})


def side_effects(changes: Iterable[tuple[int, int, str]]) -> list[StepCall]:
    """The side effects of many (delivery, group, action) changes, to send in one batch;
    outbound sync, which marks them finished, comes last for each."""
    return [
        StepCall(name, {"delivery_id": delivery_id, "group_id": group_id})
        for delivery_id, group_id, action in changes
        for name in SIDE_EFFECTS[action]
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
        return [SYNC, *rest_of_chain(SYNC)]
    if step == SYNC:
        every_effect = dict.fromkeys(name for names in SIDE_EFFECTS.values() for name in names)
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
