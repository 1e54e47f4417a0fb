"""Figures with their baselines and ratios: medians of several runs, min and max shown;
written to bench/results.json and bench/results.md and printed."""

from __future__ import annotations

import json
import os
import platform
import statistics
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

RESULTS_DIR = Path(__file__).resolve().parent


@dataclass
class Sample:
    """The values of one figure over several runs."""

    values: list[float]

    @property
    def median(self) -> float:
        return float(statistics.median(self.values)) if self.values else float("nan")

    @property
    def low(self) -> float:
        return min(self.values) if self.values else float("nan")

    @property
    def high(self) -> float:
        return max(self.values) if self.values else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {"median": self.median, "min": self.low, "max": self.high, "runs": self.values}


@dataclass
class Figure:
    """One measured figure of jira-sync beside one baseline measured in the same run.

    The ratio is taken per run (run i of both sides) and then its median, so that a noisy
    moment of the shared machine hits both sides of a ratio alike. `better` says which way a
    ratio above 1.0 is good: "higher" (throughput) or "lower" (latency, round trips)."""

    section: str
    name: str
    unit: str
    product: Sample
    baseline_name: str = ""
    baseline: Sample | None = None
    better: str = "higher"
    goal: float | None = None  # the ratio wanted, in the `better` direction
    goal_abs: float | None = None  # a bound on jira-sync's own figure, in every run
    note: str = ""

    @property
    def ratios(self) -> Sample | None:
        if self.baseline is None:
            return None
        pairs = zip(self.product.values, self.baseline.values, strict=False)
        return Sample([p / b for p, b in pairs if b])

    @property
    def met(self) -> bool | None:
        if self.goal_abs is not None and self.product.values:
            worst = self.product.high if self.better == "lower" else self.product.low
            return worst <= self.goal_abs if self.better == "lower" else worst >= self.goal_abs
        ratios = self.ratios
        if self.goal is None or ratios is None or not ratios.values:
            return None
        if self.better == "higher":
            return ratios.median >= self.goal
        return ratios.median <= self.goal

    def as_dict(self) -> dict[str, Any]:
        ratios = self.ratios
        return {
            "section": self.section,
            "name": self.name,
            "unit": self.unit,
            "product": self.product.as_dict(),
            "baseline_name": self.baseline_name,
            "baseline": self.baseline.as_dict() if self.baseline else None,
            "ratio": ratios.as_dict() if ratios else None,
            "better": self.better,
            "goal": self.goal,
            "goal_abs": self.goal_abs,
            "goal_met": self.met,
            "note": self.note,
        }


@dataclass
class Report:
    """Everything one `python -m bench` run measured."""

    mode: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    setup: dict[str, str] = field(default_factory=dict)
    memory: dict[str, int] = field(default_factory=dict)  # peak RSS in bytes, by process
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    wall_s: float = 0.0

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        return figure

    def as_dict(self) -> dict[str, Any]:
        return {
            "date": self.started.isoformat(timespec="seconds"),
            "mode": self.mode,
            "wall_s": round(self.wall_s, 1),
            "machine": machine(),
            "setup": self.setup,
            "figures": [f.as_dict() for f in self.figures],
            "memory_peak_rss_mib": {k: round(v / 2**20, 1) for k, v in self.memory.items()},
            "notes": self.notes,
        }


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with_name = Path("/proc/cpuinfo")
    if with_name.exists():
        for line in with_name.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load_1m, load_5m, _ = os.getloadavg()
    return {
        "load_average": f"{load_1m:.1f} (1 min), {load_5m:.1f} (5 min) at the end",
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def _num(value: float, unit: str) -> str:
    if value != value:  # NaN: not measured
        return "n/a"
    if unit == "MiB":
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:,.1f}"
    return f"{value:,.2f}"


def _spread(sample: Sample, unit: str) -> str:
    if len(sample.values) <= 1:
        return _num(sample.median, unit)
    return f"{_num(sample.median, unit)} ({_num(sample.low, unit)}-{_num(sample.high, unit)})"


def _ratio(sample: Sample | None) -> str:
    if sample is None or not sample.values:
        return ""
    if len(sample.values) == 1:
        return f"{sample.median:.2f}x"
    return f"{sample.median:.2f}x ({sample.low:.2f}-{sample.high:.2f})"


def _goal(f: Figure) -> str:
    sign = ">=" if f.better == "higher" else "<="
    mark = {True: "met", False: "not met", None: ""}[f.met]
    if f.goal_abs is not None:
        return f"{sign} {f.goal_abs:g} {f.unit} every run: {mark}"
    if f.goal is None:
        return ""
    return f"{sign} {f.goal:g}x: {mark}"


def markdown(report: Report) -> str:
    data = report.as_dict()
    m = data["machine"]
    lines = [
        f"Run {data['date']} ({report.mode}, {data['wall_s']:.0f} s) on {m['cpu']}, "
        f"{m['cores']} cores, {m['memory_gb']} GB, {m['os']}, Python {m['python']}; "
        f"load average {m['load_average']}.",
        "",
    ]
    for key, value in report.setup.items():
        lines.append(f"- {key}: {value}")
    lines += [
        "",
        "| figure | jira-sync | baseline | baseline figure | ratio | goal |",
        "| --- | ---: | --- | ---: | ---: | --- |",
    ]
    for f in report.figures:
        baseline = _spread(f.baseline, f.unit) if f.baseline else ""
        lines.append(
            f"| {f.section}: {f.name} ({f.unit}) | {_spread(f.product, f.unit)} | "
            f"{f.baseline_name} | {baseline} | {_ratio(f.ratios)} | {_goal(f)} |"
        )
    if report.memory:
        lines += ["", "| process | peak RSS (MiB) |", "| --- | ---: |"]
        for label, peak in report.memory.items():
            lines.append(f"| {label} | {peak / 2**20:,.0f} |")
    lines.append("")
    lines.append("Medians of the runs, (min-max) beside them; each ratio is jira-sync over "
                 "its baseline, run by run, then the median.")  # fmt: skip
    notes = [f"{f.section}: {f.name}: {f.note}" for f in report.figures if f.note]
    for note in [*report.notes, *notes]:
        lines.append(f"- {note}")
    return "\n".join(lines) + "\n"


def write(report: Report, directory: Path = RESULTS_DIR, suffix: str = "") -> tuple[Path, Path]:
    json_path = directory / f"results{suffix}.json"
    md_path = directory / f"results{suffix}.md"
    json_path.write_text(json.dumps(report.as_dict(), indent=2, default=str) + "\n")
    md_path.write_text(markdown(report))
    return json_path, md_path
