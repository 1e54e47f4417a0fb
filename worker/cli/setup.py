"""`jira-sync migrate` and `load FILE.json`: setting up the database and its reference data."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout

from config.settings import get_settings
from worker.cli.common import (
    EXIT_OK,
    EXIT_UNAVAILABLE,
    CliError,
    echo,
    progress,
)
from worker.runtime import resources
from worker.services import loader
from worker.store.db import migrate
from worker.support.classify import classify


def register(sub: Any) -> None:
    p = sub.add_parser("migrate", help="apply database migrations (safe to run twice)")
    p.set_defaults(handler=cmd_migrate)

    p = sub.add_parser("load", help="import reference data from a JSON file (idempotent)")
    p.add_argument("file", type=Path)
    p.set_defaults(handler=cmd_load)


def cmd_migrate(args: argparse.Namespace) -> int:
    try:
        applied = migrate(get_settings().database_url)
    except (psycopg.Error, PoolTimeout) as exc:
        if not classify(exc).retryable:
            raise
        raise CliError(f"cannot reach DATABASE_URL: {exc}", EXIT_UNAVAILABLE) from exc
    echo(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))
    return EXIT_OK


def cmd_load(args: argparse.Namespace) -> int:
    try:
        doc = json.loads(Path(args.file).read_text())
    except FileNotFoundError:
        raise CliError(f"{args.file}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{args.file}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise CliError(f"{args.file}: not valid JSON: {exc}") from None
    with progress(loader.row_count(doc), "loading") as bar:
        result = loader.load_scene(resources.current(), doc, progress=bar)
    echo(", ".join(f"{n} {section}" for section, n in result.counts.items() if n) or "empty")
    return EXIT_OK
