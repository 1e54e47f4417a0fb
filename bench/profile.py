"""Optional profiles (`python -m bench --profile`): where jira-sync's time goes in each figure.

Uses py-spy when installed (`pip install py-spy`; not a dependency of the project). Each
profile is a pass of its own after the measured runs, so the figures stay unprofiled. The
collapsed stacks are summed per function: `self` is time spent in the function itself,
`total` time with it anywhere on the stack (each counted once per sample). Written to
bench/profiles/<name>.txt and the top lines printed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"
TOP = 15
OUR_PACKAGES = frozenset({"worker", "tasks", "config"})
# "function (path/to/file.py:123)" -> "function (file.py)": lines differ, functions do not.
_FRAME = re.compile(r"^(?P<fn>.*?) \((?P<path>[^:()]+)(?::\d+)?\)$")


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def _frame(raw: str) -> str:
    match = _FRAME.match(raw.strip())
    if not match:
        return raw.strip()
    path = match["path"]
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{match['fn']} ({path})"


def _package(frame: str) -> str:
    """The top-level package (or stdlib module) a summarized frame comes from."""
    inside = frame.rpartition(" (")[2].rstrip(")")
    head = inside.split("/", 1)[0]
    return head.removesuffix(".py") if head else inside


def summarize(raw_path: Path, title: str, top: int = TOP) -> str:
    """Self samples by package and by function, and total samples of jira-sync's functions."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    samples = 0
    for line in raw_path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";")]
        # The first frame is the process or thread name: not a function.
        frames = [f for f in frames[1:] if f] or frames
        samples += count
        own[frames[-1]] += count
        packages[_package(frames[-1])] += count
        for name in set(frames):
            if _package(name) in OUR_PACKAGES:
                total[name] += count
    if not samples:
        return f"{title}: no samples\n"
    lines = [f"{title}: {samples} samples", "", "self %  package"]
    lines += [f"{100 * n / samples:6.1f}  {name}" for name, n in packages.most_common(10)]
    lines += ["", "self %  function"]
    lines += [f"{100 * n / samples:6.1f}  {name}" for name, n in own.most_common(top)]
    lines += ["", "total %  jira-sync function (time with it on the stack)"]
    lines += [f"{100 * n / samples:7.1f}  {name}" for name, n in total.most_common(top)]
    return "\n".join(lines) + "\n"


def attach(
    pid: int, seconds: float, name: str, subprocesses: bool = False, gil: bool = False
) -> subprocess.Popen[bytes]:
    """Start sampling a running process for `seconds`; call finish() with the handle. With
    `gil`, only the thread holding the GIL is sampled: where the CPU goes, waits left out."""
    exe = py_spy()
    assert exe is not None
    PROFILES_DIR.mkdir(exist_ok=True)
    cmd = [
        exe, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
        "--rate", "200", "--format", "raw", "--output", str(PROFILES_DIR / f"{name}.raw"),
        "--nonblocking",
    ]  # fmt: skip
    if subprocesses:
        cmd.append("--subprocesses")
    if gil:
        cmd.append("--gil")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_command(cmd: list[str], name: str, env: dict[str, str], cwd: Path) -> None:
    """Run a command under py-spy from start to exit."""
    exe = py_spy()
    assert exe is not None
    PROFILES_DIR.mkdir(exist_ok=True)
    out = PROFILES_DIR / f"{name}.raw"
    subprocess.run(
        [exe, "record", "--rate", "200", "--format", "raw", "--output", str(out), "--", *cmd],
        env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
    )  # fmt: skip


def finish(name: str, title: str) -> str:
    """Summarize a recorded profile into bench/profiles/<name>.txt; returns the summary."""
    raw = PROFILES_DIR / f"{name}.raw"
    if not raw.exists():
        return f"{title}: py-spy recorded nothing\n"
    text = summarize(raw, title)
    (PROFILES_DIR / f"{name}.txt").write_text(text)
    return text
