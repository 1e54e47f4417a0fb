"""Real-shaped Jira Server `jira:issue_updated` payloads and the reference data they point at.

The mix follows the issue: 70% of deliveries change no assignee, 20% assign, 10% unassign,
over 200 Jira issues linked to 1,000 groups.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

INTEGRATION_ID = 1
EXTERNAL_ID = "jira.bench.test:jira-sync"
WEBHOOK_SECRET = "bench-webhook-secret-0123456789abcdef"
ORGANIZATION = "bench"
JIRA_BASE = "https://jira.bench.test"

ISSUES = 200
GROUPS = 1000
USERS = 60
TEAMS = 6
PROJECTS = 10
NO_CHANGE, ASSIGN, UNASSIGN = "no-change", "assign", "unassign"
MIX = ((NO_CHANGE, 0.70), (ASSIGN, 0.20), (UNASSIGN, 0.10))

# Fixed-width slot for a per-request changelog id: the body length never changes.
CHANGELOG_SLOT = b"@@@@@@@@@@@@"


def user_email(user_id: int) -> str:
    return f"user{user_id}@bench.test"


def issue_key(n: int) -> str:
    return f"BEN-{n + 1}"


def _project_id(n: int) -> int:
    return (1 << 52) + 1000 + n


def scene() -> dict[str, Any]:
    """Reference data in the `jira-sync load` format: one organization syncing inbound from one
    Jira (outbound off: the bench calls no Jira), 200 issues linked to 5 groups each."""
    users = [
        {
            "id": u,
            "name": f"User {u}",
            "emails": [{"email": user_email(u), "verified": True}],
        }
        for u in range(1, USERS + 1)
    ]
    teams = [
        {
            "id": t,
            "organization": ORGANIZATION,
            "slug": f"team-{t}",
            "members": [{"user": u} for u in range(1, USERS + 1) if u % TEAMS == t % TEAMS],
        }
        for t in range(1, TEAMS + 1)
    ]
    projects = [
        {
            "id": _project_id(p),
            "organization": ORGANIZATION,
            "slug": f"project-{p}",
            "name": f"Project {p}",
            "teams": [t for t in range(1, TEAMS + 1) if (t + p) % 2 == 0] or [1],
        }
        for p in range(PROJECTS)
    ]
    groups = [
        {"id": g, "project": _project_id(g % PROJECTS), "title": f"Error {g}"}
        for g in range(1, GROUPS + 1)
    ]
    per_issue = GROUPS // ISSUES
    external = [
        {
            "id": n + 1,
            "integration": INTEGRATION_ID,
            "organization": ORGANIZATION,
            "key": issue_key(n),
            "groups": [n * per_issue + k + 1 for k in range(per_issue)],
        }
        for n in range(ISSUES)
    ]
    return {
        "organizations": [{"slug": ORGANIZATION, "name": "Bench", "issue_sync_enabled": True}],
        "users": users,
        "teams": teams,
        "projects": projects,
        "groups": groups,
        "integrations": [
            {
                "id": INTEGRATION_ID,
                "external_id": EXTERNAL_ID,
                "name": "Bench Jira",
                "base_url": JIRA_BASE,
                "consumer_key": "jira-sync",
                "private_key": _private_key_pem(),
                "access_token": "bench-access-token",
                "access_token_secret": "bench-access-secret",
                "webhook_secret": WEBHOOK_SECRET,
                "organizations": [
                    {
                        "organization": ORGANIZATION,
                        "sync_reverse_assignment": True,
                        "sync_forward_assignment": False,
                    }
                ],
            }
        ],
        "external_issues": external,
    }


def _private_key_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _person(user_id: int) -> dict[str, Any]:
    name = f"user{user_id}"
    return {
        "self": f"{JIRA_BASE}/rest/api/2/user?username={name}",
        "name": name,
        "key": f"JIRAUSER{10000 + user_id}",
        "emailAddress": user_email(user_id),
        "avatarUrls": {
            "48x48": f"{JIRA_BASE}/secure/useravatar?ownerId={name}&avatarId=10341",
            "24x24": f"{JIRA_BASE}/secure/useravatar?size=small&ownerId={name}&avatarId=10341",
        },
        "displayName": f"User {user_id}",
        "active": True,
        "timeZone": "Europe/Berlin",
    }


def payload(
    kind: str, issue: int, ts_ms: int, changelog_id: int | str, rng: random.Random
) -> dict[str, Any]:
    """One delivery of the given kind for issue number `issue` (0-based), about 2 KB."""
    actor = rng.randint(1, USERS)
    assignee = rng.randint(1, USERS)
    items: list[dict[str, Any]]
    if kind == NO_CHANGE:
        items = [
            {
                "field": "status",
                "fieldtype": "jira",
                "from": "10000",
                "fromString": "To Do",
                "to": "3",
                "toString": "In Progress",
            }
        ]
        current: dict[str, Any] | None = _person(assignee)
    elif kind == ASSIGN:
        items = [
            {
                "field": "assignee",
                "fieldtype": "jira",
                "from": None,
                "fromString": None,
                "to": f"user{assignee}",
                "toString": f"User {assignee}",
            }
        ]
        current = _person(assignee)
    else:
        items = [
            {
                "field": "assignee",
                "fieldtype": "jira",
                "from": f"user{assignee}",
                "fromString": f"User {assignee}",
                "to": None,
                "toString": None,
            }
        ]
        current = None
    key = issue_key(issue)
    return {
        "timestamp": ts_ms,
        "webhookEvent": "jira:issue_updated",
        "issue_event_type_name": "issue_assigned" if kind != NO_CHANGE else "issue_generic",
        "user": _person(actor),
        "issue": {
            "id": str(10000 + issue),
            "self": f"{JIRA_BASE}/rest/api/2/issue/{10000 + issue}",
            "key": key,
            "fields": {
                "summary": f"Checkout fails with a TypeError on {key}",
                "issuetype": {"id": "10004", "name": "Bug", "subtask": False},
                "project": {"id": "10000", "key": "BEN", "name": "Bench"},
                "priority": {"id": "3", "name": "Medium"},
                "status": {"id": "3", "name": "In Progress"},
                "labels": ["backend", "checkout"],
                "created": "2026-11-20T10:15:30.000+0000",
                "updated": "2026-11-29T11:42:07.000+0000",
                "assignee": current,
                "reporter": _person(actor),
            },
        },
        "changelog": {"id": str(changelog_id), "items": items},
    }


@dataclass(frozen=True)
class Delivery:
    """One generated delivery: its kind, its issue and the JSON body."""

    kind: str
    issue: int
    body: str


def mix(count: int, base_ts_ms: int, seed: int = 7) -> list[Delivery]:
    """`count` deliveries of the realistic mix, timestamps increasing, over ISSUES issues."""
    rng = random.Random(seed)
    kinds = [k for k, _ in MIX]
    weights = [w for _, w in MIX]
    out = []
    for n in range(count):
        kind = rng.choices(kinds, weights)[0]
        issue = rng.randrange(ISSUES)
        body = json.dumps(payload(kind, issue, base_ts_ms + n, base_ts_ms + n, rng))
        out.append(Delivery(kind, issue, body))
    return out


def templates(count: int, base_ts_ms: int, seed: int = 11) -> list[bytes]:
    """Bodies of the mix whose changelog id is a fixed-width slot, for the load generator."""
    rng = random.Random(seed)
    kinds = [k for k, _ in MIX]
    weights = [w for _, w in MIX]
    out = []
    for n in range(count):
        kind = rng.choices(kinds, weights)[0]
        body = payload(kind, rng.randrange(ISSUES), base_ts_ms + n, CHANGELOG_SLOT.decode(), rng)
        out.append(json.dumps(body).encode())
    return out
