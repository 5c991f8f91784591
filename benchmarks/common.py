"""Shared pieces of the CPU benchmark suite: timing, the machine description, markdown tables."""

from __future__ import annotations

import datetime
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata

import torch


@dataclass
class Section:
    """One benchmark's part of docs/benchmarks.md: a title, prose and markdown tables."""

    title: str
    lines: list[str] = field(default_factory=list)
    load_start: float = 0.0
    load_end: float = 0.0
    seconds: float = 0.0
    skipped: bool = False

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def markdown(self) -> str:
        if self.skipped:
            return "\n".join([f"## {self.title}", "", *self.lines, ""])
        timing = (
            f"_Section time {self.seconds:.0f} s; 1-minute load average "
            f"{self.load_start:.2f} at its start, {self.load_end:.2f} at its end._"
        )
        return "\n".join([f"## {self.title}", "", *self.lines, "", timing, ""])


def load1() -> float:
    """The 1-minute load average."""
    return os.getloadavg()[0]


def timed_section(title: str, body: Callable[[Section], None]) -> Section:
    """Run ``body`` on a new :class:`Section`, recording its wall time and the load around it."""
    section = Section(title, load_start=load1())
    t0 = time.perf_counter()
    body(section)
    section.seconds = time.perf_counter() - t0
    section.load_end = load1()
    return section


def wall(fn: Callable[[], object]) -> float:
    """Wall seconds of one call of ``fn``."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved_best(
    timers: Mapping[str, Callable[[], float]], rounds: int, warmup: int = 0
) -> dict[str, float]:
    """Smallest of ``rounds`` timings of each timer (each returns seconds), interleaved.

    Round ``r`` runs every timer once before round ``r + 1`` starts, so a change in the
    machine's load during the benchmark affects every method alike.  ``warmup`` untimed
    rounds come first.
    """
    for _ in range(warmup):
        for timer in timers.values():
            timer()
    best = dict.fromkeys(timers, float("inf"))
    for _ in range(rounds):
        for name, timer in timers.items():
            best[name] = min(best[name], timer())
    return best


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """A markdown table as lines."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or the platform's processor string)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def r_squared(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, float]:
    """Least-squares line ``y = a + b x``: returns ``(a, b, R^2)``."""
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxx = sum((xi - mx) ** 2 for xi in x)
    sxy = sum((xi - mx) * (yi - my) for xi, yi in zip(x, y, strict=True))
    b = sxy / sxx
    a = my - b * mx
    ss_res = sum((yi - a - b * xi) ** 2 for xi, yi in zip(x, y, strict=True))
    ss_tot = sum((yi - my) ** 2 for yi in y)
    return a, b, 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0


def machine_lines(threads: int) -> list[str]:
    """Bullet lines describing this machine and the software versions."""
    return [
        f"- CPU: {cpu_model()}, {os.cpu_count()} cores",
        f"- torch {torch.__version__} ({threads} intra-op thread(s), "
        f"`torch.set_num_threads({threads})`), torchvision {version('torchvision')}, "
        f"numpy {version('numpy')}, Python {platform.python_version()}",
        f"- peers: captum {version('captum')}, grad-cam (pytorch-grad-cam) {version('grad-cam')}",
    ]
