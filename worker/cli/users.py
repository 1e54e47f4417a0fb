"""`jira-sync users map|unmap|list|import|unmapped`: which user here each Jira user is (SPEC 14).

A Jira user is named by its identity on that integration: the Cloud account id, or the
Server/Data Center user key (the username for users from before user keys). A user here is
named by id or by a verified e-mail.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path
from typing import Any

from worker.cli.common import (
    EXIT_OK,
    EXIT_UNAVAILABLE,
    CliError,
    echo,
    emit_json,
    from_to_arguments,
    positive_int,
    table,
)
from worker.domain.errors import JiraRejected, JiraUnavailable
from worker.jira import migrate
from worker.runtime import resources
from worker.services import identities


def register(sub: Any) -> None:
    users = sub.add_parser("users", help="map Jira users (account id, user key) to users here")
    commands = users.add_subparsers(dest="users_command", required=True, metavar="COMMAND")
    p = commands.add_parser("map", help="map one Jira user to a user (id or verified e-mail)")
    p.add_argument("--integration", type=positive_int, required=True)
    p.add_argument("--jira-user", required=True, help="Cloud account id or Server user key")
    p.add_argument("--user", required=True, help="a user id or a verified e-mail")
    p.set_defaults(handler=cmd_map)

    p = commands.add_parser("unmap", help="forget one Jira user's mapping")
    p.add_argument("--integration", type=positive_int, required=True)
    p.add_argument("--jira-user", required=True)
    p.set_defaults(handler=cmd_unmap)

    p = commands.add_parser("list", help="the mappings, per integration")
    p.add_argument("--integration", type=positive_int)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_list)

    p = commands.add_parser(
        "import", help="map many from a CSV with columns jira_user and user (all or nothing)"
    )
    p.add_argument("--integration", type=positive_int, required=True)
    p.add_argument("file", type=Path)
    p.add_argument("--dry-run", action="store_true", help="check every row, store nothing")
    p.set_defaults(handler=cmd_import)

    p = commands.add_parser(
        "seed", help="map on a Cloud site the users mapped on a Data Center one, by e-mail"
    )
    from_to_arguments(p)
    p.add_argument("--dry-run", action="store_true", help="look them up, store nothing")
    p.set_defaults(handler=cmd_seed)

    p = commands.add_parser(
        "unmapped", help="Jira users assignments named that matched nobody here"
    )
    p.add_argument("--integration", type=positive_int)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_unmapped)


def cmd_map(args: argparse.Namespace) -> int:
    user_id = identities.map_user(resources.current(), args.integration, args.jira_user, args.user)
    echo(
        f"Jira user {args.jira_user.strip()} of integration {args.integration} is user {user_id}; "
        "later deliveries use it (`reconcile run` brings issues assigned to it into line)."
    )
    return EXIT_OK


def cmd_unmap(args: argparse.Namespace) -> int:
    identities.unmap_user(resources.current(), args.integration, args.jira_user)
    echo(f"Jira user {args.jira_user.strip()} of integration {args.integration} is unmapped.")
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    rows = identities.list_mappings(resources.current(), args.integration)
    if args.json:
        emit_json([asdict(r) for r in rows])
        return EXIT_OK
    echo(
        table(
            [
                [r.integration_id, r.jira_user, r.jira_name or "", r.user_id, r.user_name, r.source]
                for r in rows
            ],
            ["integration", "jira user", "jira username", "user", "name", "source"],
        )
        if rows
        else "no mappings"
    )
    return EXIT_OK


def cmd_import(args: argparse.Namespace) -> int:
    try:
        text = Path(args.file).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CliError(f"{args.file}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{args.file}: cannot read: {exc}") from None
    result = identities.import_mappings(
        resources.current(), args.integration, text, dry_run=args.dry_run
    )
    if result.dry_run:
        echo(f"{result.rows} mapping(s) checked; nothing stored (--dry-run).")
    else:
        echo(f"{result.rows} mapping(s) stored for integration {result.integration_id}.")
    return EXIT_OK


def cmd_seed(args: argparse.Namespace) -> int:
    try:
        seeded = migrate.seed_identities(
            resources.current(), args.from_id, args.to_id, dry_run=args.dry_run
        )
    except (JiraUnavailable, JiraRejected) as exc:
        raise CliError(f"Jira: {exc}", EXIT_UNAVAILABLE) from None
    verb = "would be mapped" if args.dry_run else "mapped"
    echo(f"{len(seeded.mapped)} user(s) {verb} on integration {args.to_id} by e-mail "
         f"({seeded.requests} Jira request(s)).")  # fmt: skip
    if seeded.not_found:
        shown = ", ".join(map(str, seeded.not_found[:50]))
        echo(f"{len(seeded.not_found)} user(s) show no e-mail on the Cloud site: {shown}; map "
             f"them with `jira-sync users import --integration {args.to_id} FILE.csv` (the "
             "migration tool's user export).")  # fmt: skip
    return EXIT_OK


def cmd_unmapped(args: argparse.Namespace) -> int:
    rows = identities.list_unmapped(resources.current(), args.integration)
    if args.json:
        emit_json([asdict(r) for r in rows])
        return EXIT_OK
    if not rows:
        echo("every Jira user seen is mapped")
        return EXIT_OK
    echo(
        table(
            [
                [
                    r.integration_id,
                    r.jira_user,
                    r.display_name or "",
                    r.deliveries,
                    f"{r.first_seen:%Y-%m-%d %H:%M}",
                    f"{r.last_seen:%Y-%m-%d %H:%M}",
                ]
                for r in rows
            ],
            ["integration", "jira user", "display name", "deliveries", "first seen", "last seen"],
        )
    )
    echo("Map each with `jira-sync users map --integration ID --jira-user ID --user USER`.")
    return EXIT_OK
