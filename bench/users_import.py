"""`jira-sync users import` of a 10,000-row CSV (SPEC 14; goal: under 10 s), timed as an
operator runs it: the whole command, process start to exit.

    python -m bench.users_import [--rows 10000] [--runs 3]

Half the rows name the user by verified e-mail, half by id; each run imports the same file
again (an import replaces earlier mappings of the same Jira users), the first into an empty
map. A --dry-run of the same file is timed too (every row checked, nothing stored).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from bench import harness
from tests.integration.inbound_support import base_scene
from worker.runtime import resources
from worker.services.loader import load_scene

FIRST_USER = 100_000
GOAL_S = 10.0


def say(message: str) -> None:
    sys.stderr.write(message + "\n")


def store_users(database_url: str, rows: int) -> None:
    with psycopg.connect(database_url) as conn, conn.cursor() as cur:
        with cur.copy("COPY app_user (id, name, is_active) FROM STDIN") as copy:
            for n in range(rows):
                copy.write_row((FIRST_USER + n, f"User {n}", True))
        with cur.copy("COPY user_email (user_id, email, is_verified) FROM STDIN") as copy:
            for n in range(rows):
                copy.write_row((FIRST_USER + n, f"user{n}@acme.test", True))


def write_csv(folder: Path, rows: int) -> Path:
    path = folder / "users.csv"
    lines = ["displayName,jira_user,user"]
    for n in range(rows):
        user = f"user{n}@acme.test" if n % 2 else str(FIRST_USER + n)
        lines.append(f"User {n},{n:08x}{'e' * 16},{user}")
    path.write_text("\n".join(lines) + "\n")
    return path


def timed(srv: harness.Servers, args: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        cwd=harness.ROOT,
        env=srv.child_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"users import exited {done.returncode}: {done.stderr[-2000:]}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.users_import", description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    with harness.servers(say) as srv, tempfile.TemporaryDirectory() as folder:
        load_scene(resources.current(), base_scene())
        store_users(srv.database_url, args.rows)
        csv = write_csv(Path(folder), args.rows)
        command = ["users", "import", "--integration", "1", str(csv)]
        dry = [timed(srv, [*command, "--dry-run"]) for _ in range(args.runs)]
        real = [timed(srv, command) for _ in range(args.runs)]
        with psycopg.connect(srv.database_url) as conn:
            row = conn.execute("SELECT count(*) FROM jira_user_map").fetchone()
            stored = int(row[0]) if row else 0
    print(f"{args.rows:,} rows, {args.runs} runs each; {stored:,} mappings stored")
    print("| figure | median s | runs (s) | goal |")
    print("| --- | ---: | --- | --- |")
    for what, runs in (("users import --dry-run", dry), ("users import", real)):
        median = statistics.median(runs)
        verdict = "met" if median < GOAL_S else "NOT met"
        shown = ", ".join(f"{r:.2f}" for r in runs)
        print(f"| {what} | {median:.2f} | {shown} | < {GOAL_S:g} s: {verdict} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
