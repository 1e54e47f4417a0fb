"""`jira-sync status`: is anything stuck, is anything failing, is Jira still sending?

One screen (or `--json`), each figure from one cheap query or one Redis round trip. Exit 0
when healthy and 1 when something needs an operator (stuck deliveries, failed steps not
replayed, beat not sweeping, the receiver or the broker unreachable), so cron or a monitoring
check can run it; a linked Jira gone quiet is a warning and leaves the exit code alone.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import redis
import requests
from kombu import Connection

from config.celery import ALL_QUEUES
from config.settings import Settings
from worker import cache
from worker.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    clear_screen,
    echo,
    emit_json,
    positive_int,
    styled,
    table,
)
from worker.cli.failed import parse_duration
from worker.cli.problems import age_text, detail_text, problems
from worker.domain.retry import stalled_after_s
from worker.runtime import resources
from worker.runtime.broker import queue_depths
from worker.runtime.resources import Resources
from worker.store.db import transaction
from worker.store.queries import identities as q_identities
from worker.store.queries import integrations as q_integrations
from worker.store.queries import migration as q_migration
from worker.store.queries import oauth2 as q_oauth2
from worker.store.queries import overview as q
from worker.store.queries import reconcile as q_reconcile
from worker.store.queries.failed_tasks import Filters, counts_by_error

EXIT_ATTENTION = EXIT_FAILED  # something needs an operator
STUCK_SHOWN = 5  # stuck delivery ids named
LAG_SAMPLE = 1000  # latest finished deliveries the lag percentiles are taken over
# A reconciliation that has not completed for this many of its intervals needs a look.
QUIET_AFTER = timedelta(hours=24)
# Refused signatures are a problem for an hour after the last one.
READY_TIMEOUT_S = 3.0
# kombu's Redis transport keeps messages taken but not acknowledged in this hash.
UNACKED_KEY = "unacked"


def register(sub: Any) -> None:
    p = sub.add_parser("status", help="health at a glance; exit 1 when something needs attention")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--watch", type=positive_int, metavar="SECONDS", help="redraw every SECONDS until Ctrl-C"
    )
    p.add_argument(
        "--stuck-after",
        type=parse_duration,
        metavar="D",
        help="a delivery not done this long after it arrived is stuck (default: the beat "
        "sweep's bound, BROKER_VISIBILITY_TIMEOUT_S plus a step's retry window)",
    )
    p.add_argument(
        "--quiet-after",
        type=parse_duration,
        default=QUIET_AFTER,
        metavar="D",
        help="warn about a linked Jira that sent nothing for this long (default 24h)",
    )
    p.add_argument("--receiver-url", metavar="URL", help="the receiver to ask (default PUBLIC_URL)")
    p.set_defaults(handler=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    res = resources.current()
    settings = res.settings
    stuck_after_s = (
        args.stuck_after.total_seconds()
        if args.stuck_after
        else stalled_after_s(
            settings.broker_visibility_timeout_s,
            settings.retry_budget_s,
            settings.retry_backoff_max_s,
        )
    )
    receiver_url = (args.receiver_url or res.settings.public_url).rstrip("/")
    while True:
        view = gather(res, receiver_url, stuck_after_s, args.quiet_after.total_seconds())
        if args.json:
            emit_json(view)
        else:
            render(view, clear=args.watch is not None)
        if args.watch is None:
            return EXIT_ATTENTION if view["problems"] else EXIT_OK
        time.sleep(args.watch)  # Ctrl-C ends the watch (exit 130)


def gather(
    res: Resources, receiver_url: str, stuck_after_s: float, quiet_after_s: float
) -> dict[str, Any]:
    """Every figure of the status screen, as its stable JSON form, with the problems and
    warnings found in them."""
    with transaction(res.pool) as conn:
        recent = q.recent_counts(conn)
        unfinished = q.unfinished(conn, stuck_after_s, STUCK_SHOWN)
        lag = q.lag(conn, LAG_SAMPLE)
        failed = counts_by_error(conn, Filters(status="failed"))
        integrations = q.integration_activity(conn)
        sweeps = {r.integration_id: r for r in q_reconcile.states(conn)}
        unmapped = q_identities.unmapped_counts(conn)
        signers = q_integrations.auths(conn)
        moves = q_migration.migrations(conn)
        dynamic = q_oauth2.dynamic_webhooks(conn)
    sweep = cache.last_sweep(res.redis)
    throttled = cache.paused_sites(res.redis, [i.id for i in integrations])
    today = datetime.now(UTC).date()
    view: dict[str, Any] = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "receiver": receiver_readiness(receiver_url),
        "broker": broker_depths(res.settings),
        "beat": None
        if sweep is None
        else {
            "last_sweep_at": datetime.fromtimestamp(sweep.at, UTC).isoformat(timespec="seconds"),
            "age_s": round(sweep.age_s, 1),
            "sent_unqueued": sweep.unqueued,
            "resent_stalled": sweep.stalled,
            "resent_side_effects": sweep.side_effects,
        },
        "deliveries": {
            "last_hour": {status: hour for status, (hour, _) in recent.items()},
            "last_day": {status: day for status, (_, day) in recent.items()},
        },
        "unfinished": {
            "count": unfinished.count,
            "oldest": None
            if unfinished.oldest_id is None
            else {
                "id": unfinished.oldest_id,
                "status": unfinished.oldest_status,
                "age_s": round(unfinished.oldest_age_s or 0.0, 1),
            },
            "stuck_after_s": stuck_after_s,
            "stuck": unfinished.stuck_count,
            "stuck_ids": unfinished.stuck_ids,
        },
        "lag": {
            "sample": lag.sample,
            "p50_ms": None if lag.p50_s is None else round(lag.p50_s * 1000, 1),
            "p99_ms": None if lag.p99_s is None else round(lag.p99_s * 1000, 1),
        },
        "failed": {"not_replayed": sum(failed.values()), "by_error_type": failed},
        "integrations": [
            {
                "id": i.id,
                "name": i.name,
                "status": i.status,
                "last_delivery_at": i.last_delivery_at.isoformat(timespec="seconds")
                if i.last_delivery_at
                else None,
                "quiet_s": None if i.quiet_s is None else round(i.quiet_s, 1),
                "signature": {
                    "expected": i.signing,
                    "seen": i.signature_seen,
                    "refusals": i.signature_refusals,
                    "since_refusal_s": None
                    if i.since_refusal_s is None
                    else round(i.since_refusal_s, 1),
                },
                "reconcile": _reconcile_view(sweeps.get(i.id), res.settings.reconcile_interval_s),
                "unmapped_users": unmapped.get(i.id, 0),
                "token": _token_view(signers.get(i.id), today),
                "dynamic_webhook": _dynamic_view([h for h in dynamic if h.integration_id == i.id]),
                "throttled_s": round(throttled[i.id], 1) if i.id in throttled else None,
                "moved_projects": [
                    {
                        "project": m.project_key,
                        "to": m.to_integration_id,
                        "missing": len(m.missing),
                        "finished": m.finished_at is not None,
                    }
                    for m in moves
                    if m.from_integration_id == i.id
                ],
            }
            for i in integrations
        ],
    }
    view["problems"], view["warnings"] = problems(view, quiet_after_s)
    return view


def _token_view(signer: q_integrations.Auth | None, today: date) -> dict[str, Any] | None:
    """A token's kind and expiry (as the operator gave it at link time), None for OAuth."""
    if signer is None or signer.auth_kind == "oauth1":
        return None
    expires = signer.token_expires_on
    return {
        "kind": signer.auth_kind,
        "expires_on": expires.isoformat() if expires else None,
        "days_left": (expires - today).days if expires else None,
    }


