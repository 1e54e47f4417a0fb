"""Changelog detection and payload reading (SPEC 4.1): pure, no servers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from worker.domain.assignment import Action, Outcome, decide_change
from worker.domain.errors import BadPayload
from worker.domain.event import parse_event, read_event


def payload(
    assignee: dict[str, Any] | None = None,
    items: list[Any] | None = None,
    timestamp: Any = 1_764_410_000_000,
    changelog_id: Any = "10200",
) -> dict[str, Any]:
    """A Jira Server `jira:issue_updated` body."""
    if items is None:
        items = [
            {
                "field": "assignee",
                "fieldtype": "jira",
                "from": None,
                "fromString": None,
                "to": "ann",
                "toString": "Ann",
            }
        ]
    return {
        "timestamp": timestamp,
        "webhookEvent": "jira:issue_updated",
        "issue_event_type_name": "issue_assigned",
        "user": {"name": "admin"},
        "issue": {"id": "10001", "key": "APP-1", "fields": {"summary": "x", "assignee": assignee}},
        "changelog": {"id": changelog_id, "items": items},
    }


ANN = {"name": "ann", "emailAddress": "Ann@Acme.test", "displayName": "Ann"}


def decide(body: dict[str, Any]) -> Any:
    return decide_change(parse_event(json.dumps(body)))


def test_assignee_item_with_assignee_asks_to_assign_that_email() -> None:
    change = decide(payload(assignee=ANN))
    assert change.action is Action.ASSIGN
    assert change.email == "Ann@Acme.test"


def test_assignee_item_with_null_assignee_asks_to_deassign() -> None:
    change = decide(payload(assignee=None))
    assert change.action is Action.DEASSIGN
    assert change.outcome is None


def test_changelog_without_assignee_item_is_no_assignee_change() -> None:
    items = [{"field": "status", "fieldtype": "jira", "from": "1", "to": "3"}]
    assert decide(payload(assignee=ANN, items=items)).outcome is Outcome.NO_ASSIGNEE_CHANGE


@pytest.mark.parametrize("changelog", [None, [], {}, {"items": []}, {"id": "5"}])
def test_missing_or_empty_changelog_is_no_event(changelog: Any) -> None:
    body = payload(assignee=ANN)
    body["changelog"] = changelog
    assert read_event(body) is None
    del body["changelog"]
    assert read_event(body) is None


@pytest.mark.parametrize(
    ("mutate", "named"),
    [
        (lambda b: b["issue"]["fields"].pop("assignee"), "issue.fields.assignee"),
        (lambda b: b["issue"].pop("fields"), "issue.fields"),
        (lambda b: b["issue"].update(fields=[]), "issue.fields"),
    ],
)
def test_assignee_item_without_assignee_key_is_malformed_not_an_unassignment(
    mutate: Any, named: str
) -> None:
    body = payload(assignee=None)
    mutate(body)
    with pytest.raises(BadPayload, match=named.replace(".", r"\.")):
        read_event(body)


def test_other_changes_need_no_assignee_key() -> None:
    body = payload(items=[{"field": "status", "from": "1", "to": "3"}])
    del body["issue"]["fields"]
    event = read_event(body)
    assert event is not None and not event.assignee_changed


@pytest.mark.parametrize(
    ("mutate", "named"),
    [
        (lambda b: b.pop("timestamp"), "timestamp"),
        (lambda b: b.update(timestamp="6/13/2019, 12:51:58 PM,687"), "timestamp"),
        (lambda b: b.update(timestamp=1.5), "timestamp"),
        (lambda b: b.update(timestamp=True), "timestamp"),
        (lambda b: b["issue"].pop("key"), "issue.key"),
        (lambda b: b.pop("issue"), "issue"),
        (lambda b: b["changelog"].update(id="ten"), "changelog.id"),
        (lambda b: b["changelog"].update(id=None), "changelog.id"),
        (lambda b: b["changelog"].update(items=[1]), "changelog.items[0]"),
        (lambda b: b["changelog"].update(items={"field": "assignee"}), "changelog.items"),
        (lambda b: b.update(changelog=[{"field": "assignee"}]), "changelog"),
    ],
)
def test_each_field_the_pipeline_needs_is_named_when_bad(mutate: Any, named: str) -> None:
    body = payload(assignee=ANN)
    mutate(body)
    with pytest.raises(BadPayload, match=named.replace(".", r"\.").replace("[", r"\[")):
        read_event(body)


def test_assignee_without_email_is_looked_up_by_identity() -> None:
    hidden = {"name": "ann", "displayName": "Ann"}
    change = decide(payload(assignee=hidden))
    assert (change.action, change.identity, change.email) == (Action.ASSIGN, "ann", None)


@pytest.mark.parametrize(
    ("user", "identity"),
    [
        ({"accountId": "5b91", "key": "ann", "name": "ann.a"}, "5b91"),
        ({"key": "JIRAUSER10100", "name": "ann.a"}, "JIRAUSER10100"),
        ({"name": "ann.a", "key": " "}, "ann.a"),
    ],
    ids=["cloud-account-id", "server-user-key", "username-of-old-bodies"],
)
def test_the_identity_is_the_account_id_else_the_key_else_the_name(
    user: dict[str, str], identity: str
) -> None:
    event = read_event(payload(assignee={**user, "emailAddress": "a@acme.test"}))
    assert event is not None and event.assignee_identity == identity


def test_an_assignee_naming_neither_identity_nor_email_is_missing_assignee_email() -> None:
    blank = {"displayName": "Ann", "emailAddress": "  "}
    assert decide(payload(assignee=blank)).outcome is Outcome.MISSING_ASSIGNEE_EMAIL


def test_an_identity_that_is_not_a_string_is_bad_input() -> None:
    with pytest.raises(BadPayload, match=r"issue\.fields\.assignee\.accountId"):
        read_event(payload(assignee={"accountId": 5, "displayName": "Ann"}))


def test_snapshot_decides_not_the_changelog_values() -> None:
    # The changelog says "to bob" but the issue's current assignee is Ann: Ann wins.
    items = [{"field": "assignee", "fieldtype": "jira", "from": None, "to": "bob"}]
    assert decide(payload(assignee=ANN, items=items)).email == "Ann@Acme.test"


def test_event_order_reads_timestamp_and_string_changelog_id() -> None:
    event = parse_event(json.dumps(payload(assignee=ANN, timestamp=5, changelog_id="42")))
    assert event.order == (5, 42)
    assert event.issue_key == "APP-1"


@pytest.mark.parametrize(
    "items",
    [
        "not-a-list",
        [42],
        [{"fieldtype": "jira"}],
        [{"field": 7}],
    ],
)
def test_malformed_changelog_items_are_bad_payload(items: Any) -> None:
    with pytest.raises(BadPayload):
        parse_event(json.dumps(payload(assignee=ANN, items=items)))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b.pop("timestamp"),
        lambda b: b.update(timestamp="soon"),
        lambda b: b["issue"].pop("key"),
        lambda b: b["issue"]["fields"].update(assignee="ann"),
        lambda b: b.update(changelog=[]),
    ],
)
def test_body_without_needed_shape_is_bad_payload(mutate: Any) -> None:
    body = payload(assignee=ANN)
    mutate(body)
    with pytest.raises(BadPayload):
        parse_event(json.dumps(body))


def test_body_that_is_not_json_is_bad_payload() -> None:
    with pytest.raises(BadPayload):
        parse_event("{not json")
