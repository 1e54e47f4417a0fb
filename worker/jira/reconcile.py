"""Reconciliation sweep (SPEC 9, 12): search Jira for the issues of an integration updated
since its watermark and feed each linked issue whose assignee differs from what the service
last knew into the webhook inbox, as a delivery of source `reconcile`. From there the pipeline
treats it as a webhook: ordering, idempotency, outcomes, side effects, failure records.

Windows: from the watermark less the overlap up to Jira's own clock (`serverTime`) less the
settle margin, never ours; narrowed to its first half while a search would match more than
RECONCILE_WINDOW_MAX_RESULTS issues; once a window has been read whole the watermark moves to
its end (unless `--since` started after the watermark: time it did not read stays unread).
Pages are read by key, never by offset: each page starts at the minute of the last issue read
(the finest bound JQL's `updated` tells apart), and issues already read are skipped, so an
issue updated while the window is paged (it leaves the window) moves no other across a page.
A page's deliveries are committed before the next page is read and handed to `publish`; a
crash between pages re-reads the window next time, and its issues are fed at most once (one
dedupe key per issue state). Only linked issues are read further than their key: one that
cannot be used (no `fields.assignee`, say) is recorded alone and the sweep goes on. A state
whose delivery ended stale is fed again, dated at the window's end, when a later sweep still
finds it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from worker.domain.errors import BadPayload, JiraRejected, JiraUnavailable, NotFound
from worker.domain.reconcile import (
    SEARCH_FIELDS,
    SOURCE,
    FoundIssue,
    Window,
    dedupe_key,
    first_window,
    found_key,
    moves_watermark,
    needs_feed,
    next_cursor,
    read_found_issue,
    refeed_key,
    synthetic_body,
)
from worker.jira.api import JiraClient, SearchPage, client_for_integration
from worker.jira.statuses import StatusCategories
from worker.runtime.resources import Resources
from worker.store.db import transaction
from worker.store.queries import deliveries as q_deliveries
from worker.store.queries import reconcile as q

log = logging.getLogger(__name__)

STALE = "stale"

Publish = Callable[[list[int]], None]


@dataclass(frozen=True)
class Fed:
    """A linked issue whose Jira assignee or status differs from the last one known, and its
    delivery (None in a dry run)."""

    issue_key: str
    updated_ms: int
    assignee: str | None
    known: list[str | None]
    delivery_id: int | None
    status: str | None = None
    known_status: list[str | None] = field(default_factory=list)


@dataclass
class Sweep:
    """What one sweep of an integration read and fed."""

    integration_id: int
    start_ms: int
    end_ms: int
    requests: int = 0
    checked: int = 0
    fed: list[Fed] = field(default_factory=list)
    unusable: list[dict[str, str]] = field(default_factory=list)  # {"key", "reason"}


def sweep(
    res: Resources,
    integration_id: int,
    publish: Publish,
    *,
    since_ms: int | None = None,
    dry_run: bool = False,
) -> Sweep:
    """Sweep one integration up to now (a disabled one: nothing to do). Jira down:
    JiraUnavailable; Jira refusing (401, 403, an answer we cannot read): JiraRejected; both
    name the integration, and the watermark stays where the last whole window left it. A dry
    run reads and writes nothing."""
    settings = res.settings
    with transaction(res.pool) as conn:
        found = q.states(conn, integration_id)
    if not found:
        raise NotFound(f"integration {integration_id} does not exist")
    state = found[0]
    if state.integration_status != "active":  # its webhooks are refused: so are its changes
        log.info("reconcile.skipped", extra={"integration_id": integration_id})
        now_ms = int(time.time() * 1000)
        return Sweep(integration_id, now_ms, now_ms)
    name = f"integration {integration_id} ({state.external_id})"
    client = client_for_integration(res, integration_id)
    result = Sweep(integration_id, 0, 0)
    try:
        window = first_window(
            _jira_now_ms(client, result),
            state.watermark_ms,
            since_ms,
            state.interval_s or settings.reconcile_interval_s,
            settings.reconcile_overlap_s,
            settings.reconcile_settle_s,
        )
        result.start_ms = result.end_ms = window.start_ms
        moves = not dry_run and moves_watermark(since_ms, state.watermark_ms)
        statuses = StatusCategories(res)  # read when a status is to be compared
        end_ms = window.end_ms
        while True:
            window = _read_window(res, client, window, result, statuses, dry_run, publish)
            result.end_ms = window.end_ms
            if moves:
                with transaction(res.pool) as conn:
                    q.advance_watermark(conn, integration_id, window.end_ms)
            if window.end_ms >= end_ms:
                break
            window = Window(window.end_ms, end_ms)
    except JiraUnavailable as exc:
        _record(res, result, dry_run, f"Jira unavailable, tried again at the next run: {exc}")
        raise JiraUnavailable(f"{name}: {exc}") from exc
    except JiraRejected as exc:
        _record(res, result, dry_run, f"Jira refused: {exc}")
        raise JiraRejected(f"{name}: {exc}", status=exc.status) from exc
    finally:
        client.close()
    _record(res, result, dry_run, None)
    log.info(
        "reconcile.finished",
        extra={
            "integration_id": integration_id,
            "start_ms": result.start_ms,
            "end_ms": result.end_ms,
            "requests": result.requests,
            "checked": result.checked,
            "fed": len(result.fed),
            "dry_run": dry_run,
        },
    )
    return result


def _record(res: Resources, result: Sweep, dry_run: bool, error: str | None) -> None:
    """What a sweep did, for `reconcile status`; a dry run records nothing."""
    if dry_run:
        return
    with transaction(res.pool) as conn:
        q.record_run(
            conn,
            result.integration_id,
            requests=result.requests,
            checked=result.checked,
            found=len(result.fed),
            error=error,
            unusable=result.unusable,
        )


def _jira_now_ms(client: JiraClient, result: Sweep) -> int:
    """Jira's own clock: windows end by it, whatever ours says."""
    result.requests += 1
    server_time_ms = client.server_info().server_time_ms
    if server_time_ms is None:
        raise JiraRejected("Jira's serverInfo answer has no serverTime")
    return server_time_ms


