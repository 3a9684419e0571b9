"""python -m bench [--quick] [--only NAME]: run the benchmarks, write bench/results.json
and docs/benchmarks.md.

With ``--only``, the modules named run alone; when bench/results.json holds a whole
run of the same kind (``--quick`` or not), their figures replace that run's figures
of the same modules and the rest stay as they were (the file's header says which
modules ran again, and when), so one module can be measured again without measuring
everything. Without such a run, the files hold only what ran.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sqlite3
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.core import Context, Figure, check, percentile

ROOT = Path(__file__).resolve().parents[1]
# Each module has figures(ctx) -> list[Figure]. Add a module here when it lands.
MODULES = [
    "bench.checkout",
    "bench.roster",
    "bench.card",
    "bench.tillapi",
    "bench.policy",
    "bench.ingest",
    "bench.central",
    "bench.fleet_ingest",
    "bench.member_import",
    "bench.dashboard",
    "bench.bgsync",
    "bench.audit",
    "bench.pibudget",
    "bench.token",
]


class Load:
    """What else the machine did while a stretch of the run went on: the CPU time of
    other processes (from /proc/stat, less this process and its children) and the
    time the hypervisor took from this VM (steal), each as a share of all cores."""

    def __init__(self) -> None:
        self.start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, list[int], float]:
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        except (OSError, ValueError):
            fields = []
        mine = os.times()
        return (
            time.monotonic(),
            fields,
            mine.user + mine.system + mine.children_user + mine.children_system,
        )

    def report(self) -> dict[str, float]:
        (t0, a, mine0), (t1, b, mine1) = self.start, self._sample()
        if len(a) < 8 or len(a) != len(b):
            return {}
        delta = [y - x for x, y in zip(a, b, strict=True)]
        total = sum(delta[:8]) or 1  # user nice system idle iowait irq softirq steal
        tick = os.sysconf("SC_CLK_TCK")
        busy = sum(delta[:8]) - delta[3] - delta[4] - delta[7]
        others = max(0.0, busy - (mine1 - mine0) * tick)
        return {
            "seconds": round(t1 - t0, 1),
            "others_cpu_percent": round(100 * others / total, 1),
            "steal_percent": round(100 * delta[7] / total, 1),
        }


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
    }
    try:
        import psycopg

        from bench.pg import PG_URL

        with psycopg.connect(
            PG_URL.replace("postgresql+psycopg", "postgresql"), connect_timeout=3
        ) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            info["postgresql"] = row[0] if row else "unknown"
    except Exception as exc:  # noqa: BLE001 - reported, not fatal
        info["postgresql"] = f"not reachable: {type(exc).__name__}"
    return info


def _limit(goal: str) -> float:
    return float(goal.split()[1])


def summary(figures: list[Figure]) -> list[str]:
    """Which goals are met, which sit near their line, and whose runs straddle it."""
    goals = [f for f in figures if f.goal and f.value is not None]
    met = [f for f in goals if f.met]
    lines = ["## Summary", "", f"{len(met)} of {len(goals)} goals met."]
    missed = [f for f in goals if not f.met]
    if missed:
        lines += ["", "Not met:", ""]
        lines += [f"- {f.name}: {f.value:g} {f.unit} (goal {f.goal})" for f in missed]

    def margin(f: Figure) -> float:  # how far the value is from the limit
        return abs((f.value or 0.0) - _limit(f.goal or "<= 0"))

    def iqr(f: Figure) -> float:
        return percentile(f.runs, 75) - percentile(f.runs, 25)

    near = [f for f in goals if len(f.runs) > 1 and margin(f) < 2 * iqr(f)]
    straddle = [f for f in goals if f.goal and len({check(v, f.goal) for v in f.runs}) > 1]
    lines += [
        "",
        "Closer to the limit than twice the inter-quartile range of their own runs, so a "
        "disturbed run could flip them: "
        + ("; ".join(f"{f.name} ({f.value:g} {f.unit}, goal {f.goal})" for f in near) or "none")
        + ".",
        "",
        "Goals whose runs fell on both sides of the limit in this run (the median decides): "
        + (
            "; ".join(f"{f.name} (runs {min(f.runs):g}-{max(f.runs):g})" for f in straddle)
            or "none"
        )
        + ".",
    ]
    return lines


def since(
    previous: dict[str, Any] | None, figures: list[Figure], only: set[str] | None = None
) -> list[str]:
    """How far each figure moved since the previous full run (bench/results.json); with
    ``only``, just those figures (the ones a partial run measured again)."""
    if not previous:
        return []
    before = {f["name"]: f for f in previous.get("figures", []) if f.get("value") is not None}
    rows = []
    for f in figures:
        if only is not None and f.name not in only:
            continue
        old = before.get(f.name)
        if f.value is None or old is None or not old["value"]:
            continue
        moved = (f.value / old["value"] - 1) * 100
        flipped = " (verdict changed)" if f.met is not None and old.get("met") != f.met else ""
        rows.append(
            f"| {f.name} | {old['value']:g} | {f.value:g} {f.unit} | {moved:+.1f} %{flipped} |"
        )
    if not rows:
        return []
    against = (
        "Against the figures they replaced (the modules run again alone), same names only."
        if only is not None
        else "Against the full run whose results bench/results.json held before this one "
        f"({previous.get('seconds', '?')} s; other processes "
        f"{previous.get('conditions', {}).get('whole run', {}).get('others_cpu_percent', '?')} "
        "% of the CPU meanwhile), same figure names only."
    )
    return [
        "",
        "## Since the previous run",
        "",
        against,
        "",
        "| figure | previous | now | moved |",
        "| --- | --- | --- | --- |",
        *rows,
    ]


def _elsewhere(rerun: dict[str, Any], info: dict[str, Any]) -> str:
    """ ", on <cpu>" when a partial run ran on another CPU than the whole run (a VM
    moved to other hardware): its figures are not comparable with the others'."""
    cpu = rerun.get("machine", {}).get("cpu")
    if cpu is None or cpu == info.get("cpu"):
        return ""
    return f", on another CPU: {cpu}, {rerun['machine'].get('cores', '?')} cores"


