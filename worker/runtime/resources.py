"""Per-process resources: settings, the database pool, Redis and the credential vault."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import redis
from psycopg_pool import ConnectionPool

from config.settings import Settings, get_settings
from worker.store.crypto import Vault
from worker.store.db import Connection, open_pool
from worker.support.logs import register_secret


@dataclass
class Resources:
    """What a process opens once and hands to the code that needs it."""

    settings: Settings
    pool: ConnectionPool[Connection]
    redis: redis.Redis
    vault: Vault

    def close(self) -> None:
        self.pool.close()
        self.redis.close()


def open_resources(settings: Settings) -> Resources:
    register_secret(settings.secret_key)
    if settings.flower_basic_auth:
        register_secret(settings.flower_basic_auth.partition(":")[2])
    if settings.metrics_basic_auth:
        register_secret(settings.metrics_basic_auth.partition(":")[2])
    return Resources(
        settings=settings,
        pool=open_pool(settings.database_url, max_size=settings.db_pool_max_size),
        redis=redis.Redis.from_url(
            settings.redis_url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30
        ),
        vault=Vault(settings.secret_key),
    )


_current: Resources | None = None
_lock = threading.Lock()


def current() -> Resources:
    """This process's resources, opened on first use (a forked child opens its own)."""
    global _current
    with _lock:
        if _current is None:
            _current = open_resources(get_settings())
        return _current


def _forget_after_fork() -> None:
    # Sockets inherited from the parent must not be shared; the child opens fresh ones.
    global _current
    _current = None


os.register_at_fork(after_in_child=_forget_after_fork)
