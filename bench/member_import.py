"""Importing 8 million members into PostgreSQL: the importing process's peak memory
(issue 14's goal: at most 200 MB) and its time against a plain ``COPY`` of the same
rows. ``--quick``: 200,000 members.

The members file (member_id, pan, status, tier, valid_until, district, workplace; 20
districts x 25 workplaces, one in 50 suspended) is written to disk first; so is the
baseline's file, the same members as the import stores them (the card's token and
last four digits, in COPY's text format). Each side runs in a child process of its own
(``python -m bench.member_import``), against its own PostgreSQL schema at the head:

- product: ``Union.import_members`` of the file, streamed from disk (the CSV parsed and
  checked, the card numbers turned into tokens, the members, their history rows and the
  dashboard's member totals written in chunks, all in one transaction), as
  ``unioncard central import-members`` runs it;
- baseline: the stored rows' file streamed in 1 MB blocks into ``COPY members_copy FROM
  STDIN``, a bare table of the members' columns (no key, no index), one transaction.

Peak memory is each child's maximum resident set (``ru_maxrss`` from ``wait4``; the
child's own ``VmHWM`` is in the detail too). The import into an empty union is the
case measured (every member new: the most written); the baseline runs first.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.core import Context, Figure, check
from bench.pg import PG_URL, pg_schema, schema_url
from pact.cards import HMAC_SHA256, luhn_complete, token_for_pan
from pact.timefmt import iso, parse_iso

GOAL = "<= 200"  # MB, issue 14: "importing 8M members: peak memory at most 200 MB"
BLOCK = 1 << 20
DISTRICTS, WORKPLACES = 20, 25
NAME_MEMORY = "importing {members} members on PostgreSQL, peak memory of the importing process"
NAME_TIME = "importing {members} members on PostgreSQL vs a plain COPY of the same rows"


def write_files(folder: Path, count: int, token_key: bytes) -> tuple[Path, Path]:
    """The members file, and the baseline's rows as the import stores them."""
    rng = random.Random(14)
    csv_path, copy_path = folder / "members.csv", folder / "members.copy"
    with csv_path.open("w") as csv_out, copy_path.open("w") as copy_out:
        csv_out.write("member_id,pan,status,tier,valid_until,district,workplace\n")
        for n in range(count):
            pan = luhn_complete(f"622202{n:012d}")
            status = "suspended" if rng.random() < 0.02 else "active"
            tier = rng.randrange(3)
            district = rng.randrange(DISTRICTS)
            workplace = f"Works {district:02d}-{rng.randrange(WORKPLACES):02d}"
            member_id = f"U{n:08d}"
            csv_out.write(
                f"{member_id},{pan},{status},{tier},2027-12-31,District {district:02d},"
                f"{workplace}\n"
            )
            token = token_for_pan(pan, token_key, HMAC_SHA256).hex()
            copy_out.write(
                f"{member_id}\t{token}\t{pan[-4:]}\t{status}\t{tier}\t2027-12-31\t"
                f"District {district:02d}\t{workplace}\n"
            )
    return csv_path, copy_path


def _hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _child_import(schema: str, csv_path: str, keys: str, at: str) -> dict[str, Any]:
    from central.keys import load_keys
    from central.service import Union
    from central.store import Store

    union = Union(Store.open(schema_url(schema)), load_keys(Path(keys)), lambda: parse_iso(at))
    before = _hwm_mb()
    started = time.perf_counter()
    with open(csv_path, newline="") as lines:
        result = union.import_members(lines)
    seconds = time.perf_counter() - started
    union.close()
    return {"seconds": seconds, "added": result.added, "hwm_mb": _hwm_mb(), "start_mb": before}


def _child_copy(schema: str, copy_path: str) -> dict[str, Any]:
    import psycopg

    from central.store import members  # the same imports' weight as the product's side

    columns = ", ".join(c.name for c in members.columns)
    before = _hwm_mb()
    started = time.perf_counter()
    with psycopg.connect(PG_URL, options=f"-csearch_path={schema}") as conn:
        with conn.cursor() as cur, cur.copy(f"COPY members_copy ({columns}) FROM STDIN") as copy:
            with open(copy_path, "rb") as f:
                while block := f.read(BLOCK):
                    copy.write(block)
        conn.commit()
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "hwm_mb": _hwm_mb(), "start_mb": before}


