"""Procfile processes start only with a valid configuration, and say what is wrong in one line."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

GOOD = {
    "PATH": "/usr/bin:/bin",
    "DATABASE_URL": "postgresql://127.0.0.1/db",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "SECRET_KEY": "0123456789abcdef-secret",
}


def boot(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.runtime.boot", *args],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_bad_setting_stops_a_process_with_one_line_naming_it() -> None:
    proc = boot({**GOOD, "SNOWFLAKE_REGION_ID": "5000"}, "celery", "--version")
    assert proc.returncode == 3
    assert proc.stderr.strip().splitlines() == [
        "celery: configuration: SNOWFLAKE_REGION_ID must be between 0 and 4095, got 5000"
    ]


def test_valid_settings_run_the_module() -> None:
    proc = boot(GOOD, "celery", "--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith("5.")


def test_flower_refuses_to_start_without_credentials() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "worker.runtime.flower"],
        env=GOOD, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "FLOWER_BASIC_AUTH is not set" in proc.stderr
    assert "Traceback" not in proc.stderr
