"""Environment -> typed, validated settings, read once per process."""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DEFAULT_SNOWFLAKE_EPOCH = "2022-08-08T00:00:00Z"
AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")
REDIS_SCHEMES = ("redis", "rediss", "unix")
SECRET_FIELDS = frozenset({"secret_key", "flower_basic_auth", "metrics_basic_auth"})


class ConfigError(Exception):
    """Raised when an environment variable is missing or malformed; names the variable."""


@dataclass(frozen=True, repr=False)
class Settings:
    """Everything the processes read from the environment, validated."""

    database_url: str
    redis_url: str
    broker_url: str
    secret_key: str
    public_url: str
    snowflake_region_id: int
    snowflake_epoch_s: int
    webhook_body_limit_bytes: int
    webhook_read_timeout_s: float
    flower_basic_auth: str
    log_level: str
    broker_visibility_timeout_s: int
    retry_budget_s: float
    retry_backoff_max_s: int
    pending_link_ttl_s: int
    jira_timeout_s: float
    db_pool_max_size: int
    pipeline_batch_size: int
    broker_delivery_limit: int
    metrics_basic_auth: str
    status_categories_ttl_s: int
    flower_port: int
    flower_address: str
    # A receiver process whose heartbeat is this old without a clean stop was killed: beat's
    # sweep sends again what it stored (migration 0024). It beats every sixth of this.
    receiver_silent_after_s: float

    @property
    def broker_is_amqp(self) -> bool:
        """True when the broker is RabbitMQ (AMQP); otherwise it is Redis."""
        return urlsplit(self.broker_url).scheme in AMQP_SCHEMES

    reconcile_interval_s: int
    reconcile_overlap_s: int
    reconcile_settle_s: int
    reconcile_page_size: int
    reconcile_window_max_results: int
    # Atlassian's OAuth 2.0 authorization server and API gateway (tests point them at a fake).
    atlassian_auth_url: str
    atlassian_api_url: str

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in SECRET_FIELDS and value:
                value = "***"
            elif f.name.endswith("_url") and isinstance(value, str):
                value = redact_url(value)
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"


def redact_url(url: str) -> str:
    """Hide the password in a URL such as redis://:pw@host/0."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(f"{name} is not set")
    return value


N = TypeVar("N", int, float)


def _number(env: Mapping[str, str], name: str, default: N, low: N, high: N) -> N:
    """The variable as a number of default's type, within low..high; unset: default."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    kind = type(default)
    try:
        value = kind(raw)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ConfigError(f"{name} must be {what}, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low:g} and {high:g}, got {value:g}")
    return value


def _url(env: Mapping[str, str], name: str, schemes: tuple[str, ...]) -> str:
    value = _required(env, name)
    scheme = urlsplit(value).scheme
    if scheme not in schemes:
        raise ConfigError(f"{name} must be a {' or '.join(schemes)} URL")
    return value


def default_broker_url(redis_url: str) -> str:
    """The Redis URL on the next database index, so broker keys never mix with ours."""
    parts = urlsplit(redis_url)
    path = parts.path.strip("/")
    index = int(path) if path.isdigit() else 0
    return urlunsplit(parts._replace(path=f"/{(index + 1) % 16}"))


def _epoch(env: Mapping[str, str]) -> int:
    raw = env.get("SNOWFLAKE_EPOCH", "").strip() or DEFAULT_SNOWFLAKE_EPOCH
    try:
        instant = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"SNOWFLAKE_EPOCH must be an ISO-8601 instant such as {DEFAULT_SNOWFLAKE_EPOCH}"
        ) from None
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    return int(instant.timestamp())


def _base_url(env: Mapping[str, str], name: str, default: str) -> str:
    value = (env.get(name, "").strip() or default).rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        raise ConfigError(f"{name} must be an http or https URL without a query, got {value!r}")
    return value


