"""Measurement helpers shared by every benchmark module."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any


@dataclass
class Context:
    quick: bool  # a smaller run for development (`make bench QUICK=1`)
    workdir: Path  # scratch space on a real disk (not tmpfs)
    clock: Callable[[], datetime]  # the wall clock, read nowhere else

    def scale(self, full: int, quick: int) -> int:
        return quick if self.quick else full


@dataclass
class Figure:
    name: str
    value: float | None  # None: could not be measured (see `note`)
    unit: str  # "x" for ratios, "ms", "MB", "bytes", ...
    goal: str | None = None  # e.g. "<= 1.1"; None when the figure is informative only
    met: bool | None = None
    baseline: str | None = None  # what a ratio is measured against
    spread: str | None = None  # e.g. "IQR 0.95-1.08 over 31 pairs"
    note: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    runs: list[float] = field(default_factory=list)  # each run's value, when repeated

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def check(value: float, goal: str) -> bool:
    """``goal`` is "<= N" or ">= N"."""
    op, number = goal.split()
    limit = float(number)
    return value <= limit if op == "<=" else value >= limit


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


@dataclass
class Paired:
    """Timings of a product path and its baseline, taken alternately (seconds)."""

    product: list[float]
    baseline: list[float]

    @property
    def ratios(self) -> list[float]:
        return [p / b for p, b in zip(self.product, self.baseline, strict=True) if b > 0]

    def ratio(self, p: float = 50) -> float:
        return percentile(self.product, p) / percentile(self.baseline, p)

    def spread(self) -> str:
        r = self.ratios
        return (
            f"pairwise ratio IQR {percentile(r, 25):.3f}-{percentile(r, 75):.3f} "
            f"over {len(r)} pairs"
        )

    def detail(self) -> dict[str, float]:
        ms = 1000.0
        return {
            "product_p50_ms": percentile(self.product, 50) * ms,
            "product_p99_ms": percentile(self.product, 99) * ms,
            "baseline_p50_ms": percentile(self.baseline, 50) * ms,
            "baseline_p99_ms": percentile(self.baseline, 99) * ms,
        }


def timed(fn: Callable[[], object], inner: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - start) / inner


def paired(
    product: Callable[[], object],
    baseline: Callable[[], object],
    rounds: int,
    inner: int = 1,
    warmup: int = 3,
) -> Paired:
    """Run product and baseline alternately (A B A B ...), ``rounds`` pairs."""
    for _ in range(warmup):
        product()
        baseline()
    gc_was = gc.isenabled()
    gc.disable()
    try:
        a, b = [], []
        for i in range(rounds):
            if i % 2 == 0:
                a.append(timed(product, inner))
                b.append(timed(baseline, inner))
            else:  # alternate which goes first, too
                b.append(timed(baseline, inner))
                a.append(timed(product, inner))
    finally:
        if gc_was:
            gc.enable()
    return Paired(a, b)


def ratio_figure(name: str, pair: Paired, goal: str | None, baseline: str, p: float = 50) -> Figure:
    value = pair.ratio(p)
    return Figure(
        name=name,
        value=round(value, 3),
        unit="x",
        goal=goal,
        met=check(value, goal) if goal else None,
        baseline=baseline,
        spread=pair.spread(),
        detail={k: round(v, 4) for k, v in pair.detail().items()},
    )


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def repeated(
    product: Callable[[], object],
    baseline: Callable[[], object],
    rounds: int,
    repeats: int,
    inner: int = 1,
    warmup: int = 3,
) -> list[Paired]:
    """``repeats`` paired runs of ``rounds`` pairs each, one after the other."""
    return [paired(product, baseline, rounds, inner, warmup) for _ in range(repeats)]


def runs_spread(values: list[float], label: str, fmt: str = ".3f") -> str:
    """The spread of a figure that is the median of ``values``, one per run: e.g.
    "median of 11 runs of 400 pairs (p50 ratio): runs 1.61-1.83, IQR 1.68-1.74"."""
    lo, hi = min(values), max(values)
    q1, q3 = percentile(values, 25), percentile(values, 75)
    return f"median of {label}: runs {lo:{fmt}}-{hi:{fmt}}, IQR {q1:{fmt}}-{q3:{fmt}}"


def steady_figure(
    name: str, runs: list[Paired], goal: str | None, baseline: str, p: float = 50
) -> Figure:
    """A ratio steadier than one run's: the median of the runs' ratios at ``p``, each
    run a paired A/B series; the spread gives the range and IQR of the runs' ratios.
    The pooled samples' percentiles are in the detail."""
    per_run = [run.ratio(p) for run in runs]
    pooled = Paired([t for r in runs for t in r.product], [t for r in runs for t in r.baseline])
    value = statistics.median(per_run)
    detail = {k: round(v, 4) for k, v in pooled.detail().items()}
    detail[f"pooled_p{p:g}_ratio"] = round(pooled.ratio(p), 3)
    return Figure(
        name=name,
        value=round(value, 3),
        unit="x",
        goal=goal,
        met=check(value, goal) if goal else None,
        baseline=baseline,
        spread=runs_spread(
            per_run, f"{len(runs)} runs of {len(runs[0].product)} pairs (p{p:g} ratio)"
        ),
        detail=detail,
        runs=[round(r, 4) for r in per_run],
    )
