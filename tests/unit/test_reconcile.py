"""Reconciliation's pure decisions: the window and its JQL, how an assignee is remembered,
when an issue is fed, and the synthetic delivery that the pipeline reads like a webhook."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from worker.domain.errors import BadPayload
from worker.domain.event import parse_event
from worker.domain.reconcile import (
    MIN_WINDOW_MS,
    UNASSIGNED,
    FoundIssue,
    Known,
    Window,
    assignee_mark,
    dedupe_key,
    first_window,
    moves_watermark,
    needs_feed,
    next_cursor,
    read_found_issue,
    synthetic_body,
)

NOW = 1_790_000_000_000
ANN = {"name": "ann", "emailAddress": " Ann@Acme.test ", "displayName": "Ann A."}


def issue(assignee: dict[str, str] | None = ANN, updated_ms: int = NOW - 5_000) -> FoundIssue:
    return FoundIssue("10001", "APP-1", updated_ms, assignee)


SETTLED = NOW - 60_000  # Jira's clock less a settle margin of 60 s


def test_a_first_sweep_reads_one_interval_and_the_overlap_back() -> None:
    assert first_window(NOW, None, None, 300, 180, 60) == Window(SETTLED - 480_000, SETTLED)


def test_a_later_sweep_rereads_the_overlap_behind_the_watermark() -> None:
    watermark = SETTLED - 60_000
    assert first_window(NOW, watermark, None, 300, 180, 60) == Window(watermark - 180_000, SETTLED)


def test_a_window_ends_at_jiras_clock_less_the_settle_margin() -> None:
    jira_behind = NOW - 300_000  # Jira's clock five minutes behind ours
    assert first_window(jira_behind, None, None, 300, 180, 120).end_ms == jira_behind - 120_000


def test_since_replaces_the_watermark_and_the_overlap() -> None:
    assert first_window(NOW, NOW - 60_000, NOW - 86_400_000, 300, 180, 60).start_ms == (
        NOW - 86_400_000
    )


def test_since_after_the_watermark_never_moves_it() -> None:
    assert not moves_watermark(since_ms=NOW - 600_000, watermark_ms=NOW - 3_600_000)
    assert moves_watermark(since_ms=NOW - 7_200_000, watermark_ms=NOW - 3_600_000)
    assert moves_watermark(since_ms=None, watermark_ms=NOW - 3_600_000)
    assert moves_watermark(since_ms=NOW - 600_000, watermark_ms=None)


def test_the_next_page_starts_at_the_minute_of_the_last_issue_read() -> None:
    minute = 60_000 * 29_000_000
    assert next_cursor(minute - 5, 0, [minute - 1, minute + 2_000, minute + 59_999]) == (
        minute,
        0,
    )
    # A page wholly within the cursor's minute: on by offset within that minute.
    assert next_cursor(minute, 40, [minute + 1, minute + 2]) == (minute, 42)


def test_the_jql_uses_epoch_milliseconds_and_orders_by_updated() -> None:
    assert Window(1000, 2000).jql() == (
        "updated >= 1000 AND updated <= 2000 ORDER BY updated ASC, key ASC"
    )


def test_a_window_narrows_to_its_first_half_until_a_minute_apart() -> None:
    wide = Window(0, 8 * MIN_WINDOW_MS)
    assert wide.narrowed() == Window(0, 4 * MIN_WINDOW_MS)
    assert Window(0, MIN_WINDOW_MS + 1).narrowed() is None


def test_an_assignee_is_remembered_by_its_email_in_lower_case() -> None:
    assert assignee_mark(True, " Ann@Acme.test ") == "ann@acme.test"
    assert assignee_mark(False, None) == UNASSIGNED
    assert assignee_mark(True, None) is None  # Jira hides the email


def test_jira_time_is_read_as_epoch_milliseconds() -> None:
    found = read_found_issue(
        {"id": "1", "key": "APP-1", "fields": {"assignee": None,
                                                 "updated": "2026-11-30T21:00:00.250+0100"}}
    )  # fmt: skip
    assert found.updated_ms == 1_796_068_800_250


@pytest.mark.parametrize(
    ("raw", "names"),
    [
        ({"fields": {}}, "no key"),
        ({"key": "APP-1", "fields": {"updated": "2026-11-30T21:00:00.000+0000"}}, "assignee"),
        ({"key": "APP-1", "fields": {"assignee": None, "updated": "yesterday"}}, "updated"),
        ({"key": "APP-1", "fields": {"assignee": "ann", "updated": "x"}}, "null or an object"),
    ],
)
def test_an_unusable_search_issue_names_what_it_lacks(raw: dict[str, object], names: str) -> None:
    with pytest.raises(BadPayload, match=names):
        read_found_issue(raw)


def assignees(*marks: str | None) -> Known:
    return Known(list(marks), [])


CATEGORIES = {"1": "new", "3": "indeterminate", "5": "done", "6": "done"}


def test_an_issue_is_fed_when_any_linked_row_knew_another_assignee() -> None:
    assert needs_feed(issue(), assignees("ann@acme.test", "bob@acme.test"), CATEGORIES)
    assert needs_feed(issue(None), assignees("ann@acme.test"), CATEGORIES)
    assert needs_feed(issue(), assignees(None), CATEGORIES)  # never known


def test_an_issue_already_known_as_it_is_is_not_fed() -> None:
    assert not needs_feed(issue(), assignees("ann@acme.test"), CATEGORIES)
    assert not needs_feed(issue(None), assignees(UNASSIGNED), CATEGORIES)


def test_an_assignee_whose_email_jira_hides_is_known_by_identity() -> None:
    hidden = issue({"accountId": "5b912e21", "displayName": "Ann"})
    assert hidden.mark == "jira-user:5b912e21"
    assert needs_feed(hidden, assignees("bob@acme.test"), CATEGORIES)
    assert not needs_feed(hidden, assignees("jira-user:5b912e21"), CATEGORIES)


def test_an_assignee_jira_shows_nothing_of_is_not_fed() -> None:
    faceless = issue({"displayName": "Ann"})
    assert not needs_feed(faceless, assignees("bob@acme.test"), CATEGORIES)


def test_the_synthetic_body_is_an_assignee_event_at_the_updated_time() -> None:
    event = parse_event(json.dumps(synthetic_body(issue(), assignees(None), CATEGORIES)))
    assert event.order[0] == NOW - 5_000
    assert event.assignee_changed and event.assignee_email == "Ann@Acme.test"
    assert event.status_to is None
    body = synthetic_body(issue(None), assignees("a@acme.test"), CATEGORIES)
    unassigned = parse_event(json.dumps(body))
    assert unassigned.assignee_changed and not unassigned.assignee_present


def test_a_status_whose_doneness_differs_is_fed_from_the_one_last_known() -> None:
    done = replace(issue(), status_id="5")
    known = Known(["ann@acme.test"], ["6", "3"])  # two linked rows, one knew In Progress
    assert needs_feed(done, known, CATEGORIES)
    event = parse_event(json.dumps(synthetic_body(done, known, CATEGORIES)))
    assert (event.status_from, event.status_to) == ("3", "5")
    assert not event.assignee_changed  # the assignee was known as it is
    assert not needs_feed(done, Known(["ann@acme.test"], ["6"]), CATEGORIES)  # done either way
    assert not needs_feed(done, Known(["ann@acme.test"], []), CATEGORIES)  # status sync off
    assert not needs_feed(issue(), Known(["ann@acme.test"], ["5"]), CATEGORIES)  # not reported
    in_progress = replace(issue(), status_id="3")
    assert not needs_feed(in_progress, Known(["ann@acme.test"], [None]), CATEGORIES)
    assert needs_feed(replace(issue(), status_id="99"), Known(["ann@acme.test"], ["1"]), CATEGORIES)


def test_the_synthetic_event_sorts_after_every_event_of_its_instant_and_before_later_ones() -> None:
    order = parse_event(json.dumps(synthetic_body(issue(), assignees(None), CATEGORIES))).order
    assert (NOW - 5_000, 10**17) < order < (NOW - 4_999, 0)


def test_one_dedupe_key_per_issue_state() -> None:
    assert dedupe_key(issue()) == dedupe_key(issue(None))
    assert dedupe_key(issue()) != dedupe_key(issue(updated_ms=NOW))
