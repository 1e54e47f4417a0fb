"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from worker.cli import main
from worker.runtime.resources import Resources
from worker.services import failures

RecordFactory = Callable[..., int]
# `jira-sync ARGS...` run in-process: (exit code, stdout, stderr incl. JSON logs).
Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    """Run `jira-sync ARGS...` in-process: (exit code, stdout, stderr incl. JSON logs)."""

    def _run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return _run


@pytest.fixture
def failed_record(res: Resources) -> RecordFactory:
    """Store a failure the way a step does (failures.record) and return its id."""
    counter = iter(range(1, 1_000_000))

    def _make(**over: Any) -> int:
        n = next(counter)
        fields: dict[str, Any] = {
            "task_name": "jira_sync.inbound.check_changelog",
            "task_id": f"task-{n}",
            "args": [],
            "kwargs": {"delivery_ids": [1000 + n]},
            "error_type": "BadPayload",
            "message": f"delivery {1000 + n} body is not JSON",
            "traceback": "Traceback (most recent call last):\n  ...\nBadPayload: not JSON\n",
            "attempts": 1,
            **over,
        }
        failed_id = failures.record(res, failures.FailureRecord(**fields))
        assert failed_id is not None
        return failed_id

    return _make
