"""RabbitMQ for the tests, the chaos run and the benchmarks: a vhost per run (deleted
afterwards), emptied between tests, and a look at its queues.

The URL is TEST_AMQP_URL, default amqp://guest:guest@127.0.0.1:5672//; creating a vhost needs
`rabbitmqctl` on this machine (without it a run uses the URL's vhost and deletes its queues).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from kombu import Connection

from config.celery import ALL_QUEUES, QUEUE_DEAD_LETTER
from worker.runtime.broker import queue_depths

# Celery's native delayed delivery: one queue per bit of the countdown.
DELAYED_QUEUES = tuple(f"celery_delayed_{level}" for level in range(28))
OUR_QUEUES = (*ALL_QUEUES, QUEUE_DEAD_LETTER)
DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672//"


def is_amqp(url: str) -> bool:
    return urlsplit(url).scheme in ("amqp", "amqps", "pyamqp")


def reachable(url: str) -> str | None:
    """None when RabbitMQ answers at the URL, else why not."""
    try:
        with Connection(url, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def create_vhost(url: str, name: str) -> str | None:
    """A new vhost the URL's user may use, and its URL; None without rabbitmqctl rights."""
    if shutil.which("rabbitmqctl") is None:
        return None
    parts = urlsplit(url)
    try:
        _rabbitmqctl("add_vhost", name)
        _rabbitmqctl("set_permissions", "-p", name, unquote(parts.username or "guest"),
                     ".*", ".*", ".*")  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return urlunsplit(parts._replace(path="/" + quote(name, safe="")))


def delete_vhost(name: str) -> None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        _rabbitmqctl("delete_vhost", name)


def test_url() -> str:
    return os.environ.get("TEST_AMQP_URL", "").strip() or DEFAULT_URL


@contextlib.contextmanager
def run_vhost(url: str | None = None) -> Iterator[str]:
    """A broker URL for one run: a vhost of its own, deleted afterwards; without the rights
    to create one, the URL's own vhost, with our queues deleted afterwards."""
    url = url or test_url()
    vhost = f"jira_sync_test_{uuid.uuid4().hex[:10]}"
    own = create_vhost(url, vhost)
    try:
        yield own or url
    finally:
        if own:
            delete_vhost(vhost)
        else:
            delete_queues(url)


def _each_queue(url: str, names: tuple[str, ...], action: str) -> None:
    with Connection(url) as conn:
        for name in names:
            channel = conn.channel()  # a missing queue closes the channel it was asked on
            try:
                getattr(channel, action)(name)
            except conn.channel_errors:
                pass
            finally:
                with contextlib.suppress(Exception):
                    channel.close()


def purge_queues(url: str) -> None:
    """Drop every message of ours, the delayed retries included (between tests)."""
    _each_queue(url, OUR_QUEUES + DELAYED_QUEUES, "queue_purge")


def delete_queues(url: str) -> None:
    """Remove our queues from a vhost this run did not create for itself."""
    _each_queue(url, OUR_QUEUES + DELAYED_QUEUES, "queue_delete")


def busy(url: str) -> int:
    """Messages on our queues and the delayed-retry queues, ready or held unacknowledged by a
    worker (rabbitmqctl sees both; AMQP alone sees only the ready ones)."""
    vhost = unquote(urlsplit(url).path[1:]) or "/"
    ours = set(OUR_QUEUES + DELAYED_QUEUES)
    if shutil.which("rabbitmqctl") is not None:
        out = subprocess.run(
            ["rabbitmqctl", "-q", "list_queues", "-p", vhost, "--no-table-headers", "name",
             "messages"],
            check=True, capture_output=True, text=True, timeout=60,
        ).stdout  # fmt: skip
        rows = (line.split("\t") for line in out.splitlines() if "\t" in line)
        return sum(int(n) for name, n in rows if name in ours and n.strip().isdigit())
    return sum(queue_depths(Connection(url), sorted(ours)).values())


def messages(url: str, queue: str) -> list[dict[str, Any]]:
    """The messages ready on a queue, decoded, left in place (read unacknowledged, then the
    channel closes and RabbitMQ puts them back)."""
    found: list[dict[str, Any]] = []
    with Connection(url) as conn:
        channel = conn.channel()
        try:
            while (message := channel.basic_get(queue, no_ack=False)) is not None:
                found.append({"headers": message.headers, "body": json.loads(message.body)})
        except conn.channel_errors:
            pass
        finally:
            with contextlib.suppress(Exception):
                channel.close()
    return found
