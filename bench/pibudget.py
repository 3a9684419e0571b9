"""A Pi-sized budget (issue 16, item 7): install and serve an 8,000,000-member roster, and
run checkouts, in a process limited to 512 MB; the same in an unlimited process beside
it, on the same machine and the same files. ``--quick``: 1,000,000 members.

The roster (random tokens, and the tokens of the member cards the checkouts use) is
built once with the bench's builders and cached under the system's temporary folder
with the union's keys that signed it (``unioncard-pibudget-*``), so a second run does
not pay for it again. Each run then makes a fresh terminal folder, enrolled, with the
roster downloaded into it as the sync leaves it (streamed to disk and fsynced,
``.roster-download.tmp``), and starts a child process (``python -m bench.pibudget``)
that does what the shop's terminal does:

- ``TerminalService`` on the folder (a card read injected: it taps member and
  non-member cards in turn);
- the install the sync runs, ``TerminalState.install`` of the downloaded file: verify the
  snapshot and the roster's signature and layer digest, fsync it, rename it into a new
  generation, switch the ``current`` link (the roster stays memory-mapped);
- lookups in the installed roster (member and random tokens), each timed;
- checkouts through ``TerminalService.checkout`` (card read, token, lookup, quote,
  signed journal append), each timed; every member got the discount and no one else.

The limit: cgroup v2 ``memory.max`` of a child cgroup when the machine gives this
process's cgroup the memory controller (its peak then from ``memory.peak``), else
``RLIMIT_AS`` set in the child before it starts Python (its address space: the mapped
roster counts in full, the page cache it reads does not). The peak is the cgroup's
``memory.peak``, or else the child's own high-water mark of resident memory (``VmHWM``
at its end), which counts the roster's pages it touched; ``wait4``'s ``ru_maxrss`` is
not used, as it also counts the bench's own pages that the fork copied before the
child started Python. Limited and unlimited children alternate, round after round.
Once more, limited: the control, which reads the downloaded file whole and installs
the bytes (as ``unioncard terminal install`` does), to show what the limit leaves.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bench.core import Context, Figure, median, percentile, runs_spread
from pact.cards import luhn_complete

# The child imports only what a terminal's process imports: the builders (bench.fixtures,
# which loads the union's side, Flask and SQLAlchemy with it) are imported where the
# bench's own process uses them.

LIMIT_MB = 512
GOAL = f"<= {LIMIT_MB}"  # MB: "completes within 512 MB" (issue 16, item 7)
MEMBER_CARDS = 500  # member cards tapped in turn (their tokens are in the roster)
AMOUNT = 10_000  # fen a checkout: the bench policy gives members 5 % off
OUT_OF_MEMORY = 3  # the child's exit status when the limit stopped it
NAME_PEAK = "install and serve {members} members in {limit} MB ({how}), peak memory"
NAME_LOOKUP = "roster lookup p99 under the {limit} MB limit vs unlimited, {members} members"
NAME_CHECKOUT = "checkout p99 under the {limit} MB limit vs unlimited, {members} members"


def member_pan(n: int) -> str:
    """The ``n``th member card (made in memory, never written anywhere)."""
    return luhn_complete(f"6214830{n:08d}")


def stranger_pan(n: int) -> str:
    """The ``n``th card of someone who is not a member."""
    return luhn_complete(f"6214839{n:08d}")


# ----------------------------------------------------------------- the cached roster


@dataclass(frozen=True)
class Built:
    """A signed roster of ``members`` and the keys that signed it, in ``folder``."""

    folder: Path
    members: int
    member_cards: int

    @property
    def keys_dir(self) -> Path:
        return self.folder / "keys"

    @property
    def roster(self) -> Path:
        return self.folder / "roster.ucr"

    @property
    def meta(self) -> dict[str, Any]:
        return dict(json.loads((self.folder / "meta.json").read_text()))


def cache_folder(members: int) -> Path:
    from pact.cards import DEFAULT_SCHEME

    scheme = "".join(c if c.isalnum() else "-" for c in DEFAULT_SCHEME.label)
    return Path(tempfile.gettempdir()) / f"unioncard-pibudget-{members}-{scheme}"


def built_roster(
    members: int, now: datetime, folder: Path | None = None, member_cards: int = MEMBER_CARDS
) -> Built:
    """The cached roster of ``members`` (built when missing, when this release does not
    verify it, or when it expires within a day): ``member_cards`` member cards among
    random tokens."""
    from bench.fixtures import random_packed
    from central.keys import create_keys
    from pact.cards import token_for_pan
    from pact.roster import sign_packed
    from pact.timefmt import iso

    built = Built(folder or cache_folder(members), members, member_cards)
    if _still_good(built, now):
        return built
    shutil.rmtree(built.folder, ignore_errors=True)
    built.folder.mkdir(parents=True)
    keys = create_keys(built.keys_dir, now=now)
    tokens = [token_for_pan(member_pan(n), keys.token_key) for n in range(member_cards)]
    expires = min(now + timedelta(days=30), keys.current_root.expires_at)
    data = sign_packed(
        random_packed(members - member_cards, tokens),
        version=1,
        issued_at=now,
        expires_at=expires,
        token_key_id=keys.token_key_id,
        keys=[keys.roster],
    )
    built.roster.write_bytes(data)
    meta = {
        "members": members,
        "member_cards": member_cards,
        "expires_at": iso(expires),
        "roster_bytes": len(data),
        "member_tokens": [t.hex() for t in tokens],
    }
    (built.folder / "meta.json").write_text(json.dumps(meta))
    return built


def _still_good(built: Built, now: datetime) -> bool:
    """The cached roster is the one asked for, verifies under its keys' root (as this
    release reads it), and stays valid for another day."""
    import mmap

    from central.keys import load_keys
    from pact.errors import UnioncardError
    from pact.roster import verify_roster

    try:
        meta = built.meta
        if (meta["members"], meta["member_cards"]) != (built.members, built.member_cards):
            return False
        trusted = load_keys(built.keys_dir).current_root.trusted("roster")
        with open(built.roster, "rb") as fh, mmap.mmap(fh.fileno(), 0, prot=mmap.PROT_READ) as m:
            roster = verify_roster(m, trusted, now=now + timedelta(days=1))
            members = len(roster)
            del roster
        return members == built.members
    except (OSError, ValueError, KeyError, UnioncardError):
        return False


def terminal_folder(built: Built, folder: Path, now: datetime) -> dict[str, str]:
    """A fresh terminal enrolled at ``folder`` with the roster downloaded into it as the
    sync leaves it, and the snapshot and policy beside it: the child's arguments."""
    from bench.fixtures import bundle, snapshot_for_header
    from bench.fixtures import policy as bench_policy
    from central.keys import load_keys
    from terminal.state import TerminalState

    keys = load_keys(built.keys_dir)
    shutil.rmtree(folder, ignore_errors=True)
    state = TerminalState(folder / "terminal")
    state.enrol(bundle(keys))
    with open(built.roster, "rb") as src, open(state.roster_download, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)  # streamed, as sync.client.fetch_roster
        dst.flush()
        os.fsync(dst.fileno())
    policy = bench_policy(keys, now=now)
    snapshot = snapshot_for_header(keys, _signed_header(built.roster), policy, 1, now=now)
    (folder / "snapshot.json").write_bytes(snapshot)
    (folder / "policy.json").write_bytes(policy)
    return {
        "data_dir": str(state.dir),
        "snapshot": str(folder / "snapshot.json"),
        "policy": str(folder / "policy.json"),
        "meta": str(built.folder / "meta.json"),
    }


