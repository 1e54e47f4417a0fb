"""`jira-sync reconcile run|status`: catch the changes whose webhooks never arrived (SPEC 9)."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from worker.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    CliError,
    echo,
    emit_json,
    positive_int,
    table,
)
from worker.cli.failed import parse_time
from worker.domain.errors import JiraRejected, JiraUnavailable, NotFound
from worker.domain.reconcile import UNASSIGNED
from worker.jira import reconcile as sweeps
from worker.runtime import resources
from worker.store.db import transaction
from worker.store.queries import reconcile as q


def register(sub: Any) -> None:
    reconcile = sub.add_parser(
        "reconcile", help="search Jira for changes whose webhooks never arrived"
    )
    cmds = reconcile.add_subparsers(dest="reconcile_command", required=True, metavar="COMMAND")

    p = cmds.add_parser(
        "run", help="sweep now: every active integration with reconciliation on, or one"
    )
    p.add_argument("--integration", type=positive_int, metavar="ID", help="this one only")
    p.add_argument(
        "--since",
        type=parse_time,
        metavar="T",
        help="read from this ISO time (or age, e.g. 2h) instead of the watermark",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print what would be fed in, change nothing"
    )
    p.set_defaults(handler=cmd_run)

    p = cmds.add_parser("status", help="per integration: switch, watermark, last run, last error")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_status)


def cmd_run(args: argparse.Namespace) -> int:
    res = resources.current()
    since_ms = None
    if args.since is not None:
        if args.since > datetime.now(UTC):
            raise CliError(f"--since {args.since.isoformat()} is in the future")
        since_ms = int(args.since.timestamp() * 1000)
    with transaction(res.pool) as conn:
        found = q.states(conn, args.integration)
    if args.integration is not None and not found:
        raise NotFound(f"no such integration: {args.integration}")
    # Named explicitly, an integration is swept even with reconciliation switched off.
    chosen = [
        s
        for s in found
        if s.integration_status == "active" and (s.enabled or args.integration is not None)
    ]
    if not chosen:
        echo("Nothing to do: no active integration with reconciliation on.")
        return EXIT_OK

    from tasks import relay
    from worker.runtime.app import app

    def publish(ids: list[int]) -> None:
        relay.enqueue_stored(app, res, ids)

    code = EXIT_OK
    for state in chosen:
        try:
            result = sweeps.sweep(
                res, state.integration_id, publish, since_ms=since_ms, dry_run=args.dry_run
            )
        except (JiraUnavailable, JiraRejected) as exc:
            sys.stderr.write(f"jira-sync: error: {exc}\n")
            unavailable = isinstance(exc, JiraUnavailable)
            code = max(code, EXIT_UNAVAILABLE if unavailable else EXIT_FAILED)
            continue
        _report(result, args.dry_run)
    return code


def _report(result: sweeps.Sweep, dry_run: bool) -> None:
    verb = "would feed" if dry_run else "fed"
    echo(
        f"integration {result.integration_id}: {_iso(result.start_ms)} .. {_iso(result.end_ms)}, "
        f"{result.requests} Jira request(s), {result.checked} linked issue(s) checked, "
        f"{len(result.fed)} change(s) {verb}"
    )
    for issue in result.unusable:
        echo(f"  {issue['key']} left alone: {issue['reason']}")
    if result.fed:
        rows = [
            [
                f.issue_key,
                _iso(f.updated_ms),
                _assignee(f.assignee),
                ", ".join(_assignee(k) for k in f.known) or "-",
                f.status or "-",
                ", ".join(k or "(never known)" for k in f.known_status) or "-",
                f.delivery_id if f.delivery_id is not None else "-",
            ]
            for f in result.fed
        ]
        headers = ["ISSUE", "UPDATED", "JIRA ASSIGNEE", "LAST KNOWN", "JIRA STATUS", "LAST KNOWN"]
        echo(table(rows, [*headers, "DELIVERY"]))


def _assignee(mark: str | None) -> str:
    if mark is None:
        return "(never known)"
    return "(unassigned)" if mark == UNASSIGNED else mark


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def cmd_status(args: argparse.Namespace) -> int:
    res = resources.current()
    with transaction(res.pool) as conn:
        found = q.states(conn)
    default_interval_s = res.settings.reconcile_interval_s
    views = [_view(s, default_interval_s) for s in found]
    if args.json:
        emit_json(views)
        return EXIT_OK
    if not views:
        echo("No integrations.")
        return EXIT_OK
    rows = [
        [
            v["integration"],
            "on" if v["enabled"] else "off",
            v["interval_s"],
            v["watermark"] or "-",
            v["last_run_at"] or "never",
            v["issues_checked"],
            v["changes_found"],
            v["jira_requests"],
            v["last_error"] or "-",
        ]
        for v in views
    ]
    headers = ["ID", "RECONCILE", "INTERVAL S", "WATERMARK", "LAST RUN", "CHECKED", "CHANGES"]
    echo(table(rows, [*headers, "REQUESTS", "LAST ERROR"]))
    for v in views:
        for issue in v["unusable"]:
            echo(f"integration {v['integration']}: {issue['key']} unusable: {issue['reason']}")
    return EXIT_OK


def _view(s: q.State, default_interval_s: int) -> dict[str, Any]:
    """The operator's view of one integration's sweep (`reconcile status`, JSON)."""
    return {
        "integration": s.integration_id,
        "external_id": s.external_id,
        # A disabled integration is never swept, whatever its switch says.
        "enabled": s.enabled and s.integration_status == "active",
        "interval_s": s.interval_s or default_interval_s,
        "watermark": _iso(s.watermark_ms),
        "next_run_at": s.next_run_at.isoformat() if s.next_run_at else None,
        "last_run_at": s.last_run_at.isoformat() if s.last_run_at else None,
        "last_success_at": s.last_success_at.isoformat() if s.last_success_at else None,
        "issues_checked": s.issues_checked,
        "changes_found": s.changes_found,
        "jira_requests": s.jira_requests,
        "last_error": s.last_error,
        "last_error_at": s.last_error_at.isoformat() if s.last_error_at else None,
        "unusable": s.unusable,
    }
