"""Helpers for the inbound pipeline's integration tests: a reference scene, real-shaped Jira
Server webhook bodies, posting deliveries through the inbox, and reading a group's state."""

from __future__ import annotations

import copy
import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any

import redis

from config.celery import ALL_QUEUES
from devtools import rabbitmq as amqp
from tasks import relay
from tests.conftest import wait_for
from tests.fakejira import CONSUMER_KEY, rsa_keypair
from worker.runtime.app import app
from worker.runtime.resources import Resources
from worker.store.db import transaction
from worker.store.queries import deliveries as q_deliveries

ANN, BOB, CY, DEE, EVE, FAY = 1, 2, 3, 4, 5, 6
CORE_TEAM, OTHER_TEAM = 1, 2
PROJECT = 10
GROUP = 100
JIRA = 1
ISSUE_KEY = "APP-1"

JIRA_USERS: dict[int, dict[str, Any]] = {
    ANN: {"name": "ann", "emailAddress": "Ann@Acme.test", "displayName": "Ann A."},
    BOB: {"name": "bob", "emailAddress": "bob@acme.test", "displayName": "Bob B."},
    CY: {"name": "cy", "emailAddress": "cy@acme.test", "displayName": "Cy C."},
    DEE: {"name": "dee", "emailAddress": "dee@acme.test", "displayName": "Dee D."},
    EVE: {"name": "eve", "emailAddress": "eve@acme.test", "displayName": "Eve E."},
    FAY: {"name": "fay", "emailAddress": "fay@acme.test", "displayName": "Fay F."},
}


def integration(
    integration_id: int, host: str, organizations: list[dict[str, Any]], base_url: str = ""
) -> dict[str, Any]:
    return {
        "id": integration_id,
        "external_id": f"{host}:{CONSUMER_KEY}",
        "base_url": base_url or f"https://{host}",
        "consumer_key": CONSUMER_KEY,
        "private_key": rsa_keypair().private_pem,
        "access_token": "token-" + secrets.token_hex(4),
        "access_token_secret": "secret-" + secrets.token_hex(4),
        "webhook_secret": secrets.token_hex(16),
        "organizations": organizations,
    }


def user(user_id: int, name: str, verified: bool = True, active: bool = True) -> dict[str, Any]:
    email = {"email": f"{name.lower()}@acme.test", "verified": verified}
    return {"id": user_id, "name": name, "is_active": active, "emails": [email]}


def base_scene() -> dict[str, Any]:
    """Acme with one project on the core team; Dee's email is unverified, Eve is inactive,
    Fay is only on a team the project does not use; APP-1 is linked to group 100."""
    return copy.deepcopy(
        {
            "organizations": [{"slug": "acme", "name": "Acme", "issue_sync_enabled": True}],
            "users": [user(ANN, "Ann"), user(BOB, "Bob"), user(CY, "Cy"),
                      user(DEE, "Dee", verified=False), user(EVE, "Eve", active=False),
                      user(FAY, "Fay")],
            "teams": [
                {"id": CORE_TEAM, "organization": "acme", "slug": "core",
                 "members": [{"user": u} for u in (ANN, BOB, CY, DEE, EVE)]},
                {"id": OTHER_TEAM, "organization": "acme", "slug": "other",
                 "members": [{"user": FAY}]},
            ],
            "projects": [{"id": PROJECT, "organization": "acme", "slug": "web", "name": "Web",
                          "teams": [CORE_TEAM]}],
            "groups": [{"id": GROUP, "project": PROJECT, "title": "TypeError in app.js"}],
            "integrations": [
                integration(JIRA, "jira.acme.test", [
                    {"organization": "acme", "sync_reverse_assignment": True}
                ])
            ],
            "external_issues": [{"id": 7, "integration": JIRA, "organization": "acme",
                                 "key": ISSUE_KEY, "groups": [GROUP]}],
        }
    )  # fmt: skip


def assignee_item(to_name: str | None) -> dict[str, Any]:
    return {
        "field": "assignee",
        "fieldtype": "jira",
        "from": None,
        "fromString": None,
        "to": to_name,
        "toString": to_name.title() if to_name else None,
    }