def _run_child(*args: str) -> tuple[dict[str, Any], float]:
    """Run ``python -m bench.member_import ARGS``; its answer and its peak RSS (MB)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.member_import", *args],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"bench.member_import {args[0]} exited with {proc.returncode}")
    return json.loads(out), usage.ru_maxrss / 1024  # kB on Linux


def figures(ctx: Context) -> list[Figure]:
    count = ctx.scale(8_000_000, 200_000)
    names = {
        "memory": NAME_MEMORY.format(members=f"{count:,}"),
        "time": NAME_TIME.format(members=f"{count:,}"),
    }
    try:
        with sa.create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://")).connect():
            pass
    except sa.exc.OperationalError as exc:
        why = f"not measured: PostgreSQL not reachable ({str(exc).splitlines()[0]})"
        return [
            Figure(names["memory"], None, "MB", GOAL, note=why),
            Figure(names["time"], None, "x", note=why),
        ]
    from central.keys import create_keys

    # tokens of the first scheme (HMAC): this bench measures the import's store path and
    # memory; the memory-hard scheme's 5-7 ms a member (hours for 8M) is bench/token.py's
    keys = create_keys(ctx.workdir / "member-keys", now=ctx.clock(), token_scheme=HMAC_SHA256)
    started = time.perf_counter()
    csv_path, copy_path = write_files(ctx.workdir, count, keys.token_key)
    write_seconds = time.perf_counter() - started
    with pg_schema() as schema:
        with sa.create_engine(
            schema_url(schema).replace("postgresql://", "postgresql+psycopg://")
        ).begin() as conn:
            from central.store import members

            sa.Table(
                "members_copy", sa.MetaData(), *[sa.Column(c.name, c.type) for c in members.columns]
            ).create(conn)
        copied, copy_rss = _run_child("copy", schema, str(copy_path))
    with pg_schema() as schema:
        from central.store import Store

        Store.open(schema_url(schema)).close()  # made at the head
        imported, import_rss = _run_child(
            "import", schema, str(csv_path), str(ctx.workdir / "member-keys"), iso(ctx.clock())
        )
    csv_mb = csv_path.stat().st_size / 1e6
    csv_path.unlink()
    copy_path.unlink()
    if imported["added"] != count:
        raise RuntimeError(f"the import added {imported['added']} members, expected {count}")
    ratio = imported["seconds"] / copied["seconds"]
    common = {
        "members_file_mb": round(csv_mb, 1),
        "write_files_seconds": round(write_seconds, 1),
    }
    return [
        Figure(
            names["memory"],
            round(import_rss, 1),
            "MB",
            goal=GOAL,
            met=check(import_rss, GOAL),
            baseline=f"the COPY process's peak: {copy_rss:.1f} MB",
            note="the child process's maximum resident set (wait4 ru_maxrss), streaming the "
            "members file from disk in one transaction",
            detail={
                "import_vmhwm_mb": round(imported["hwm_mb"], 1),
                "import_mb_before_import": round(imported["start_mb"], 1),
                "copy_peak_mb": round(copy_rss, 1),
                **common,
            },
        ),
        Figure(
            names["time"],
            round(ratio, 2),
            "x",
            baseline="COPY of the same rows as stored (tokens, last four) into a bare table",
            note="once each, the COPY first, each in a child process and schema of its own",
            detail={
                "import_seconds": round(imported["seconds"], 1),
                "copy_seconds": round(copied["seconds"], 1),
                "import_members_per_second": round(count / imported["seconds"]),
                "copy_members_per_second": round(count / copied["seconds"]),
                **common,
            },
        ),
    ]


def main(argv: list[str]) -> int:
    """The child processes' side: ``import SCHEMA CSV KEYS AT`` or ``copy SCHEMA FILE``."""
    if argv[0] == "import":
        answer = _child_import(argv[1], argv[2], argv[3], argv[4])
    else:
        answer = _child_copy(argv[1], argv[2])
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
