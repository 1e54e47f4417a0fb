"""What every `jira-sync` command shares: exit codes, errors, output helpers."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import redis
import requests
from kombu.exceptions import OperationalError as BrokerError
from psycopg_pool import PoolTimeout
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table
from rich.text import Text

from worker.domain.errors import (
    BrokerUnavailable,
    CacheUnavailable,
    DatabaseUnavailable,
    JiraUnavailable,
)
from worker.support.logs import scrub

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


def table(rows: list[list[Any]], headers: list[str] | None) -> str:
    """Every table the CLI prints (headers None: no header line). On a terminal: rich's
    ruled, bold-headed table sized to the window. Piped or redirected: the same columns as
    plain left-aligned text, two spaces apart, no colour and no rules, so `grep`, `awk` and
    `cut` keep working."""
    terminal = sys.stdout.isatty()
    grid = Table(
        box=box.SIMPLE_HEAD if terminal and headers else None,
        show_edge=False,
        show_header=headers is not None,
        pad_edge=False,
        header_style="bold cyan" if terminal else "",
    )
    for header in headers or ([""] * len(rows[0]) if rows else []):
        grid.add_column(header)
    for row in rows:
        grid.add_row(*(Text("" if cell is None else str(cell)) for cell in row))
    out = io.StringIO()
    Console(
        file=out,
        force_terminal=terminal,
        width=None if terminal else 1_000_000,
        highlight=False,
    ).print(grid)
    lines = out.getvalue().splitlines()
    return "\n".join(lines if terminal else [line.rstrip() for line in lines])


def styled(text: str, style: str) -> str:
    """`text` in a rich style such as "bold red" on a terminal; as it is otherwise."""
    if not sys.stdout.isatty():
        return text
    out = io.StringIO()
    Console(file=out, force_terminal=True, highlight=False).print(Text(text, style), end="")
    return out.getvalue()


def clear_screen() -> None:
    """Start a fresh screen (redrawing commands such as `status --watch`), on a terminal."""
    if sys.stdout.isatty():
        Console(file=sys.stdout).clear()


# Work on more items than this draws a progress bar on stderr.
PROGRESS_MIN = 10


@contextlib.contextmanager
def progress(total: int, label: str) -> Iterator[Callable[[int], None] | None]:
    """A progress bar on stderr for long work (`failed replay`, `load`), redrawn in place on a
    terminal and printed once, when done, otherwise. Yields the callback that advances it by a
    count, or None when the work is too small to need one."""
    if total <= PROGRESS_MIN:
        yield None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TaskProgressColumn(), console=Console(stderr=True)) as bar:
        task = bar.add_task(label, total=total)
        yield lambda advanced: bar.advance(task, advanced)


def positive_int(text: str) -> int:
    """argparse type of ids, limits and counts: a whole number of 1 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def from_to_arguments(parser: Any) -> None:
    """`--from DC_ID --to CLOUD_ID`: the two integrations of a move to Jira Cloud."""
    parser.add_argument("--from", dest="from_id", type=positive_int, required=True,
                        metavar="DC_ID")  # fmt: skip
    parser.add_argument("--to", dest="to_id", type=positive_int, required=True,
                        metavar="CLOUD_ID")  # fmt: skip
