"""`jira-sync deliveries list|show`: the webhook inbox as operators see it."""

from __future__ import annotations

import argparse
import json
from typing import Any

from worker.cli.common import (
    EXIT_NOT_FOUND,
    EXIT_OK,
    CliError,
    echo,
    emit_json,
    positive_int,
    table,
)
from worker.runtime import resources
from worker.store.db import transaction
from worker.store.queries import deliveries as q

STATUSES = ("received", "queued", "done", "failed")
LIST_LIMIT = 100


def register(sub: Any) -> None:
    deliveries = sub.add_parser("deliveries", help="inspect accepted webhook deliveries")
    cmds = deliveries.add_subparsers(dest="deliveries_command", required=True, metavar="COMMAND")

    p = cmds.add_parser("list", help="newest deliveries first")
    p.add_argument("--status", choices=STATUSES)
    p.add_argument("--outcome", help="e.g. missing-assignee-email, stale, user-not-found")
    p.add_argument("--status-outcome", help="the status part's, e.g. resolved, echo")
    p.add_argument("--limit", type=positive_int, default=LIST_LIMIT)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_list)

    p = cmds.add_parser(
        "show", help="one delivery: payload, status, outcome, timestamps, outbound pushes"
    )
    p.add_argument("id", type=positive_int)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_show)


def cmd_list(args: argparse.Namespace) -> int:
    with transaction(resources.current().pool) as conn:
        found = q.list_deliveries(conn, args.status, args.outcome, args.limit, args.status_outcome)
    views = [delivery_view(d) for d in found]
    if args.json:
        emit_json(views)
        return EXIT_OK
    if not views:
        echo("No deliveries.")
        return EXIT_OK
    rows = [
        [v["id"], v["integration"], v["issue_key"], v["status"], outcomes(v), v["received_at"]]
        for v in views
    ]
    echo(table(rows, ["ID", "INTEGRATION", "ISSUE", "STATUS", "OUTCOME", "RECEIVED"]))
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    with transaction(resources.current().pool) as conn:
        delivery = q.get_delivery(conn, args.id)
        calls = q.outbound_calls(conn, args.id)
    if delivery is None:
        raise CliError(f"no such delivery: {args.id}", EXIT_NOT_FOUND)
    try:
        payload: Any = json.loads(delivery.body)
    except ValueError:
        payload = delivery.body
    outbound = [
        {
            "group": c.group_id,
            "integration": c.integration_id,
            "issue_key": c.issue_key,
            "status": c.status,
            "detail": c.detail,
            "at": c.created_at.isoformat(),
        }
        for c in calls
    ]
    view = {
        **delivery_view(delivery),
        "headers": delivery.headers,
        "outbound": outbound,
        "payload": payload,
    }
    if args.json:
        emit_json(view)
        return EXIT_OK
    for key, value in view.items():
        if key not in ("payload", "outbound"):
            echo(f"{key + ':':<14}{json.dumps(value) if isinstance(value, dict) else value}")
    echo("outbound:" + ("" if outbound else " (none)"))
    if outbound:
        rows = [
            [o["group"], o["integration"], o["issue_key"], o["status"], o["detail"]]
            for o in outbound
        ]
        echo(table(rows, ["GROUP", "INTEGRATION", "ISSUE", "RESULT", "DETAIL"]))
    echo("payload:")
    echo(json.dumps(payload, indent=2, ensure_ascii=False))
    return EXIT_OK


def outcomes(view: dict[str, Any]) -> str | None:
    """Both parts of a delivery's outcome: the assignee's and, when it changed the status,
    the status's."""
    if view["status_outcome"] is None:
        return view["outcome"]  # type: ignore[no-any-return]
    return f"{view['outcome'] or '-'}, status {view['status_outcome']}"


def delivery_view(d: q.Delivery) -> dict[str, Any]:
    """The operator's view of a delivery (CLI `deliveries show`, JSON)."""
    return {
        "id": d.id,
        "integration": d.integration_id,
        "issue_key": d.issue_key,
        "source": d.source,
        "status": d.status,
        "outcome": d.outcome,
        "detail": d.detail,
        "status_outcome": d.status_outcome,
        "status_detail": d.status_detail,
        "attempts": d.attempts,
        "failed_task": d.failed_task_id,
        "received_at": d.received_at.isoformat(),
        "queued_at": d.queued_at.isoformat() if d.queued_at else None,
        "finished_at": d.finished_at.isoformat() if d.finished_at else None,
    }
