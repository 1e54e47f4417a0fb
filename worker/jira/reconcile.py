"""Reconciliation sweep (SPEC 9): search Jira for the issues of an integration updated since
its watermark and feed each linked issue whose assignee differs from what the service last
knew into the webhook inbox, as a delivery of source `reconcile`. From there the pipeline
treats it as a webhook: ordering, idempotency, outcomes, side effects, failure records.

Windows: from the watermark less the overlap up to now, narrowed to its first half while a
search would match more than RECONCILE_WINDOW_MAX_RESULTS issues; once a window has been read
whole the watermark moves to its end and the next window starts there. A page's deliveries
are committed before the next page is read and handed to `publish`; a crash between pages
re-reads the window next time, and its issues are fed at most once (one dedupe key per issue
state). Issues whose email Jira hides, or that no group of an organization with inbound sync
on links, are read and left alone.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from worker.domain.errors import BadPayload, JiraRejected, JiraUnavailable, NotFound
from worker.domain.reconcile import (
    SEARCH_FIELDS,
    SOURCE,
    FoundIssue,
    Window,
    dedupe_key,
    first_window,
    needs_feed,
    read_found_issue,
    synthetic_body,
)
from worker.jira.api import JiraClient, SearchPage, client_for_integration
from worker.runtime.resources import Resources
from worker.store.db import transaction
from worker.store.queries import deliveries as q_deliveries
from worker.store.queries import reconcile as q

log = logging.getLogger(__name__)

# Re-reads of a window from its start when issues left it while it was paged (every later
# issue moved one place up, onto a page already read).
MAX_RESTARTS = 3

Publish = Callable[[list[int]], None]


@dataclass(frozen=True)
class Fed:
    """A linked issue whose Jira assignee differs from the last one known, and its delivery
    (None in a dry run)."""

    issue_key: str
    updated_ms: int
    assignee: str | None
    known: list[str | None]
    delivery_id: int | None


@dataclass
class Sweep:
    """What one sweep of an integration read and fed."""

    integration_id: int
    start_ms: int
    end_ms: int
    requests: int = 0
    checked: int = 0
    fed: list[Fed] = field(default_factory=list)


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
    now_ms = int(time.time() * 1000)
    if state.integration_status != "active":  # its webhooks are refused: so are its changes
        log.info("reconcile.skipped", extra={"integration_id": integration_id})
        return Sweep(integration_id, now_ms, now_ms)
    window = first_window(
        now_ms,
        state.watermark_ms,
        since_ms,
        state.interval_s or settings.reconcile_interval_s,
        settings.reconcile_overlap_s,
    )
    result = Sweep(integration_id, window.start_ms, window.start_ms)
    name = f"integration {integration_id} ({state.external_id})"
    client = client_for_integration(res, integration_id)
    try:
        end_ms = window.end_ms
        while True:
            window = _read_window(res, client, window, result, dry_run, publish)
            result.end_ms = window.end_ms
            if not dry_run:
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
        )


def _read_window(
    res: Resources,
    client: JiraClient,
    window: Window,
    result: Sweep,
    dry_run: bool,
    publish: Publish,
) -> Window:
    """Read and feed one window whole, page by page; returns it as narrowed."""
    page_size = res.settings.reconcile_page_size

    def search(start_at: int) -> SearchPage:
        result.requests += 1
        return client.search(window.jql(), SEARCH_FIELDS, start_at, page_size)

    page = search(0)
    while page.total > res.settings.reconcile_window_max_results:
        narrower = window.narrowed()
        if narrower is None:
            break  # as narrow as JQL can tell: page through it all
        log.info(
            "reconcile.window_narrowed",
            extra={"integration_id": result.integration_id, "total": page.total},
        )
        window = narrower
        page = search(0)
    seen: set[tuple[str, int]] = set()
    read, expected, restarts = 0, page.total, 0
    while True:
        _feed_page(res, result, [_found(raw) for raw in page.issues], seen, dry_run, publish)
        read += len(page.issues)
        if not page.issues or read >= page.total:
            return window
        page = search(read)
        if page.total < expected and restarts < MAX_RESTARTS:
            restarts += 1
            read, expected = 0, page.total
            page = search(0)


def _found(raw: object) -> FoundIssue:
    try:
        return read_found_issue(raw)
    except BadPayload as exc:
        raise JiraRejected(f"Jira's search answer: {exc}") from None


def _feed_page(
    res: Resources,
    result: Sweep,
    issues: list[FoundIssue],
    seen: set[tuple[str, int]],
    dry_run: bool,
    publish: Publish,
) -> None:
    """Compare a page's linked issues with what was last known; store a delivery for each
    that differs, in one transaction, then hand the new ones to `publish`."""
    fresh = [i for i in issues if (i.key, i.updated_ms) not in seen]
    seen.update((i.key, i.updated_ms) for i in fresh)
    if not fresh:
        return
    integration_id = result.integration_id
    with transaction(res.pool) as conn:
        known = q.linked_issues(conn, integration_id, sorted({i.key for i in fresh}))
        linked = [i for i in fresh if i.key in known]
        to_feed = [i for i in linked if needs_feed(i, known[i.key])]
        if dry_run:
            ids: list[int | None] = [None] * len(to_feed)
        else:
            ids = q_deliveries.insert_deliveries(
                conn, [_delivery(integration_id, i) for i in to_feed]
            )
    result.checked += len(linked)
    for issue, delivery_id in zip(to_feed, ids, strict=True):
        if dry_run or delivery_id is not None:  # None when fed before (a re-read window)
            result.fed.append(
                Fed(issue.key, issue.updated_ms, issue.mark, known[issue.key], delivery_id)
            )
    stored = [d for d in ids if d is not None]
    if stored:
        log.info("reconcile.fed", extra={"integration_id": integration_id, "count": len(stored)})
        publish(stored)


def _delivery(integration_id: int, issue: FoundIssue) -> q_deliveries.NewDelivery:
    return q_deliveries.NewDelivery(
        integration_id=integration_id,
        dedupe_key=dedupe_key(issue),
        body=json.dumps(synthetic_body(issue)),
        headers={},
        issue_key=issue.key,
        event_ts=issue.updated_ms,
        source=SOURCE,
    )
