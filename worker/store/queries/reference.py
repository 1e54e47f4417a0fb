"""SQL for importing reference data (`jira-sync load`): idempotent upserts."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from psycopg.types.json import Jsonb

from worker.domain.model import SubscriptionReason
from worker.store.crypto import Vault
from worker.store.db import Connection

EXISTING = {
    "organizations": "SELECT slug AS v FROM organization",
    "users": "SELECT id AS v FROM app_user",
    "teams": "SELECT id AS v FROM team",
    "projects": "SELECT id AS v FROM project",
    "groups": "SELECT id AS v FROM issue_group",
    "integrations": "SELECT id AS v FROM integration",
}


def existing_ids(conn: Connection) -> dict[str, set[Any]]:
    return {name: {r["v"] for r in conn.execute(sql)} for name, sql in EXISTING.items()}


def organization_ids(conn: Connection) -> dict[str, int]:
    return {r["slug"]: int(r["id"]) for r in conn.execute("SELECT id, slug FROM organization")}


UPSERT_ORGANIZATION = """
INSERT INTO organization (slug, name, issue_sync_enabled) VALUES (%s, %s, %s)
ON CONFLICT (slug) DO UPDATE SET name = EXCLUDED.name,
    issue_sync_enabled = EXCLUDED.issue_sync_enabled