def jira_payload(
    assignee: dict[str, Any] | int | None,
    ts: int,
    changelog_id: int,
    key: str = ISSUE_KEY,
    items: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A Jira Server `jira:issue_updated` webhook body; assignee is a Jira user, a user id of
    JIRA_USERS, or None for unassigned."""
    if isinstance(assignee, int):
        assignee = dict(JIRA_USERS[assignee])
    name = assignee.get("name") if assignee else None
    return {
        "timestamp": ts,
        "webhookEvent": "jira:issue_updated",
        "issue_event_type_name": "issue_assigned",
        "user": {"name": "admin", "emailAddress": "admin@acme.test", "displayName": "Admin"},
        "issue": {
            "id": str(10000 + sum(map(ord, key))),
            "self": f"https://jira.acme.test/rest/api/2/issue/{key}",
            "key": key,
            "fields": {"summary": "Broken login", "assignee": assignee, "status": {"name": "Open"}},
        },
        "changelog": {"id": str(changelog_id), "items": items or [assignee_item(name)]},
    }


def dedupe_key(payload: dict[str, Any]) -> str:
    ident = [
        payload["webhookEvent"],
        payload["issue"]["id"],
        payload["changelog"]["id"],
        payload["timestamp"],
    ]
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()


def store(res: Resources, payload: dict[str, Any], integration_id: int = JIRA) -> int | None:
    """Store a delivery as the receiver does; None when it is a duplicate."""
    return store_raw(
        res,
        integration_id,
        dedupe_key(payload),
        json.dumps(payload),
        payload["issue"]["key"],
        payload["timestamp"],
        {"Content-Type": "application/json"},
    )


def store_raw(
    res: Resources,
    integration_id: int,
    key: str,
    body: str,
    issue_key: str | None,
    event_ts: int | None,
    headers: dict[str, str] | None = None,
) -> int | None:
    """Store any body as a delivery (even one the receiver would refuse); None if a duplicate."""
    new = q_deliveries.NewDelivery(integration_id, key, body, headers or {}, issue_key, event_ts)
    with transaction(res.pool) as conn:
        return q_deliveries.insert_deliveries(conn, [new])[0]


def enqueue(res: Resources, delivery_ids: list[int]) -> None:
    with transaction(res.pool) as conn:
        relay.enqueue(app, conn, delivery_ids)


def post(res: Resources, payload: dict[str, Any], integration_id: int = JIRA) -> int:
    delivery_id = store(res, payload, integration_id)
    assert delivery_id is not None, "duplicate delivery"
    enqueue(res, [delivery_id])
    return delivery_id


@dataclass(frozen=True)
class Finished:
    status: str
    outcome: str | None
    detail: dict[str, Any]


def finished(res: Resources, delivery_ids: list[int]) -> dict[int, Finished] | None:
    with transaction(res.pool) as conn:
        rows = conn.execute(
            "SELECT id, status, outcome, detail FROM webhook_delivery WHERE id = ANY(%s)",
            (delivery_ids,),
        ).fetchall()
    if any(r["status"] not in ("done", "failed") for r in rows):
        return None
    return {r["id"]: Finished(r["status"], r["outcome"], r["detail"]) for r in rows}


def wait_finished(
    res: Resources, delivery_ids: list[int], timeout_s: float = 30
) -> dict[int, Finished]:
    result: dict[int, Finished] = wait_for(
        lambda: finished(res, delivery_ids), timeout_s, f"deliveries {delivery_ids} to finish"
    )
    return result


def wait_failed(res: Resources, delivery_id: int, timeout_s: float = 30) -> Finished:
    """A delivery that a side effect (an outbound push) fails: it is `done` once its groups
    changed, and `failed` only when the push that follows has failed for good."""
    found: Finished = wait_for(
        lambda: (
            (f := (finished(res, [delivery_id]) or {}).get(delivery_id))
            and f.status == "failed"
            and f
        ),
        timeout_s,
        f"delivery {delivery_id} to be failed by its side effect",
    )
    return found


def outcome_of(res: Resources, delivery_id: int, timeout_s: float = 30) -> str | None:
    done = wait_finished(res, [delivery_id], timeout_s)[delivery_id]
    assert done.status == "done", done
    return done.outcome


@dataclass(frozen=True)
class GroupState:
    assignee: int | None
    assignee_team: int | None
    subscriptions: dict[str, str]  # "user:1" / "team:2" -> reason code
    activity: list[tuple[int, dict[str, Any]]]
    history: list[int]


def group_state(res: Resources, group_id: int = GROUP) -> GroupState:
    with transaction(res.pool) as conn:
        row = conn.execute(
            "SELECT user_id, team_id FROM group_assignee WHERE group_id = %s", (group_id,)
        ).fetchone()
        subs = conn.execute(
            "SELECT user_id, team_id, reason FROM group_subscription WHERE group_id = %s",
            (group_id,),
        ).fetchall()
        activity = conn.execute(
            "SELECT type, data FROM activity WHERE group_id = %s ORDER BY id", (group_id,)
        ).fetchall()
        history = conn.execute(
            "SELECT status FROM group_history WHERE group_id = %s ORDER BY id", (group_id,)
        ).fetchall()
    return GroupState(
        assignee=row["user_id"] if row else None,
        assignee_team=row["team_id"] if row else None,
        subscriptions={
            (f"user:{s['user_id']}" if s["user_id"] else f"team:{s['team_id']}"): s["reason"]
            for s in subs
        },
        activity=[(a["type"], a["data"]) for a in activity],
        history=[h["status"] for h in history],
    )


def count(res: Resources, sql: str, *params: Any) -> int:
    with transaction(res.pool) as conn:
        row = conn.execute(sql, params).fetchone()
    assert row is not None
    return int(next(iter(row.values())))


def declare_queues() -> None:
    """Re-create the broker's queue bindings (a test's clean state flushes them) so that
    messages published by processes that declared them earlier are not dropped."""
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        for queue in app.amqp.queues.values():
            queue(channel).declare()


def broker_busy(broker_url: str) -> int:
    """Messages waiting on our queues plus those a worker holds unacknowledged (running)."""
    if amqp.is_amqp(broker_url):
        return amqp.busy(broker_url)
    client = redis.Redis.from_url(broker_url)
    try:
        waiting = sum(int(client.llen(name)) for name in ALL_QUEUES)
        return waiting + int(client.hlen("unacked"))
    finally:
        client.close()


def wait_idle(broker_url: str, timeout_s: float = 30) -> None:
    """Until no step is queued or running, so the next test's clean state races nothing."""
    wait_for(lambda: broker_busy(broker_url) == 0, timeout_s, "the workers to go idle")
