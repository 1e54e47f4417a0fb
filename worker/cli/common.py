"""What every `jira-sync` command shares: exit codes, errors, output helpers."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import psycopg
import redis
import requests
from kombu.exceptions import OperationalError as BrokerError
from psycopg_pool import PoolTimeout

from worker.domain.errors import (
    BrokerUnavailable,
    CacheUnavailable,
    DatabaseUnavailable,
    JiraUnavailable,
)
from worker.runtime.logs import scrub

# Exit codes are part of the interface; the README lists them.
EXIT_OK = 0  # done, or nothing to do
EXIT_FAILED = 1  # the command ran and some of its work failed
EXIT_USAGE = 2  # bad arguments or input (argparse uses 2 too)
EXIT_CONFIG = 3  # the environment is missing or malformed
EXIT_UNAVAILABLE = 4  # PostgreSQL, Redis, the broker or Jira cannot be reached
EXIT_NOT_FOUND = 5  # the thing named does not exist


def unreachable(exc: BaseException) -> str:
    """Which server an unavailable-class error is about, named by the setting that points to
    it (for the one line the CLI prints before exiting 4)."""
    if isinstance(exc, CacheUnavailable | redis.RedisError):
        return "Redis (REDIS_URL)"
    if isinstance(exc, BrokerUnavailable | BrokerError):
        return "the broker (BROKER_URL)"
    if isinstance(exc, JiraUnavailable | requests.RequestException):
        return "Jira"
    if isinstance(exc, DatabaseUnavailable | psycopg.Error | PoolTimeout):
        return "the database (DATABASE_URL)"
    return "a server"


class CliError(Exception):
    """Raised by a command to stop with a message naming what to fix and an exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def emit_json(data: Any) -> None:
    sys.stdout.write(scrub(json.dumps(data, indent=2, default=str, sort_keys=False)) + "\n")


def echo(text: str = "") -> None:
    sys.stdout.write(scrub(text) + "\n")


def table(rows: list[list[Any]], headers: list[str]) -> str:
    """A plain left-aligned text table."""
    cells = [[str(c) for c in headers], *[["" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def positive_int(text: str) -> int:
    """argparse type of ids, limits and counts: a whole number of 1 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value
