"""`jira-sync load`: validate a reference-data document whole, then import it in one transaction.

Ids are the caller's. Loading the same document twice changes nothing. Any unknown key, wrong
type or dangling reference is an error naming its JSON path (e.g. `groups[3].project: no such
project 99`), and then nothing is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from worker.domain.errors import InvalidInput
from worker.domain.model import SubscriptionReason
from worker.domain.status import GroupStatus
from worker.runtime.resources import Resources
from worker.store.db import transaction
from worker.store.queries import reference as q

OAUTH_FIELDS = ("consumer_key", "private_key", "access_token", "access_token_secret")

# section -> field -> (type, required). Nested lists of objects are described by a dict.
Spec = dict[str, tuple[Any, bool]]
EMAIL: Spec = {"email": (str, True), "verified": (bool, False)}
MEMBER: Spec = {"user": (int, True), "is_active": (bool, False)}
ORG_LINK: Spec = {
    "organization": (str, True),
    "sync_reverse_assignment": (bool, False),
    "sync_forward_assignment": (bool, False),
    "sync_status_reverse": (bool, False),
    "sync_status_forward": (bool, False),
    "status": (str, False),
}
SECTIONS: dict[str, Spec] = {
    "organizations": {"slug": (str, True), "name": (str, False),
                      "issue_sync_enabled": (bool, False)},
    "users": {"id": (int, True), "name": (str, False), "is_active": (bool, False),
              "emails": ([EMAIL], False)},
    "teams": {"id": (int, True), "organization": (str, True), "slug": (str, True),
              "name": (str, False), "members": ([MEMBER], False)},
    "projects": {"id": (int, True), "organization": (str, True), "slug": (str, True),
                 "name": (str, True), "teams": ([int], False)},
    "groups": {"id": (int, True), "project": (int, True), "title": (str, False),
               "last_seen": (str, False), "status": (str, False), "resolved_at": (str, False)},
    "integrations": {"id": (int, True), "external_id": (str, True), "name": (str, False),
                     "base_url": (str, True), "verify_ssl": (bool, False),
                     "consumer_key": (str, False), "private_key": (str, False),
                     "access_token": (str, False), "access_token_secret": (str, False),
                     "deployment_type": (str, False), "email": (str, False),
                     "api_token": (str, False),
                     "webhook_secret": (str, True), "status": (str, False),
                     "organizations": ([ORG_LINK], False)},
    "external_issues": {"id": (int, True), "integration": (int, True),
                        "organization": (str, True), "key": (str, True),
                        "groups": ([int], False)},
    "assignees": {"group": (int, True), "user": (int, False), "team": (int, False)},
    "subscriptions": {"group": (int, True), "user": (int, False), "team": (int, False),
                      "reason": (str, True)},
    "notification_settings": {"project": (int, True), "user": (int, False),
                              "type": (str, True), "value": (str, True)},
}  # fmt: skip
STATUSES = ("active", "disabled")
GROUP_STATUSES = tuple(str(s) for s in GroupStatus)
MAX_ID = (1 << 63) - 1


def _type_name(kind: Any) -> str:
    if isinstance(kind, list):
        return "a list"
    return {int: "an integer", str: "a string", bool: "true or false"}[kind]


def _check_value(path: str, value: Any, kind: Any, errors: list[str]) -> None:
    if isinstance(kind, list):
        if not isinstance(value, list):
            errors.append(f"{path}: must be a list")
            return
        for i, item in enumerate(value):
            _check_value(f"{path}[{i}]", item, kind[0], errors)
    elif isinstance(kind, dict):
        _check_object(path, value, kind, errors)
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append(f"{path}: must be an integer")
        elif not 0 < value <= MAX_ID:
            errors.append(f"{path}: must be a positive 64-bit integer")
    elif not isinstance(value, kind):
        errors.append(f"{path}: must be {_type_name(kind)}")
    elif kind is str and not value.strip():
        errors.append(f"{path}: must not be empty")


def _check_object(path: str, obj: Any, spec: Spec, errors: list[str]) -> None:
    if not isinstance(obj, dict):
        errors.append(f"{path}: must be an object")
        return
    for key in obj:
        if key not in spec:
            errors.append(f"{path}.{key}: unknown key")
    for key, (kind, required) in spec.items():
        if key not in obj:
            if required:
                errors.append(f"{path}.{key}: missing")
            continue
        _check_value(f"{path}.{key}", obj[key], kind, errors)


def check_shape(doc: Any) -> list[str]:
    """Every structural problem of the document, each naming its JSON path."""
    errors: list[str] = []
    if not isinstance(doc, dict):
        return ["$: the document must be a JSON object"]
    for key in doc:
        if key not in SECTIONS:
            errors.append(f"{key}: unknown section (known: {', '.join(SECTIONS)})")
    for section, spec in SECTIONS.items():
        items = doc.get(section, [])
        if not isinstance(items, list):
            errors.append(f"{section}: must be a list")
            continue
        for i, item in enumerate(items):
            _check_object(f"{section}[{i}]", item, spec, errors)
    return errors


@dataclass
class Known:
    """The ids the document and the database already hold, for reference checks."""

    organizations: set[str] = field(default_factory=set)
    users: set[int] = field(default_factory=set)
    teams: set[int] = field(default_factory=set)
    projects: set[int] = field(default_factory=set)
    groups: set[int] = field(default_factory=set)
    integrations: set[int] = field(default_factory=set)


def _check_refs(doc: dict[str, Any], known: Known) -> list[str]:
    errors: list[str] = []

    def ref(path: str, value: Any, pool: set[Any], what: str) -> None:
        if value not in pool:
            errors.append(f"{path}: no such {what} {value}")

    for i, team in enumerate(doc.get("teams", [])):
        ref(f"teams[{i}].organization", team["organization"], known.organizations, "organization")
        for j, m in enumerate(team.get("members", [])):
            ref(f"teams[{i}].members[{j}].user", m["user"], known.users, "user")
    for i, project in enumerate(doc.get("projects", [])):
        ref(f"projects[{i}].organization", project["organization"], known.organizations,
            "organization")  # fmt: skip
        if not 0 < project["id"] < (1 << 53):
            errors.append(f"projects[{i}].id: must be below 2^53")
        for j, team_id in enumerate(project.get("teams", [])):
            ref(f"projects[{i}].teams[{j}]", team_id, known.teams, "team")
    for i, group in enumerate(doc.get("groups", [])):
        ref(f"groups[{i}].project", group["project"], known.projects, "project")
        for name in ("last_seen", "resolved_at"):
            if name in group:
                try:
                    datetime.fromisoformat(group[name].replace("Z", "+00:00"))
                except ValueError:
                    errors.append(f"groups[{i}].{name}: must be an ISO-8601 time")
        if group.get("status", "unresolved") not in GROUP_STATUSES:
            errors.append(f"groups[{i}].status: must be one of {', '.join(GROUP_STATUSES)}")
        elif "resolved_at" in group and group.get("status") != "resolved":
            errors.append(f"groups[{i}].resolved_at: only a resolved group has one")
    for i, integ in enumerate(doc.get("integrations", [])):
        if len(integ["external_id"]) > 64:
            errors.append(f"integrations[{i}].external_id: at most 64 characters")
        oauth = [name for name in OAUTH_FIELDS if name in integ]
        if "api_token" in integ:
            if oauth:
                errors.append(f"integrations[{i}]: either api_token or {oauth[0]}, not both")
        elif len(oauth) != len(OAUTH_FIELDS):
            missing = [name for name in OAUTH_FIELDS if name not in integ]
            errors.append(f"integrations[{i}].{missing[0]}: missing (or give api_token)")
        if len(integ.get("consumer_key", "")) > 200:
            errors.append(f"integrations[{i}].consumer_key: at most 200 characters")
        if urlsplit(integ["base_url"]).scheme not in ("http", "https"):
            errors.append(f"integrations[{i}].base_url: must be an http or https URL")
        if integ.get("status", "active") not in STATUSES:
            errors.append(f"integrations[{i}].status: must be active or disabled")
        for j, link in enumerate(integ.get("organizations", [])):
            ref(f"integrations[{i}].organizations[{j}].organization", link["organization"],
                known.organizations, "organization")  # fmt: skip
    for i, ext in enumerate(doc.get("external_issues", [])):
        ref(f"external_issues[{i}].integration", ext["integration"], known.integrations,
            "integration")  # fmt: skip
        ref(f"external_issues[{i}].organization", ext["organization"], known.organizations,
            "organization")  # fmt: skip
        for j, group_id in enumerate(ext.get("groups", [])):
            ref(f"external_issues[{i}].groups[{j}]", group_id, known.groups, "group")
    for section in ("assignees", "subscriptions"):
        for i, row in enumerate(doc.get(section, [])):
            ref(f"{section}[{i}].group", row["group"], known.groups, "group")
            if ("user" in row) == ("team" in row):
                errors.append(f"{section}[{i}]: give exactly one of user or team")
            if "user" in row:
                ref(f"{section}[{i}].user", row["user"], known.users, "user")
            if "team" in row:
                ref(f"{section}[{i}].team", row["team"], known.teams, "team")
    for i, sub in enumerate(doc.get("subscriptions", [])):
        if sub["reason"].upper() not in SubscriptionReason.__members__:
            names = ", ".join(r.name.lower() for r in SubscriptionReason)
            errors.append(f"subscriptions[{i}].reason: must be one of {names}")
    for i, setting in enumerate(doc.get("notification_settings", [])):
        ref(f"notification_settings[{i}].project", setting["project"], known.projects, "project")
        if "user" in setting:
            ref(f"notification_settings[{i}].user", setting["user"], known.users, "user")
    return errors


def _known(doc: dict[str, Any], existing: dict[str, set[Any]]) -> Known:
    return Known(
        organizations={o["slug"] for o in doc.get("organizations", [])} | existing["organizations"],
        users={u["id"] for u in doc.get("users", [])} | existing["users"],
        teams={t["id"] for t in doc.get("teams", [])} | existing["teams"],
        projects={p["id"] for p in doc.get("projects", [])} | existing["projects"],
        groups={g["id"] for g in doc.get("groups", [])} | existing["groups"],
        integrations={i["id"] for i in doc.get("integrations", [])} | existing["integrations"],
    )


@dataclass
class LoadResult:
    """How many rows of each section the document holds (all upserted)."""

    counts: dict[str, int]


def load_scene(
    res: Resources, doc: Any, progress: Callable[[int], None] | None = None
) -> LoadResult:
    """Validate the whole document, then upsert it in one transaction; raise InvalidInput.
    `progress` is told how many rows each section added as it is written."""
    errors = check_shape(doc)
    if errors:
        raise InvalidInput("; ".join(errors[:20]))

    def rows(section: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = doc.get(section, [])
        if progress:
            progress(len(found))
        return found

    with transaction(res.pool) as conn:
        errors = _check_refs(doc, _known(doc, q.existing_ids(conn)))
        if errors:
            raise InvalidInput("; ".join(errors[:20]))
        org_ids = q.upsert_organizations(conn, rows("organizations"))
        org_ids |= q.organization_ids(conn)
        q.upsert_users(conn, rows("users"))
        q.upsert_teams(conn, rows("teams"), org_ids)
        q.upsert_projects(conn, rows("projects"), org_ids)
        q.upsert_groups(conn, rows("groups"))
        q.upsert_integrations(conn, rows("integrations"), org_ids, res.vault)
        q.upsert_external_issues(conn, rows("external_issues"), org_ids)
        q.upsert_assignees(conn, rows("assignees"))
        q.upsert_subscriptions(conn, rows("subscriptions"))
        q.upsert_notification_settings(conn, rows("notification_settings"))
        q.bump_identities(conn)
    return LoadResult({section: len(doc.get(section, [])) for section in SECTIONS})


def row_count(doc: Any) -> int:
    """How many rows a document holds in all (for the progress bar of `load`)."""
    if not isinstance(doc, dict):
        return 0
    return sum(len(v) for k, v in doc.items() if k in SECTIONS and isinstance(v, list))
