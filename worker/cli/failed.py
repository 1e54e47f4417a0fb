"""jira-sync failed: list, show, replay, park and purge records of the failed-task store.

Exit codes (worker/cli/common.py): 0 done or nothing to do; 4 the database or the broker
cannot be reached (a replay stopped there keeps what it sent); 5 an id named is not in the
store (the others are still handled); 2 bad arguments.
"""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from tasks import pipeline
from worker.cli.common import (
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    CliError,
    echo,
    emit_json,
    positive_int,
    progress,
    table,
    unreachable,
)
from worker.runtime import resources
from worker.services import replay
from worker.store.db import transaction
from worker.store.queries import failed_tasks as q
from worker.store.queries.failed_tasks import FailedTask, Filters

LIST_LIMIT = 50
MESSAGE_WIDTH = 60
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def register(sub: Any) -> None:
    failed = sub.add_parser("failed", help="inspect and replay steps that gave up")
    cmds = failed.add_subparsers(dest="failed_command", required=True, metavar="ACTION")

    p = cmds.add_parser("list", help="list failed-task records, with counts per error type")
    _add_filters(p)
    p.add_argument("--limit", type=positive_int, default=LIST_LIMIT, help="rows shown")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_list)

    p = cmds.add_parser("show", help="one record: arguments, what a replay runs, traceback")
    p.add_argument("id", type=positive_int)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_show)

    p = cmds.add_parser("replay", help="send failed steps again, continuing their chains")
    p.add_argument("ids", nargs="*", type=positive_int, metavar="ID")
    p.add_argument("--all", action="store_true", help="every record the filters match")
    _add_filters(p, status_help="status to replay with --all (default: failed)")
    p.add_argument("--limit", type=positive_int, help="replay at most this many")
    p.add_argument("--dry-run", action="store_true", help="show what would be sent, send none")
    p.add_argument("--force", action="store_true", help="also replay records already replayed")
    p.set_defaults(handler=cmd_replay)

    p = cmds.add_parser("park", help="set records aside: replay --all skips them")
    p.add_argument("ids", nargs="+", type=positive_int, metavar="ID")
    p.set_defaults(handler=cmd_park)

    p = cmds.add_parser("purge", help="delete records (default: replayed ones)")
    p.add_argument("--older-than", type=parse_duration, metavar="D", help="e.g. 30m, 12h, 7d")
    p.add_argument("--status", choices=q.STATUSES, default="replayed")
    p.set_defaults(handler=cmd_purge)


def _add_filters(
    p: argparse.ArgumentParser, status_help: str = "failed, parked or replayed"
) -> None:
    p.add_argument("--task", help="stable task name, e.g. jira_sync.inbound.check_changelog")
    p.add_argument("--error", dest="error_type", metavar="TYPE", help="error type, e.g. BadPayload")
    p.add_argument("--since", type=parse_time, metavar="T", help="ISO time or age (2h, 7d)")
    p.add_argument("--until", type=parse_time, metavar="T", help="ISO time or age (2h, 7d)")
    p.add_argument("--status", choices=q.STATUSES, help=status_help)


def _filters(args: argparse.Namespace) -> Filters:
    return Filters(
        task=args.task,
        error_type=args.error_type,
        since=args.since,
        until=args.until,
        status=args.status,
    )


def cmd_list(args: argparse.Namespace) -> int:
    res = resources.current()
    filters = _filters(args)
    with transaction(res.pool) as conn:
        rows = q.list_failed(conn, filters, args.limit)
        counts = q.counts_by_error(conn, filters)
    total = sum(counts.values())
    if args.json:
        emit_json({"total": total, "records": [_view(r) for r in rows], "by_error_type": counts})
        return EXIT_OK
    if not rows:
        echo("No failed tasks.")
        return EXIT_OK
    echo(
        table(
            [
                [
                    r.id,
                    r.status,
                    r.task_name,
                    r.error_type,
                    r.attempts,
                    _when(r.last_failed_at),
                    r.delivery_id or r.project_id or "",
                    _one_line(r.message),
                ]
                for r in rows
            ],
            ["ID", "STATUS", "TASK", "ERROR", "ATTEMPTS", "LAST FAILED", "FOR", "MESSAGE"],
        )
    )
    echo()
    shown = f"{len(rows)} of {total}" if total > len(rows) else str(total)
    echo(f"{shown} record(s); by error type:")
    echo(table([[f"  {k}", v] for k, v in counts.items()], ["  ERROR", "COUNT"]))
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    res = resources.current()
    with transaction(res.pool) as conn:
        rec = q.get_failed(conn, args.id)
    if rec is None:
        raise CliError(f"failed task {args.id} not found", EXIT_NOT_FOUND)
    view = _view(rec, full=True)
    if args.json:
        emit_json(view)
        return EXIT_OK
    for key in ("id", "status", "task", "task_id", "error_type", "message", "attempts"):
        echo(f"{key + ':':<17}{view[key]}")
    for key in ("first_failed_at", "last_failed_at", "replayed_at", "delivery_id", "project_id"):
        if view[key] is not None:
            echo(f"{key + ':':<17}{view[key]}")
    echo(f"{'args:':<17}{view['args']}")
    echo(f"{'kwargs:':<17}{view['kwargs']}")
    echo(f"{'then runs:':<17}{' -> '.join(view['rest_of_chain']) or '(nothing after it)'}")
    echo()
    echo(rec.traceback.rstrip() or "(no traceback)")
    return EXIT_OK


