"""jira-sync: the operator's command line (migrate, load, group, integration, deliveries,
project, snowflake, cache, failed, run)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from config.settings import ConfigError, get_settings
from worker.cli.common import EXIT_CONFIG, EXIT_UNAVAILABLE, CliError
from worker.errors import DatabaseUnavailable, InvalidInput, NotFound
from worker.logs import configure_logging

# Each module adds its subcommands with register(subparsers); each handler returns an exit code.
COMMAND_MODULES = [
    "worker.cli.core",
    "worker.cli.integrations",
    "worker.cli.deliveries",
    "worker.cli.projects",
    "worker.cli.failed",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jira-sync", description="Operate the Jira Server assignee sync service."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # an area not built yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if getattr(args, "needs_settings", True):
            configure_logging(get_settings().log_level)
        else:
            configure_logging("WARNING")
        code: int = args.handler(args)
        return code
    except ConfigError as exc:
        return _fail(f"configuration: {exc}", EXIT_CONFIG)
    except CliError as exc:
        return _fail(str(exc), exc.code)
    except (InvalidInput, NotFound) as exc:
        return _fail(str(exc), 5 if isinstance(exc, NotFound) else 2)
    except DatabaseUnavailable as exc:
        return _fail(f"database unavailable: {exc}", EXIT_UNAVAILABLE)
    except KeyboardInterrupt:
        return 130
    finally:
        logging.shutdown()


def _fail(message: str, code: int) -> int:
    from worker.logs import scrub

    sys.stderr.write(f"jira-sync: error: {scrub(message)}\n")
    return code


def run() -> None:
    sys.exit(main())