def _read_window(
    res: Resources,
    client: JiraClient,
    window: Window,
    result: Sweep,
    statuses: StatusCategories,
    dry_run: bool,
    publish: Publish,
) -> Window:
    """Read and feed one window whole, page by page (by key: see the module docstring);
    returns it as narrowed. Cloud pages by token instead (`_read_window_by_token`)."""
    page_size = res.settings.reconcile_page_size
    if client.cloud:
        return _read_window_by_token(res, client, window, result, statuses, dry_run, publish)

    def search(from_ms: int, offset: int) -> SearchPage:
        result.requests += 1
        return client.search(window.jql(from_ms), SEARCH_FIELDS, offset, page_size)

    page = search(window.start_ms, 0)
    while page.total > res.settings.reconcile_window_max_results:
        narrower = window.narrowed()
        if narrower is None:
            break  # as narrow as JQL can tell: page through it all
        log.info(
            "reconcile.window_narrowed",
            extra={"integration_id": result.integration_id, "total": page.total},
        )
        window = narrower
        page = search(window.start_ms, 0)
    seen: set[tuple[str, int]] = set()
    cursor, offset = window.start_ms, 0
    while True:
        updated = _feed_page(res, result, window, page.issues, seen, statuses, dry_run, publish)
        if not page.issues or offset + len(page.issues) >= page.total:
            return window
        if updated:
            cursor, offset = next_cursor(cursor, offset, updated)
        else:  # not one issue of the page says when it was updated: on by offset
            offset += len(page.issues)
        page = search(cursor, offset)


