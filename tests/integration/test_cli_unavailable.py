"""The CLI with Redis or the broker unreachable: one line naming what to fix, exit 4, never a
traceback (the database is up; REDIS_URL and BROKER_URL point at a closed port)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.failure_support import jira_sync
from tests.integration.projects_scene import RECENT, WEB, project_scene
from worker.cli.common import EXIT_UNAVAILABLE
from worker.runtime.resources import Resources

CLOSED = "redis://127.0.0.1:1/0"


@pytest.fixture
def down_env(
    res: Resources, settings_env: dict[str, str], scene: Callable[[dict[str, Any]], None]
) -> dict[str, str]:
    scene(project_scene())
    return {**settings_env, "REDIS_URL": CLOSED, "BROKER_URL": "redis://127.0.0.1:1/1"}


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("group", "show", str(RECENT[0])), "Redis (REDIS_URL)"),
        (("cache", "purge", "--project", str(WEB)), "Redis (REDIS_URL)"),
        (("project", "create", "--organization", "acme", "--name", "Web", "--wait"), "broker"),
    ],
    ids=["group show", "cache purge", "project create --wait"],
)
def test_an_unreachable_server_is_one_line_and_exit_4(
    down_env: dict[str, str], args: tuple[str, ...], named: str
) -> None:
    done = jira_sync(down_env, *args)
    assert done.returncode == EXIT_UNAVAILABLE, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("jira-sync: error: ") and named in lines[0]
    assert "Traceback" not in done.stderr + done.stdout


def test_failed_replay_with_the_broker_down_is_one_line_and_exit_4(
    down_env: dict[str, str], failed_record: Callable[..., int]
) -> None:
    failed_record(kwargs={"delivery_id": 42})
    done = jira_sync(down_env, "failed", "replay", "--all")
    assert done.returncode == EXIT_UNAVAILABLE, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert "broker" in done.stderr.strip().splitlines()[-1]
