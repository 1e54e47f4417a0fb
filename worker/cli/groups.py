"""`jira-sync group show|resolve|unresolve ID`: a group as it is here, and moving its status."""

from __future__ import annotations

import argparse
import json
from typing import Any

from tasks import pipeline
from worker.cli.common import (
    EXIT_OK,
    echo,
    emit_json,
    table,
)
from worker.domain.status import GroupStatus
from worker.runtime import resources
from worker.services import groups
from worker.support.classify import classify


def register(sub: Any) -> None:
    group = sub.add_parser("group", help="inspect groups").add_subparsers(
        dest="group_command", required=True, metavar="COMMAND"
    )
    p = group.add_parser("show", help="a group's assignee, subscriptions, activity, history")
    p.add_argument("id", type=int)
    p.add_argument("--json", action="store_true", help="print the stable JSON form")
    p.set_defaults(handler=cmd_group_show)
    for status, verb in ((GroupStatus.RESOLVED, "resolve"), (GroupStatus.UNRESOLVED, "unresolve")):
        p = group.add_parser(
            verb, help=f"{verb} a group here; linked Jira issues follow (forward status sync)"
        )
        p.add_argument("id", type=int)
        p.set_defaults(handler=cmd_group_status, status=status)


def cmd_group_show(args: argparse.Namespace) -> int:
    view = groups.show_group(resources.current(), args.id)
    if args.json:
        emit_json(view)
        return EXIT_OK
    assignee = view["assignee"]
    echo(f"group {view['id']} (project {view['project']})")
    echo(
        f"status: {view['status']}" + (f" at {view['resolved_at']}" if view["resolved_at"] else "")
    )
    echo(f"assignee: {assignee['type'] + ' ' + str(assignee['id']) if assignee else 'none'}")
    echo(f"assignee-exists cache: {view['assignee_exists_cache']}")
    subs = [[s.get("user", ""), s.get("team", ""), s["reason"]] for s in view["subscriptions"]]
    echo("subscriptions:\n" + table(subs, ["user", "team", "reason"]))
    acts = [[a["type"], a["user"], json.dumps(a["data"])] for a in view["activity"]]
    echo("activity:\n" + table(acts, ["type", "user", "data"]))
    hist = [[h["status"], h["actor"]] for h in view["history"]]
    echo("history:\n" + table(hist, ["status", "actor"]))
    return EXIT_OK


def cmd_group_status(args: argparse.Namespace) -> int:
    from worker.runtime.app import app

    changed = groups.set_status(resources.current(), args.id, args.status)
    done = f"Group {args.id} {args.status}" if changed else f"Group {args.id} already {args.status}"
    try:
        pipeline.outbound_status(app, [args.id])
    except Exception as exc:  # the pending move is stored: beat sends it
        if not classify(exc).retryable:
            raise
        echo(
            f"{done}; the broker is unreachable ({type(exc).__name__}): beat's sweep sends the "
            "move of its linked Jira issues once it is back."
        )
        return EXIT_OK
    again = "" if changed else " again"
    echo(f"{done}; its linked Jira issues are moved{again} where forward status sync is on.")
    return EXIT_OK
