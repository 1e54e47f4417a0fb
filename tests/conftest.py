"""Shared fixtures: real PostgreSQL and Redis (embedded unless TEST_*_URL is set), clean state,
real Celery worker processes, and scenes loaded through the product's own loader."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
import redis as redis_lib

from config.settings import default_broker_url, get_settings, load_settings
from devtools import rabbitmq as amqp
from devtools.embedded import EmbeddedPostgres, EmbeddedRedis, create_database, start_missing
from worker.runtime import resources

# The fake Jira Server (`fake_jira`) and Cloud (`fake_cloud`) fixtures for every test module.
pytest_plugins = ["tests.fakejira", "tests.fakecloud"]

ROOT = Path(__file__).resolve().parent.parent
# Real bodies Jira sent once, beside the repository (../shared/jira-payloads/SOURCES.md).
JIRA_PAYLOADS = ROOT.parent / "shared" / "jira-payloads"
SECRET_KEY = "test-secret-key-" + secrets.token_hex(8)


@dataclass
class Servers:
    """The database and Redis the tests use; embedded ones can be stopped and restarted."""

    database_url: str
    redis_url: str
    pg: EmbeddedPostgres | None = None
    redis: EmbeddedRedis | None = None
    env: dict[str, str] = field(default_factory=dict)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if amqp.is_amqp(os.environ.get("TEST_BROKER_URL", "")):
        return
    skip = pytest.mark.skip(reason="RabbitMQ only: runs in the RabbitMQ leg (tests/amqp_leg.py)")
    for item in items:
        if "amqp_only" in item.keywords:
            item.add_marker(skip)


def _server_failed(what: str, exc: BaseException) -> None:
    # A missing server fails the run; it never skips silently.
    pytest.fail(f"{what} is not reachable: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def jira_payloads() -> Path:
    """The folder of real Jira bodies. A clone without it skips the tests that read them,
    saying so; CI (CI=true) requires it, so they never silently stop running there."""
    if not JIRA_PAYLOADS.is_dir():
        message = f"real Jira bodies absent ({JIRA_PAYLOADS}): the tests that read them did not run"
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return JIRA_PAYLOADS


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    state = Path(tempfile.mkdtemp(prefix="jira-sync-test-"))
    try:
        local = start_missing(
            state, os.environ.get("TEST_DATABASE_URL"), os.environ.get("TEST_REDIS_URL")
        )
    except Exception as exc:
        _server_failed("an embedded server", exc)
    admin_url, redis_url, pg, rd = local.admin_url, local.redis_url, local.pg, local.redis
    try:
        redis_lib.Redis.from_url(redis_url).ping()
        database_url = create_database(admin_url, f"jira_sync_test_{uuid.uuid4().hex[:10]}")
    except Exception as exc:
        _server_failed("the test database or Redis", exc)
    dbname = urlsplit(database_url).path.lstrip("/")
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        # The RabbitMQ leg (tests/amqp_leg.py) sets TEST_BROKER_URL; Redis otherwise.
        "BROKER_URL": os.environ.get("TEST_BROKER_URL") or default_broker_url(redis_url),
        "SECRET_KEY": SECRET_KEY,
        "PUBLIC_URL": "http://127.0.0.1:8000",
        "LOG_LEVEL": "INFO",
        "BROKER_VISIBILITY_TIMEOUT_S": "20",
        "RETRY_BACKOFF_MAX_S": "2",
        "RETRY_BUDGET_S": "2",  # with the 2 s cap: three retries
        "JIRA_TIMEOUT_S": "3",
    }
    os.environ.update(env)
    get_settings.cache_clear()
    yield Servers(database_url, redis_url, pg, rd, env)
    resources_close()
    try:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    except psycopg.Error:
        pass
    local.stop()


def resources_close() -> None:
    if resources._current is not None:
        resources._current.close()
        resources._current = None


TABLES_KEPT = ("schema_migration",)


def clean_state(database_url: str, redis_url: str) -> None:
    """Empty every table, both Redis databases (ours and the broker's) and, on RabbitMQ,
    the broker's queues."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
            if r[0] not in TABLES_KEPT
        ]
        conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
    client = redis_lib.Redis.from_url(redis_url)
    client.flushall()
    client.close()
    broker_url = os.environ.get("BROKER_URL", "")
    if amqp.is_amqp(broker_url):
        amqp.purge_queues(broker_url)


@pytest.fixture
def res(servers: Servers) -> Iterator[resources.Resources]:
    """This process's resources on clean state: pool, Redis, vault, settings."""
    clean_state(servers.database_url, servers.redis_url)
    get_settings.cache_clear()
    current = resources.current()
    # An earlier test may have restarted PostgreSQL: drop the connections that died with it.
    current.pool.check()
    yield current