def _signed_header(path: Path) -> dict[str, Any]:
    """The roster file's signed header (read without reading its body)."""
    import struct

    with open(path, "rb") as fh:
        start = fh.read(8)
        (length,) = struct.unpack(">I", start[4:8])
        return dict(json.loads(fh.read(length))["signed"])


# ------------------------------------------------------------------------ the limit


@dataclass(frozen=True)
class Limit:
    """How a child's memory is limited: ``how`` names it; ``cgroup`` is the child
    cgroup made for one child (cgroup v2), or None (``RLIMIT_AS``, or no limit)."""

    how: str
    limit_bytes: int | None
    cgroup: Path | None = None


def cgroup_v2_parent() -> tuple[Path | None, str]:
    """This process's cgroup v2 folder when it hands the memory controller to its child
    cgroups (``memory`` in its ``cgroup.subtree_control``), else None and why not.
    Nothing is written: a cgroup that does not delegate the controller is left as it is."""
    try:
        own = next(
            (
                line[3:]
                for line in Path("/proc/self/cgroup").read_text().splitlines()
                if line.startswith("0::")
            ),
            None,
        )
        mounts = [line.split() for line in Path("/proc/self/mounts").read_text().splitlines()]
    except OSError as exc:
        return None, f"cannot read this process's cgroups ({exc.strerror})"
    mount = next((m[1] for m in mounts if len(m) > 2 and m[2] == "cgroup2"), None)
    if own is None or mount is None:
        return None, "no cgroup v2 hierarchy is mounted"
    folder = Path(mount) / own.lstrip("/")
    try:
        delegated = (folder / "cgroup.subtree_control").read_text().split()
        available = (Path(mount) / "cgroup.controllers").read_text().split()
    except OSError as exc:
        return None, f"cannot read {folder}'s controllers ({exc.strerror})"
    if "memory" not in delegated:
        return None, (
            f"the cgroup v2 hierarchy at {mount} has no memory controller for this process's "
            f"cgroup (controllers there: {' '.join(available) or 'none'})"
        )
    return folder, ""


