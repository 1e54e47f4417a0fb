"""Random assign/unassign sequences, mixed with status moves (SPEC 10), posted shuffled and
duplicated to two workers, end in the state of a sequential oracle (SPEC 4.2 ordering, kept
per group and per field: status events and assignee events never make each other stale)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.conftest import WorkerProcess
from tests.fakejira import STATUSES
from tests.integration.inbound_support import (
    ANN,
    BOB,
    CY,
    JIRA,
    PROJECT,
    base_scene,
    enqueue,
    group_state,
    jira_payload,
    store,
    wait_finished,
)
from tests.integration.status_support import STATUS_ACTIVITY, group_status, status_item
from worker import cache
from worker.domain.model import ActivityType, SubscriptionReason
from worker.domain.status import GroupStatus, group_outcome, target_status
from worker.runtime.resources import Resources
from worker.store.db import transaction

ISSUES = 8
EVENTS_PER_ISSUE = 8
# NOBODY: a Jira user whose email matches no user here (outcome user-not-found, SPEC 8: left
# out for the group, never making older events stale).
NOBODY = -1
GHOST = {"name": "ghost", "emailAddress": "ghost@elsewhere.test", "displayName": "Ghost"}
CHOICES = (ANN, BOB, CY, None, NOBODY)
BASE_TS = 1_764_000_000_000
CATEGORIES = {status_id: category for status_id, (_, category) in STATUSES.items()}
ASSIGNEE_ACTIVITY = (int(ActivityType.ASSIGNED), int(ActivityType.UNASSIGNED))
# What an event of the mixed sequence changes.
KINDS = ("assignee", "status", "both")


@dataclass(frozen=True)
class Event:
    group_id: int
    key: str
    ts: int
    changelog_id: int
    assignee: int | None
    assignee_changed: bool = True
    status: tuple[str, str] | None = None  # (from, to) Jira status ids


def random_events(rng: random.Random, with_status: bool = False) -> list[Event]:
    events = []
    for issue in range(ISSUES):
        for i in range(EVENTS_PER_ISSUE):
            # Pairs share a timestamp: the changelog id breaks the tie, as in Jira.
            ts = BASE_TS + issue * 100_000 + (i // 2) * 1000
            kind = rng.choice(KINDS) if with_status else "assignee"
            moved = rng.sample(sorted(CATEGORIES), 2) if kind != "assignee" else None
            events.append(
                Event(1000 + issue, f"SHF-{issue}", ts, issue * 100 + i, rng.choice(CHOICES),
                      assignee_changed=kind != "status",
                      status=(moved[0], moved[1]) if moved else None)
            )  # fmt: skip
    return events


def shuffle_scene() -> dict[str, Any]:
    """Groups 1000.. linked to SHF-0..; inbound assignee and status sync on."""
    data = base_scene()
    data["integrations"][0]["organizations"][0]["sync_status_reverse"] = True
    data["groups"] = [{"id": 1000 + i, "project": PROJECT} for i in range(ISSUES)]
    data["external_issues"] = [
        {"id": 50 + i, "integration": JIRA, "organization": "acme", "key": f"SHF-{i}",
         "groups": [1000 + i]}
        for i in range(ISSUES)
    ]  # fmt: skip
    return data


def event_payload(event: Event) -> dict[str, Any]:
    assignee = GHOST if event.assignee == NOBODY else event.assignee
    payload = jira_payload(assignee, event.ts, event.changelog_id, key=event.key)
    items = payload["changelog"]["items"] if event.assignee_changed else []
    if event.status is not None:
        items = [*items, status_item(*event.status)]
    payload["changelog"]["items"] = items
    return payload


def status_outcomes(res: Resources, delivery_ids: list[int]) -> dict[int, str | None]:
    with transaction(res.pool) as conn:
        rows = conn.execute(
            "SELECT id, status_outcome FROM webhook_delivery WHERE id = ANY(%s)", (delivery_ids,)
        ).fetchall()
    return {r["id"]: r["status_outcome"] for r in rows}


@dataclass
class Oracle:
    """Applies events one at a time, as SPEC 4.3-4.5 say, to users-only assignees."""

    assignee: int | None = None
    subscribed: frozenset[int] = frozenset()
    activity: int = 0

    def apply(self, assignee: int | None) -> str:
        if assignee is None:
            if self.assignee is None:
                return "unchanged"
            self.subscribed -= {self.assignee}
            self.assignee = None
            self.activity += 1
            return "unassigned"
        self.subscribed |= {assignee}
        if self.assignee == assignee:
            return "unchanged"
        if self.assignee is not None:
            self.subscribed -= {self.assignee}
        self.assignee = assignee
        self.activity += 1
        return "assigned"


def test_shuffled_duplicated_events_end_as_the_sequential_oracle(
    res: Resources,
    scene: Callable[[dict[str, Any]], None],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    scene(shuffle_scene())
    # The status categories as Jira would list them, cached: this test needs no Jira.
    cache.fill_status_categories(res.redis, JIRA, CATEGORIES, 3600)
    start_worker(concurrency=2)
    start_worker(concurrency=2)
    events = random_events(rng, with_status=True)
    posted = events + rng.sample(events, len(events) // 4)  # some webhooks arrive twice
    rng.shuffle(posted)
    delivery_of: dict[Event, int] = {}
    for event in posted:
        delivery_id = store(res, event_payload(event))
        if delivery_id is None:
            assert event in delivery_of, "only a second copy is a duplicate"
            enqueue(res, [delivery_of[event]])  # the broker hands it out twice
            continue
        delivery_of[event] = delivery_id
        enqueue(res, [delivery_id])

    results = wait_finished(res, list(delivery_of.values()), timeout_s=60)
    assert {r.status for r in results.values()} == {"done"}, f"seed {seed}"
    assert_matches_oracle(res, events, results, delivery_of, f"seed {seed}")


def assert_matches_oracle(
    res: Resources,
    events: list[Event],
    results: dict[int, Any],
    delivery_of: dict[Event, int],
    note: str = "",
) -> None:
    """Every group ends as applying its events in (timestamp, changelog id) order would leave
    it, events naming nobody left out; every applied outcome is the oracle's."""
    for issue in range(ISSUES):
        group_id = 1000 + issue
        in_order = sorted(
            (e for e in events if e.group_id == group_id), key=lambda e: (e.ts, e.changelog_id)
        )
        assert_status_matches_oracle(res, group_id, in_order, delivery_of, note)
        in_order = [e for e in in_order if e.assignee_changed]
        oracle = Oracle()
        for event in in_order:
            outcome = results[delivery_of[event]].outcome
            if event.assignee == NOBODY:
                assert outcome == "user-not-found", f"{note}, {event}"
                continue
            if outcome == "stale":
                continue
            assert outcome == oracle.apply(event.assignee), f"{note}, {event}"
        state = group_state(res, group_id)
        known = [e for e in in_order if e.assignee != NOBODY]
        expected = known[-1].assignee if known else None
        assert state.assignee == expected == oracle.assignee, note
        assert state.subscriptions == {
            f"user:{u}": int(SubscriptionReason.ASSIGNED) for u in oracle.subscribed
        }, note
        changes = [a for a in state.activity if a[0] in ASSIGNEE_ACTIVITY]
        history = [h for h in state.history if h in (5, 6)]
        assert len(changes) == len(history) == oracle.activity, note


def assert_status_matches_oracle(
    res: Resources, group_id: int, in_order: list[Event], delivery_of: dict[Event, int], note: str
) -> None:
    """The group's status is the target of its newest status move into or out of `done`; each
    applied event's outcome is what applying them in order gives."""
    moves = [e for e in in_order if e.status is not None]
    outcomes = status_outcomes(res, [delivery_of[e] for e in moves])
    status, written = GroupStatus.UNRESOLVED, 0
    for event in moves:
        assert event.status is not None
        target = target_status(CATEGORIES, *event.status)
        outcome = outcomes[delivery_of[event]]
        if target is None:
            assert outcome == "no-resolution-change", f"{note}, {event}"
            continue
        if outcome == "stale":
            continue
        assert outcome == group_outcome(status, target), f"{note}, {event}"
        written += status != target
        status = target
    targets = [target_status(CATEGORIES, *e.status) for e in moves if e.status is not None]
    newest = [t for t in targets if t is not None][-1:] or [GroupStatus.UNRESOLVED]
    assert group_status(res, group_id)[0] == status == newest[0], note
    state = group_state(res, group_id)
    assert len([a for a in state.activity if a[0] in STATUS_ACTIVITY]) == written, note
