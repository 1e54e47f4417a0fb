"""Start a Procfile process only when its configuration is valid.

    python -m worker.runtime.boot MODULE [ARGS ...]
    python -m worker.runtime.boot celery -A worker.runtime.app worker

A missing or malformed variable stops the process with one line naming it (exit code 3)
instead of a traceback from deep inside uvicorn or Celery; otherwise this process becomes
`python -m MODULE ARGS` (same interpreter, same PID).
"""

from __future__ import annotations

import os
import sys

from config.settings import ConfigError, Settings, get_settings

EXIT_CONFIG = 3


def checked_settings(process: str) -> Settings:
    """The settings, or exit with one line naming the bad variable."""
    try:
        return get_settings()
    except ConfigError as exc:
        sys.stderr.write(f"{process}: configuration: {exc}\n")
        sys.exit(EXIT_CONFIG)


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit("usage: python -m worker.runtime.boot MODULE [ARGS ...]")
    checked_settings(argv[0])
    os.execv(sys.executable, [sys.executable, "-m", *argv])


if __name__ == "__main__":
    main(sys.argv[1:])