def render_markdown(
    figures: list[Figure],
    info: dict[str, Any],
    seconds: float,
    quick: bool,
    conditions: dict[str, dict[str, float]],
    prose: list[str] | None = None,
    previous: dict[str, Any] | None = None,
    reruns: list[dict[str, Any]] | None = None,
    rerun_names: set[str] | None = None,
) -> str:
    again = "".join(
        f"; then `python -m bench --only` ran {', '.join(r['modules'])} again alone "
        f"({r['at']}, {r['seconds']:.0f} s{_elsewhere(r, info)}), whose figures replace "
        "that run's"
        for r in reruns or []
    )
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench`"
        + (" (QUICK=1: smaller sizes)" if quick else "")
        + f" in {seconds:.0f} s{again}. Do not edit by hand: the next run rewrites this file.",
        "",
        "Ratios pair the product path with its baseline in the same run, alternately "
        "(A B A B ...). A ratio with a goal is the median of repeated runs (each run "
        "after a warm-up), so one disturbed run does not move it; the spread column "
        "gives the range and the inter-quartile range of the runs' values. What else "
        "the machine did meanwhile is under Run conditions.",
        "",
        "| figure | measured | goal | met | baseline | spread |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for f in figures:
        value = "not measured" if f.value is None else f"{f.value:g} {f.unit}"
        met = "—" if f.met is None else ("yes" if f.met else "**no**")
        lines.append(
            f"| {f.name} | {value} | {f.goal or '—'} | {met} | {f.baseline or '—'} "
            f"| {f.spread or f.note or '—'} |"
        )
    lines += ["", *summary(figures)]
    if prose:
        lines += ["", *prose]
    lines += since(previous, figures, rerun_names)
    lines += ["", "## Machine", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    lines += [
        f"- {', '.join(r['modules'])} ({r['at']}){_elsewhere(r, info)}"
        for r in reruns or []
        if _elsewhere(r, info)
    ]
    if conditions:
        lines += [
            "",
            "## Run conditions",
            "",
            "CPU time other processes took meanwhile, and the time the hypervisor took "
            "from this VM (steal), each as a share of all cores. Other processes include "
            "PostgreSQL's server (the central figures use it) and the kernel's own threads; "
            "anything well above that means something else ran beside the bench, and its "
            "figures moved with it.",
            "",
            "| part | seconds | other processes | steal |",
            "| --- | --- | --- | --- |",
        ]
        for part, c in conditions.items():
            if c:
                lines.append(
                    f"| {part} | {c['seconds']:g} | {c['others_cpu_percent']:g} % "
                    f"| {c['steal_percent']:g} % |"
                )
    notes = [f for f in figures if f.note or f.detail]
    if notes:
        lines += ["", "## Details", ""]
        for f in notes:
            extra = ", ".join(f"{k} {v}" for k, v in f.detail.items())
            lines.append(f"- **{f.name}**: {f.note or ''} {extra}".rstrip())
    from bench.scale import scale_model

    lines += ["", scale_model(figures).rstrip()]
    return "\n".join(lines) + "\n"


def merge_figures(
    old: list[dict[str, Any]], new: list[dict[str, Any]], ran: set[str]
) -> list[dict[str, Any]]:
    """A whole run's figures (``old``) with those of the modules in ``ran`` replaced by
    ``new``, where the first of them stood. An old figure belongs to a module by its
    ``module`` key, or, in results from before that key, when ``new`` has its name."""
    names = {f["name"] for f in new}
    out: list[dict[str, Any]] = []
    placed = False
    for f in old:
        if (f["module"] in ran) if "module" in f else (f["name"] in names):
            if not placed:
                out += new
                placed = True
            continue
        out.append(f)
    return out if placed else out + new


def figure_of(data: dict[str, Any]) -> Figure:
    return Figure(**{k: v for k, v in data.items() if k != "module"})


KEPT_HEADING = "\n## Soak\n"  # recorded by hand after `make soak` (tests/soak.py)


def kept_by_hand(document: Path) -> str:
    """The section the soak's run is recorded in by hand (from its heading to the end
    of the old file): a bench run writes the rest again and keeps it."""
    old = document.read_text() if document.exists() else ""
    at = old.find(KEPT_HEADING)
    return "" if at < 0 else old[at:]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", help="run only modules whose name contains this")
    args = parser.parse_args()
    results_path = ROOT / "bench" / "results.json"
    try:
        previous = json.loads(results_path.read_text())
    except (OSError, ValueError):
        previous = None
    if previous is not None and (previous.get("quick") != args.quick or previous.get("only")):
        previous = None  # only a whole run of the same kind is worth comparing, or merging, with
    started = time.monotonic()
    ran: list[str] = []
    tagged: list[dict[str, Any]] = []
    whole = Load()
    prose: list[str] = []
    conditions: dict[str, dict[str, float]] = {}
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="unioncard-bench-", dir=ROOT / "bench") as tmp:
        ctx = Context(quick=args.quick, workdir=Path(tmp), clock=lambda: datetime.now(UTC))
        for name in MODULES:
            if args.only and args.only not in name:
                continue
            print(f"bench: {name} ...", flush=True)
            module_started = time.monotonic()
            load = Load()
            try:
                module = importlib.import_module(name)
                produced = module.figures(ctx)
                if hasattr(module, "prose"):
                    prose += module.prose(produced)
            except Exception as exc:  # noqa: BLE001 - one module failing must not hide others
                traceback.print_exc()
                produced = [
                    Figure(
                        name=name, value=None, unit="", note=f"failed: {type(exc).__name__}: {exc}"
                    )
                ]
            for f in produced:
                shown = "not measured" if f.value is None else f"{f.value:g} {f.unit}"
                print(f"  {f.name}: {shown} (goal {f.goal}, met {f.met})", flush=True)
            conditions[name] = load.report()
            print(f"  ({time.monotonic() - module_started:.0f} s; {conditions[name]})", flush=True)
            figures += produced
            ran.append(name)
            tagged += [dict(f.as_json(), module=name) for f in produced]
    seconds = time.monotonic() - started
    info = machine()
    if args.only and previous is not None:  # into the whole run bench/results.json holds
        rerun_names = {f.name for f in figures}
        merged = merge_figures(previous["figures"], tagged, set(ran))
        figures = [figure_of(f) for f in merged]
        conditions = {**previous.get("conditions", {}), **conditions}
        reruns = [
            *previous.get("reruns", []),
            {
                "modules": ran,
                "seconds": round(seconds, 1),
                "at": f"{datetime.now(UTC):%Y-%m-%d}",
                "machine": {"cpu": info["cpu"], "cores": info["cores"]},
            },
        ]
        prose = []
        for name in MODULES:
            module = importlib.import_module(name)
            if hasattr(module, "prose"):
                prose += module.prose(figures)
        whole_machine = previous.get("machine", info)  # the whole run's; each rerun has its own
        results = {
            **previous,
            "machine": whole_machine,
            "conditions": conditions,
            "reruns": reruns,
            "figures": merged,
        }
        markdown = render_markdown(
            figures,
            whole_machine,
            previous["seconds"],
            args.quick,
            conditions,
            prose,
            previous,
            reruns,
            rerun_names,
        )
    else:
        conditions["whole run"] = whole.report()
        results = {
            "machine": info,
            "quick": args.quick,
            "only": args.only,
            "seconds": round(seconds, 1),
            "conditions": conditions,
            "figures": tagged,
        }
        markdown = render_markdown(figures, info, seconds, args.quick, conditions, prose, previous)
    results_path.write_text(json.dumps(results, indent=2) + "\n")
    document = ROOT / "docs" / "benchmarks.md"
    document.write_text(markdown + kept_by_hand(document))
    failed = [
        f["name"] for f in tagged if f["value"] is None and (f["note"] or "").startswith("failed")
    ]
    print(
        f"bench: {len(figures)} figures in {seconds:.0f} s; wrote bench/results.json "
        "and docs/benchmarks.md"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
