"""Has the journal's WAL lost committed transactions? (an adapter: reads raw files)

SQLite replays ``journal.db-wal`` up to its last whole commit and silently drops
what follows; a WAL cut short (a damaged SD card, a copy that stopped half-way)
would so lose sales the terminal confirmed, and the next sale would take their
sequence numbers. The wal-index (``journal.db-shm``) still says how many frames
the last writer committed (``mxFrame``) and how many are already copied into the
database (``nBackfill``): when the WAL holds fewer whole frames up to a commit
than that, committed data is gone. A WAL torn after its last commit (a power cut
during a write, a kill between two writes) loses nothing and is not reported.

This must run before SQLite opens the database: the first connection rebuilds the
wal-index from the WAL. Formats: https://www.sqlite.org/fileformat2.html#walformat
and #walindexformat (the header is in the machine's byte order).
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

WAL_MAGIC = (0x377F0682, 0x377F0683)
WAL_HEADER = 32
FRAME_HEADER = 24
SHM_VERSION = 3007000
SHM_HEADER = 48  # one copy of the wal-index header; two copies, then the checkpoint info


def _index(shm: Path) -> tuple[int, int, tuple[int, int], int] | None:
    """(mxFrame, page size, salts, nBackfill) from the wal-index, or None when it is
    missing, torn or not initialised (nothing can be told from it)."""
    try:
        with open(shm, "rb") as fh:
            raw = fh.read(2 * SHM_HEADER + 4)
    except OSError:
        return None
    if len(raw) < 2 * SHM_HEADER + 4 or raw[:SHM_HEADER] != raw[SHM_HEADER : 2 * SHM_HEADER]:
        return None
    order = "<" if sys.byteorder == "little" else ">"
    version, _, _, init, _, page, mx_frame = struct.unpack(order + "3IBBHI", raw[:20])
    salt1, salt2 = struct.unpack(">2I", raw[32:40])  # copied as bytes from the WAL's header
    if version != SHM_VERSION or not init:
        return None
    (backfill,) = struct.unpack(order + "I", raw[2 * SHM_HEADER : 2 * SHM_HEADER + 4])
    page_size = 65536 if page == 1 else page
    return mx_frame, page_size, (salt1, salt2), backfill


def _committed_frames(wal: Path, page_size: int) -> tuple[int, tuple[int, int] | None]:
    """(whole frames of the WAL's current salts up to its last commit frame, its salts);
    (0, None) when there is no WAL or its header is gone."""
    try:
        fh = open(wal, "rb")
    except FileNotFoundError:
        return 0, None
    with fh:
        header = fh.read(WAL_HEADER)
        if len(header) < WAL_HEADER:
            return 0, None
        magic, _, size, _, salt1, salt2 = struct.unpack(">6I", header[:24])
        if magic not in WAL_MAGIC or size != page_size:
            return 0, None
        frame = FRAME_HEADER + page_size
        committed = n = 0
        while True:
            fh.seek(WAL_HEADER + n * frame)
            head = fh.read(FRAME_HEADER)
            if len(head) < FRAME_HEADER:
                break
            _, commit, s1, s2 = struct.unpack(">4I", head[:16])
            if (s1, s2) != (salt1, salt2):
                break
            fh.seek(WAL_HEADER + n * frame + frame - 1)
            if len(fh.read(1)) < 1:  # the frame's page is cut off
                break
            n += 1
            if commit:
                committed = n
        return committed, (salt1, salt2)


def wal_loss(db: Path) -> str | None:
    """What committed data the WAL of ``db`` lost, in words, or None when nothing."""
    index = _index(db.with_name(db.name + "-shm"))
    if index is None:
        return None
    mx_frame, page_size, salts, backfill = index
    if mx_frame <= backfill:
        return None  # everything committed is in the database file already
    wal = db.with_name(db.name + "-wal")
    committed, wal_salts = _committed_frames(wal, page_size)
    if wal_salts is not None and wal_salts != salts:
        return None  # the wal-index describes an earlier WAL, already copied in
    if committed >= mx_frame:
        return None
    return (
        f"its WAL {wal.name} holds {committed} committed frames where the last writer "
        f"committed {mx_frame} ({mx_frame - max(committed, backfill)} frames of sales lost: "
        "the file was cut short)"
    )