def _read_window_by_token(
    res: Resources,
    client: JiraClient,
    window: Window,
    result: Sweep,
    statuses: StatusCategories,
    dry_run: bool,
    publish: Publish,
) -> Window:
    """Cloud (`/rest/api/3/search/jql`): one search over the window, paged by the token each
    page hands on until a page comes without one (a page shorter than asked ends nothing).
    Jira keeps the result set behind the token, so an issue edited meanwhile moves no other
    across a page; one seen twice is fed once. No total is given: a window is never
    narrowed (token paging has no depth limit to stay under)."""
    page_size = res.settings.reconcile_page_size
    seen: set[tuple[str, int]] = set()
    token: str | None = None
    while True:
        result.requests += 1
        page = client.search_by_token(window.jql(window.start_ms), SEARCH_FIELDS, token, page_size)
        _feed_page(res, result, window, page.issues, seen, statuses, dry_run, publish)
        if page.next_token is None:
            return window
        token = page.next_token


def _feed_page(
    res: Resources,
    result: Sweep,
    window: Window,
    raw_issues: list[Any],
    seen: set[tuple[str, int]],
    statuses: StatusCategories,
    dry_run: bool,
    publish: Publish,
) -> list[int]:
    """Compare a page's linked issues with what was last known; store a delivery for each
    that differs, in one transaction, then hand the new ones to `publish`. Returns the
    `updated` of the page's issues in order (what the next page's key is taken from); an
    issue without a readable `updated` is left out of it."""
    keys = sorted({k for raw in raw_issues if (k := found_key(raw)) is not None})
    integration_id = result.integration_id
    with transaction(res.pool) as conn:
        known = q.linked_issues(conn, integration_id, keys) if keys else {}
    updated, fresh = [], []
    for raw in raw_issues:
        key = found_key(raw)
        try:
            issue = read_found_issue(raw)
        except BadPayload as exc:
            if key in known:  # only a linked issue matters, and it is recorded alone
                result.unusable.append({"key": key, "reason": str(exc)})
                log.warning(
                    "reconcile.unusable_issue",
                    extra={"integration_id": integration_id, "issue_key": key},
                )
            continue
        updated.append(issue.updated_ms)
        if (issue.key, issue.updated_ms) not in seen:
            seen.add((issue.key, issue.updated_ms))
            if issue.key in known:
                fresh.append(issue)
    if not fresh:
        return updated
    wanted = {i.status_id for i in fresh if i.status_id is not None and known[i.key].status}
    categories = statuses.of(integration_id, wanted) if wanted else {}
    to_feed = [i for i in fresh if needs_feed(i, known[i.key], categories)]
    with transaction(res.pool) as conn:
        earlier = q.fed_outcomes(conn, integration_id, [dedupe_key(i) for i in to_feed])
        # Fed before and ended stale, yet Jira still holds it: fed again as of this window.
        again = {i.key for i in to_feed if earlier.get(dedupe_key(i)) == STALE}
        deliveries = [
            _delivery(
                integration_id,
                i,
                synthetic_body(
                    i, known[i.key], categories, window.end_ms if i.key in again else None
                ),
                i.key in again,
            )
            for i in to_feed
        ]
        if dry_run:
            ids: list[int | None] = [None] * len(to_feed)
        else:
            ids = q_deliveries.insert_deliveries(conn, deliveries)
    result.checked += len(fresh)
    for issue, delivery_id in zip(to_feed, ids, strict=True):
        if dry_run or delivery_id is not None:  # None when fed before (a re-read window)
            result.fed.append(
                Fed(
                    issue.key,
                    issue.updated_ms,
                    issue.mark,
                    known[issue.key].assignee,
                    delivery_id,
                    issue.status_id,
                    known[issue.key].status,
                )
            )
    stored = [d for d in ids if d is not None]
    if stored:
        log.info("reconcile.fed", extra={"integration_id": integration_id, "count": len(stored)})
        publish(stored)
    return updated


def _delivery(
    integration_id: int, issue: FoundIssue, body: dict[str, Any], again: bool
) -> q_deliveries.NewDelivery:
    """The delivery feeding an issue's state; `again`: fed again, dated at a window's end."""
    as_of_ms = int(body["timestamp"])
    return q_deliveries.NewDelivery(
        integration_id=integration_id,
        dedupe_key=refeed_key(issue, as_of_ms) if again else dedupe_key(issue),
        body=json.dumps(body),
        headers={},
        issue_key=issue.key,
        event_ts=int(body["timestamp"]),
        source=SOURCE,
    )
