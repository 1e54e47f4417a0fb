"""`jira-sync integration link|complete (cli/link.py)|list|webhook-url|rotate-secret|configure|
map-status|disable` (configure also switches an integration's reconciliation, SPEC 9)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from worker.cli import link
from worker.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    CliError,
    echo,
    emit_json,
    from_to_arguments,
    positive_int,
    table,
)
from worker.domain.errors import JiraRejected, JiraUnavailable, NotFound
from worker.domain.reconcile import MIN_INTERVAL_S
from worker.jira import admin, migrate, webhooks
from worker.runtime import resources
from worker.store.db import transaction
from worker.store.queries import reconcile as q_reconcile


def _on_off(value: str) -> bool:
    if value not in ("on", "off"):
        raise argparse.ArgumentTypeError("must be on or off")
    return value == "on"


def register(sub: Any) -> None:
    integration = sub.add_parser("integration", help="link and manage Jira Server instances")
    cmds = integration.add_subparsers(dest="integration_command", required=True, metavar="COMMAND")

    link.register(cmds)

    p = cmds.add_parser("list", help="linked instances and their organizations")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_list)

    p = cmds.add_parser(
        "migrate", help="move a project's links from a Data Center instance to a Cloud site"
    )
    from_to_arguments(p)
    p.add_argument("--project", required=True, metavar="KEY", help="the Jira project key")
    p.add_argument("--dry-run", action="store_true", help="say what would move; change nothing")
    p.set_defaults(handler=cmd_migrate)

    p = cmds.add_parser("webhook-url", help="print the full webhook URL (it holds the token)")
    p.add_argument("id", type=int)
    p.set_defaults(handler=cmd_webhook_url)

    p = cmds.add_parser("rotate-secret", help="new webhook secret; old one verifies until --finish")
    p.add_argument("id", type=int)
    p.add_argument("--finish", action="store_true", help="stop accepting the old secret")
    p.add_argument(
        "--force",
        action="store_true",
        help="with --finish: finish even though the old secret verified a delivery lately",
    )
    p.set_defaults(handler=cmd_rotate_secret)

    p = cmds.add_parser(
        "configure",
        help="assignee and status sync per organization, reconciliation, the signature "
        "requirement, Jira's version",
    )
    p.add_argument("id", type=int)
    p.add_argument("--organization", metavar="SLUG", help="where the assignment switches apply")
    p.add_argument("--reverse-assignment", type=_on_off, metavar="on|off", help="Jira -> us")
    p.add_argument("--forward-assignment", type=_on_off, metavar="on|off", help="us -> Jira")
    p.add_argument("--reverse-status", type=_on_off, metavar="on|off", help="Jira -> us")
    p.add_argument("--forward-status", type=_on_off, metavar="on|off", help="us -> Jira")
    p.add_argument(
        "--require-signature",
        type=_on_off,
        metavar="on|off",
        help="refuse deliveries without X-Hub-Signature (Data Center 10; on when registered there)",
    )
    p.add_argument(
        "--refresh-server-info",
        action="store_true",
        help="read Jira's version again and re-register the webhook on the API it uses",
    )
    p.add_argument(
        "--reconcile", type=_on_off, metavar="on|off", help="periodic search for missed webhooks"
    )
    p.add_argument(
        "--reconcile-interval", type=positive_int, metavar="SECONDS", help="time between sweeps"
    )
    p.set_defaults(handler=cmd_configure)

    p = cmds.add_parser(
        "map-status",
        help="the Jira status to move a project's issues to when their group is resolved "
        "or unresolved",
    )
    p.add_argument("id", type=int)
    p.add_argument("--organization", required=True, metavar="SLUG")
    p.add_argument("--jira-project", required=True, metavar="KEY", help="e.g. APP")
    p.add_argument("--resolved", required=True, metavar="STATUS", help="Jira status id or name")
    p.add_argument("--unresolved", required=True, metavar="STATUS", help="Jira status id or name")
    p.set_defaults(handler=cmd_map_status)

    p = cmds.add_parser("disable", help="refuse this instance's webhooks from now on")
    p.add_argument("id", type=int)
    p.set_defaults(handler=cmd_disable)


AUTH_NAMES = {
    "oauth1": "OAuth 1.0a",
    "api_token": "API token",
    "scoped_token": "scoped API token",
    "pat": "PAT",
    "oauth2": "OAuth 2.0 (refresh token)",
}


def cmd_list(args: argparse.Namespace) -> int:
    rows = admin.list_view(resources.current())
    if args.json:
        emit_json(rows)
        return EXIT_OK
    if not rows:
        echo("No integrations.")
        return EXIT_OK
    lines = []
    for r in rows:
        orgs = ", ".join(
            f"{o['organization']}(reverse {'on' if o['reverse_assignment'] else 'off'}, "
            f"forward {'on' if o['forward_assignment'] else 'off'}, "
            f"status reverse {'on' if o['reverse_status'] else 'off'}, "
            f"status forward {'on' if o['forward_status'] else 'off'})"
            for o in r["organizations"]
        )
        status = r["status"] + (" rotating" if r["rotation_in_progress"] else "")
        if r["signed"]:
            status += " signed" + (" required" if r["require_signature"] else "")
            if r["signature_seen_at"] is None:
                status += " (not seen yet)"
        auth = AUTH_NAMES.get(r["auth"] or "", "-")
        if r["token_expires_on"]:
            auth += f" until {r['token_expires_on']}"
        if r["dynamic_webhook_expires_at"]:
            auth += f", dynamic webhook until {r['dynamic_webhook_expires_at'][:10]}"
        kind = r["deployment_type"] or "-"
        lines.append([r["id"], r["external_id"], r["base_url"], kind, auth, status, orgs or "-"])
    headers = ["ID", "EXTERNAL ID", "BASE URL", "JIRA", "AUTH", "STATUS", "ORGANIZATIONS"]
    echo(table(lines, headers))
    return EXIT_OK


def cmd_migrate(args: argparse.Namespace) -> int:
    try:
        result = migrate.migrate(
            resources.current(), args.from_id, args.to_id, args.project, dry_run=args.dry_run
        )
    except (JiraUnavailable, JiraRejected) as exc:
        raise link.jira_error(exc) from None
    verb = "would move" if result.dry_run else "moved"
    echo(f"{result.project}: {len(result.moved)} linked issue(s) {verb} to integration "
         f"{args.to_id} ({result.requests} Jira search(es))")  # fmt: skip
    if result.already_on_cloud:
        echo(f"already linked on the Cloud site, left as they are: "
             f"{', '.join(result.already_on_cloud[:20])}")  # fmt: skip
    if result.missing:
        shown = ", ".join(result.missing[:50]) + (" ..." if len(result.missing) > 50 else "")
        echo(f"{len(result.missing)} not found on the Cloud site, still linked to integration "
             f"{args.from_id}: {shown}")  # fmt: skip
        echo("Run this again once they exist there.")
        return EXIT_FAILED
    return EXIT_OK


def cmd_webhook_url(args: argparse.Namespace) -> int:
    # The one command whose purpose is to reveal the token: written unscrubbed.
    sys.stdout.write(admin.get_webhook_url(resources.current(), args.id) + "\n")
    return EXIT_OK


def cmd_rotate_secret(args: argparse.Namespace) -> int:
    res = resources.current()
    if args.finish:
        finished = admin.finish_rotation(res, args.id, force=args.force)
        if finished is admin.Finish.OLD_SECRET_IN_USE:
            minutes = admin.OLD_SECRET_QUIET_S // 60
            echo(
                f"Not finished: the old secret of integration {args.id} verified a delivery in "
                f"the last {minutes} minutes, so Jira still uses the old URL or signing secret. "
                f"Update Jira's webhook (jira-sync integration webhook-url {args.id}), wait, and "
                "run this again, or add --force to cut it off now."
            )
            return EXIT_FAILED
        if finished is admin.Finish.FINISHED:
            echo(f"Rotation finished: integration {args.id} accepts only the new secret.")
        else:
            echo("Nothing to do: no rotation in progress.")
        return EXIT_OK
    rotation = admin.rotate_secret(res, args.id)
    echo(f"New secret for integration {args.id}; old and new both verify until --finish.")
    echo(f"New webhook URL: {webhooks.masked(rotation.webhook_url)}")
    if rotation.jira_error is None:
        signing = " and signing secret" if rotation.signed else ""
        echo(f"Jira's webhook now has the new URL{signing}. When in-flight deliveries")
        echo("have arrived, run:")
    else:
        echo(f"Jira's webhook could not be updated ({rotation.jira_error}); put the full URL")
        echo(f"(jira-sync integration webhook-url {args.id}) in Jira or retry with")
        echo(f"jira-sync integration configure {args.id} --refresh-server-info, then run:")
    echo(f"jira-sync integration rotate-secret {args.id} --finish")
    return EXIT_FAILED if rotation.jira_error else EXIT_OK


def cmd_configure(args: argparse.Namespace) -> int:
    switches = {
        name: value
        for name, value in (
            ("reverse", args.reverse_assignment),
            ("forward", args.forward_assignment),
            ("reverse_status", args.reverse_status),
            ("forward_status", args.forward_status),
        )
        if value is not None
    }
    reconciling = args.reconcile is not None or args.reconcile_interval is not None
    if not (
        switches or reconciling or args.require_signature is not None or args.refresh_server_info
    ):
        raise CliError(
            "nothing to configure: give --reverse-assignment, --forward-assignment, "
            "--reverse-status or --forward-status (with --organization), --reconcile on|off, "
            "--reconcile-interval SECONDS, --require-signature on|off or --refresh-server-info"
        )
    if switches and not args.organization:
        raise CliError("the assignment and status switches need --organization SLUG")
    if args.reconcile_interval is not None and args.reconcile_interval < MIN_INTERVAL_S:
        raise CliError(f"--reconcile-interval must be at least {MIN_INTERVAL_S} seconds")
    res = resources.current()
    if args.refresh_server_info:
        try:
            server = admin.refresh_server_info(res, args.id)
        except (JiraUnavailable, JiraRejected) as exc:
            raise link.jira_error(exc) from None
        echo(f"Integration {args.id}: webhook registered in {webhooks.describe(server)}")
    if args.require_signature is not None:
        changed = admin.require_signature(res, args.id, args.require_signature)
        required = "required" if args.require_signature else "not required (checked when sent)"
        echo(f"Integration {args.id}: signature {required}" + ("" if changed else ", unchanged"))
    if switches:
        config = admin.configure(res, args.id, args.organization, switches)
        state = {
            name: "on" if config.get(key) else "off" for name, key in admin.SYNC_SWITCHES.items()
        }
        echo(
            f"Integration {args.id}, {args.organization}: reverse assignment {state['reverse']}, "
            f"forward assignment {state['forward']}, reverse status {state['reverse_status']}, "
            f"forward status {state['forward_status']}"
        )
    if reconciling:
        _configure_reconcile(args.id, args.reconcile, args.reconcile_interval)
    return EXIT_OK


def _configure_reconcile(integration_id: int, enabled: bool | None, interval_s: int | None) -> None:
    res = resources.current()
    with transaction(res.pool) as conn:
        if not q_reconcile.states(conn, integration_id):
            raise NotFound(f"no such integration: {integration_id}")
        q_reconcile.configure(conn, integration_id, enabled, interval_s)
        state = q_reconcile.states(conn, integration_id)[0]
    every = state.interval_s or res.settings.reconcile_interval_s
    echo(
        f"Integration {integration_id}: reconciliation {'on' if state.enabled else 'off'}, "
        f"every {every} s"
    )


def cmd_map_status(args: argparse.Namespace) -> int:
    admin.map_status(
        resources.current(),
        args.id,
        args.organization,
        args.jira_project,
        args.resolved,
        args.unresolved,
    )
    echo(
        f"Integration {args.id}, {args.organization}, Jira project "
        f"{args.jira_project.strip().upper()}: "
        f"resolved -> {args.resolved.strip()}, unresolved -> {args.unresolved.strip()}"
    )
    return EXIT_OK


def cmd_disable(args: argparse.Namespace) -> int:
    if admin.disable(resources.current(), args.id):
        echo(f"Integration {args.id} disabled: its webhooks are refused.")
    else:
        echo(f"Nothing to do: integration {args.id} is already disabled.")
    return EXIT_OK
