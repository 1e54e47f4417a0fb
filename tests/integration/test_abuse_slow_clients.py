"""Slow and oversized clients against a real receiver process started as the Procfile starts
it: many slowloris connections do not stop a normal delivery being answered, a huge declared
body is refused without being read, a huge header block is refused."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.embedded import free_port
from tests.conftest import ROOT
from tests.webhooks import JSON, load_integrations, payload, url
from worker.runtime.resources import Resources

SLOW_CONNECTIONS = 200
NORMAL_ANSWER_MAX_S = 3.0
READ_TIMEOUT_S = 1.0


def procfile_command(name: str) -> str:
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {name} process in the Procfile")


@contextlib.contextmanager
def run_receiver(env: dict[str, str], log_path: Path) -> Iterator[str]:
    """The receiver as the Procfile starts it; yields its base URL."""
    port = free_port()
    bin_dir = str(Path(sys.executable).parent)
    env = {**env, "PORT": str(port), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            ["sh", "-c", "exec " + procfile_command("web")], cwd=ROOT, env=env, stdout=log,
            stderr=log,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        assert proc.poll() is None and time.monotonic() < deadline, "the receiver did not start"
        time.sleep(0.1)
    try:
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def receiver(
    res: Resources,
    scene: Callable[[dict[str, Any]], None],
    settings_env: dict[str, str],
    tmp_path: Path,
) -> Iterator[str]:
    load_integrations(scene)
    with run_receiver(settings_env, tmp_path / "web.log") as base:
        yield base


@pytest.fixture
def impatient_receiver(
    res: Resources,
    scene: Callable[[dict[str, Any]], None],
    settings_env: dict[str, str],
    tmp_path: Path,
) -> Iterator[str]:
    """A receiver that gives clients READ_TIMEOUT_S to send a whole request."""
    load_integrations(scene)
    env = {**settings_env, "WEBHOOK_READ_TIMEOUT_S": str(READ_TIMEOUT_S)}
    with run_receiver(env, tmp_path / "web.log") as base:
        yield base


def open_slow(port: int, partial: bytes, count: int) -> list[socket.socket]:
    held = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(partial)
        held.append(sock)
    return held


def test_slowloris_connections_do_not_stop_a_normal_delivery(receiver: str) -> None:
    port = int(receiver.rsplit(":", 1)[1])
    path = url().encode()
    headers_only = b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nX-Slow: "
    body_pending = (
        b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000\r\n\r\n{"
    )
    held = open_slow(port, headers_only, SLOW_CONNECTIONS // 2)
    held += open_slow(port, body_pending, SLOW_CONNECTIONS // 2)
    try:
        for sock in held[::10]:
            sock.sendall(b"a")  # still trickling
        started = time.monotonic()
        answer = httpx.post(receiver + url(), content=json.dumps(payload()), headers=JSON)
        elapsed = time.monotonic() - started
    finally:
        for sock in held:
            sock.close()
    assert answer.status_code == 202
    assert elapsed < NORMAL_ANSWER_MAX_S


def test_huge_declared_body_is_refused_without_being_read(receiver: str) -> None:
    port = int(receiver.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"POST "
            + url().encode()
            + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1073741824\r\n\r\n{"
        )
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:100]


def test_streamed_body_over_the_limit_is_refused(receiver: str) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(3000):
            yield b" " * 1024

    answer = httpx.post(receiver + url(), content=chunks(), headers=JSON, timeout=10)
    assert answer.status_code == 413


def test_huge_header_block_is_refused(receiver: str) -> None:
    port = int(receiver.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST " + url().encode() + b" HTTP/1.1\r\nHost: x\r\nX-Big: ")
        sent = 0
        with contextlib.suppress(OSError):
            while sent < 8 << 20:
                sock.sendall(b"a" * 65536)
                sent += 65536
        with contextlib.suppress(OSError):
            sock.sendall(b"\r\n\r\n")
        answer = b""
        with contextlib.suppress(OSError):
            answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:100]
    assert sent < 8 << 20, "the server closed the connection before the client finished"
    assert httpx.get(receiver + "/healthz").status_code == 200


def _answer_after_stalling(port: int, partial: bytes) -> tuple[bytes, float]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(partial)
        answer = sock.recv(4096)
        closed = sock.recv(4096) == b""
    assert closed, "the connection stayed open"
    return answer, time.monotonic() - started


def test_client_that_never_finishes_its_headers_gets_408(impatient_receiver: str) -> None:
    port = int(impatient_receiver.rsplit(":", 1)[1])
    partial = b"POST " + url().encode() + b" HTTP/1.1\r\nHost: x\r\nX-Slow: "
    answer, waited_s = _answer_after_stalling(port, partial)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    assert b'"error":"request_timeout"' in answer
    assert READ_TIMEOUT_S - 0.2 <= waited_s < READ_TIMEOUT_S + 2  # timed from the server side


def test_client_that_never_finishes_its_body_gets_408_and_nothing_is_stored(
    impatient_receiver: str, res: Resources
) -> None:
    port = int(impatient_receiver.rsplit(":", 1)[1])
    partial = (
        b"POST " + url().encode() + b" HTTP/1.1\r\nHost: x\r\n"
        b'Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n{"changelog"'
    )
    answer, waited_s = _answer_after_stalling(port, partial)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    assert READ_TIMEOUT_S - 0.2 <= waited_s < READ_TIMEOUT_S + 2  # timed from the server side
    with res.pool.connection() as conn:
        assert conn.execute("SELECT count(*) AS n FROM webhook_delivery").fetchone() == {"n": 0}


def test_silent_connection_is_closed_and_a_prompt_client_is_unaffected(
    impatient_receiver: str,
) -> None:
    port = int(impatient_receiver.rsplit(":", 1)[1])
    answer, _ = _answer_after_stalling(port, b"")
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    prompt = httpx.post(impatient_receiver + url(), content=json.dumps(payload()), headers=JSON)
    assert prompt.status_code == 202
