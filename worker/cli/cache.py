"""`jira-sync cache purge --project ID [--group ID]`: purge the assignee-exists and
owners-debounce caches."""

from __future__ import annotations

import argparse
from typing import Any

from worker import cache
from worker.cli.common import EXIT_NOT_FOUND, EXIT_OK, CliError, echo
from worker.runtime import resources
from worker.services import projects
from worker.store.db import transaction
from worker.store.queries import projects as q


def register(sub: Any) -> None:
    purge = sub.add_parser("cache", help="purge the assignee-exists and owners-debounce caches")
    purge_commands = purge.add_subparsers(dest="cache_command", required=True)
    p = purge_commands.add_parser(
        "purge", help="a project's groups seen in the last 24 h, or one group"
    )
    p.add_argument("--project", type=int, required=True, metavar="ID")
    p.add_argument("--group", type=int, metavar="ID")
    p.set_defaults(handler=cmd_cache_purge)


def cmd_cache_purge(args: argparse.Namespace) -> int:
    res = resources.current()
    if args.group is None:
        count = projects.purge_project_caches(res, args.project)
        echo(f"purged the caches of {count} group(s) seen in the last 24 h")
        return EXIT_OK
    with transaction(res.pool) as conn:
        if args.group not in q.group_ids_of_project(conn, args.project, [args.group]):
            raise CliError(f"no group {args.group} in project {args.project}", EXIT_NOT_FOUND)
    cache.purge_group_caches(res.redis, [args.group])
    echo(f"purged the caches of group {args.group}")
    return EXIT_OK