@pytest.fixture
def settings_env(servers: Servers) -> dict[str, str]:
    """The environment for subprocesses (workers, receiver, CLI) of this test session."""
    return {**os.environ, **servers.env}


@pytest.fixture
def scene(res: resources.Resources) -> Callable[[dict[str, Any]], None]:
    """Load reference data through `jira-sync load`'s own code."""
    from worker.services.loader import load_scene

    def _load(data: dict[str, Any]) -> None:
        load_scene(res, data)

    return _load


@dataclass
class WorkerProcess:
    """A real `celery worker` process (prefork) for integration tests."""

    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def children(self) -> list[int]:
        out = subprocess.run(
            ["pgrep", "-P", str(self.pid)], capture_output=True, text=True, check=False
        ).stdout
        return [int(p) for p in out.split()]

    def kill(self) -> None:
        """SIGKILL the main process and its pool children, as a crash would."""
        for pid in [*self.children(), self.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def launch_worker(
    env: dict[str, str], log_path: Path, concurrency: int = 2, queues: str | None = None
) -> WorkerProcess:
    """Start a real `celery worker` process (prefork) and wait until its pool is up."""
    cmd = [
        sys.executable, "-m", "celery", "-A", "worker.runtime.app", "worker",
        "-P", "prefork", "-c", str(concurrency), "-n", f"w-{uuid.uuid4().hex[:8]}@%h", "-E",
        "--without-gossip", "--without-mingle", "-l", "INFO",
        *(["-Q", queues] if queues else []),
    ]  # fmt: skip
    with log_path.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=out)
    handle = WorkerProcess(proc, log_path)
    deadline = time.monotonic() + 60
    while "ready" not in handle.log() or len(handle.children()) < concurrency:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"worker did not start:\n{handle.log()[-4000:]}")
        time.sleep(0.1)
    return handle


@pytest.fixture(scope="module")
def module_worker(
    servers: Servers, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """One worker with two pool processes, shared by the tests of the module that asks for it
    (it is idle between them, so each test's clean state does not pull anything from under it)."""
    log_path = tmp_path_factory.mktemp("module-worker") / "worker.log"
    handle = launch_worker({**os.environ, **servers.env}, log_path, concurrency=2)
    yield handle
    handle.stop()


@pytest.fixture
def start_worker(
    settings_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start real worker processes for one test; all are stopped at its end."""
    started: list[WorkerProcess] = []

    def _start(
        concurrency: int = 2, env: dict[str, str] | None = None, queues: str | None = None
    ) -> WorkerProcess:
        log_path = tmp_path / f"worker-{len(started)}.log"
        handle = launch_worker({**settings_env, **(env or {})}, log_path, concurrency, queues)
        started.append(handle)
        return handle

    yield _start
    for handle in started:
        handle.stop()


def wait_for(predicate: Callable[[], Any], timeout_s: float = 30, what: str = "") -> Any:
    """Poll until predicate() is truthy; fail the test naming what never happened."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what or predicate}")
        time.sleep(0.1)


@pytest.fixture
def env_for(servers: Servers) -> Callable[..., Any]:
    """Settings built from the test environment plus overrides (for config tests)."""

    def _build(**overrides: str) -> Any:
        return load_settings({**servers.env, **overrides})

    return _build


@contextlib.contextmanager
def receiver_process(
    env: dict[str, str], log_path: Path, *, workers: int = 1, host: str = "127.0.0.1"
) -> Iterator[tuple[str, Callable[[], str]]]:
    """The receiver as production runs it (uvicorn, uvloop, the Procfile's httptools protocol)
    on a free port of `host`, ready (its /readyz answers 200); yields its base URL and a
    reader of its log."""
    from devtools.embedded import free_port

    port = free_port()
    cmd = [
        sys.executable, "-m", "uvicorn", "worker.receiver.app:app", "--host", host,
        "--port", str(port), "--loop", "uvloop",
        "--http", "worker.receiver.limits:LimitedHttpToolsProtocol", "--workers", str(workers),
    ]  # fmt: skip
    with log_path.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=out)
    base = f"http://{host}:{port}"

    def ready() -> bool:
        import httpx

        if proc.poll() is not None:
            pytest.fail(f"receiver exited:\n{log_path.read_text()[-3000:]}")
        try:
            return httpx.get(base + "/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(ready, 30, "the receiver to be ready")
    try:
        yield base, lambda: log_path.read_text(errors="replace")
    finally:
        proc.terminate()
        proc.wait(15)