def make_limit(limit_bytes: int, tag: str) -> tuple[Limit, str]:
    """A child cgroup with ``memory.max`` (and no swap) when the machine allows it, else
    ``RLIMIT_AS``; and why not the cgroup ("" when it is the cgroup)."""
    parent, why = cgroup_v2_parent()
    if parent is not None:
        folder = parent / f"unioncard-pibudget-{os.getpid()}-{tag}"
        try:
            folder.mkdir()
            (folder / "memory.max").write_text(str(limit_bytes))
            if (folder / "memory.swap.max").exists():
                (folder / "memory.swap.max").write_text("0")
            return Limit("cgroup v2 memory.max", limit_bytes, folder), ""
        except OSError as exc:
            why = f"cannot make a child cgroup with memory.max under {parent} ({exc.strerror})"
            try:
                folder.rmdir()
            except OSError:
                pass
    return Limit("RLIMIT_AS", limit_bytes), why


def _in_child(limit: Limit) -> Callable[[], None] | None:
    """What the child runs before it starts Python: it enters its cgroup, or sets its
    address-space limit."""
    if limit.limit_bytes is None:
        return None
    size, cgroup = limit.limit_bytes, limit.cgroup

    def enter() -> None:
        if cgroup is not None:
            (cgroup / "cgroup.procs").write_text("0")  # "0": the writing process
        else:
            resource.setrlimit(resource.RLIMIT_AS, (size, size))

    return enter


@dataclass
class Run:
    """One child's answer (None when it did not finish) and what the kernel says of it."""

    answer: dict[str, Any] | None
    rusage_mb: float  # wait4's ru_maxrss: also counts the parent's pages forked before exec
    status: int  # exit status; negative: killed by that signal
    error: str  # the last line of its stderr when it failed
    cgroup_peak_mb: float | None = None
    oom_kills: int = 0

    @property
    def peak_mb(self) -> float:
        """The cgroup's memory.peak; else the child's own high-water mark of resident
        memory since it started Python (VmHWM at its end), or, when it did not finish,
        ru_maxrss."""
        if self.cgroup_peak_mb is not None:
            return self.cgroup_peak_mb
        if self.answer is not None:
            return float(self.answer["end"]["VmHWM"])
        return self.rusage_mb


