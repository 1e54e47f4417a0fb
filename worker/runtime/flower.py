"""The `flower` process: Flower on our Celery app, refusing to start without authentication."""

from __future__ import annotations

import os
import sys

from worker.runtime.boot import checked_settings


def main() -> None:
    settings = checked_settings("flower")
    if not settings.flower_basic_auth:
        sys.exit("flower: FLOWER_BASIC_AUTH is not set (user:password); Flower never runs open")
    # Flower reads FLOWER_BASIC_AUTH from the environment itself: the password stays off argv.
    argv = [sys.executable, "-m", "celery", "-A", "worker.runtime.app", "flower",
            f"--port={settings.flower_port}", f"--address={settings.flower_address}"]  # fmt: skip
    os.execv(sys.executable, argv)


if __name__ == "__main__":
    main()