RETURNING id
"""


def upsert_organizations(conn: Connection, orgs: list[dict[str, Any]]) -> dict[str, int]:
    ids: dict[str, int] = {}
    for o in orgs:
        row = conn.execute(
            UPSERT_ORGANIZATION,
            (o["slug"], o.get("name", o["slug"]), o.get("issue_sync_enabled", False)),
        ).fetchone()
        assert row is not None
        ids[o["slug"]] = int(row["id"])
    return ids


UPSERT_USER = """
INSERT INTO app_user (id, name, is_active) VALUES (%s, %s, %s)
ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, is_active = EXCLUDED.is_active
"""
UPSERT_EMAIL = """
INSERT INTO user_email (user_id, email, is_verified) VALUES (%s, %s, %s)
ON CONFLICT (user_id, lower(email)) DO UPDATE SET is_verified = EXCLUDED.is_verified
"""


def upsert_users(conn: Connection, users: list[dict[str, Any]]) -> None:
    for u in users:
        conn.execute(UPSERT_USER, (u["id"], u.get("name", ""), u.get("is_active", True)))
        for e in u.get("emails", []):
            conn.execute(UPSERT_EMAIL, (u["id"], e["email"], e.get("verified", False)))


UPSERT_TEAM = """
INSERT INTO team (id, organization_id, slug, name) VALUES (%s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE SET organization_id = EXCLUDED.organization_id,
    slug = EXCLUDED.slug, name = EXCLUDED.name
"""
UPSERT_MEMBER = """
INSERT INTO team_member (team_id, user_id, is_active) VALUES (%s, %s, %s)
ON CONFLICT (team_id, user_id) DO UPDATE SET is_active = EXCLUDED.is_active
"""


def upsert_teams(conn: Connection, teams: list[dict[str, Any]], orgs: dict[str, int]) -> None:
    for t in teams:
        conn.execute(
            UPSERT_TEAM, (t["id"], orgs[t["organization"]], t["slug"], t.get("name", t["slug"]))
        )
        for m in t.get("members", []):
            conn.execute(UPSERT_MEMBER, (t["id"], m["user"], m.get("is_active", True)))


UPSERT_PROJECT = """
INSERT INTO project (id, organization_id, name, slug) VALUES (%s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE SET organization_id = EXCLUDED.organization_id,
    name = EXCLUDED.name, slug = EXCLUDED.slug
"""
LINK_PROJECT_TEAM = """
INSERT INTO project_team (project_id, team_id) VALUES (%s, %s) ON CONFLICT DO NOTHING
"""


def upsert_projects(conn: Connection, projects: list[dict[str, Any]], orgs: dict[str, int]) -> None:
    for p in projects:
        conn.execute(UPSERT_PROJECT, (p["id"], orgs[p["organization"]], p["name"], p["slug"]))
        for team_id in p.get("teams", []):
            conn.execute(LINK_PROJECT_TEAM, (p["id"], team_id))


UPSERT_GROUP = """
INSERT INTO issue_group (id, project_id, title, last_seen, status, resolved_at)
VALUES (%(id)s, %(project)s, %(title)s, COALESCE(%(seen)s::timestamptz, now()),
    %(status)s,
    CASE WHEN %(status)s = 'resolved' THEN COALESCE(%(resolved_at)s::timestamptz, now()) END)
ON CONFLICT (id) DO UPDATE SET project_id = EXCLUDED.project_id, title = EXCLUDED.title,
    last_seen = COALESCE(%(seen)s::timestamptz, issue_group.last_seen),
    status = EXCLUDED.status,
    resolved_at = CASE WHEN %(status)s = 'resolved' THEN
        COALESCE(%(resolved_at)s::timestamptz, issue_group.resolved_at, now()) END
"""


def upsert_groups(conn: Connection, groups: list[dict[str, Any]]) -> None:
    """Groups with their status (unresolved unless the document says resolved; resolved_at
    defaults to when the group was first loaded resolved)."""
    for g in groups:
        params = {
            "id": g["id"],
            "project": g["project"],
            "title": g.get("title", ""),
            "seen": g.get("last_seen"),
            "status": g.get("status", "unresolved"),
            "resolved_at": g.get("resolved_at"),
        }
        conn.execute(UPSERT_GROUP, params)


UPSERT_INTEGRATION = """
INSERT INTO integration (id, external_id, name, metadata, webhook_secret_enc, status)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE SET external_id = EXCLUDED.external_id, name = EXCLUDED.name,
    metadata = EXCLUDED.metadata, webhook_secret_enc = EXCLUDED.webhook_secret_enc,
    status = EXCLUDED.status
"""
UPSERT_CREDENTIAL = """
INSERT INTO integration_credential (integration_id, consumer_key, private_key_enc,
                                    access_token_enc, access_token_secret_enc, auth_kind,
                                    account_email, api_token_enc)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (integration_id) DO UPDATE SET consumer_key = EXCLUDED.consumer_key,
    private_key_enc = EXCLUDED.private_key_enc, access_token_enc = EXCLUDED.access_token_enc,
    access_token_secret_enc = EXCLUDED.access_token_secret_enc,
    auth_kind = EXCLUDED.auth_kind, account_email = EXCLUDED.account_email,
    api_token_enc = EXCLUDED.api_token_enc
"""
UPSERT_ORG_INTEGRATION = """
INSERT INTO organization_integration (organization_id, integration_id, status, config)
VALUES (%s, %s, %s, %s)
ON CONFLICT (organization_id, integration_id) DO UPDATE SET status = EXCLUDED.status,
    config = EXCLUDED.config
"""
SELECT_SECRETS = """
SELECT i.webhook_secret_enc, c.private_key_enc, c.access_token_enc, c.access_token_secret_enc,
       c.api_token_enc
FROM integration i JOIN integration_credential c ON c.integration_id = i.id WHERE i.id = %s
"""
SECRET_FIELDS = (
    "webhook_secret", "private_key", "access_token", "access_token_secret", "api_token"
)  # fmt: skip


def _encrypted(conn: Connection, integ: dict[str, Any], vault: Vault) -> dict[str, str]:
    """Encrypted secrets, reusing the stored ciphertext when the plain value is unchanged
    (Fernet output differs each time: re-encrypting would make a second load a change)."""
    row = conn.execute(SELECT_SECRETS, (integ["id"],)).fetchone()
    out: dict[str, str] = {}
    for name in SECRET_FIELDS:
        if name not in integ:
            continue
        stored = row[f"{name}_enc"] if row else None
        if stored is not None and vault.decrypt(stored) == integ[name]:
            out[name] = stored
        else:
            out[name] = vault.encrypt(integ[name])
    return out


def upsert_integrations(
    conn: Connection, integrations: list[dict[str, Any]], orgs: dict[str, int], vault: Vault
) -> None:
    for i in integrations:
        base_url = i["base_url"].rstrip("/")
        metadata = {
            "base_url": base_url,
            "domain_name": urlsplit(base_url).netloc,
            "verify_ssl": i.get("verify_ssl", True),
        }
        if "deployment_type" in i:
            metadata["deployment_type"] = i["deployment_type"]
        enc = _encrypted(conn, i, vault)
        conn.execute(
            UPSERT_INTEGRATION,
            (i["id"], i["external_id"], i.get("name", i["external_id"]), Jsonb(metadata),
             enc["webhook_secret"], i.get("status", "active")),
        )  # fmt: skip
        kind = "oauth1" if "api_token" not in i else "api_token" if i.get("email") else "pat"
        conn.execute(
            UPSERT_CREDENTIAL,
            (i["id"], i.get("consumer_key"), enc.get("private_key"), enc.get("access_token"),
             enc.get("access_token_secret"), kind, i.get("email"), enc.get("api_token")),
        )  # fmt: skip
        for link in i.get("organizations", []):
            config = {
                "sync_reverse_assignment": link.get("sync_reverse_assignment", False),
                "sync_forward_assignment": link.get("sync_forward_assignment", False),
                "sync_status_reverse": link.get("sync_status_reverse", False),
                "sync_status_forward": link.get("sync_status_forward", False),
            }
            conn.execute(
                UPSERT_ORG_INTEGRATION,
                (orgs[link["organization"]], i["id"], link.get("status", "active"), Jsonb(config)),
            )


UPSERT_EXTERNAL_ISSUE = """
INSERT INTO external_issue (id, organization_id, integration_id, key) VALUES (%s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE SET organization_id = EXCLUDED.organization_id,
    integration_id = EXCLUDED.integration_id, key = EXCLUDED.key
"""
LINK_GROUP = """
INSERT INTO group_link (group_id, project_id, external_issue_id)
SELECT g.id, g.project_id, %s FROM issue_group g WHERE g.id = %s
ON CONFLICT (group_id, external_issue_id) DO NOTHING
"""


def upsert_external_issues(
    conn: Connection, issues: list[dict[str, Any]], orgs: dict[str, int]
) -> None:
    for e in issues:
        conn.execute(
            UPSERT_EXTERNAL_ISSUE, (e["id"], orgs[e["organization"]], e["integration"], e["key"])
        )
        for group_id in e.get("groups", []):
            conn.execute(LINK_GROUP, (e["id"], group_id))


UPSERT_ASSIGNEE = """
INSERT INTO group_assignee (group_id, project_id, user_id, team_id)
SELECT g.id, g.project_id, %s, %s FROM issue_group g WHERE g.id = %s
ON CONFLICT (group_id) DO UPDATE SET user_id = EXCLUDED.user_id, team_id = EXCLUDED.team_id
"""


def upsert_assignees(conn: Connection, assignees: list[dict[str, Any]]) -> None:
    for a in assignees:
        conn.execute(UPSERT_ASSIGNEE, (a.get("user"), a.get("team"), a["group"]))


UPSERT_USER_SUBSCRIPTION = """
INSERT INTO group_subscription (group_id, project_id, user_id, reason)
SELECT g.id, g.project_id, %s, %s FROM issue_group g WHERE g.id = %s
ON CONFLICT (group_id, user_id) DO UPDATE SET reason = EXCLUDED.reason
"""
UPSERT_TEAM_SUBSCRIPTION = """
INSERT INTO group_subscription (group_id, project_id, team_id, reason)
SELECT g.id, g.project_id, %s, %s FROM issue_group g WHERE g.id = %s
ON CONFLICT (group_id, team_id) DO UPDATE SET reason = EXCLUDED.reason
"""


def upsert_subscriptions(conn: Connection, subscriptions: list[dict[str, Any]]) -> None:
    for s in subscriptions:
        reason = int(SubscriptionReason[s["reason"].upper()])
        if "user" in s:
            conn.execute(UPSERT_USER_SUBSCRIPTION, (s["user"], reason, s["group"]))
        else:
            conn.execute(UPSERT_TEAM_SUBSCRIPTION, (s["team"], reason, s["group"]))


UPSERT_NOTIFICATION_SETTING = """
INSERT INTO notification_setting (scope_type, scope_identifier, user_id, type, value)
VALUES ('project', %s, %s, %s, %s)
ON CONFLICT (scope_type, scope_identifier, user_id, type) DO UPDATE SET value = EXCLUDED.value
"""


def upsert_notification_settings(conn: Connection, settings: list[dict[str, Any]]) -> None:
    for s in settings:
        conn.execute(
            UPSERT_NOTIFICATION_SETTING, (s["project"], s.get("user"), s["type"], s["value"])
        )


# Caller-chosen ids must not collide with ids the database hands out later.
IDENTITY_TABLES = ("app_user", "team", "issue_group", "integration", "external_issue")


def bump_identities(conn: Connection) -> None:
    for table in IDENTITY_TABLES:
        conn.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
            f" GREATEST((SELECT COALESCE(max(id), 0) FROM {table}), 1))"
        )
