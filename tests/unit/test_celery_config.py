"""The Celery settings every process gets, and an app that fails loudly without them."""

from __future__ import annotations

import subprocess
import sys

from config.celery import ALL_QUEUES, celery_config
from config.settings import load_settings

ENV = {
    "DATABASE_URL": "postgresql://127.0.0.1/db",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "SECRET_KEY": "0123456789abcdef-secret",
}


def test_messages_are_json_only() -> None:
    conf = celery_config(load_settings(ENV))
    assert conf["task_serializer"] == "json"
    assert conf["accept_content"] == ["json"]


def test_tasks_survive_a_lost_worker() -> None:
    conf = celery_config(load_settings(ENV))
    assert conf["task_acks_late"] is True
    assert conf["task_reject_on_worker_lost"] is True
    assert conf["worker_prefetch_multiplier"] == 1


def test_visibility_timeout_outlasts_every_retry_delay() -> None:
    settings = load_settings(ENV)
    conf = celery_config(settings)
    assert conf["broker_transport_options"]["visibility_timeout"] > settings.retry_backoff_max_s


def test_flower_sees_sent_and_worker_events() -> None:
    conf = celery_config(load_settings(ENV))
    assert conf["worker_send_task_events"] is True
    assert conf["task_send_sent_event"] is True


def test_every_route_goes_to_a_declared_queue() -> None:
    conf = celery_config(load_settings(ENV))
    declared = {q.name for q in conf["task_queues"]}
    assert declared == set(ALL_QUEUES)
    assert {r["queue"] for r in conf["task_routes"].values()} <= declared


def test_app_without_environment_keeps_failing_instead_of_using_a_default_broker() -> None:
    code = (
        "from worker.runtime.app import app\n"
        "for _ in range(2):\n"
        "    try:\n"
        "        print(app.conf.broker_url)\n"
        "    except Exception as exc:\n"
        "        print(type(exc).__name__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env={"PATH": "/usr/bin:/bin"}, capture_output=True,
        text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert out == ["ConfigError", "ConfigError"]