def _dynamic_view(hooks: list[q_oauth2.DynamicWebhook]) -> dict[str, Any] | None:
    """An OAuth 2.0 link's dynamic webhook: when Cloud stops sending it unless refreshed."""
    if not hooks:
        return None
    first = min(hooks, key=lambda h: h.expires_at)
    left_s = (first.expires_at - datetime.now(UTC)).total_seconds()
    return {
        "id": first.webhook_id,
        "expires_at": first.expires_at.isoformat(timespec="seconds"),
        "days_left": int(left_s // 86400),
        "refreshed_at": first.refreshed_at.isoformat(timespec="seconds"),
    }


def _reconcile_view(state: q_reconcile.State | None, default_interval_s: int) -> dict[str, Any]:
    """An integration's reconciliation (SPEC 9): switch, watermark, and how long since a
    sweep last completed (a watermark that stopped advancing shows there)."""
    if state is None:
        return {"enabled": False}
    done_at = state.last_success_at
    return {
        "enabled": state.enabled,
        "interval_s": state.interval_s or default_interval_s,
        "watermark": None
        if state.watermark_ms is None
        else datetime.fromtimestamp(state.watermark_ms / 1000, UTC).isoformat(timespec="seconds"),
        "ran": state.last_run_at is not None,
        "since_success_s": None
        if done_at is None
        else round((datetime.now(UTC) - done_at).total_seconds(), 1),
        "last_error": state.last_error,
    }


def receiver_readiness(url: str) -> dict[str, Any]:
    """The receiver's own /readyz answer (database and broker as it sees them)."""
    try:
        answer = requests.get(url + "/readyz", timeout=READY_TIMEOUT_S)
    except requests.RequestException as exc:
        return {"url": url, "ready": False, "detail": f"unreachable ({type(exc).__name__})"}
    try:
        detail: Any = answer.json()
    except ValueError:
        detail = f"HTTP {answer.status_code}"
    return {"url": url, "ready": answer.status_code == 200, "detail": detail}


def broker_depths(settings: Settings) -> dict[str, Any]:
    """Messages waiting per queue, and taken but not acknowledged: on Redis one pipelined
    round trip; on RabbitMQ one passive declare per queue (AMQP does not count what workers
    hold unacknowledged: RabbitMQ gives it back the moment a worker's connection drops)."""
    broker_url = settings.broker_url
    if settings.broker_is_amqp:
        conn = Connection(broker_url, connect_timeout=3)
        try:
            depths = queue_depths(conn)
        except (OSError, *conn.connection_errors) as exc:
            return {"reachable": False, "detail": f"unreachable ({type(exc).__name__})"}
        return {"reachable": True, "queues": depths, "unacked": None}
    client = redis.Redis.from_url(broker_url, socket_timeout=3, socket_connect_timeout=3)
    try:
        with client.pipeline(transaction=False) as pipe:
            for name in ALL_QUEUES:
                pipe.llen(name)
            pipe.hlen(UNACKED_KEY)
            *counts, unacked = pipe.execute()
    except redis.RedisError as exc:
        return {"reachable": False, "detail": f"unreachable ({type(exc).__name__})"}
    finally:
        client.close()
    return {
        "reachable": True,
        "queues": dict(zip(ALL_QUEUES, (int(n) for n in counts), strict=True)),
        "unacked": int(unacked),
    }


def render(view: dict[str, Any], clear: bool = False) -> None:
    """The status screen."""
    verdict = (
        styled(f"ATTENTION ({len(view['problems'])} problem(s))", "bold red")
        if view["problems"]
        else styled("OK", "bold green")
    )
    if clear:
        clear_screen()
    at = datetime.fromisoformat(view["at"]).strftime("%Y-%m-%d %H:%M:%S UTC")
    echo(f"jira-sync status at {at}: {verdict}")
    echo()
    receiver, broker, beat = view["receiver"], view["broker"], view["beat"]
    ready = "ready" if receiver["ready"] else "NOT READY"
    lines = [["receiver", f"{ready} at {receiver['url']} ({detail_text(receiver['detail'])})"]]
    if broker["reachable"]:
        queues = ", ".join(f"{name} {n}" for name, n in broker["queues"].items())
        held = broker["unacked"]
        lines.append(
            ["broker", queues + ("" if held is None else f"; taken, not acknowledged {held}")]
        )
    else:
        lines.append(["broker", broker["detail"]])
    lines.append(
        [
            "beat",
            "never swept"
            if beat is None
            else f"last sweep {age_text(beat['age_s'])} ago: sent {beat['sent_unqueued']} never "
            f"queued, re-sent {beat['resent_stalled']} stalled and "
            f"{beat['resent_side_effects']} side effect(s)",
        ]
    )
    unfinished, lag = view["unfinished"], view["lag"]
    oldest = unfinished["oldest"]
    lines.append(
        [
            "not done",
            "none"
            if oldest is None
            else f"{unfinished['count']}; oldest {oldest['id']} ({oldest['status']}), "
            f"{age_text(oldest['age_s'])} old; {unfinished['stuck']} stuck",
        ]
    )
    lines.append(
        [
            "202 -> done",
            "no delivery done yet"
            if not lag["sample"]
            else f"p50 {lag['p50_ms']} ms, p99 {lag['p99_ms']} ms "
            f"(last {lag['sample']} deliveries)",
        ]
    )
    echo(table(lines, None))
    echo()
    deliveries = view["deliveries"]
    echo(
        table(
            [
                [s, deliveries["last_hour"][s], deliveries["last_day"][s]]
                for s in q.DELIVERY_STATUSES
            ],
            ["DELIVERIES", "LAST HOUR", "LAST DAY"],
        )
    )
    echo()
    by_error = view["failed"]["by_error_type"]
    echo(
        table(
            [[k, n] for k, n in by_error.items()] or [["(none)", 0]],
            ["FAILED, NOT REPLAYED", "COUNT"],
        )
    )
    echo()
    echo(
        table(
            [
                [
                    i["id"],
                    i["name"],
                    i["status"],
                    i["last_delivery_at"] or "never",
                    _ago(i),
                    (i["reconcile"].get("watermark") or "not yet")
                    if i["reconcile"]["enabled"]
                    else "off",
                ]
                for i in view["integrations"]
            ],
            ["INTEGRATION", "NAME", "STATUS", "LAST DELIVERY", "", "RECONCILED UP TO"],
        )
    )
    moved = [
        f"{m['project']} -> integration {m['to']}"
        + ("" if m["finished"] else f" ({m['missing']} issue(s) still on {i['id']})")
        for i in view["integrations"]
        for m in i.get("moved_projects", [])
    ]
    if moved:
        echo(f"projects moved to Jira Cloud: {'; '.join(moved)}")
    dynamic = [
        f"{i['id']} until {i['dynamic_webhook']['expires_at']}"
        for i in view["integrations"]
        if i.get("dynamic_webhook")
    ]
    if dynamic:
        echo(f"dynamic webhooks (Cloud, OAuth 2.0; beat refreshes them): {'; '.join(dynamic)}")
    for title, items, mark, style in (
        ("problems", view["problems"], "!", "red"),
        ("warnings", view["warnings"], "~", "yellow"),
    ):
        if items:
            echo()
            echo(styled(f"{title}:", f"bold {style}"))
            for item in items:
                echo(styled(f"  {mark} {item}", style))


def _ago(integration: dict[str, Any]) -> str:
    quiet_s = integration["quiet_s"]
    return "" if quiet_s is None else f"{age_text(quiet_s)} ago"
