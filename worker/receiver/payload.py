"""Reading a Jira Server webhook delivery (pure): what the receiver checks before it stores
one, and the dedupe key that makes a delivery stored once."""

from __future__ import annotations

import hashlib
import json
from typing import Any

KEPT_HEADERS = ("x-atlassian-webhook-identifier", "user-agent", "content-type")
MAX_HEADER_CHARS = 256
MAX_ISSUE_KEY_CHARS = 255
MAX_IDENTIFIER_CHARS = 200
BIGINT_MAX = (1 << 63) - 1


class Refused(Exception):
    """Raised while reading a delivery when it must be answered with a 4xx."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


def is_json_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def parse_body(raw: bytes) -> tuple[str, dict[str, Any]]:
    try:
        text = raw.decode("utf-8")
        payload = json.loads(text, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise Refused(400, "bad_request", "body is not UTF-8") from None
    except (ValueError, RecursionError):
        raise Refused(400, "bad_request", "body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise Refused(400, "bad_request", "body must be a JSON object")
    return text, payload


def has_changes(payload: dict[str, Any]) -> bool:
    changelog = payload.get("changelog")
    if changelog is None:
        return False
    if not isinstance(changelog, dict):
        raise Refused(400, "bad_request", "changelog must be an object")
    items = changelog.get("items")
    if items is None:
        return False
    if not isinstance(items, list):
        raise Refused(400, "bad_request", "changelog.items must be a list")
    return bool(items)


def issue_key(payload: dict[str, Any]) -> str:
    issue = payload.get("issue")
    key = issue.get("key") if isinstance(issue, dict) else None
    if not isinstance(key, str) or not key:
        raise Refused(400, "bad_request", "issue.key is missing")
    if len(key) > MAX_ISSUE_KEY_CHARS or not key.isprintable():
        raise Refused(400, "bad_request", "issue.key is not a valid issue key")
    return key


def event_ts(payload: dict[str, Any]) -> int | None:
    ts = payload.get("timestamp")
    if ts is None:
        return None
    if isinstance(ts, bool) or not isinstance(ts, int) or not 0 <= ts <= BIGINT_MAX:
        raise Refused(400, "bad_request", "timestamp must be an integer (epoch milliseconds)")
    return ts


def clean_header(value: str) -> str:
    return "".join(c for c in value if c.isprintable())[:MAX_HEADER_CHARS]


def dedupe_key(integration_id: int, identifier: str | None, payload: dict[str, Any]) -> str:
    """Jira's delivery identifier when sent, else a hash of what identifies the event."""
    if identifier:
        if len(identifier) <= MAX_IDENTIFIER_CHARS and identifier.isprintable():
            return f"id:{identifier}"
        return "idh:" + hashlib.sha256(identifier.encode("utf-8", "replace")).hexdigest()
    issue, changelog = payload.get("issue"), payload.get("changelog")
    parts = [
        integration_id,
        payload.get("webhookEvent"),
        issue.get("id") if isinstance(issue, dict) else None,
        changelog.get("id") if isinstance(changelog, dict) else None,
        payload.get("timestamp"),
    ]
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
    return f"ev:{digest}"
