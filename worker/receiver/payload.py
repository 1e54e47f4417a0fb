"""Reading a webhook request (pure): content type, JSON body, the headers kept, and the dedupe
key that makes a delivery stored once. What the event inside must carry is
`worker.domain.event.read_event`."""

from __future__ import annotations

import hashlib
import json
from typing import Any

KEPT_HEADERS = ("x-atlassian-webhook-identifier", "user-agent", "content-type")
MAX_HEADER_CHARS = 256
MAX_IDENTIFIER_CHARS = 200


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


def clean_header(value: str) -> str:
    return "".join(c for c in value if c.isprintable())[:MAX_HEADER_CHARS]


def dedupe_key(integration_id: int, identifier: str | None, payload: dict[str, Any]) -> str:
    """Jira's delivery identifier when sent, else a hash of what identifies the change:
    (integration, issue.id, changelog.id, timestamp). Data Center does not document the
    identifier header, and one change must be stored once whichever event name carried it."""
    if identifier:
        if len(identifier) <= MAX_IDENTIFIER_CHARS and identifier.isprintable():
            return f"id:{identifier}"
        return "idh:" + hashlib.sha256(identifier.encode("utf-8", "replace")).hexdigest()
    issue, changelog = payload.get("issue"), payload.get("changelog")
    parts = [
        integration_id,
        issue.get("id") if isinstance(issue, dict) else None,
        changelog.get("id") if isinstance(changelog, dict) else None,
        payload.get("timestamp"),
    ]
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
    return f"ev:{digest}"
