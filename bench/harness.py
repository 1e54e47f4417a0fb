"""The servers, processes and measuring tools every benchmark shares.

Servers: embedded PostgreSQL and Redis on free ports in a temporary folder, unless
BENCH_DATABASE_URL / BENCH_REDIS_URL are set (the bench then creates and drops its own database
on that server, and uses the Redis database of the URL and the next one, which it flushes).
Everything listens on, and every load targets, 127.0.0.1. BENCH_KEEP_STATE=1 keeps the
temporary folder (server and process logs) for a look afterwards.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import psycopg
import redis
from kombu import Connection

from config.settings import default_broker_url, get_settings
from devtools import rabbitmq
from devtools.embedded import (
    create_database,
    free_port,
    start_missing,
)
from worker.runtime.broker import queue_depths

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


@dataclass
class Servers:
    """The database, Redis and broker the benchmarks run against, plus the env for children."""

    database_url: str
    redis_url: str
    broker_url: str
    state_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    embedded: bool = True

    def redis_client(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    def broker_client(self) -> redis.Redis:
        return redis.Redis.from_url(self.broker_url)

    @property
    def on_rabbitmq(self) -> bool:
        return rabbitmq.is_amqp(self.broker_url)

    def child_env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, **self.env, **extra}


@contextlib.contextmanager
def servers(say: Callable[[str], None], amqp_url: str | None = None) -> Iterator[Servers]:
    """Start (or reach) the servers, migrate a fresh database, and point this process at it.
    With `amqp_url` (a vhost of the run's own) RabbitMQ is the broker instead of Redis."""
    state = Path(tempfile.mkdtemp(prefix="jira-sync-bench-"))
    local = start_missing(
        state, os.environ.get("BENCH_DATABASE_URL"), os.environ.get("BENCH_REDIS_URL")
    )
    admin_url, redis_url = local.admin_url, local.redis_url
    dbname = f"jira_sync_bench_{uuid.uuid4().hex[:8]}"
    try:
        say(f"servers: PostgreSQL {_where(admin_url)}, Redis {_where(redis_url)}")
        database_url = create_database(admin_url, dbname)
        broker_url = amqp_url or default_broker_url(redis_url)
        env = {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "BROKER_URL": broker_url,
            "SECRET_KEY": "bench-" + secrets.token_hex(16),
            "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "INFO"),
            "PYTHONPATH": str(ROOT),
        }
        os.environ.update(env)
        get_settings.cache_clear()
        found = Servers(
            database_url, redis_url, broker_url, state, env, embedded=local.pg is not None
        )
        flush_redis(found)
        yield found
    finally:
        from worker.runtime import resources

        if resources._current is not None:
            resources._current.close()
            resources._current = None
        if admin_url:
            with (
                contextlib.suppress(psycopg.Error),
                psycopg.connect(admin_url, autocommit=True) as conn,
            ):
                conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        local.stop()
        if os.environ.get("BENCH_KEEP_STATE"):
            say(f"kept the servers' and processes' files in {state}")
        else:
            shutil.rmtree(state, ignore_errors=True)


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}"


def flush_redis(srv: Servers) -> None:
    """Empty our Redis database and the broker's (queues, unacked, kombu bindings)."""
    if srv.on_rabbitmq:
        rabbitmq.purge_queues(srv.broker_url)
    for client in [srv.redis_client()] + ([] if srv.on_rabbitmq else [srv.broker_client()]):
        client.flushdb()
        client.close()


def drop_queues(srv: Servers) -> None:
    """Delete the messages waiting on the broker, keeping kombu's exchange bindings."""
    from config.celery import ALL_QUEUES

    if srv.on_rabbitmq:
        rabbitmq.purge_queues(srv.broker_url)
        return
    client = srv.broker_client()
    client.delete(*ALL_QUEUES, "unacked", "unacked_index", "unacked_mutex")
    client.close()


def queued(srv: Servers, *, held: bool = True) -> int:
    """Messages waiting on the broker plus (`held`) those held unacknowledged by a worker (on
    RabbitMQ only the waiting ones: AMQP does not count what a consumer holds, which is at
    most the worker's prefetch, a few messages)."""
    from config.celery import ALL_QUEUES

    if srv.on_rabbitmq:
        return sum(queue_depths(Connection(srv.broker_url)).values())
    client = srv.broker_client()
    pipe = client.pipeline(transaction=False)
    for name in ALL_QUEUES:
        pipe.llen(name)
    if held:
        pipe.hlen("unacked")
    total = sum(int(n) for n in pipe.execute())
    client.close()
    return total


