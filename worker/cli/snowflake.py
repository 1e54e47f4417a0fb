"""`jira-sync snowflake decode ID`: the fields of a project id; needs no server."""

from __future__ import annotations

import argparse
from typing import Any

from config.settings import get_settings
from worker.cli.common import EXIT_OK, CliError, echo, emit_json, table
from worker.domain import snowflake


def register(sub: Any) -> None:
    flake = sub.add_parser("snowflake", help="inspect snowflake ids")
    flake_commands = flake.add_subparsers(dest="snowflake_command", required=True)
    p = flake_commands.add_parser("decode", help="version, time (UTC), region and sequence")
    p.add_argument("id", type=int)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_snowflake_decode)


def cmd_snowflake_decode(args: argparse.Namespace) -> int:
    try:
        fields = snowflake.decode(args.id)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    epoch_s = get_settings().snowflake_epoch_s  # no server needed
    issued = fields.issued_at(epoch_s).strftime("%Y-%m-%dT%H:%M:%SZ")
    view = {
        "id": args.id,
        "version": fields.version,
        "time": issued,
        "seconds": fields.seconds,
        "region": fields.region,
        "sequence": fields.sequence,
    }
    if args.json:
        emit_json(view)
    else:
        echo(table([[k, v] for k, v in view.items()], ["field", "value"]))
    return EXIT_OK
