"""One JSON object per log line, with secrets scrubbed before anything is written."""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

_PEM = re.compile(r"-----BEGIN [A-Z ]+-----.*?(-----END [A-Z ]+-----|$)", re.S)
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_URL_PASSWORD = re.compile(r"(?<=://)([^:/@\s]*):([^@/\s]+)@")
# OAuth 1 secrets in an Authorization header, a form body or a query string. A bare
# `oauth_token=` stays: the authorize URL the operator must open carries the request token.
_OAUTH_SECRET = re.compile(
    r"""(oauth_(?:token_secret|signature|verifier)["']?\s*[=:]\s*["']?)[^"'&,\s\\]+"""
)
_OAUTH_HEADER_TOKEN = re.compile(r'(oauth_token=")[^"]+')
_AUTH_HEADER = re.compile(
    r"""(?i)\b(authorization["']?\s*[:=]\s*["']?(?:basic|bearer)\s+)[^\s"',\\]+"""
)
_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)

_secrets: set[str] = set()
# Longest first, so a secret containing another is replaced whole; rebuilt on registration.
_secrets_longest_first: tuple[str, ...] = ()
_secrets_lock = threading.Lock()
# Text holding none of these cannot match any pattern above: most log values skip the regexes.
_MARKERS = ("-----BEGIN", "eyJ", "://", "oauth_")


# Short texts already found clean (logger names, events, keys, outcomes, issue keys, task
# ids: most of a line, again and again): checked once, not on every line. Only clean texts
# are kept, so nothing secret stays here; forgotten when a secret is registered.
_CLEAN_MAX_CHARS = 256
_CLEAN_MAX_ENTRIES = 8192
_clean: set[str] = set()
_generation = 0  # bumped by each registration: a check begun before one is not kept


def register_secret(value: str | None) -> None:
    """Never let this value reach a log line (credentials, keys, passwords)."""
    global _secrets_longest_first, _generation
    if value and len(value) >= 4:
        with _secrets_lock:
            if value not in _secrets:
                _secrets.add(value)
                _secrets_longest_first = tuple(sorted(_secrets, key=len, reverse=True))
                _generation += 1
                _clean.clear()


def scrub(text: str) -> str:
    """Remove PEM blocks, JWTs, URL passwords, OAuth secrets, Authorization credentials and
    every registered secret from text."""
    if text in _clean:
        return text
    generation = _generation
    scrubbed = _scrub(text)
    if scrubbed == text and len(text) <= _CLEAN_MAX_CHARS and generation == _generation:
        if len(_clean) >= _CLEAN_MAX_ENTRIES:
            _clean.clear()
        _clean.add(text)
    return scrubbed


def _scrub(text: str) -> str:
    if any(marker in text for marker in _MARKERS) or "authorization" in text.lower():
        text = _PEM.sub("[private key]", text)
        text = _JWT.sub("[token]", text)
        text = _URL_PASSWORD.sub(r"\1:***@", text)
        text = _OAUTH_SECRET.sub(r"\1***", text)
        text = _OAUTH_HEADER_TOKEN.sub(r"\1***", text)
        text = _AUTH_HEADER.sub(r"\1***", text)
    for secret in _secrets_longest_first:
        if secret in text:
            text = text.replace(secret, "***")
    return text


# Fields every line of the current task (or request) carries: task_id, delivery_id, ...
_context: ContextVar[dict[str, Any] | None] = ContextVar("jira_sync_log_context", default=None)


def bind(**fields: Any) -> None:
    """Add fields (e.g. issue_key once it is known) to every later line of this context."""
    _context.set({**(_context.get() or {}), **{k: v for k, v in fields.items() if v is not None}})


def clear_context() -> None:
    _context.set(None)


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line: time, level, logger, event, then the extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
            **(_context.get() or {}),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        # Scrub every value before encoding: scrubbing the encoded line could cut an escape
        # sequence in half and break the JSON.
        return json.dumps(scrub_value(entry), ensure_ascii=False)


def scrub_value(value: Any) -> Any:
    """A JSON-ready copy of value with every string scrubbed (keys included)."""
    if isinstance(value, str):
        return scrub(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return {scrub(str(k)): scrub_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [scrub_value(v) for v in value]
    return scrub(str(value))


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time (test runners swap and close it)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass


def configure_logging(level: str = "INFO", stream: Any = None) -> None:
    """Route every logger of this process through one JSON handler."""
    handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    logging.captureWarnings(True)  # warnings too become JSON lines
    root.setLevel(level)
    # The JSON line names no source line, thread or process: skip collecting them for every
    # record (the logging HOWTO's "Optimization"; a worker writes a line per delivery).
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    # oauthlib's DEBUG lines spell out signature base strings: never below WARNING.
    for noisy in ("psycopg.pool", "urllib3", "httpx", "oauthlib", "requests_oauthlib"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
