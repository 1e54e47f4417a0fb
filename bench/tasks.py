"""Baseline Celery tasks, registered on the product's app: the worker imports them with
`-I bench.tasks`, so the no-op runs under exactly the production worker settings."""

from __future__ import annotations

from typing import Any

from worker.runtime.app import app

NOOP = "bench.noop"
NAIVE_RECEIVE = "bench.naive_receive"


@app.task(name=NOOP)  # type: ignore[untyped-decorator]
def noop(**_: Any) -> None:
    """Does nothing: the cost of a task to the worker itself."""


@app.task(name=NAIVE_RECEIVE)  # type: ignore[untyped-decorator]
def naive_receive(body: str, headers: dict[str, str]) -> None:
    """What a naive receiver hands to Celery per request (the body travels in the message)."""
