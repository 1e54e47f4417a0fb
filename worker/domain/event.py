"""Reading a Jira "issue updated" event (SPEC 4, amended by SPEC 8), pure: the one reader of
the fields the pipeline needs. The receiver calls it before it answers 202, so that a stored
delivery can always be processed; the steps call it again on the stored body.

A body with no changelog (or `[]`, `{}`, `{"items": []}`) is no event: nothing to do. Every
other body must carry what the steps will read, or it is a BadPayload naming the field:
an integer `timestamp`, `issue.key`, `changelog.items` as a list of objects with a string
`field`, `changelog.id` (when present) as an integer or a string of digits, and, when an item
changes the `assignee`, an `issue.fields` object with an `assignee` key (null or an object).
A missing assignee key is malformed input, never an unassignment; the assignee's
`accountId`, `key`, `name`, `emailAddress` and `displayName` are strings when present. An
item changing the `status` carries Jira status ids: `to` a string, `from` a string or null
(SPEC 10).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from worker.domain.errors import BadPayload

MAX_ISSUE_KEY_CHARS = 255
BIGINT_MAX = (1 << 63) - 1


@dataclass(frozen=True)
class IssueEvent:
    """The fields of a Jira `jira:issue_updated` payload the pipeline reads."""

    event_ts: int
    changelog_id: int
    issue_key: str
    assignee_changed: bool
    assignee_present: bool
    assignee_email: str | None
    # Who the assignee is on that Jira (SPEC 14): Cloud's accountId, else Server's user key,
    # else the username of old bodies; its username (Server) and display name when shown.
    assignee_identity: str | None = None
    assignee_name: str | None = None
    assignee_display_name: str | None = None
    # The last `status` item's Jira status ids (status_to None: no status change).
    status_from: str | None = None
    status_to: str | None = None

    @property
    def status_changed(self) -> bool:
        return self.status_to is not None

    @property
    def order(self) -> tuple[int, int]:
        """Events for one issue are applied in (Jira timestamp, changelog id) order."""
        return (self.event_ts, self.changelog_id)


def read_event(payload: Mapping[str, Any]) -> IssueEvent | None:
    """The event a decoded body carries; None when it has no (or an empty) changelog."""
    items = _changelog_items(payload.get("changelog"))
    if not items:
        return None
    assignee_changed = False
    status: tuple[str | None, str] | None = None
    for index, item in enumerate(items):
        field = _object(item, f"changelog.items[{index}]").get("field")
        if not isinstance(field, str):
            raise BadPayload(f"changelog.items[{index}].field must be a string")
        assignee_changed = assignee_changed or field == "assignee"
        if field == "status":
            status = _status_ids(item, f"changelog.items[{index}]")
    issue = payload.get("issue")
    if not isinstance(issue, dict):
        raise BadPayload("issue.key is missing (no issue object)")
    key = _issue_key(issue.get("key"))
    assignee = _assignee(issue) if assignee_changed else None
    shown = _user_fields(assignee, "issue.fields.assignee") if assignee else {}
    email = shown.get("emailAddress")
    return IssueEvent(
        event_ts=_timestamp(payload.get("timestamp")),
        changelog_id=_changelog_id(payload["changelog"].get("id", 0)),
        issue_key=key,
        assignee_changed=assignee_changed,
        assignee_present=assignee is not None,
        assignee_email=email,
        assignee_identity=identity_of(shown),
        assignee_name=shown.get("name"),
        assignee_display_name=shown.get("displayName"),
        status_from=status[0] if status else None,
        status_to=status[1] if status else None,
    )


def parse_event(body: str) -> IssueEvent:
    """Read a stored webhook body; a body without the needed shape is a BadPayload."""
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise BadPayload(f"body is not JSON: {exc}") from None
    event = read_event(_object(payload, "body"))
    if event is None:
        raise BadPayload("body has no changelog items")
    return event


USER_FIELDS = ("accountId", "key", "name", "emailAddress", "displayName")
MAX_IDENTITY_CHARS = 255


def _user_fields(user: Mapping[str, Any], path: str) -> dict[str, str]:
    """A Jira user object's fields we read, stripped; absent, null or blank ones left out."""
    shown: dict[str, str] = {}
    for name in USER_FIELDS:
        value = user.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise BadPayload(f"{path}.{name} must be a string or null")
        if value.strip():
            shown[name] = value.strip()
    for name in ("accountId", "key", "name"):
        if len(shown.get(name, "")) > MAX_IDENTITY_CHARS:
            raise BadPayload(f"{path}.{name} is longer than {MAX_IDENTITY_CHARS} characters")
    return shown


def identity_of(user: Mapping[str, str]) -> str | None:
    """A Jira user's identity on its instance (SPEC 14): the Cloud account id, else the
    Server/Data Center user key, else the username (bodies from before user keys)."""
    return user.get("accountId") or user.get("key") or user.get("name")


def _changelog_items(changelog: Any) -> list[Any]:
    if changelog is None or changelog == []:
        return []
    items = _object(changelog, "changelog").get("items")
    if items is None:
        return []
    if not isinstance(items, list):
        raise BadPayload("changelog.items must be a list")
    return items


def _assignee(issue: Mapping[str, Any]) -> dict[str, Any] | None:
    fields = issue.get("fields")
    if not isinstance(fields, dict):
        raise BadPayload("issue.fields must be an object when the changelog changes the assignee")
    if "assignee" not in fields:
        raise BadPayload("issue.fields.assignee is missing (null unassigns; absent is malformed)")
    assignee = fields["assignee"]
    if assignee is not None and not isinstance(assignee, dict):
        raise BadPayload("issue.fields.assignee must be null or an object")
    return assignee


def _status_ids(item: Mapping[str, Any], path: str) -> tuple[str | None, str]:
    """A status item's (from, to) Jira status ids."""
    old, new = item.get("from"), item.get("to")
    if not isinstance(new, str) or not new.strip():
        raise BadPayload(f"{path}.to must be a Jira status id")
    if old is not None and not isinstance(old, str):
        raise BadPayload(f"{path}.from must be a Jira status id or null")
    return (old or "").strip() or None, new.strip()


def _issue_key(key: Any) -> str:
    if not isinstance(key, str) or not key:
        raise BadPayload("issue.key is missing")
    if len(key) > MAX_ISSUE_KEY_CHARS or not key.isprintable():
        raise BadPayload("issue.key is not a valid issue key")
    return key


def _timestamp(ts: Any) -> int:
    if isinstance(ts, bool) or not isinstance(ts, int) or not 0 <= ts <= BIGINT_MAX:
        raise BadPayload("timestamp must be an integer (epoch milliseconds)")
    return ts


def _changelog_id(value: Any) -> int:
    # Jira Server sends changelog.id as a string of digits.
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= BIGINT_MAX:
        raise BadPayload("changelog.id must be an integer or a string of digits")
    return value


def _object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadPayload(f"{path} must be an object")
    return value
