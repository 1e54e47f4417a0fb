"""`make run`: start everything locally with one command.

Without DATABASE_URL / REDIS_URL it starts embedded PostgreSQL and Redis under `.state/`,
generates SECRET_KEY and Flower credentials there once, migrates, and runs the Procfile's
processes (web, worker, beat, flower) with honcho. Ctrl-C stops them all, then the servers.
The receiver listens on PORT (default 8000), which PUBLIC_URL names unless it is set, and
`.state/env` holds what a second shell needs (`. .state/env`) for `jira-sync` to reach them.
"""

from __future__ import annotations

import os
import secrets
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from config.settings import ConfigError, load_settings
from devtools.embedded import start_missing
from worker.store.db import migrate

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("JIRA_SYNC_STATE_DIR", ROOT / ".state"))
DEFAULT_PORT = 8000
# What `jira-sync` in another shell needs to reach this run's servers and receiver.
CLI_VARS = ("DATABASE_URL", "REDIS_URL", "BROKER_URL", "SECRET_KEY", "PUBLIC_URL")


def _say(message: str) -> None:
    sys.stderr.write(f"jira-sync run: {message}\n")
    sys.stderr.flush()


def _stored_secret(name: str, make: str) -> str:
    """A value generated once and kept in the state folder (readable by its owner only)."""
    path = STATE / name
    if not path.exists():
        path.write_text(make)
        path.chmod(0o600)
    return path.read_text().strip()


def _read_port(name: str) -> int | None:
    path = STATE / f"{name}.port"
    return int(path.read_text()) if path.exists() else None


def receiver_env(env: dict[str, str]) -> dict[str, str]:
    """PORT and PUBLIC_URL agreeing on one port. PORT is set even when it is the default:
    honcho hands the first process PORT=5000 otherwise, and the receiver would listen where
    nothing else (PUBLIC_URL, the webhook URLs given to Jira, `status`) looks."""
    port = env.get("PORT", "").strip() or str(DEFAULT_PORT)
    public_url = env.get("PUBLIC_URL", "").strip() or f"http://127.0.0.1:{port}"
    return {"PORT": port, "PUBLIC_URL": public_url}


def write_env_file(path: Path, env: dict[str, str]) -> None:
    """A file a second shell sources (`. .state/env`) so that `jira-sync` reaches this run;
    it holds SECRET_KEY, so only its owner can read it."""
    lines = ["# Written by `make run`: `. .state/env` points jira-sync in this shell at it."]
    lines += [f"export {name}={shlex.quote(env[name])}" for name in CLI_VARS if env.get(name)]
    lines.append(f'export PATH={shlex.quote(str(Path(sys.executable).parent))}:"$PATH"')
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


def main() -> int:
    STATE.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if not (env.get("DATABASE_URL") and env.get("REDIS_URL")):
        _say(f"starting the embedded servers not given by URL (data in {STATE})")
    servers = start_missing(
        STATE,
        env.get("DATABASE_URL"),
        env.get("REDIS_URL"),
        pg_port=_read_port("pg"),
        redis_port=_read_port("redis"),
    )
    env["DATABASE_URL"], env["REDIS_URL"] = servers.admin_url, servers.redis_url
    # Kept for the next run: the same ports, so URLs copied from this one stay valid.
    for name, server in (("pg", servers.pg), ("redis", servers.redis)):
        if server is not None:
            (STATE / f"{name}.port").write_text(str(server.port))
            _say(f"embedded {name} on 127.0.0.1:{server.port}")
    if servers.pg or servers.redis:
        env.setdefault("SECRET_KEY", _stored_secret("secret_key", secrets.token_urlsafe(32)))
        auth = f"admin:{secrets.token_urlsafe(12)}"
        env.setdefault("FLOWER_BASIC_AUTH", _stored_secret("flower_basic_auth", auth))
        flower_url = f"http://127.0.0.1:{env.get('FLOWER_PORT', '5555')}"
        _say(f"Flower: {flower_url} (user:password in {STATE / 'flower_basic_auth'})")
    env.setdefault("BEAT_SCHEDULE_FILE", str(STATE / "celerybeat-schedule"))
    env.update(receiver_env(env))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    try:
        settings = load_settings(env)
        applied = migrate(settings.database_url)
        _say(f"migrations applied: {', '.join(applied) or 'none needed'}")
        _say(f"receiver: http://127.0.0.1:{env['PORT']}/healthz (PUBLIC_URL {env['PUBLIC_URL']})")
        write_env_file(STATE / "env", env)
        _say(f"other shells: `. {STATE / 'env'}` points jira-sync at this run")
        honcho = subprocess.Popen(
            [sys.executable, "-m", "honcho", "start", "-f", str(ROOT / "Procfile")],
            cwd=ROOT,
            env=env,
        )
        try:
            return honcho.wait()
        except KeyboardInterrupt:
            honcho.send_signal(signal.SIGINT)
            return honcho.wait()
    except ConfigError as exc:
        _say(f"configuration: {exc}")
        return 3
    finally:
        servers.stop(pg_mode="fast")
        _say("stopped")


if __name__ == "__main__":
    sys.exit(main())
