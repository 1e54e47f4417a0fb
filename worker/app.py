"""The Celery app; configuration is read on first use and resources open per process."""

from __future__ import annotations

import contextlib
from typing import Any

from celery import Celery
from celery.signals import after_setup_logger, worker_process_init, worker_process_shutdown

from config.celery import celery_config
from config.settings import get_settings
from worker import resources
from worker.logs import configure_logging

TASK_MODULES = [
    "tasks.changelog",
    "tasks.inbound",
    "tasks.side_effects",
    "tasks.projects",
    "tasks.maintenance",
]

app = Celery("jira_sync", include=TASK_MODULES)


# Evaluated the first time anything reads the configuration: importing tasks needs no env.
# (Not conf.update() in on_configure: when send_task() builds app.amqp before the first
# read of conf, its conf-update hook re-enters the configuration and recurses.)
app.add_defaults(lambda: celery_config(get_settings()))


@after_setup_logger.connect
def _json_logs(**_: Any) -> None:
    configure_logging(get_settings().log_level)


@worker_process_init.connect
def _open_resources(**_: Any) -> None:
    resources.current()


@worker_process_shutdown.connect
def _close_resources(**_: Any) -> None:
    with contextlib.suppress(Exception):
        resources.current().close()
