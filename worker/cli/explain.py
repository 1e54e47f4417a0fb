"""`jira-sync explain group ID` and `explain issue KEY [--integration ID]`: why an issue or
a group is as it is, one timeline in Jira order (SPEC 16)."""

from __future__ import annotations

import argparse
from typing import Any

from worker.cli.common import EXIT_OK, echo, emit_json, positive_int, table
from worker.runtime import resources
from worker.services import explain


def register(sub: Any) -> None:
    cmd = sub.add_parser("explain", help="why an issue or a group is as it is: one timeline")
    kinds = cmd.add_subparsers(dest="explain_command", required=True, metavar="WHAT")
    p = kinds.add_parser("group", help="every delivery and change that touched a group")
    p.add_argument("id", type=positive_int)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_group)
    p = kinds.add_parser("issue", help="every delivery that touched a Jira issue, by key")
    p.add_argument("key")
    p.add_argument("--integration", type=positive_int, help="on this integration only")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_issue)


def cmd_group(args: argparse.Namespace) -> int:
    return _show(explain.explain_group(resources.current(), args.id), args.json)


def cmd_issue(args: argparse.Namespace) -> int:
    found = explain.explain_issue(resources.current(), args.key, args.integration)
    return _show(found, args.json)


def _show(found: explain.Explained, as_json: bool) -> int:
    if as_json:
        emit_json(found.as_json())
        return EXIT_OK
    linked = ", ".join(
        f"{i['issue_key']} on integration {i['integration_id']} (groups "
        f"{', '.join(map(str, i['group_ids'])) or 'none'})"
        for i in found.issues
    )
    echo(f"{found.subject}: {linked or 'linked to no Jira issue'}")
    if not found.timeline:
        echo("nothing has touched it yet")
        return EXIT_OK
    rows = []
    for e in found.timeline:
        where = f"{e.source} {e.delivery_id}" if e.delivery_id else e.source
        groups = ", ".join(f"{g}: {o}" for g, o in e.groups.items())
        rows.append([e.at, where, e.what, e.rule, e.why + (f" [{groups}]" if groups else "")])
        for push in e.pushes:
            rows.append(["", "", f"  push to {push['issue_key']} (integration "
                         f"{push['integration_id']})", push["result"],
                         f"Jira: {push['jira_answer']}"])  # fmt: skip
    echo(table(rows, ["JIRA TIME", "SOURCE", "WHAT", "RULE", "WHY"]))
    return EXIT_OK
