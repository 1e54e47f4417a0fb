"""Pure decisions of status sync (SPEC 10): what a Jira status change asks of the groups,
what one group's change comes to, a delivery's status outcome, and which workflow transition
moves a Jira issue to a mapped status.

A Jira status is "done" when its status category key is `done`. Moving from a not-done status
into a done one resolves; from done into not-done unresolves; any other move changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from worker.domain.model import ActivityType, HistoryStatus

DONE_CATEGORY = "done"


class GroupStatus(StrEnum):
    """issue_group.status."""

    UNRESOLVED = "unresolved"
    RESOLVED = "resolved"


# What a change into each state writes: the activity type and the history status.
STATUS_RECORDS = {
    GroupStatus.RESOLVED: (ActivityType.SET_RESOLVED, HistoryStatus.RESOLVED),
    GroupStatus.UNRESOLVED: (ActivityType.SET_UNRESOLVED, HistoryStatus.UNRESOLVED),
}


class StatusOutcome(StrEnum):
    """What became of a delivery's status change (webhook_delivery.status_outcome) or of one
    group in it."""

    RESOLVED = "resolved"
    UNRESOLVED = "unresolved"
    UNCHANGED = "unchanged"  # the group already was in the target state
    STALE = "stale"  # a newer status event was applied to the group
    ECHO = "echo"  # Jira's webhook for a transition this service made
    NO_RESOLUTION_CHANGE = "no-resolution-change"  # done -> done, not-done -> not-done
    NO_AFFECTED_GROUPS = "no-affected-groups"


# The first of these found among a delivery's groups names the delivery's status outcome.
STATUS_OUTCOME_PRECEDENCE = (
    StatusOutcome.RESOLVED,
    StatusOutcome.UNRESOLVED,
    StatusOutcome.UNCHANGED,
    StatusOutcome.ECHO,
    StatusOutcome.STALE,
    StatusOutcome.NO_RESOLUTION_CHANGE,
)


class UnknownStatus(LookupError):
    """Raised when a status id is not in the instance's status list."""


def is_done(categories: Mapping[str, str], status_id: str) -> bool:
    """Whether a Jira status (by id) is in the `done` category; UnknownStatus if not listed."""
    if status_id not in categories:
        raise UnknownStatus(status_id)
    return categories[status_id] == DONE_CATEGORY


def target_status(
    categories: Mapping[str, str], from_id: str | None, to_id: str
) -> GroupStatus | None:
    """The state a status move puts groups in, or None when it changes nothing. A move from
    no status (an issue created straight into a status) counts as from not-done."""
    was_done = from_id is not None and is_done(categories, from_id)
    now_done = is_done(categories, to_id)
    if now_done == was_done:
        return None
    return GroupStatus.RESOLVED if now_done else GroupStatus.UNRESOLVED


def local_order(now_ms: int) -> tuple[int, int]:
    """Where a resolve or unresolve made here stands among Jira's status events (timestamp,
    changelog id): now, before any Jira event of the same millisecond."""
    return now_ms, 0


def group_outcome(current: str, target: GroupStatus) -> StatusOutcome:
    """One group's outcome when it is moved to `target` (its event being the newest)."""
    if current == target:
        return StatusOutcome.UNCHANGED
    return StatusOutcome(str(target))


def delivery_status_outcome(group_outcomes: Iterable[str]) -> StatusOutcome:
    """A delivery's status outcome from its groups': the most telling one wins."""
    seen = set(group_outcomes)
    for outcome in STATUS_OUTCOME_PRECEDENCE:
        if outcome in seen:
            return outcome
    return StatusOutcome.NO_AFFECTED_GROUPS


def jira_project(issue_key: str) -> str:
    """The project key of a Jira issue key (`APP` of `APP-12`)."""
    return issue_key.rsplit("-", 1)[0]


def matches(status: Mapping[str, Any], wanted: str) -> bool:
    """Whether a Jira status object is the mapped one, named by id or (any case) by name."""
    name = status.get("name")
    return str(status.get("id")) == wanted or (
        isinstance(name, str) and name.casefold() == wanted.casefold()
    )


@dataclass(frozen=True)
class Transition:
    """A workflow transition available on an issue, and the status it leads to."""

    id: str
    to: Mapping[str, Any]


def choose_transition(transitions: Iterable[Transition], wanted: str) -> Transition | None:
    """The first transition whose target is the wanted status (by id or name)."""
    return next((t for t in transitions if matches(t.to, wanted)), None)