def wait_port(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {HOST}:{port} after {timeout_s}s")


@dataclass
class Process:
    """A child process the bench started (a server, a worker, a load generator)."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def tree(self) -> list[psutil.Process]:
        """This process and its children (uvicorn's and Celery's pool processes)."""
        try:
            main = psutil.Process(self.pid)
            return [main, *main.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM, then SIGKILL of the whole tree if it does not go in time."""
        if self.proc.poll() is not None:
            return
        children = self.tree()[1:]
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            for p in [*children, psutil.Process(self.pid)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.kill()
            self.proc.wait(5)
        for p in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.wait(5)


def spawn(srv: Servers, name: str, cmd: list[str], **extra_env: str) -> Process:
    log_path = srv.state_dir / f"{name}.log"
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=srv.child_env(**extra_env), stdout=out, stderr=out
        )
    return Process(name, proc, log_path)


def http_protocol() -> str:
    """The Procfile's HTTP protocol: httptools with a bound on the header block, if present."""
    if importlib.util.find_spec("worker.receiver.limits") is not None:
        return "worker.receiver.limits:LimitedHttpToolsProtocol"
    return "httptools"


def uvicorn(
    srv: Servers, name: str, app: str, workers: int, **extra_env: str
) -> tuple[Process, int]:
    """A uvicorn server with the Procfile's flags (uvloop + httptools) on a free port."""
    port = free_port()
    cmd = [
        sys.executable, "-m", "uvicorn", app, "--host", HOST, "--port", str(port),
        "--loop", "uvloop", "--http", http_protocol(), "--workers", str(workers),
        "--no-access-log", "--limit-concurrency", "512", "--timeout-keep-alive", "5",
        "--log-level", "warning",
    ]  # fmt: skip
    process = spawn(srv, name, cmd, **extra_env)
    try:
        wait_port(port)
    except TimeoutError:
        process.stop()
        raise RuntimeError(f"{name} did not start:\n{process.log_tail()}") from None
    return process, port


def celery_worker(srv: Servers, name: str, concurrency: int = 2, **extra_env: str) -> Process:
    """The production worker command (prefork, events on), also importing the bench's no-op."""
    cmd = [
        sys.executable, "-m", "celery", "-A", "worker.runtime.app", "worker",
        "-P", "prefork", "-c", str(concurrency), "-E", "-l", srv.env["LOG_LEVEL"],
        "-n", f"{name}-{uuid.uuid4().hex[:6]}@%h", "--without-gossip", "--without-mingle",
        "-I", "bench.tasks",
    ]  # fmt: skip
    return spawn(srv, name, cmd, **extra_env)


class PeakRss:
    """Samples the resident memory of process trees in a thread; keeps each one's peak."""

    def __init__(self, interval_s: float = 0.1) -> None:
        self.interval_s = interval_s
        self.peaks: dict[str, int] = {}
        self._watched: dict[str, Process] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def watch(self, label: str, process: Process) -> None:
        self._watched[label] = process

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> None:
        for label, process in list(self._watched.items()):
            tree = process.tree()
            for index, p in enumerate(tree):
                role = "main" if index == 0 else "child"
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    rss = p.memory_info().rss
                    key = f"{label} {role}"
                    self.peaks[key] = max(self.peaks.get(key, 0), rss)


class CpuUse:
    """CPU seconds used by groups of processes over a block: cores busy on average, and CPU
    time per unit of work (where a figure's time goes: the app, or the servers it waits on).
    Each group is listed again at the end: a process started inside the block (a pool child,
    a PostgreSQL backend for a new connection) counts with all its CPU time."""

    def __init__(self, groups: dict[str, Callable[[], list[psutil.Process]]]) -> None:
        self.groups = groups
        self.used: dict[str, float] = {}
        self.wall_s = 0.0

    @staticmethod
    def _cpu_s(processes: list[psutil.Process]) -> dict[int, float]:
        found = {}
        for p in processes:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                found[p.pid] = t.user + t.system
        return found

    def __enter__(self) -> CpuUse:
        self._start = {name: self._cpu_s(listed()) for name, listed in self.groups.items()}
        self._started = time.monotonic()
        return self

    def __exit__(self, *_: object) -> None:
        self.wall_s = time.monotonic() - self._started
        for name, listed in self.groups.items():
            before = self._start[name]
            now = self._cpu_s(listed())
            self.used[name] = sum(cpu - before.get(pid, 0.0) for pid, cpu in now.items())

    def cores(self, name: str) -> float:
        return self.used.get(name, 0.0) / self.wall_s if self.wall_s else 0.0

    def ms_per(self, name: str, units: int) -> float:
        return 1000 * self.used.get(name, 0.0) / units if units else 0.0


def server_processes() -> list[psutil.Process]:
    """PostgreSQL's and Redis's processes on this machine (the bench's own or the system's)."""
    names = ("postgres", "redis-server", "valkey-server")
    found = []
    for p in psutil.process_iter(["name"]):
        if (p.info["name"] or "").startswith(names):
            found.append(p)
    return found


def poll_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.02) -> bool:
    """Poll; True when the predicate held before the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return False
