"""Reference data for the project tests: one organization, two projects with groups."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from worker.domain import snowflake

WEB = snowflake.encode(10, 0, 1)
API = snowflake.encode(10, 0, 2)
RECENT = (101, 102)  # WEB's groups seen in the last 24 h
STALE = 103  # seen two days ago
OTHER = (201, 202)  # API's groups


def _ago(hours: float) -> str:
    return (datetime.now(UTC) - timedelta(hours=hours)).isoformat()


def project_scene(extra_projects: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "organizations": [{"slug": "acme"}, {"slug": "globex"}],
        "users": [{"id": 1, "emails": [{"email": "ann@acme.test", "verified": True}]},
                  {"id": 2}],
        "teams": [{"id": 1, "organization": "acme", "slug": "core", "members": [{"user": 1}]},
                  {"id": 2, "organization": "globex", "slug": "ops"}],
        "projects": [
            {"id": WEB, "organization": "acme", "slug": "Web", "name": "Web", "teams": [1]},
            {"id": API, "organization": "acme", "slug": "api", "name": "API", "teams": [1]},
            *(extra_projects or []),
        ],
        "groups": [
            {"id": RECENT[0], "project": WEB, "last_seen": _ago(1)},
            {"id": RECENT[1], "project": WEB, "last_seen": _ago(23)},
            {"id": STALE, "project": WEB, "last_seen": _ago(48)},
            {"id": OTHER[0], "project": API, "last_seen": _ago(1)},
            {"id": OTHER[1], "project": API, "last_seen": _ago(2)},
        ],
        "assignees": [{"group": RECENT[0], "user": 1}, {"group": OTHER[0], "user": 1}],
        "subscriptions": [{"group": RECENT[0], "user": 1, "reason": "assigned"},
                          {"group": RECENT[1], "user": 2, "reason": "comment"},
                          {"group": OTHER[0], "user": 1, "reason": "assigned"}],
        "notification_settings": [
            {"project": WEB, "user": 1, "type": "workflow", "value": "always"},
            {"project": WEB, "user": 2, "type": "deploy", "value": "never"},
            {"project": API, "user": 1, "type": "workflow", "value": "always"},
        ],
    }  # fmt: skip