def cmd_replay(args: argparse.Namespace) -> int:
    if bool(args.ids) == bool(args.all):
        raise CliError("give record ids or --all (not both)")
    if args.ids and (args.limit or any(getattr(args, f) for f in Filters.__dataclass_fields__)):
        raise CliError("filters and --limit go with --all, not with ids")
    from worker.runtime.app import app

    res = resources.current()
    filters = _filters(args)
    total = (
        len(set(args.ids))
        if args.ids
        else replay.count_selected(res, _default_status(filters), args.limit)
    )
    if total == 0:
        echo("Nothing to do: no failed tasks match.")
        return EXIT_OK
    try:
        with progress(total, "dry run" if args.dry_run else "replaying") as bar:
            if args.ids:
                result = replay.replay_ids(
                    res, app, args.ids, force=args.force, dry_run=args.dry_run, progress=bar
                )
            else:
                result = replay.replay_matching(
                    res, app, filters, limit=args.limit, dry_run=args.dry_run, progress=bar
                )
    except replay.ReplayInterrupted as exc:
        echo(f"replayed {exc.result.count} before stopping")
        what = unreachable(exc.cause)
        raise CliError(
            f"replay stopped: {what} unavailable: {exc.cause}", EXIT_UNAVAILABLE
        ) from exc
    return _report_replay(result, args.dry_run)


def _default_status(filters: Filters) -> Filters:
    return filters if filters.status else Filters(**{**filters.__dict__, "status": "failed"})


def _report_replay(result: replay.ReplayResult, dry_run: bool) -> int:
    if dry_run:
        echo(f"dry run: would replay {result.count}; nothing was sent")
        if result.replayed:
            echo("ids: " + _id_list(result.replayed))
    elif result.count == 0 and not result.missing:
        echo("Nothing to do: no replayable records among those named.")
    else:
        echo(f"replayed {result.count}")
    if result.skipped:
        echo(
            f"skipped {len(result.skipped)} already replayed (use --force): "
            + _id_list(result.skipped)
        )
    if result.missing:
        echo(f"not found {len(result.missing)}: " + _id_list(result.missing))
        return EXIT_NOT_FOUND
    return EXIT_OK


def cmd_park(args: argparse.Namespace) -> int:
    res = resources.current()
    wanted = sorted(set(args.ids))
    with transaction(res.pool) as conn:
        present = q.existing_ids(conn, wanted)
        parked = q.park(conn, wanted)
    missing = [i for i in wanted if i not in present]
    unchanged = [i for i in wanted if i in present and i not in parked]
    echo(f"parked {len(parked)}")
    if unchanged:
        echo(f"unchanged {len(unchanged)} (not in status failed): " + _id_list(unchanged))
    if missing:
        echo(f"not found {len(missing)}: " + _id_list(missing))
        return EXIT_NOT_FOUND
    return EXIT_OK


def cmd_purge(args: argparse.Namespace) -> int:
    res = resources.current()
    older_than_s = None if args.older_than is None else args.older_than.total_seconds()
    with transaction(res.pool) as conn:
        purged = q.purge(conn, args.status, older_than_s)
    echo(f"purged {purged} {args.status} record(s)" if purged else "Nothing to do.")
    return EXIT_OK


def parse_duration(text: str) -> timedelta:
    """`90s`, `30m`, `12h`, `7d`, `2w`."""
    match = _DURATION.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 30m, 12h or 7d")
    return timedelta(seconds=float(match[1]) * _UNIT_S[match[2]])


def parse_time(text: str) -> datetime:
    """An ISO 8601 time (UTC when no zone is given) or an age such as `2h` (that long ago)."""
    if _DURATION.match(text):
        return datetime.now(UTC) - parse_duration(text)
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither an ISO time (2024-05-01T12:00) nor an age (2h, 7d)"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _view(r: FailedTask, full: bool = False) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": r.id,
        "status": r.status,
        "task": r.task_name,
        "task_id": r.task_id,
        "error_type": r.error_type,
        "message": r.message,
        "attempts": r.attempts,
        "first_failed_at": r.first_failed_at.isoformat(),
        "last_failed_at": r.last_failed_at.isoformat(),
        "replayed_at": r.replayed_at.isoformat() if r.replayed_at else None,
        "delivery_id": r.delivery_id,
        "project_id": r.project_id,
    }
    if full:
        view["args"] = r.args
        view["kwargs"] = r.kwargs
        view["rest_of_chain"] = pipeline.rest_of_chain(r.task_name)
        view["traceback"] = r.traceback
    return view


def _when(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= MESSAGE_WIDTH else line[: MESSAGE_WIDTH - 3] + "..."


def _id_list(ids: list[int], shown: int = 20) -> str:
    head = ", ".join(str(i) for i in ids[:shown])
    return head + (f", ... ({len(ids) - shown} more)" if len(ids) > shown else "")
