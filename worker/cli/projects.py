"""`jira-sync project create|rename|delete|list`.

Saves and deletes run as chains on the workers. `--wait` polls the request row the command
stored (PostgreSQL) until the chain finished or failed; steps never wait on each other.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from kombu.exceptions import OperationalError as BrokerError

from worker.cli.common import (
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    CliError,
    echo,
    emit_json,
    table,
)
from worker.runtime import resources
from worker.services import projects
from worker.store.db import transaction
from worker.store.queries import projects as q

WAIT_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 0.2


def register(sub: Any) -> None:
    project = sub.add_parser("project", help="create, rename, delete and list projects")
    commands = project.add_subparsers(dest="project_command", required=True, metavar="COMMAND")

    p = commands.add_parser("create", help="create a project (slug and snowflake id on a worker)")
    p.add_argument("--organization", required=True, metavar="SLUG")
    p.add_argument("--name", required=True)
    p.add_argument("--slug", help="an explicit slug: refused, never altered, if it breaks a rule")
    p.add_argument(
        "--team", dest="teams", type=int, action="extend", nargs="+", default=[], metavar="ID"
    )
    _wait_options(p)
    p.set_defaults(handler=cmd_create)

    p = commands.add_parser("rename", help="rename a project; its id never changes")
    p.add_argument("id", type=int)
    p.add_argument("--name", required=True)
    p.add_argument("--slug", help="a new slug (the slug is kept when not given)")
    _wait_options(p)
    p.set_defaults(handler=cmd_rename)

    p = commands.add_parser("delete", help="delete a project and everything hanging off it")
    p.add_argument("id", type=int)
    _wait_options(p)
    p.set_defaults(handler=cmd_delete)

    p = commands.add_parser("list", help="the projects of an organization")
    p.add_argument("--organization", required=True, metavar="SLUG")
    p.add_argument("--json", action="store_true", help="print the stable JSON form")
    p.set_defaults(handler=cmd_list)


def _wait_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wait", action="store_true", help="wait until the workers are done")
    p.add_argument("--timeout", type=float, default=WAIT_TIMEOUT_S, metavar="S", help="with --wait")


def _organization(conn: Any, slug: str) -> int:
    organization_id = q.organization_id(conn, slug)
    if organization_id is None:
        raise CliError(f"no organization {slug!r}", EXIT_NOT_FOUND)
    return organization_id


def _send(res: resources.Resources, request_id: int, start: Any) -> None:
    """Put the request's first step on the broker; a broker that is down fails the request."""
    try:
        start()
    except BrokerError as exc:
        projects.fail(res, request_id, f"broker unreachable: {exc}")
        raise CliError(f"cannot reach the broker: {exc}", EXIT_UNAVAILABLE) from exc


def _wait(res: resources.Resources, request_id: int, timeout_s: float) -> q.ProjectRequest:
    deadline = time.monotonic() + timeout_s
    while True:
        with transaction(res.pool) as conn:
            req = q.get_request(conn, request_id)
        assert req is not None
        if req.status == "failed":
            raise CliError(f"request {request_id} failed: {req.error}", EXIT_FAILED)
        if req.status == "done":
            return req
        if time.monotonic() > deadline:
            raise CliError(
                f"request {request_id} still pending after {timeout_s:g}s "
                "(are workers running? see `jira-sync failed list`)",
                EXIT_FAILED,
            )
        time.sleep(POLL_INTERVAL_S)


def cmd_create(args: argparse.Namespace) -> int:
    res = resources.current()
    with transaction(res.pool) as conn:
        organization_id = _organization(conn, args.organization)
        request_id = projects.request_create(
            conn, organization_id, args.name, args.slug, sorted(set(args.teams))
        )
    return _save(res, request_id, args)


def cmd_rename(args: argparse.Namespace) -> int:
    res = resources.current()
    with transaction(res.pool) as conn:
        request_id = projects.request_rename(conn, args.id, args.name, args.slug)
    return _save(res, request_id, args)


def _save(res: resources.Resources, request_id: int, args: argparse.Namespace) -> int:
    """Send a stored create or rename request; with --wait, print the project's id and slug."""
    from tasks import pipeline
    from worker.runtime.app import app

    _send(res, request_id, lambda: pipeline.start_project_save(app, request_id))
    if not args.wait:
        echo(f"request {request_id} queued")
        return EXIT_OK
    req = _wait(res, request_id, args.timeout)
    echo(f"id    {req.project_id}\nslug  {req.slug}")
    return EXIT_OK


def cmd_delete(args: argparse.Namespace) -> int:
    from tasks import pipeline
    from worker.runtime.app import app

    res = resources.current()
    with transaction(res.pool) as conn:
        request_id = projects.request_delete(conn, args.id)
    _send(res, request_id, lambda: pipeline.start_project_delete(app, args.id, request_id))
    if not args.wait:
        echo(f"request {request_id} queued")
        return EXIT_OK
    req = _wait(res, request_id, args.timeout)
    if req.outcome == "missing":
        echo(f"Nothing to do: no project {args.id}")
    else:
        purged = len(req.purge_group_ids or [])
        echo(f"deleted project {args.id}; purged the caches of {purged} recently seen group(s)")
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    res = resources.current()
    with transaction(res.pool) as conn:
        found = q.list_projects(conn, _organization(conn, args.organization))
    if args.json:
        emit_json([{"id": p.id, "slug": p.slug, "name": p.name, "status": p.status} for p in found])
        return EXIT_OK
    if not found:
        echo(f"no projects in {args.organization}")
        return EXIT_OK
    echo(table([[p.id, p.slug, p.name, p.status] for p in found], ["id", "slug", "name", "status"]))
    return EXIT_OK
