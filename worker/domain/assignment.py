"""Pure decisions of the inbound pipeline (SPEC 4): what an event asks for, which user gets a
group, whose subscriptions go, whether an event is newer, and what a delivery's outcome is.

Nothing here touches a server: the steps in tasks/ load state by id, call these, and write.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from worker.domain.event import IssueEvent


class Outcome(StrEnum):
    """What became of a delivery (webhook_delivery.outcome) or of one group in it."""

    ASSIGNED = "assigned"
    UNASSIGNED = "unassigned"
    NO_ASSIGNEE_CHANGE = "no-assignee-change"
    MISSING_ASSIGNEE_EMAIL = "missing-assignee-email"
    NO_AFFECTED_GROUPS = "no-affected-groups"
    USER_NOT_FOUND = "user-not-found"
    STALE = "stale"
    UNCHANGED = "unchanged"


class Action(StrEnum):
    """What the inbound sync asks of one group."""

    ASSIGN = "assign"
    DEASSIGN = "deassign"


# A group step not run yet (delivery_effect.outcome before the group step decides).
PENDING = "pending"

# The first of these found among a delivery's groups names the delivery's outcome.
OUTCOME_PRECEDENCE = (
    Outcome.ASSIGNED,
    Outcome.UNASSIGNED,
    Outcome.USER_NOT_FOUND,
    Outcome.UNCHANGED,
    Outcome.STALE,
)


@dataclass(frozen=True)
class Change:
    """What a delivery asks for: an outcome to record now, or a sync to run."""

    outcome: Outcome | None = None
    action: Action | None = None
    email: str | None = None
    identity: str | None = None


def decide_change(event: IssueEvent) -> Change:
    """The snapshot assignee decides, not the changelog's from/to (SPEC 4.1)."""
    if not event.assignee_changed:
        return Change(outcome=Outcome.NO_ASSIGNEE_CHANGE)
    if not event.assignee_present:
        return Change(action=Action.DEASSIGN)
    if event.assignee_email is None and event.assignee_identity is None:
        # A body naming no identity (SPEC 4.1); one that names one is looked up (SPEC 14).
        return Change(outcome=Outcome.MISSING_ASSIGNEE_EMAIL)
    return Change(
        action=Action.ASSIGN, email=event.assignee_email, identity=event.assignee_identity
    )


def is_newer(event: tuple[int, int], applied: tuple[int, int] | None) -> bool:
    """Whether an event comes after the newest one applied; an equal one is the same event."""
    return applied is None or event > applied


def choose_user(
    user_teams: Mapping[int, Collection[int]], project_teams: Collection[int]
) -> int | None:
    """The lowest-id user among those who are active members of a team on the project."""
    eligible = [user for user, teams in user_teams.items() if set(teams) & set(project_teams)]
    return min(eligible, default=None)


@dataclass(frozen=True)
class Assignee:
    """A group's assignee: exactly one of a user or a team."""

    user_id: int | None = None
    team_id: int | None = None


@dataclass(frozen=True)
class Removal:
    """The `assigned` subscriptions to delete when a group's assignee changes."""

    user_ids: frozenset[int] = frozenset()
    team_ids: frozenset[int] = frozenset()


def subscriptions_to_remove(
    previous: Assignee, new: Assignee | None, team_members: Mapping[int, Iterable[int]]
) -> Removal:
    """Remove old assignees (SPEC 4.5); team_members maps a team id to its members' ids."""
    if previous.user_id is not None:
        new_team = new.team_id if new is not None else None
        if new_team is not None and previous.user_id in set(team_members.get(new_team, ())):
            return Removal()
        return Removal(user_ids=frozenset({previous.user_id}))
    assert previous.team_id is not None
    members = set(team_members.get(previous.team_id, ()))
    if new is not None and new.user_id is not None:
        members.discard(new.user_id)
    return Removal(user_ids=frozenset(members), team_ids=frozenset({previous.team_id}))


def delivery_outcome(group_outcomes: Iterable[str]) -> Outcome:
    """A delivery's outcome from its groups': the most telling one wins."""
    seen = set(group_outcomes)
    for outcome in OUTCOME_PRECEDENCE:
        if outcome in seen:
            return outcome
    return Outcome.NO_AFFECTED_GROUPS
