"""Settings: read once, typed, failing with a message that names the variable."""

from __future__ import annotations

import subprocess
import sys

import pytest

from config.settings import ConfigError, default_broker_url, load_settings

BASE = {
    "DATABASE_URL": "postgresql://u:dbpass@127.0.0.1/db",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "SECRET_KEY": "0123456789abcdef-secret",
}


def test_defaults_are_applied() -> None:
    s = load_settings(BASE)
    assert s.snowflake_region_id == 0
    assert s.webhook_body_limit_bytes == 1 << 20
    assert s.webhook_read_timeout_s == 10.0
    assert s.snowflake_epoch_s == 1659916800  # 2022-08-08T00:00:00Z
    assert s.log_level == "INFO"


def test_broker_defaults_to_the_next_redis_database() -> None:
    assert load_settings(BASE).broker_url == "redis://127.0.0.1:6379/1"
    assert default_broker_url("redis://h:1/5") == "redis://h:1/6"
    assert default_broker_url("redis://h:1") == "redis://h:1/1"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SNOWFLAKE_REGION_ID", "5000"),
        ("SNOWFLAKE_REGION_ID", "abc"),
        ("WEBHOOK_BODY_LIMIT_BYTES", "-1"),
        ("WEBHOOK_READ_TIMEOUT_S", "soon"),
        ("WEBHOOK_READ_TIMEOUT_S", "0.01"),
        ("SNOWFLAKE_EPOCH", "yesterday"),
        ("LOG_LEVEL", "LOUD"),
        ("DATABASE_URL", "mysql://x"),
        ("REDIS_URL", ""),
        ("SECRET_KEY", ""),
        ("PUBLIC_URL", "ftp://x"),
        ("FLOWER_BASIC_AUTH", "nopassword"),
    ],
)
def test_bad_value_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings({**BASE, name: value})


def test_retry_delay_must_fit_in_the_visibility_timeout() -> None:
    with pytest.raises(ConfigError, match="BROKER_VISIBILITY_TIMEOUT_S"):
        load_settings({**BASE, "BROKER_VISIBILITY_TIMEOUT_S": "60", "RETRY_BACKOFF_MAX_S": "40"})


def test_secrets_never_print() -> None:
    s = load_settings({**BASE, "FLOWER_BASIC_AUTH": "admin:flowerpass"})
    text = repr(s)
    assert "0123456789abcdef-secret" not in text
    assert "flowerpass" not in text
    assert "dbpass" not in text
    assert "***" in text


def test_bad_setting_stops_the_cli_with_one_line(tmp_path: object) -> None:
    env = {**BASE, "SNOWFLAKE_REGION_ID": "5000", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "worker.cli", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 3
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "SNOWFLAKE_REGION_ID must be between 0 and 4095" in lines[0]


@pytest.mark.parametrize(
    ("name", "value", "names"),
    [
        ("RECONCILE_OVERLAP_S", "59", "between 60 and 3600"),  # JQL's minute: never less
        ("RECONCILE_SETTLE_S", "30", "between 60 and 3600"),
        ("RECONCILE_WINDOW_MAX_RESULTS", "10001", "between 1 and 10000"),
    ],
)
def test_reconciliation_limits_are_enforced(name: str, value: str, names: str) -> None:
    with pytest.raises(ConfigError, match=f"{name} must be {names}"):
        load_settings({**BASE, name: value})
    settings = load_settings(BASE)
    assert (settings.reconcile_overlap_s, settings.reconcile_settle_s) == (180, 60)
