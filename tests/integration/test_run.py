"""`make run`: embedded servers, migrations, all four processes, a clean stop."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from devtools.embedded import free_port
from tests.conftest import ROOT, wait_for

RUN_VARS = (
    "DATABASE_URL", "REDIS_URL", "BROKER_URL", "SECRET_KEY", "FLOWER_BASIC_AUTH", "PUBLIC_URL",
)  # fmt: skip
PRINTED_RECEIVER = re.compile(r"jira-sync run: receiver: (http://\S+)/healthz")


# honcho prefixes each line with the time and the process: "18:02:01 worker.1 | {...}".
OUR_LINE = re.compile(r"^\S+ (web|worker|beat)\.1\s+\| (.*)$", re.M)


SHUTDOWN_NOTICE = re.compile(r"^(worker: (Warm|Cold) shutdown \(MainProcess\))?$")


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _get(url: str, **kwargs: object) -> int:
    try:
        return httpx.get(url, timeout=2, **kwargs).status_code  # type: ignore[arg-type]
    except httpx.HTTPError:
        return 0


def assert_one_receiver_address(output: str, env_file: Path, env: dict[str, str]) -> None:
    """The URL the launcher printed, PUBLIC_URL and `jira-sync status` in another shell (after
    `. .state/env`) all reach the one receiver."""
    printed = PRINTED_RECEIVER.search(output)
    assert printed, "the launcher printed no receiver URL"
    assert _get(printed.group(1) + "/healthz") == 200
    shell = {k: v for k, v in env.items() if k not in RUN_VARS}
    public_url = subprocess.run(
        ["bash", "-c", f". {env_file} && echo $PUBLIC_URL"],
        env=shell, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert _get(public_url + "/healthz") == 200

    def status() -> subprocess.CompletedProcess[str] | None:
        done = subprocess.run(
            ["bash", "-c", f". {env_file} && jira-sync status --json"],
            env=shell, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        return done if done.returncode == 0 else None

    # Exit 0 once beat has swept for the first time (every SWEEP_INTERVAL_S).
    answered = wait_for(status, 60, "`jira-sync status` to exit 0 from another shell")
    receiver = json.loads(answered.stdout)["receiver"]
    assert (receiver["url"], receiver["ready"]) == (public_url, True)


def test_run_starts_every_process_on_embedded_servers_and_stops_cleanly(tmp_path: Path) -> None:
    state = tmp_path / "state"
    web_port, flower_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in RUN_VARS}
    env.update(
        JIRA_SYNC_STATE_DIR=str(state), PORT=str(web_port), FLOWER_PORT=str(flower_port),
        BEAT_SCHEDULE_FILE=str(tmp_path / "beat"),
    )  # fmt: skip
    log = (tmp_path / "run.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.run"], cwd=ROOT, env=env, stdout=log, stderr=log,
        start_new_session=True,
    )  # fmt: skip
    try:
        wait_for(lambda: _get(f"http://127.0.0.1:{web_port}/healthz") == 200, 90, "web /healthz")
        wait_for(lambda: _get(f"http://127.0.0.1:{web_port}/readyz") == 200, 30, "web /readyz")
        flower = f"http://127.0.0.1:{flower_port}/api/workers"
        wait_for(lambda: _get(flower) == 401, 60, "flower refusing anonymous requests")
        user, _, password = (state / "flower_basic_auth").read_text().strip().partition(":")
        wait_for(
            lambda: _get(flower, auth=(user, password)) == 200, 30, "flower answering with auth"
        )
        text = lambda: (tmp_path / "run.log").read_text(errors="replace")  # noqa: E731
        wait_for(lambda: "ready" in text() and "beat" in text(), 60, "worker and beat")
        assert (state / "secret_key").exists()
        assert_one_receiver_address(text(), state / "env", env)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(60)
    output = (tmp_path / "run.log").read_text(errors="replace")
    assert "jira-sync run: stopped" in output
    ours = [m.group(2) for m in OUR_LINE.finditer(output)]
    assert ours, "no output from web, worker or beat"
    # Celery prints its shutdown notice itself, in plain text, after Ctrl-C.
    not_json = [x for x in ours if not _is_json_object(x) and not SHUTDOWN_NOTICE.match(x)]
    assert not_json == [], f"log lines that are not one JSON object: {not_json[:5]}"
    assert password not in output
    leftover = subprocess.run(
        ["pgrep", "-f", str(state)], capture_output=True, text=True, check=False
    ).stdout.split()
    assert leftover == [], f"processes still running: {leftover}"