def run_child(spec: dict[str, Any], limit: Limit) -> Run:
    """``python -m bench.pibudget SPEC`` under ``limit``; its answer and its peak."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.pibudget", json.dumps(spec)],
            stdout=subprocess.PIPE,
            stderr=err,
            cwd=Path(__file__).resolve().parents[1],
            preexec_fn=_in_child(limit),  # safe: the bench runs no threads
        )
        assert proc.stdout is not None
        with proc.stdout:
            out = proc.stdout.read()
        _, wait_status, usage = os.wait4(proc.pid, 0)
        proc.returncode = status = os.waitstatus_to_exitcode(wait_status)
        err.seek(0)
        lines = err.read().decode(errors="replace").strip().splitlines()
    cgroup_peak, kills = None, 0
    if limit.cgroup is not None:
        try:
            cgroup_peak = int((limit.cgroup / "memory.peak").read_text()) / 2**20
        except (OSError, ValueError):
            pass
        try:
            events = dict(
                line.split() for line in (limit.cgroup / "memory.events").read_text().splitlines()
            )
            kills = int(events.get("oom_kill", 0))
        except (OSError, ValueError):
            pass
        limit.cgroup.rmdir()
    answer = json.loads(out) if status == 0 else None
    error = "" if status == 0 else (lines[-1] if lines else f"exit status {status}")
    return Run(answer, usage.ru_maxrss / 1024, status, error, cgroup_peak, kills)


# ------------------------------------------------------------------------ the child


def _status() -> dict[str, float]:
    """This process's memory as /proc/self/status gives it, in MB."""
    wanted = ("VmPeak", "VmSize", "VmHWM", "VmRSS", "RssAnon", "RssFile")
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in wanted:
            out[key] = int(value.split()[0]) / 1024
    return out


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """The terminal's side: install the downloaded roster through ``TerminalService``'s
    state, time lookups and checkouts. With ``budget`` (bytes), the child limits its own
    address space, once it has served a few sales (before the install), to what it holds
    then plus that; with ``whole``, it reads the
    downloaded file whole and installs the bytes (a control: what an install that
    reads the file costs)."""
    import gc

    from reader.identity import CardIdentity, Tokenize, identity_from_pan
    from terminal.service import TerminalService
    from unioncard.cli import system_clock

    meta = json.loads(Path(spec["meta"]).read_text())
    member_tokens = [bytes.fromhex(t) for t in meta["member_tokens"]]
    taps: list[str] = []

    def read_card(*, timeout: float, tokenize: Tokenize) -> CardIdentity:
        return identity_from_pan("unionpay", b"\xa0", taps.pop(), "2030-12", tokenize)

    service = TerminalService(Path(spec["data_dir"]), read_card, system_clock)
    snapshot = Path(spec["snapshot"]).read_bytes()
    policy = Path(spec["policy"]).read_bytes()
    lookups, checkouts = int(spec["lookups"]), int(spec["checkouts"])
    probes = []  # a member's token, then a random one (no member's), in turn
    for i in range(lookups // 2):
        probes += [member_tokens[i % len(member_tokens)], os.urandom(16)]
    for n in range(3):  # the terminal served before this roster came (no member yet)
        taps.append(stranger_pan(10**6 + n))
        service.checkout(AMOUNT, confirm=True)
    if spec.get("budget"):
        allowed = int(_status()["VmSize"] * 2**20) + int(spec["budget"])
        resource.setrlimit(resource.RLIMIT_AS, (allowed, allowed))
    before = _status()
    began = time.perf_counter()
    download = service.state.roster_download
    roster_data: bytes | Path = download.read_bytes() if spec.get("whole") else download
    service.state.install(snapshot, system_clock(), roster_data, policy)
    del roster_data
    install_seconds = time.perf_counter() - began
    after_install = _status()
    roster = service.state.current.roster
    if roster is None or len(roster) != meta["members"]:
        raise RuntimeError("the installed roster is not the one built")
    for token in probes[:4000]:  # a pass first, as a till's first minutes would
        roster.lookup(token)
    lookup_times, found = [], 0
    gc.disable()
    for token in probes:
        start = time.perf_counter()
        hit = roster.lookup(token)
        lookup_times.append(time.perf_counter() - start)
        found += hit is not None
    gc.enable()
    if found != lookups // 2:
        raise RuntimeError(f"{found} of {lookups} lookups found a member, not {lookups // 2}")
    checkout_times, members, discounted = [], 0, 0
    for n in range(checkouts + 10):  # the first ten are not timed
        is_member = n % 2 == 0
        taps.append(member_pan(n // 2 % len(member_tokens)) if is_member else stranger_pan(n))
        start = time.perf_counter()
        result = service.checkout(AMOUNT, confirm=True)
        elapsed = time.perf_counter() - start
        if result.member != is_member or (result.quote.discount > 0) != is_member:
            raise RuntimeError(f"checkout {n}: member {result.member}, expected {is_member}")
        if n >= 10:
            checkout_times.append(elapsed)
            members += is_member
            discounted += result.quote.discount
    service.close()
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    us, ms = 1e6, 1e3
    return {
        "install_seconds": install_seconds,
        "lookup_p50_us": percentile(lookup_times, 50) * us,
        "lookup_p99_us": percentile(lookup_times, 99) * us,
        "checkout_p50_ms": percentile(checkout_times, 50) * ms,
        "checkout_p99_ms": percentile(checkout_times, 99) * ms,
        "lookups": lookups,
        "checkouts": checkouts,
        "member_checkouts": members,
        "discount_fen": discounted,
        "rlimit_as_mb": None if soft == resource.RLIM_INFINITY else soft / 2**20,
        "before": before,
        "after_install": after_install,
        "end": _status(),
    }


def main(argv: list[str]) -> int:
    """The child's side: ``python -m bench.pibudget SPEC`` prints its answer as JSON;
    exit status 3 when the memory limit stopped it."""
    try:
        answer = child(json.loads(argv[0]))
    except MemoryError:
        print("error: out of memory (MemoryError)", file=sys.stderr)
        return OUT_OF_MEMORY
    except OSError as exc:
        if exc.errno != errno.ENOMEM:
            raise
        print(f"error: out of memory ({exc})", file=sys.stderr)
        return OUT_OF_MEMORY
    print(json.dumps(answer))
    return 0


# ---------------------------------------------------------------------- the figures


def figures(ctx: Context) -> list[Figure]:
    members = ctx.scale(8_000_000, 1_000_000)
    rounds = ctx.scale(5, 1)
    spec = {"lookups": ctx.scale(20_000, 5_000), "checkouts": ctx.scale(600, 150)}
    started = time.perf_counter()
    built = built_roster(members, ctx.clock())
    build_seconds = time.perf_counter() - started
    limited: list[Run] = []
    unlimited: list[Run] = []
    why_not_cgroup = ""
    how = "RLIMIT_AS"
    for n in range(rounds):
        order = ["limited", "unlimited"] if n % 2 == 0 else ["unlimited", "limited"]
        for side in order:
            folder = ctx.workdir / f"pibudget-{side}"
            args = {**spec, **terminal_folder(built, folder, ctx.clock())}
            if side == "limited":
                limit, why_not_cgroup = make_limit(LIMIT_MB * 2**20, f"{n}")
                how = limit.how
                limited.append(run_child(args, limit))
            else:
                unlimited.append(run_child(args, Limit("none", None)))
            shutil.rmtree(folder)
            for run in (limited + unlimited)[-1:]:
                if run.answer is None and run.status != OUT_OF_MEMORY and run.oom_kills == 0:
                    raise RuntimeError(f"the {side} child failed: {run.error}")
    folder = ctx.workdir / "pibudget-whole"
    args = {**spec, **terminal_folder(built, folder, ctx.clock()), "whole": True}
    whole = run_child(args, make_limit(LIMIT_MB * 2**20, "whole")[0])
    shutil.rmtree(folder)
    out = _figures(built, limited, unlimited, how, why_not_cgroup, build_seconds)
    out[0].detail["whole_read_completed"] = whole.answer is not None
    out[0].detail["whole_read_vmpeak_mb"] = (
        round(whole.answer["end"]["VmPeak"], 1) if whole.answer is not None else None
    )
    if whole.error:
        out[0].detail["whole_read_error"] = whole.error
    return out


def _figures(
    built: Built,
    limited: list[Run],
    unlimited: list[Run],
    how: str,
    why_not_cgroup: str,
    build_seconds: float,
) -> list[Figure]:
    label = f"{built.members:,}"
    roster_mb = built.roster.stat().st_size / 2**20
    names = {
        "peak": NAME_PEAK.format(members=label, limit=LIMIT_MB, how=how),
        "lookup": NAME_LOOKUP.format(members=label, limit=LIMIT_MB),
        "checkout": NAME_CHECKOUT.format(members=label, limit=LIMIT_MB),
    }
    if unlimited and all(r.answer is None for r in unlimited):
        raise RuntimeError(f"the unlimited child failed: {unlimited[0].error}")
    failed = [r for r in limited if r.answer is None]
    peak = max(r.peak_mb for r in limited)
    base_peak = max(r.peak_mb for r in unlimited)
    limit_note = (
        f"{how} of {LIMIT_MB} MB"
        + (f" (no cgroup: {why_not_cgroup})" if why_not_cgroup else "")
        + "; the peak is "
        + (
            "the cgroup's memory.peak"
            if how.startswith("cgroup")
            else "the child's high-water mark of resident memory (VmHWM)"
        )
        + ", the memory-mapped roster's pages included"
    )
    if failed:
        note = f"did not complete within {LIMIT_MB} MB: {failed[0].error}; {limit_note}"
        return [
            Figure(names["peak"], round(peak, 1), "MB", GOAL, met=False, note=note),
            Figure(names["lookup"], None, "x", note="not measured: the limited child failed"),
            Figure(names["checkout"], None, "x", note="not measured: the limited child failed"),
        ]

    def ans(runs: list[Run], key: str) -> list[float]:
        return [float(r.answer[key]) for r in runs if r.answer is not None]

    def side(runs: list[Run], key: str) -> float:
        return round(median(ans(runs, key)), 2)

    def end(runs: list[Run], key: str) -> float:
        return round(max(float(r.answer["end"][key]) for r in runs if r.answer is not None), 1)

    detail = {
        "members": built.members,
        "roster_mb": round(roster_mb, 1),
        "limit": how,
        "limit_mb": LIMIT_MB,
        "rounds": len(limited),
        "limited_peak_mb": round(peak, 1),
        "unlimited_peak_mb": round(base_peak, 1),
        "limited_vmpeak_mb": end(limited, "VmPeak"),
        "unlimited_vmpeak_mb": end(unlimited, "VmPeak"),
        "limited_rss_file_mb": end(limited, "RssFile"),
        "limited_rss_anon_mb": end(limited, "RssAnon"),
        "unlimited_rss_anon_mb": end(unlimited, "RssAnon"),
        "limited_before_install_mb": round(
            max(r.answer["before"]["VmHWM"] for r in limited if r.answer is not None), 1
        ),
        "limited_install_s": side(limited, "install_seconds"),
        "unlimited_install_s": side(unlimited, "install_seconds"),
        "build_roster_s": round(build_seconds, 1),  # about 0 when the cached one served
    }
    if why_not_cgroup:
        detail["no_cgroup"] = why_not_cgroup
    for key in ("lookup_p50_us", "lookup_p99_us", "checkout_p50_ms", "checkout_p99_ms"):
        detail[f"limited_{key}"] = side(limited, key)
        detail[f"unlimited_{key}"] = side(unlimited, key)
    detail["lookups"] = int(ans(limited, "lookups")[0])
    detail["checkouts"] = int(ans(limited, "checkouts")[0])
    ratios = {}
    for key in ("lookup", "checkout"):
        unit = "us" if key == "lookup" else "ms"
        pairs = zip(
            ans(limited, f"{key}_p99_{unit}"), ans(unlimited, f"{key}_p99_{unit}"), strict=True
        )
        ratios[key] = [a / b for a, b in pairs]
    out = [
        Figure(
            names["peak"],
            round(peak, 1),
            "MB",
            goal=GOAL,
            met=peak <= LIMIT_MB,
            baseline=f"the unlimited child's peak: {base_peak:.1f} MB",
            note=f"completes within {LIMIT_MB} MB: {limit_note}",
            detail=detail,
            runs=[round(r.peak_mb, 1) for r in limited],
        )
    ]
    for key, what in (("lookup", "lookups"), ("checkout", "checkouts")):
        unit = "µs" if key == "lookup" else "ms"
        raw = "us" if key == "lookup" else "ms"
        out.append(
            Figure(
                names[key],
                round(median(ratios[key]), 3),
                "x",
                baseline=f"the same {what} in the unlimited child (p99, "
                f"{detail[f'unlimited_{key}_p99_{raw}']:g} {unit})",
                spread=runs_spread(
                    ratios[key], f"{len(ratios[key])} rounds, one child of each side"
                )
                if len(ratios[key]) > 1
                else None,
                note=f"recorded, no goal (the issue gives none): p99 "
                f"{detail[f'limited_{key}_p99_{raw}']:g} {unit} limited against "
                f"{detail[f'unlimited_{key}_p99_{raw}']:g} {unit}",
                runs=[round(r, 3) for r in ratios[key]],
            )
        )
    return out


def prose(figures: list[Figure]) -> list[str]:
    """The side-by-side table of the Pi-sized budget, for docs/benchmarks.md."""
    peak = next((f for f in figures if f.name.startswith("install and serve ")), None)
    if peak is None or peak.value is None or "limited_lookup_p99_us" not in peak.detail:
        return []
    d = peak.detail
    verdict = "met" if peak.met else "**not met**"
    rows = [
        ("peak resident memory (VmHWM), MB", "limited_peak_mb", "unlimited_peak_mb"),
        ("address space at its peak (VmPeak), MB", "limited_vmpeak_mb", "unlimited_vmpeak_mb"),
        ("install: verify, fsync, switch, s", "limited_install_s", "unlimited_install_s"),
        ("roster lookup p50, µs", "limited_lookup_p50_us", "unlimited_lookup_p50_us"),
        ("roster lookup p99, µs", "limited_lookup_p99_us", "unlimited_lookup_p99_us"),
        ("checkout p50, ms", "limited_checkout_p50_ms", "unlimited_checkout_p50_ms"),
        ("checkout p99, ms", "limited_checkout_p99_ms", "unlimited_checkout_p99_ms"),
    ]
    return [
        "",
        "### A Pi-sized budget",
        "",
        f"**The figure.** A terminal process limited to {d['limit_mb']} MB ({d['limit']}) "
        f"installs a signed roster of {d['members']:,} members ({d['roster_mb']:g} MB) the way "
        f"the sync does and serves {d['checkouts']:,} checkouts and {d['lookups']:,} timed "
        f"lookups: its peak is {peak.value:g} MB ({verdict}, goal: completes within "
        f"{d['limit_mb']} MB). Medians of {d['rounds']} rounds; limited and unlimited "
        "children alternate, on the same files.",
        "",
        f"| {d['members']:,} members | limited to {d['limit_mb']} MB | unlimited |",
        "| --- | --- | --- |",
        *(f"| {what} | {d[a]:g} | {d[b]:g} |" for what, a, b in rows),
        "",
        f"**Where the memory is.** At the end the limited child held {d['limited_rss_file_mb']:g} "
        f"MB of file pages (the memory-mapped roster, {d['roster_mb']:g} MB, read once to check "
        f"its digest, and the program's own libraries) and {d['limited_rss_anon_mb']:g} MB of "
        "anonymous memory (the heap: Python, SQLite, the card's token function); before the "
        "install it had reached "
        f"{d['limited_before_install_mb']:g} MB. The roster is never read into the heap: the "
        "sync streams it to disk, and the install hashes and serves it where it lies. "
        f"The limit: {d['limit']} of {d['limit_mb']} MB"
        + (f" (no cgroup: {d['no_cgroup']})" if d.get("no_cgroup") else "")
        + "; the peak: "
        + (
            "the cgroup's memory.peak"
            if str(d["limit"]).startswith("cgroup")
            else "the child's high-water mark of resident memory (VmHWM)"
        )
        + ", the mapped roster's pages included. Under RLIMIT_AS the mapped roster counts in full "
        "against the limit while the page cache does not; on a Pi the kernel may drop the "
        "mapped pages under pressure and read them again, which a lookup would pay as a "
        "page fault.",
        "",
        "**The control.** The same install in a child under the same limit that reads the "
        "downloaded file whole and installs the bytes (as `unioncard terminal install` does "
        "by hand) "
        + (
            f"completed, its address space peaking at {d['whole_read_vmpeak_mb']:g} MB: the "
            "file's bytes in the heap and its memory map at once."
            if d.get("whole_read_completed")
            else f"did not complete ({d.get('whole_read_error') or 'no answer'})."
        ),
    ]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
