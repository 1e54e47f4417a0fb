"""Status sync decisions and status items (SPEC 10): pure, no servers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.test_changelog import payload
from worker.domain.errors import BadPayload
from worker.domain.event import parse_event, read_event
from worker.domain.status import (
    GroupStatus,
    StatusOutcome,
    Transition,
    UnknownStatus,
    choose_transition,
    delivery_status_outcome,
    group_outcome,
    target_status,
)

CATEGORIES = {"1": "new", "3": "indeterminate", "5": "done", "6": "done"}


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("1", "5", GroupStatus.RESOLVED),
        (None, "5", GroupStatus.RESOLVED),
        ("5", "3", GroupStatus.UNRESOLVED),
        ("5", "6", None),  # done -> done
        ("1", "3", None),  # not-done -> not-done
    ],
)
def test_only_moves_into_or_out_of_done_change_groups(
    old: str | None, new: str, expected: GroupStatus | None
) -> None:
    assert target_status(CATEGORIES, old, new) == expected


def test_a_status_missing_from_the_list_is_named() -> None:
    with pytest.raises(UnknownStatus, match="10001"):
        target_status(CATEGORIES, "1", "10001")


def test_a_group_already_there_is_unchanged_and_the_most_telling_outcome_wins() -> None:
    assert group_outcome("resolved", GroupStatus.RESOLVED) is StatusOutcome.UNCHANGED
    assert group_outcome("unresolved", GroupStatus.RESOLVED) is StatusOutcome.RESOLVED
    assert delivery_status_outcome(["stale", "unchanged", "resolved"]) is StatusOutcome.RESOLVED
    assert delivery_status_outcome(["stale"]) is StatusOutcome.STALE
    assert delivery_status_outcome([]) is StatusOutcome.NO_AFFECTED_GROUPS


def test_the_transition_is_chosen_by_its_target_status_id_or_name() -> None:
    listed = [
        Transition("11", {"id": "3", "name": "In Progress"}),
        Transition("21", {"id": "5", "name": "Resolved"}),
    ]
    assert choose_transition(listed, "resolved") == listed[1]
    assert choose_transition(listed, "3") == listed[0]
    assert choose_transition(listed, "Closed") is None


def test_a_status_item_gives_the_event_its_status_ids() -> None:
    event = read_event(payload(items=[{"field": "status", "from": "1", "to": "5"}]))
    assert event is not None
    assert (event.status_changed, event.status_from, event.status_to) == (True, "1", "5")
    assert not event.assignee_changed
    plain = read_event(payload())
    assert plain is not None and not plain.status_changed


@pytest.mark.parametrize("to", [None, 5, "", {"id": "5"}])
def test_a_status_item_without_a_target_id_is_malformed(to: object) -> None:
    with pytest.raises(BadPayload, match=r"changelog.items\[0\].to must be a Jira status id"):
        read_event(payload(items=[{"field": "status", "from": "1", "to": to}]))


def test_real_jira_server_status_bodies_are_read(jira_payloads: Path) -> None:
    body = (jira_payloads / "server_jenkins_status_updated.json").read_text()
    event = parse_event(body)
    assert (event.status_from, event.status_to) == ("10000", "10001")
    resolved = json.loads((jira_payloads / "server_mm_status_resolved_unassigned.json").read_text())
    event = parse_event(json.dumps(resolved))
    assert (event.status_from, event.status_to) == ("3", "5")
