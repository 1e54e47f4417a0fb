"""jira-sync: the operator's command line (migrate, load, group, integration, deliveries,
project, snowflake, cache, failed, status, reconcile, run).

The top of the house: may import `config`, every `worker` package, and `tasks.pipeline` and
`tasks.relay` (to send work); never the step modules themselves.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from config.settings import ConfigError, get_settings
from worker.cli.common import (
    EXIT_CONFIG,
    EXIT_NOT_FOUND,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    CliError,
    unreachable,
)
from worker.domain.errors import ErrorKind, NotFound
from worker.support.classify import classify
from worker.support.logs import configure_logging

# Each module adds its subcommands with register(subparsers); each handler returns an exit code.
COMMAND_MODULES = [
    "worker.cli.setup",
    "worker.cli.groups",
    "worker.cli.integrations",
    "worker.cli.deliveries",
    "worker.cli.projects",
    "worker.cli.snowflake",
    "worker.cli.cache",
    "worker.cli.failed",
    "worker.cli.overview",
    "worker.cli.reconcile",
    "worker.cli.users",
    "worker.cli.explain",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jira-sync",
        description="Operate the Jira Server assignee sync service.",
        epilog="exit codes: 0 done or nothing to do, 1 some of the work failed, 2 bad arguments "
        "or input, 3 configuration missing or malformed, 4 PostgreSQL, Redis, the broker or Jira "
        "unreachable, 5 the thing named does not exist",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
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
    except NotFound as exc:
        return _fail(str(exc), EXIT_NOT_FOUND)
    except Exception as exc:
        kind = classify(exc)
        if kind is ErrorKind.BAD_INPUT:
            return _fail(str(exc), EXIT_USAGE)
        if kind.retryable:
            return _fail(f"{unreachable(exc)} unavailable: {exc}", EXIT_UNAVAILABLE)
        raise
    except KeyboardInterrupt:
        return 130
    finally:
        logging.shutdown()


def _fail(message: str, code: int) -> int:
    from worker.support.logs import scrub

    sys.stderr.write(f"jira-sync: error: {scrub(message)}\n")
    return code


def run() -> None:
    sys.exit(main())
