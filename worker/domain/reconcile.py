"""Pure decisions of reconciliation (SPEC 9): the window a sweep reads and its JQL, how an
issue's Jira assignee is remembered, whether an issue Jira reports must be fed into the
pipeline, and the synthetic delivery that feeds it.

A fed issue becomes a delivery like a webhook's: a `jira:issue_updated` body whose changelog
changes the assignee and whose `issue.fields.assignee` is the one Jira reports now. It carries
Jira's state as of the issue's `updated`, after every change made up to that instant: its
timestamp is `updated` and its changelog id the largest there is, so it sorts after every
event of that millisecond or before (those end `stale` if they arrive later) and before any
later one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from worker.domain.errors import BadPayload
from worker.domain.event import BIGINT_MAX, identity_of
from worker.domain.status import DONE_CATEGORY

# How an unassigned issue is remembered (external_issue.jira_assignee); NULL is "never known".
UNASSIGNED = ""
SOURCE = "reconcile"
# What the sweep asks Jira for: what the pipeline reads of an event's issue.
SEARCH_FIELDS = ("assignee", "updated", "status")
# The shortest interval between two sweeps of one integration.
MIN_INTERVAL_S = 10
# JQL compares `updated` to the minute: a narrower window would not narrow the search.
MIN_WINDOW_MS = 60_000
JIRA_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f%z"


@dataclass(frozen=True)
class Window:
    """Issues whose Jira `updated` lies in [start_ms, end_ms] (epoch milliseconds)."""

    start_ms: int
    end_ms: int

    def jql(self, from_ms: int | None = None) -> str:
        """The window's issues from `from_ms` on (a page's key: see `next_cursor`), in
        `updated` order. Epoch-millisecond values, so the Jira user's time zone does not
        matter."""
        start = self.start_ms if from_ms is None else max(self.start_ms, from_ms)
        return f"updated >= {start} AND updated <= {self.end_ms} ORDER BY updated ASC, key ASC"

    def narrowed(self) -> Window | None:
        """The first half of this window, or None when it is as narrow as JQL can tell."""
        if self.end_ms - self.start_ms < 2 * MIN_WINDOW_MS:
            return None
        return Window(self.start_ms, self.start_ms + (self.end_ms - self.start_ms) // 2)


def first_window(
    jira_now_ms: int,
    watermark_ms: int | None,
    since_ms: int | None,
    interval_s: int,
    overlap_s: int,
    settle_s: int,
) -> Window:
    """Up to Jira's own clock less the settle margin (a change Jira has not indexed yet, or a
    Jira clock behind ours, is read by a later sweep, never skipped). From `since` when given;
    else from the watermark less the overlap (JQL is minute-grained and Jira commits late); a
    first sweep reads one interval back."""
    end = jira_now_ms - settle_s * 1000
    if since_ms is not None:
        start = since_ms
    elif watermark_ms is None:
        start = end - (interval_s + overlap_s) * 1000
    else:
        start = watermark_ms - overlap_s * 1000
    return Window(min(start, end), end)


def moves_watermark(since_ms: int | None, watermark_ms: int | None) -> bool:
    """Whether a sweep's windows may move the watermark: not when `--since` started it after
    the watermark, which would pass over the unread time between them."""
    return since_ms is None or watermark_ms is None or since_ms <= watermark_ms


def minute_of(ms: int) -> int:
    """The start of the minute `ms` lies in: the finest bound JQL's `updated` tells apart."""
    return ms - ms % MIN_WINDOW_MS


def next_cursor(cursor_ms: int, offset: int, page_updated_ms: list[int]) -> tuple[int, int]:
    """Where the next page starts after a page whose issues (in `updated` order) were
    updated at these times: from the minute of its last issue, re-reading that minute's issues
    (the sweep skips those it has seen), so an issue that leaves the window meanwhile moves no
    other across a page boundary. A page wholly within the cursor's minute (a minute holding
    more than a page) goes on by offset within that minute."""
    last_minute = minute_of(page_updated_ms[-1])
    if last_minute > cursor_ms:
        return last_minute, 0
    return cursor_ms, offset + len(page_updated_ms)


# How an assignee whose e-mail Jira hides is remembered: by its identity (SPEC 14).
IDENTITY_MARK = "jira-user:"


def assignee_mark(present: bool, email: str | None, identity: str | None = None) -> str | None:
    """How an issue's Jira assignee is remembered: its email in lower case, else its identity
    on that Jira (IDENTITY_MARK + account id, user key or username), UNASSIGNED for nobody;
    None when Jira shows neither (nothing the pipeline could apply)."""
    if not present:
        return UNASSIGNED
    cleaned = (email or "").strip().casefold()
    if cleaned:
        return cleaned
    return IDENTITY_MARK + identity if identity else None


@dataclass(frozen=True)
class FoundIssue:
    """An issue as Jira's search reports it now (status_id None: not reported)."""

    id: str
    key: str
    updated_ms: int
    assignee: dict[str, Any] | None
    status_id: str | None = None

    @property
    def mark(self) -> str | None:
        if self.assignee is None:
            return assignee_mark(False, None)
        shown = {k: v for k, v in self.assignee.items() if isinstance(v, str) and v.strip()}
        return assignee_mark(True, shown.get("emailAddress"), identity_of(shown))


