"""The Celery app; configuration is read on first use and resources open per process."""

from __future__ import annotations

import contextlib
from typing import Any

from celery import Celery
from celery.signals import (
    after_setup_logger,
    celeryd_init,
    task_postrun,
    task_prerun,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
)

from config.celery import celery_config, dead_letter_queue
from config.settings import get_settings
from worker.runtime import resources
from worker.support import logs
from worker.support.logs import configure_logging

TASK_MODULES = [
    "tasks.changelog",
    "tasks.inbound",
    "tasks.groups",
    "tasks.side_effects",
    "tasks.projects",
    "tasks.maintenance",
    "tasks.status",
]


class JiraSyncCelery(Celery):  # type: ignore[misc]
    """Celery, but a bad environment fails every access to the configuration."""

    def _load_config(self) -> Any:
        # Before Celery marks itself configured: otherwise the first ConfigError is raised
        # once and later reads silently get a default broker (amqp://localhost).
        get_settings()
        return super()._load_config()


app = JiraSyncCelery("jira_sync", include=TASK_MODULES)


# Evaluated the first time anything reads the configuration: importing tasks needs no env.
# (Not conf.update() in on_configure: when send_task() builds app.amqp before the first
# read of conf, its conf-update hook re-enters the configuration and recurses.)
app.add_defaults(lambda: celery_config(get_settings()))


@celeryd_init.connect  # before the worker's own start-up warnings
@after_setup_logger.connect
def _json_logs(**_: Any) -> None:
    configure_logging(get_settings().log_level)


@worker_ready.connect
def _declare_dead_letters(**_: Any) -> None:
    # RabbitMQ drops what it dead-letters to an exchange that does not exist yet.
    if get_settings().broker_is_amqp:
        with app.connection_for_write() as conn:
            dead_letter_queue().bind(conn.default_channel).declare()


@worker_process_init.connect
def _open_resources(**_: Any) -> None:
    resources.current()


@worker_process_shutdown.connect
def _close_resources(**_: Any) -> None:
    with contextlib.suppress(Exception):
        resources.current().close()


# Every line a task logs carries its task id, name and the ids it was called with.
LOGGED_KWARGS = ("delivery_id", "project_id", "group_id", "issue_key")


@task_prerun.connect
def _bind_task_log_context(task_id: str, task: Any, kwargs: Any = None, **_: Any) -> None:
    logs.clear_context()
    ids = {k: v for k, v in (kwargs or {}).items() if k in LOGGED_KWARGS}
    logs.bind(task_id=task_id, task=getattr(task, "name", None), **ids)


@task_postrun.connect
def _clear_task_log_context(**_: Any) -> None:
    logs.clear_context()