def load_settings(env: Mapping[str, str]) -> Settings:
    """Validate the environment; raise ConfigError naming the first bad variable."""
    redis_url = _url(env, "REDIS_URL", REDIS_SCHEMES)
    broker_url = (
        _url(env, "BROKER_URL", REDIS_SCHEMES + AMQP_SCHEMES)
        if env.get("BROKER_URL", "").strip()
        else default_broker_url(redis_url)
    )
    log_level = (env.get("LOG_LEVEL", "").strip() or "INFO").upper()
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}")
    secret_key = _required(env, "SECRET_KEY")
    if len(secret_key) < 16:
        raise ConfigError("SECRET_KEY must be at least 16 characters")
    flower_auth = env.get("FLOWER_BASIC_AUTH", "").strip()
    if flower_auth and ":" not in flower_auth:
        raise ConfigError("FLOWER_BASIC_AUTH must look like user:password")
    visibility = _number(env, "BROKER_VISIBILITY_TIMEOUT_S", 300, 10, 86400)
    backoff_max = _number(env, "RETRY_BACKOFF_MAX_S", 60, 1, 3600)
    if backoff_max * 2 >= visibility:
        raise ConfigError(
            "BROKER_VISIBILITY_TIMEOUT_S must be more than twice RETRY_BACKOFF_MAX_S "
            "so that a delayed retry is never redelivered twice"
        )
    metrics_auth = env.get("METRICS_BASIC_AUTH", "").strip()
    if metrics_auth and ":" not in metrics_auth:
        raise ConfigError("METRICS_BASIC_AUTH must look like user:password")
    public_url = (env.get("PUBLIC_URL", "").strip() or "http://127.0.0.1:8000").rstrip("/")
    if urlsplit(public_url).scheme not in ("http", "https"):
        raise ConfigError("PUBLIC_URL must be an http or https URL")
    return Settings(
        database_url=_url(env, "DATABASE_URL", ("postgresql", "postgres")),
        redis_url=redis_url,
        broker_url=broker_url,
        secret_key=secret_key,
        public_url=public_url,
        snowflake_region_id=_number(env, "SNOWFLAKE_REGION_ID", 0, 0, 4095),
        snowflake_epoch_s=_epoch(env),
        webhook_body_limit_bytes=_number(env, "WEBHOOK_BODY_LIMIT_BYTES", 1 << 20, 1024, 64 << 20),
        webhook_read_timeout_s=_number(env, "WEBHOOK_READ_TIMEOUT_S", 10.0, 0.1, 3600.0),
        flower_basic_auth=flower_auth,
        log_level=log_level,
        broker_visibility_timeout_s=visibility,
        retry_budget_s=_number(env, "RETRY_BUDGET_S", 120.0, 0.0, 86400.0),
        retry_backoff_max_s=backoff_max,
        pending_link_ttl_s=_number(env, "PENDING_LINK_TTL_S", 600, 30, 86400),
        jira_timeout_s=float(_number(env, "JIRA_TIMEOUT_S", 10, 1, 300)),
        db_pool_max_size=_number(env, "DB_POOL_MAX_SIZE", 10, 1, 200),
        pipeline_batch_size=_number(env, "PIPELINE_BATCH_SIZE", 200, 1, 1000),
        broker_delivery_limit=_number(env, "BROKER_DELIVERY_LIMIT", 10, 2, 1000),
        metrics_basic_auth=metrics_auth,
        status_categories_ttl_s=_number(env, "STATUS_CATEGORIES_TTL_S", 3600, 10, 86400),
        flower_port=_number(env, "FLOWER_PORT", 5555, 1, 65535),
        flower_address=env.get("FLOWER_ADDRESS", "").strip() or "127.0.0.1",
        receiver_silent_after_s=_number(env, "RECEIVER_SILENT_AFTER_S", 30.0, 3.0, 3600.0),
        reconcile_interval_s=_number(env, "RECONCILE_INTERVAL_S", 300, 10, 86400),
        # JQL compares `updated` to the minute: an overlap under a minute would miss changes.
        reconcile_overlap_s=_number(env, "RECONCILE_OVERLAP_S", 180, 60, 3600),
        # A window ends this long before Jira's own clock: changes Jira has not indexed yet.
        reconcile_settle_s=_number(env, "RECONCILE_SETTLE_S", 60, 60, 3600),
        reconcile_page_size=_number(env, "RECONCILE_PAGE_SIZE", 500, 1, 1000),
        # At most 10,000 (SPEC 12): a window matching more is narrowed before it is paged.
        reconcile_window_max_results=_number(
            env, "RECONCILE_WINDOW_MAX_RESULTS", 10_000, 1, 10_000
        ),
        atlassian_auth_url=_base_url(env, "ATLASSIAN_AUTH_URL", "https://auth.atlassian.com"),
        atlassian_api_url=_base_url(env, "ATLASSIAN_API_URL", "https://api.atlassian.com"),
    )


def receiver_metrics_folder(env: Mapping[str, str]) -> str | None:
    """Where receiver processes share their metrics when uvicorn runs more than one
    (`WEB_CONCURRENCY` > 1): `PROMETHEUS_MULTIPROC_DIR` when set, else one folder per uvicorn
    supervisor (the parent of every receiver process) under the temp folder; None for one
    process. Read before the rest of the settings: prometheus_client decides at import."""
    if _number(env, "WEB_CONCURRENCY", 1, 1, 1024) <= 1:
        return None
    chosen = env.get("PROMETHEUS_MULTIPROC_DIR", "").strip()
    return chosen or os.path.join(tempfile.gettempdir(), f"jira-sync-metrics-{os.getppid()}")


@functools.cache
def get_settings() -> Settings:
    """The process's settings, read from os.environ the first time they are needed."""
    return load_settings(os.environ)