def found_key(raw: Any) -> str | None:
    """An issue of a search answer's key, read before anything else (None: it has none)."""
    key = raw.get("key") if isinstance(raw, dict) else None
    return key if isinstance(key, str) and key else None


def read_found_issue(raw: Any) -> FoundIssue:
    """One issue of a search answer; BadPayload names what it lacks."""
    if not isinstance(raw, dict) or not isinstance(raw.get("key"), str) or not raw["key"]:
        raise BadPayload("an issue of the search answer has no key")
    fields = raw.get("fields")
    if not isinstance(fields, dict) or "assignee" not in fields:
        raise BadPayload(f"{raw['key']}: the search answer has no fields.assignee")
    assignee = fields["assignee"]
    if assignee is not None and not isinstance(assignee, dict):
        raise BadPayload(f"{raw['key']}: fields.assignee must be null or an object")
    status = fields.get("status")
    status_id = status.get("id") if isinstance(status, dict) else None
    return FoundIssue(
        id=str(raw.get("id", "")),
        key=raw["key"],
        updated_ms=parse_jira_time(fields.get("updated"), raw["key"]),
        assignee=assignee,
        status_id=str(status_id) if status_id is not None else None,
    )


def parse_jira_time(value: Any, key: str) -> int:
    """Jira's `2026-11-30T20:41:16.123+0000` as epoch milliseconds."""
    try:
        instant = datetime.strptime(str(value), JIRA_TIME_FORMAT)
    except ValueError:
        raise BadPayload(f"{key}: fields.updated is not a Jira time: {value!r}") from None
    return int(instant.timestamp() * 1000)


@dataclass(frozen=True)
class Known:
    """What the service last knew of an issue's linked rows: the Jira assignee of those in
    organizations with inbound assignee sync on, the Jira status id of those with inbound
    status sync on (None: never known; an empty list: that sync is off for all)."""

    assignee: list[str | None]
    status: list[str | None]


def assignee_differs(issue: FoundIssue, known: Known) -> bool:
    """Whether Jira's assignee differs from what the service last knew for any of the
    issue's linked rows (never known counts as different). An assignee Jira shows neither an
    e-mail nor an identity of is never fed: the pipeline could only record that it cannot
    act."""
    current = issue.mark
    return current is not None and any(mark != current for mark in known.assignee)


def _done(status_id: str | None, categories: Mapping[str, str]) -> bool:
    return status_id is not None and categories.get(status_id) == DONE_CATEGORY


def status_differs(issue: FoundIssue, known: Known, categories: Mapping[str, str]) -> bool:
    """Whether Jira's status is done while the one last known for any of the issue's rows
    with status sync on (what its groups reflect: the last status that resolved or
    unresolved them) is not, or the reverse; never known counts as not done, and a status
    missing from the instance's list as differing (the pipeline reads the list again)."""
    current = issue.status_id
    if current is None or not known.status:
        return False
    if current not in categories:
        return True
    done_now = _done(current, categories)
    return any(_done(status, categories) != done_now for status in known.status)


def needs_feed(issue: FoundIssue, known: Known, categories: Mapping[str, str]) -> bool:
    """Whether the issue's assignee or status must be fed into the pipeline."""
    return assignee_differs(issue, known) or status_differs(issue, known, categories)


def dedupe_key(issue: FoundIssue) -> str:
    """One delivery per issue state: a re-read window (overlap, crash) feeds nothing twice."""
    return f"{SOURCE}:{issue.key}:{issue.updated_ms}"


def refeed_key(issue: FoundIssue, as_of_ms: int) -> str:
    """The delivery that feeds an issue state again, as of a later sweep's window end."""
    return f"{dedupe_key(issue)}:as-of:{as_of_ms}"


def synthetic_body(
    issue: FoundIssue,
    known: Known,
    categories: Mapping[str, str],
    as_of_ms: int | None = None,
) -> dict[str, Any]:
    """The delivery that feeds an issue's current assignee and status, whichever differs from
    what was last known, into the pipeline: dated at its `updated`, or, fed again because
    that delivery ended stale, at `as_of_ms` (the end of the window that still found Jira so:
    Jira held that state then, whatever a skewed clock wrote in `updated`). A status moves
    from the one last known that differs (None: never known, read as not done)."""
    items = []
    if assignee_differs(issue, known):
        name = issue.assignee.get("name") if issue.assignee else None
        items.append({"field": "assignee", "fieldtype": "jira", "from": None, "to": name})
    if status_differs(issue, known, categories):
        done_now = _done(issue.status_id, categories)
        was = next((s for s in known.status if _done(s, categories) != done_now), None)
        items.append({"field": "status", "fieldtype": "jira", "from": was, "to": issue.status_id})
    return {
        "timestamp": issue.updated_ms if as_of_ms is None else as_of_ms,
        "webhookEvent": "jira:issue_updated",
        "source": SOURCE,
        "issue": {"id": issue.id, "key": issue.key, "fields": {"assignee": issue.assignee}},
        "changelog": {"id": BIGINT_MAX, "items": items},
    }
