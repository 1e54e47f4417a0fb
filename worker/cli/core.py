"""`jira-sync migrate`, `load FILE.json` and `group show|resolve|unresolve ID`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout

from config.settings import get_settings
from tasks import pipeline
from worker.cli.common import (
    EXIT_OK,
    EXIT_UNAVAILABLE,
    CliError,
    echo,
    emit_json,
    progress,
    table,
)
from worker.domain.status import GroupStatus
from worker.runtime import resources
from worker.services import groups, loader
from worker.store.db import migrate
from worker.support.classify import classify


def register(sub: Any) -> None:
    p = sub.add_parser("migrate", help="apply database migrations (safe to run twice)")
    p.set_defaults(handler=cmd_migrate)

    p = sub.add_parser("load", help="import reference data from a JSON file (idempotent)")
    p.add_argument("file", type=Path)
    p.set_defaults(handler=cmd_load)

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


def cmd_migrate(args: argparse.Namespace) -> int:
    try:
        applied = migrate(get_settings().database_url)
    except (psycopg.Error, PoolTimeout) as exc:
        if not classify(exc).retryable:
            raise
        raise CliError(f"cannot reach DATABASE_URL: {exc}", EXIT_UNAVAILABLE) from exc
    echo(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))
    return EXIT_OK


def cmd_load(args: argparse.Namespace) -> int:
    try:
        doc = json.loads(Path(args.file).read_text())
    except FileNotFoundError:
        raise CliError(f"{args.file}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{args.file}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise CliError(f"{args.file}: not valid JSON: {exc}") from None
    with progress(loader.row_count(doc), "loading") as bar:
        result = loader.load_scene(resources.current(), doc, progress=bar)
    echo(", ".join(f"{n} {section}" for section, n in result.counts.items() if n) or "empty")
    return EXIT_OK


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
