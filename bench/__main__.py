"""`python -m bench` (`make bench`): every figure beside its baseline, in at most 10 minutes.

    python -m bench                      # everything, 3 runs of each (about 8-10 minutes)
    python -m bench --quick              # a smoke run: 1 short run of each (1-2 minutes)
    python -m bench --only receiver,ids  # some sections: receiver, pipeline, ids, replay

Writes bench/results.json and bench/results.md and prints the table. Never fails on a number:
the exit code is 0 unless the bench itself could not run.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable

from bench import harness, payloads, report
from bench.harness import Servers
from bench.report import Report

SECTIONS = ("receiver", "pipeline", "ids", "replay")


def say(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one short run of each figure")
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma-separated: {', '.join(SECTIONS)}"
    )
    parser.add_argument("--runs", type=int, help="runs of each figure (default 3, quick 1)")
    parser.add_argument(
        "--generator", choices=("auto", "wrk", "python"), default="auto",
        help="receiver load: wrk when installed (auto), or the Python generator",
    )  # fmt: skip
    parser.add_argument("--web-workers", type=int, default=1, help="uvicorn processes")
    args = parser.parse_args(argv)
    wanted = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(wanted) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s): {', '.join(unknown)}")
    args.sections = [s for s in SECTIONS if s in wanted]
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    return args


def load_scene() -> None:
    from worker import resources
    from worker.loader import load_scene

    load_scene(resources.current(), payloads.scene())


def sections(args: argparse.Namespace) -> dict[str, Callable[[Servers, Report], None]]:
    quick = args.quick

    def receiver(srv: Servers, rep: Report) -> None:
        from bench import receiver as bench_receiver

        opts = bench_receiver.Options(
            runs=args.runs,
            duration_s=2.0 if quick else 5.0,
            warmup_s=1.0,
            web_workers=args.web_workers,
            generator=args.generator,
        )
        bench_receiver.run(srv, rep, opts, say)

    def ids(srv: Servers, rep: Report) -> None:
        from bench import ids as bench_ids

        bench_ids.run(srv, rep, args.runs, 0.5 if quick else 1.0, say)

    return {"receiver": receiver, "ids": ids}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rep = Report(mode="quick" if args.quick else "full")
    started = time.monotonic()
    runners = sections(args)
    with harness.servers(say) as srv:
        load_scene()
        for name in args.sections:
            if name not in runners:
                rep.notes.append(f"{name}: not measured (not wired yet)")
                continue
            say(f"== {name}")
            t0 = time.monotonic()
            try:
                runners[name](srv, rep)
            except Exception as exc:
                # A benchmark that breaks is reported, and the others still run.
                rep.notes.append(f"{name}: could not run: {type(exc).__name__}: {exc}")
                say(traceback.format_exc())
            say(f"   {name} took {time.monotonic() - t0:.0f} s")
    rep.wall_s = time.monotonic() - started
    json_path, md_path = report.write(rep)
    print(report.markdown(rep))
    say(f"wrote {json_path} and {md_path} in {rep.wall_s:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
