"""`python -m bench` (`make bench`): every figure beside its baseline, within 10 minutes.

    python -m bench                      # everything, 3 runs of each (at most ~9.5 minutes)
    python -m bench --quick              # a smoke run: 1 short run of each (~2 minutes)
    python -m bench --only receiver,ids  # sections: receiver, pipeline, latency, ids, replay,
                                         # scaling

Writes bench/results.json and bench/results.md and prints the table. Never fails on a number:
the exit code is 0 unless the bench itself could not start. Each section gets a share of the
time budget; one that runs out of its share stops after the run in progress (at least one
run each) and the report says so.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from bench import harness, payloads, report
from bench.harness import Servers
from bench.report import Report
from devtools import rabbitmq

SECTIONS = ("receiver", "pipeline", "latency", "ids", "replay", "scaling")
# Shares of the time left when a section starts (servers and scene come out of the total).
SHARES = {
    "receiver": 0.15, "pipeline": 0.33, "latency": 0.12, "ids": 0.04, "replay": 0.20,
    "scaling": 0.16,
}  # fmt: skip
BUDGET_S = {"full": 570.0, "quick": 120.0}


@dataclass(frozen=True)
class Sizes:
    """How big each section's runs are."""

    receiver_s: float
    latency_s: float
    ids_s: float
    pipeline_deliveries: int
    replay_records: int


SIZES = {
    "full": Sizes(
        receiver_s=5.0, latency_s=6.0, ids_s=1.0, pipeline_deliveries=1_500, replay_records=10_000
    ),
    "quick": Sizes(
        receiver_s=2.0, latency_s=3.0, ids_s=0.5, pipeline_deliveries=500, replay_records=2_000
    ),
}

Runner = Callable[[Servers, Report, float], None]


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
        help="receiver load: wrk when installed (auto), else the Python generator",
    )  # fmt: skip
    parser.add_argument("--web-workers", type=int, default=1, help="uvicorn processes (1)")
    parser.add_argument(
        "--pipeline-deliveries", type=int, help="deliveries per pipeline run (1,500; quick 500)"
    )
    parser.add_argument("--budget-s", type=float, help="time budget (570 s; quick 120 s)")
    parser.add_argument(
        "--broker", choices=("redis", "amqp"), default="redis",
        help="amqp: RabbitMQ at TEST_AMQP_URL (a vhost of its own) as the Celery broker; "
        "skipped with one line when none is reachable",
    )  # fmt: skip
    parser.add_argument(
        "--profile", action="store_true",
        help="after the measured runs, profile jira-sync's side of each figure with py-spy",
    )  # fmt: skip
    args = parser.parse_args(argv)
    wanted = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(wanted) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s): {', '.join(unknown)}")
    args.sections = [s for s in SECTIONS if s in wanted]
    args.mode = "quick" if args.quick else "full"
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.budget_s is None:
        args.budget_s = BUDGET_S[args.mode]
    if args.profile:
        from bench.profile import py_spy

        if py_spy() is None:
            parser.error("--profile needs py-spy: .venv/bin/pip install py-spy")
    return args


def load_scene() -> None:
    from worker.runtime import resources
    from worker.services.loader import load_scene

    load_scene(resources.current(), payloads.scene())


def runners(args: argparse.Namespace) -> dict[str, Runner]:
    sizes = SIZES[args.mode]

    def receiver(srv: Servers, rep: Report, deadline: float) -> None:
        from bench import receiver as bench_receiver

        opts = bench_receiver.Options(
            runs=args.runs,
            duration_s=sizes.receiver_s,
            warmup_s=1.0,
            web_workers=args.web_workers,
            generator=args.generator,
            profile=args.profile,
        )
        bench_receiver.run(srv, rep, opts, deadline, say)

    def pipeline(srv: Servers, rep: Report, deadline: float) -> None:
        from bench import pipeline as bench_pipeline

        count = args.pipeline_deliveries or sizes.pipeline_deliveries
        bench_pipeline.run(srv, rep, args.runs, count, deadline, say, profile=args.profile)

    def latency(srv: Servers, rep: Report, deadline: float) -> None:
        from bench import latency as bench_latency

        bench_latency.run(srv, rep, args.runs, sizes.latency_s, say)

    def ids(srv: Servers, rep: Report, deadline: float) -> None:
        from bench import ids as bench_ids

        bench_ids.run(srv, rep, args.runs, sizes.ids_s, say, profile=args.profile)

    def replay(srv: Servers, rep: Report, deadline: float) -> None:
        from bench import replay as bench_replay

        bench_replay.run(
            srv, rep, args.runs, sizes.replay_records, deadline, say, profile=args.profile
        )

    def scaling(srv: Servers, rep: Report, deadline: float) -> None:
        from bench import scaling as bench_scaling

        count = args.pipeline_deliveries or sizes.pipeline_deliveries
        bench_scaling.run(srv, rep, args.runs, sizes.receiver_s, count, deadline, say)

    return {
        "receiver": receiver,
        "pipeline": pipeline,
        "latency": latency,
        "ids": ids,
        "replay": replay,
        "scaling": scaling,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rep = Report(mode=args.mode)
    load_1m, load_5m, _ = os.getloadavg()
    # Other work on the machine moves every figure: the ratios are what to read.
    rep.setup["machine load"] = (
        f"load average {load_1m:.1f} (1 min), {load_5m:.1f} (5 min) at start"
    )
    started = time.monotonic()
    end = started + args.budget_s
    sections = runners(args)
    rep.setup["broker"] = args.broker
    with contextlib.ExitStack() as stack:
        amqp_url = None
        if args.broker == "amqp":
            why_not = rabbitmq.reachable(rabbitmq.test_url())
            if why_not is not None:
                print(f"bench on RabbitMQ: not run, none reachable ({why_not})")
                return 0
            amqp_url = stack.enter_context(rabbitmq.run_vhost())
        srv = stack.enter_context(harness.servers(say, amqp_url))
        load_scene()
        for index, name in enumerate(args.sections):
            now = time.monotonic()
            shares_left = sum(SHARES[s] for s in args.sections[index:])
            deadline = now + max(0.0, end - now) * SHARES[name] / shares_left
            say(f"== {name} (budget {deadline - now:.0f} s)")
            try:
                sections[name](srv, rep, deadline)
            except Exception as exc:
                # A benchmark that breaks is reported, and the others still run.
                rep.notes.append(f"{name}: could not run: {type(exc).__name__}: {exc}")
                say(traceback.format_exc())
            say(f"   {name} took {time.monotonic() - now:.0f} s")
    rep.wall_s = time.monotonic() - started
    json_path, md_path = report.write(rep, suffix="" if args.broker == "redis" else "-amqp")
    print(report.markdown(rep))
    say(f"wrote {json_path} and {md_path} in {rep.wall_s:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
