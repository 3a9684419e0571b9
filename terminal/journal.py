"""The terminal's tamper-evident sales journal: SQLite via sqlite-utils.

WAL mode with ``synchronous=FULL``: once :meth:`Journal.append` returns, the sale
survives a power cut. Sales are hash-chained (pact.chain). ``uploaded_at``
is set only after the central service acknowledged the sale; it is outside the
hash, the only column ever updated.

Writes go through one connection that every thread of the daemon shares; a lock
makes each writing method one critical section. What the status, the cashier page
and the reports read goes through connections of their own (:class:`Readers`): in
WAL mode a reader sees the last commit, never a half-made transaction, and waits
neither for a writer (its fsync included) nor for another reader, so a till polling
the status does not hold up a checkout.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, ParamSpec, TypeVar

import sqlite_utils
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from pact.basket import RuleUsage
from pact.chain import GENESIS, check_chain, seal
from pact.device import Signer, check_signatures, sign_entry
from pact.errors import ChainError, DeviceSignatureError
from pact.sale import OPTIONAL_FIELDS, Sale, SaleDraft, field_types
from pact.text import N_
from pact.timefmt import iso
from terminal.disk import (
    OPEN_REFUSED,
    SALE_REFUSED,
    SYNC_REFUSED,
    check_space,
    fail_full,
    is_disk_full,
    is_short,
)
from terminal.errors import JournalDamagedError, JournalError, UnknownSaleError
from terminal.walcheck import wal_loss

MIGRATIONS = (
    """
    CREATE TABLE sales (
        seq INTEGER PRIMARY KEY,
        sale_id TEXT NOT NULL UNIQUE,
        at TEXT NOT NULL,
        terminal_id TEXT NOT NULL,
        merchant_id TEXT NOT NULL,
        token TEXT,
        pan_last4 TEXT NOT NULL,
        member INTEGER NOT NULL,
        gross INTEGER NOT NULL,
        discount INTEGER NOT NULL,
        net INTEGER NOT NULL,
        rules TEXT NOT NULL,
        roster_version INTEGER NOT NULL,
        policy_version INTEGER NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL,
        uploaded_at TEXT
    );
    CREATE INDEX sales_pending ON sales (seq) WHERE uploaded_at IS NULL;
    """,
    # 2: the basket (lines, tier, each rule's discount; hashed) and quota look-ups
    """
    ALTER TABLE sales ADD COLUMN basket TEXT;
    CREATE INDEX sales_token_at ON sales (token, at) WHERE token IS NOT NULL;
    """,
    # 3: the device signature over each sale's hash (pact.device; not hashed)
    """
    ALTER TABLE sales ADD COLUMN sig TEXT;
    """,
    # 4: the card's transaction counter (EMV 9F36) at the sale, when it gave one; hashed
    """
    ALTER TABLE sales ADD COLUMN atc INTEGER;
    """,
    # 5: entry kinds: a void reverses sale ref_seq whole, with a reason (note); hashed
    """
    ALTER TABLE sales ADD COLUMN kind TEXT;
    ALTER TABLE sales ADD COLUMN ref_seq INTEGER;
    ALTER TABLE sales ADD COLUMN note TEXT;
    CREATE INDEX sales_ref_seq ON sales (ref_seq) WHERE ref_seq IS NOT NULL;
    """,
    # 6: a sale is voided once, even by two processes at the same moment
    """
    CREATE UNIQUE INDEX sales_one_void ON sales (ref_seq) WHERE kind = 'void';
    """,
    # 7: a day's entries (the end-of-day report, the events since a sync) by their time
    """
    CREATE INDEX IF NOT EXISTS sales_at ON sales (at);
    """,
    # 8: the answers of voids and refunds sent with an Idempotency-Key, each written in
    # the transaction of the entry it journaled (not evidence: not hashed, pruned)
    """
    CREATE TABLE replays (
        key TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        seq INTEGER NOT NULL,
        answer TEXT NOT NULL,
        kept_at TEXT NOT NULL
    );
    CREATE INDEX replays_kept_at ON replays (kept_at);
    """,
)
# how long the answer of a void or refund sent with an Idempotency-Key is given again
ANSWERS_KEPT_FOR = timedelta(hours=24)
KEEP_ANSWER = (
    "INSERT INTO replays (key, fingerprint, seq, answer, kept_at) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (key) DO UPDATE SET fingerprint = excluded.fingerprint, seq = excluded.seq, "
    "answer = excluded.answer, kept_at = excluded.kept_at"
)


@dataclass(frozen=True)
class Once:
    """A void or refund to journal at most once: the till's Idempotency-Key, a digest
    of what it asked, and its answer made of the entry it journals (kept with the entry,
    in the same transaction, so a request sent again after a restart is answered it)."""

    key: str
    fingerprint: str
    answer: Callable[[Sale], dict[str, Any]]


@dataclass(frozen=True)
class Kept:
    """The kept answer of an Idempotency-Key: what was asked, and the answer."""

    fingerprint: str
    answer: dict[str, Any]


# ``at`` is always iso()'s fixed "YYYY-MM-DDTHH:MM:SSZ" (UTC): text order is time order.

READERS_KEPT = 8  # idle read connections kept open: one for each of the daemon's threads

# SQLite's primary result codes (sqlite3.Error.sqlite_errorcode & 0xFF) of a damaged file
SQLITE_CORRUPT, SQLITE_NOTADB = 11, 26


def damage_marker(path: Path) -> Path:
    """The file that records why the journal at ``path`` was found damaged: while it is
    there, no process opens the journal (so none rewrites the evidence)."""
    return path.with_name(path.name + ".damaged")


def evidence_files(path: Path) -> list[Path]:
    """The journal's files as they are on disk: the database, its WAL and wal-index."""
    names = (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm"))
    return [p for p in names if p.exists()]


def _is_damage(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (SQLITE_CORRUPT, SQLITE_NOTADB)


def fail_damaged(path: Path, problem: str, record: bool = True) -> NoReturn:
    """Raise the error of a damaged journal at ``path``; with ``record``, the marker is
    written first (best effort: a full disk may refuse it) so every process refuses it."""
    files = evidence_files(path)
    if record:
        marker = {"problem": problem, "files": [str(p) for p in files]}
        try:
            damage_marker(path).write_text(json.dumps(marker) + "\n")
        except OSError:
            pass
    raise JournalDamagedError(
        N_(
            "the journal is damaged: %(problem)s. No sale is recorded and no discount given "
            "until a technician looks at it; its files are kept untouched for the union: "
            "%(files)s (docs/operations.md, Recover)"
        ),
        problem=problem,
        files=", ".join(str(p) for p in files) or str(path),
    ) from None


def check_damage(path: Path) -> None:
    """Refuse a journal found damaged before (its marker), or whose WAL lost committed
    frames (terminal.walcheck). Reads raw files only: run before SQLite opens it."""
    marker = damage_marker(path)
    if marker.exists():
        try:
            problem = str(json.loads(marker.read_text())["problem"])
        except (OSError, ValueError, KeyError, TypeError):
            problem = f"see {marker}"
        fail_damaged(path, problem, record=False)
    lost = wal_loss(path)
    if lost is not None:
        fail_damaged(path, lost)


def quick_check(path: Path) -> None:
    """SQLite's ``PRAGMA quick_check`` of the journal on a read-only connection (which
    neither checkpoints nor rewrites anything; the empty WAL and wal-index it makes
    when there were none are removed again); JournalDamagedError when it fails."""
    before = set(evidence_files(path))
    problem: str | None = None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        try:
            rows = conn.execute("PRAGMA quick_check").fetchall()
        finally:
            conn.close()
        if [tuple(r) for r in rows] != [("ok",)]:
            problem = "; ".join(str(r[0]) for r in rows[:3])
    except sqlite3.Error as exc:
        if not _is_damage(exc):
            raise JournalError(
                N_("cannot open the journal %(file)s: %(problem)s"),
                file=str(path),
                problem=str(exc),
            ) from None
        problem = str(exc)
    finally:
        for made in set(evidence_files(path)) - before:  # SQLite's, not the evidence
            made.unlink(missing_ok=True)
    if problem is not None:
        fail_damaged(path, problem)


P = ParamSpec("P")
R = TypeVar("R")


def _locked(method: Callable[P, R]) -> Callable[P, R]:
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with args[0].lock:  # type: ignore[attr-defined]
            return method(*args, **kwargs)

    wrapper.__doc__ = method.__doc__
    return wrapper


def insert_sql(cls: type[Sale] = Sale) -> str:
    """The INSERT of one :meth:`Sale.as_row` into ``sales``: a column for each field."""
    names = list(field_types(cls))
    return (
        f"INSERT INTO sales ({', '.join(names)}) VALUES ({', '.join(':' + name for name in names)})"
    )


INSERT_SALE = insert_sql()


def pending_json_sql(cls: type[Sale] = Sale) -> str:
    """The query of pending ``sales`` rows as the wire carries the entries: ``(seq, the
    JSON of`` :meth:`Sale.as_json` ``)``, every field, rules a list, basket an object,
    an optional field left out when it is None (the keys of the optional fields after
    the others). SQLite's JSON functions make it, with no Sale or dict per entry: the
    sync reads a backlog of thousands this way (docs/benchmarks.md, "The sync's
    throughput"). Every field's type must have its form here, as in pact.sale's row
    codecs; tests/test_sync_upload.py holds it to :meth:`Sale.as_json`."""
    always: list[str] = []
    optional: list[str] = []
    for name, kind in field_types(cls).items():
        if kind is bool:
            value = f"json(CASE WHEN {name} THEN 'true' ELSE 'false' END)"
        elif kind in (tuple[str, ...], Mapping[str, Any] | None):  # kept as JSON text
            value = f"json({name})"
        elif kind in (int, int | None):
            value = name
        elif kind in (str, str | None):
            value = f"json_quote({name})" if name in OPTIONAL_FIELDS else name
        else:
            raise TypeError(f"Sale.{name}: no JSON form on the wire for {kind}")
        if name in OPTIONAL_FIELDS:  # ,"name":value when not null
            key = f"""',"{name}":'"""
            optional.append(f"CASE WHEN {name} IS NULL THEN '' ELSE {key} || {value} END")
        else:
            always.append(f"'{name}', {value}")
    kept = ", ".join(name for name in field_types(cls) if name in OPTIONAL_FIELDS)
    # the object of the other fields (made once: MATERIALIZED), its closing brace
    # replaced by the optional fields'
    return (
        f"WITH w AS MATERIALIZED (SELECT seq, json_object({', '.join(always)}) AS o, {kept}"
        " FROM sales WHERE uploaded_at IS NULL AND seq > ? ORDER BY seq LIMIT ?)"
        f" SELECT seq, substr(o, 1, length(o) - 1) || {' || '.join(optional)} || '}}' FROM w"
    )


PENDING_JSON = pending_json_sql()


COUNTS = (
    "SELECT coalesce((SELECT max(seq) FROM sales), 0),"
    " (SELECT count(*) FROM sales INDEXED BY sales_pending WHERE uploaded_at IS NULL)"
)

# A card's use of one rule since a time: each sale's discount for the rule, less what
# its void or refunds gave back; a use counts while something of it remains.
USAGE = (
    "SELECT count(*) FILTER (WHERE remaining > 0), coalesce(sum(remaining), 0) FROM ("
    " SELECT max(0, d.value - coalesce(("
    "   SELECT sum(rd.value) FROM sales AS r, json_each(r.basket, '$.discounts') AS rd"
    "   WHERE r.ref_seq = s.seq AND r.kind IS NOT NULL AND rd.key = d.key), 0)) AS remaining"
    " FROM sales AS s, json_each(s.basket, '$.discounts') AS d"
    " WHERE s.kind IS NULL AND s.token = ? AND s.at >= ? AND d.key = ?)"
)


class Readers:
    """Read-only connections to the journal at ``path``, one for each reader at a
    time, opened when none is free and kept (up to :data:`READERS_KEPT`) for the next.

    Each query runs in autocommit and is read to its end before the connection goes
    back, so no read transaction stays open (it would hold back the WAL's checkpoint).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA query_only=ON")
        except BaseException:
            conn.close()
            raise
        return conn

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            closed = self._closed
            conn = self._idle.pop() if self._idle else None
        if closed:  # a closed connection: reading fails as with the writer's once closed
            conn = sqlite3.connect(":memory:")
            conn.close()
        elif conn is None:
            conn = self._open()
        try:
            yield conn
        finally:
            with self._lock:
                keep = not self._closed and len(self._idle) < READERS_KEPT
                if keep:
                    self._idle.append(conn)
            if not keep:
                conn.close()

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Every row of one query, read to its end."""
        with self.connection() as conn:
            return conn.execute(sql, params).fetchall()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class Journal:
    def __init__(self, path: Path, signer: Signer | None = None, check: bool = False) -> None:
        """Open (or make) the journal at ``path``. A journal found damaged is refused
        before SQLite touches it (:func:`check_damage`); ``check`` also runs SQLite's
        quick check of every page first (the daemon's start-up: 0.15 s for 190 MB, cached)."""
        self.path = path
        self.signer = signer  # the device key; without it the journal only reads
        self.lock = threading.RLock()
        if path.exists():
            check_damage(path)
            if check:
                quick_check(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE / COMMIT)
            conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self.db = sqlite_utils.Database(conn)
            self.db.enable_wal()
            self.db.execute("PRAGMA synchronous=FULL")
            self._migrate()
            self.readers = Readers(path)
            self.readers.all("SELECT 1")  # the file opens for reading too
        except sqlite3.Error as exc:
            if _is_damage(exc):
                fail_damaged(path, str(exc))
            if is_disk_full(exc) or is_short(path.parent):  # e.g. no room for the wal-index
                fail_full(path.parent, OPEN_REFUSED)
            raise JournalError(
                N_("cannot open the journal %(file)s: %(problem)s"),
                file=str(path),
                problem=str(exc),
            ) from None

    @classmethod
    def existing(cls, path: Path, signer: Signer | None = None, check: bool = False) -> Journal:
        """The journal of an enrolled terminal, which must be there: a new empty one
        would restart the sequence at 1 and fork the chain the union already holds."""
        if not path.is_file():
            raise JournalError(
                N_(
                    "no journal at %(file)s: it is made at enrolment and must not be lost; "
                    "restore it from the backup (docs/operations.md), or enrol this terminal again"
                ),
                file=str(path),
            )
        return cls(path, signer, check)

    def _migrate(self) -> None:
        self.db.execute("CREATE TABLE IF NOT EXISTS migrations (id INTEGER PRIMARY KEY)")
        done = {row[0] for row in self.db.execute("SELECT id FROM migrations").fetchall()}
        for number, sql in enumerate(MIGRATIONS, start=1):
            if number in done:
                continue
            with self.db.atomic():
                for statement in sql.split(";"):
                    if statement.strip():
                        self.db.execute(statement)
                self.db.execute("INSERT INTO migrations (id) VALUES (?)", [number])

    @_locked
    def close(self) -> None:
        self.readers.close()
        self.db.close()

    def _tail(self) -> tuple[int, str]:
        row = self.db.execute("SELECT seq, hash FROM sales ORDER BY seq DESC LIMIT 1").fetchone()
        return (0, GENESIS) if row is None else (int(row[0]), str(row[1]))

    @contextmanager
    def _write(self) -> Iterator[None]:
        """A write transaction taken with BEGIN IMMEDIATE.

        IMMEDIATE takes the write lock before the sale's sequence number is read, so
        another process (the sync marking sales uploaded) can never make the
        commit fail half-way with SQLITE_BUSY on a lock upgrade.
        """
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self.db.execute("COMMIT")
        except BaseException:
            # SQLite has rolled back already after some errors (a full disk, SQLITE_FULL)
            if self.db.conn.in_transaction:
                self.db.execute("ROLLBACK")
            raise

    @_locked
    def append(self, draft: SaleDraft, at: datetime) -> Sale:
        """Durably record one sale: ``draft`` as the next in the chain, at ``at``.

        Returns the sale as stored (with seq, sale_id, at, prev_hash, hash and the
        device signature over the hash).
        """
        return self._append(lambda: draft, at)

    @_locked
    def append_reversal(
        self,
        seq: int,
        build: Callable[[Sale, list[Sale]], SaleDraft],
        at: datetime,
        once: Once | None = None,
    ) -> Sale:
        """Durably record the entry ``build(sale, reversals)`` makes of sale ``seq`` and
        the entries that already reverse it (a void or refund: pact.reversal), reading
        both in the write transaction, so that no other process reverses the sale
        between the check and the write. ``build`` raises to record nothing. With
        ``once``, its answer is kept in the same transaction (:meth:`replay`)."""

        def draft() -> SaleDraft:
            sale = self._entry(seq)
            if sale is None:  # (404 no_such_sale, as for reading it)
                raise UnknownSaleError(
                    N_("there is no sale %(seq)s in this terminal's journal"), seq=seq
                )
            return build(sale, self._reversals_of(seq))

        return self._append(draft, at, once)

    def replay(self, key: str, since: datetime) -> Kept | None:
        """The answer kept for Idempotency-Key ``key`` by a void or refund journaled at
        ``since`` or later (None: none)."""
        rows = self.readers.all(
            "SELECT fingerprint, answer FROM replays WHERE key = ? AND kept_at >= ?",
            [key, iso(since)],
        )
        return Kept(rows[0][0], json.loads(rows[0][1])) if rows else None

    def _append(
        self, make: Callable[[], SaleDraft], at: datetime, once: Once | None = None
    ) -> Sale:
        if self.signer is None:
            raise JournalError(N_("the sale was NOT recorded: the journal has no device key"))
        check_space(self.path.parent, SALE_REFUSED)  # refused whole, before a write fails
        try:
            with self._write():
                draft = make()
                seq, prev = self._tail()
                sale = seal(
                    draft, seq=seq + 1, sale_id=str(uuid.uuid4()), at=iso(at), prev_hash=prev
                )
                sale = sign_entry(self.signer, sale)
                self.db.execute(INSERT_SALE, sale.as_row())
                if once is not None:
                    self.db.execute("DELETE FROM replays WHERE kept_at < ?",
                                    [iso(at - ANSWERS_KEPT_FOR)])  # fmt: skip
                    answer = json.dumps(once.answer(sale), ensure_ascii=False, sort_keys=True)
                    self.db.execute(KEEP_ANSWER, [once.key, once.fingerprint, sale.seq, answer,
                                                  sale.at])  # fmt: skip
        except sqlite3.Error as exc:
            self._write_failed(exc)
        return sale

    def _write_failed(self, exc: sqlite3.Error) -> NoReturn:
        """Raise what a failed write means: a full disk, a damaged file, or else in words."""
        if is_disk_full(exc):
            fail_full(self.path.parent, SALE_REFUSED)
        if _is_damage(exc):
            fail_damaged(self.path, str(exc))
        raise JournalError(
            N_("the sale was NOT recorded: journal write failed (%(problem)s)"),
            problem=str(exc),
        ) from None

    def pending(self, limit: int = 500, after: int = 0) -> list[Sale]:
        """Sales not yet acknowledged by the central service, oldest first, from after
        seq ``after`` (the sync reads the next batch while the last is being sent): on a
        read connection, not under the journal's lock (a batch of 500 held a checkout up
        to 9 ms behind the sync: bench/bgsync.py). Entries never change once written but
        for ``uploaded_at``, which only the sync sets, so the read sees its last mark."""
        rows = self.readers.all(
            "SELECT * FROM sales WHERE uploaded_at IS NULL AND seq > ? ORDER BY seq LIMIT ?",
            [after, limit],
        )
        return [Sale.from_row(r) for r in rows]

    def pending_json(self, limit: int = 500, after: int = 0) -> list[tuple[int, bytes]]:
        """:meth:`pending` as the wire carries the entries: ``(seq, the entry's JSON)``
        (:func:`wire_json_sql`), as the sync sends them."""
        rows = self.readers.all(PENDING_JSON, [after, limit])
        return [(seq, text.encode()) for seq, text in rows]

    @_locked
    def mark_uploaded(self, through_seq: int, at: datetime) -> int:
        """Mark the entries through ``through_seq`` acknowledged by the union.

        The mark is committed without waiting for the disk (``synchronous=NORMAL``, for
        this one transaction, under the journal's lock: no entry is journaled so): a
        mark lost to a power cut only sends its entries again, which the union holds
        once, while each fsync of the sync's marks held the shop's checkouts behind it
        (they wait for the write lock). The next entry's commit (FULL) makes the mark
        durable with it; the WAL never holds half a transaction either way."""
        self.db.execute("PRAGMA synchronous=NORMAL")
        try:
            with self._write():
                cursor = self.db.execute(
                    "UPDATE sales SET uploaded_at = ? WHERE seq <= ? AND uploaded_at IS NULL",
                    [iso(at), through_seq],
                )
        except sqlite3.Error as exc:  # unmarked: uploaded again next time (deduplicated)
            if is_disk_full(exc):
                fail_full(self.path.parent, SYNC_REFUSED)
            self._write_failed(exc)
        finally:
            self.db.execute("PRAGMA synchronous=FULL")
        return cursor.rowcount

    def entries_after(self, after_seq: int, limit: int) -> list[Sale]:
        """At most ``limit`` entries after ``after_seq``, in order, uploaded or not (sent
        again to a union whose copy lost them)."""
        rows = self.readers.all(
            "SELECT * FROM sales WHERE seq > ? ORDER BY seq LIMIT ?", [after_seq, limit]
        )
        return [Sale.from_row(r) for r in rows]

    def sales(self) -> list[Sale]:
        """Every entry, oldest first (one consistent read: a checkout goes on meanwhile)."""
        return [Sale.from_row(r) for r in self.readers.all("SELECT * FROM sales ORDER BY seq")]

    def between(self, start: datetime, end: datetime) -> list[Sale]:
        """The entries journaled at ``start`` or later and before ``end``, oldest first:
        a day's report reads its day only (the index on ``at``), not the whole journal."""
        rows = self.readers.all(
            "SELECT * FROM sales WHERE at >= ? AND at < ? ORDER BY seq", [iso(start), iso(end)]
        )
        return [Sale.from_row(r) for r in rows]

    def recent(self, limit: int = 10) -> list[dict[str, Any]]:
        """The newest sales, voids and refunds (not events), newest first, for the
        cashier page: each as JSON (:meth:`Sale.as_json`) with ``uploaded``."""
        rows = self.readers.all(
            "SELECT * FROM sales WHERE kind IS NULL OR kind != 'event' ORDER BY seq DESC LIMIT ?",
            [limit],
        )
        return [
            dict(Sale.from_row(r).as_json(), uploaded=r["uploaded_at"] is not None) for r in rows
        ]

    @_locked
    def usage(self, token: str, rule_id: str, since: datetime) -> RuleUsage:
        """How often, and for how much, ``rule_id`` discounted this card since ``since``.

        Counted from each sale's hashed ``basket.discounts``, so a quota follows the
        rule id across policy versions.
        """
        uses, amount = self.db.execute(USAGE, [token, iso(since), rule_id]).fetchone()
        return RuleUsage(int(uses), int(amount))

    def newest_at(self) -> str | None:
        """The time of the newest entry (ISO 8601 UTC), None for an empty journal."""
        rows = self.readers.all("SELECT at FROM sales ORDER BY seq DESC LIMIT 1")
        return str(rows[0][0]) if rows else None

    @_locked
    def event_notes(self, since: str) -> list[str]:
        """The notes of the event entries journaled at ``since`` (ISO 8601 UTC) or later,
        oldest first (the offline limits ask which they journaled: rare)."""
        rows = self.db.execute(
            "SELECT note FROM sales WHERE kind = 'event' AND at >= ? ORDER BY seq", [since]
        ).fetchall()
        return [str(row[0]) for row in rows if row[0] is not None]

    @_locked
    def entry(self, seq: int) -> Sale | None:
        return self._entry(seq)

    def _entry(self, seq: int) -> Sale | None:
        if not 1 <= seq < 2**63:  # SQLite's integers: a bigger seq is no entry
            return None
        row = next(iter(self.db.query("SELECT * FROM sales WHERE seq = ?", [seq])), None)
        return None if row is None else Sale.from_row(row)

    @_locked
    def reversals_of(self, seq: int) -> list[Sale]:
        """The entries that reverse sale ``seq`` (its void, its refunds), oldest first."""
        return self._reversals_of(seq)

    def _reversals_of(self, seq: int) -> list[Sale]:
        rows = self.db.query("SELECT * FROM sales WHERE ref_seq = ? ORDER BY seq", [seq])
        return [Sale.from_row(r) for r in rows]

    def counts(self) -> tuple[int, int]:
        """(all entries, entries not yet uploaded), as of the last commit.

        Without reading the journal through: every entry takes the next seq from 1
        (the chain's order; nothing is ever deleted), so the newest seq, at the end
        of the table's b-tree, is their number; the pending ones are counted in the
        partial index that holds only them (``sales_pending``; as many as wait for
        upload, at most the offline limit's cap). One statement: both from the same
        commit."""
        [(total, pending)] = self.readers.all(COUNTS)
        return int(total), int(pending)

    def verify_tail(self, device_key: Ed25519PublicKey) -> int:
        """Check what the union does not hold yet: the chain of the entries not yet
        uploaded from the last uploaded one, and the newest entry's signature (which
        covers them all through the chain); return the number of entries checked.
        Cheap enough for every start-up; :meth:`verify` checks everything."""
        with self.lock:
            row = self.db.execute("SELECT min(seq) FROM sales WHERE uploaded_at IS NULL").fetchone()
            first = row[0] if row[0] is not None else self._tail()[0]
            base = self._entry(first - 1) if first > 1 else None
            rows = self.db.query("SELECT * FROM sales WHERE seq >= ? ORDER BY seq", [first])
            tail = [Sale.from_row(r) for r in rows]
        if not tail:
            return 0
        try:
            check_chain(tail, base.hash if base else GENESIS, first - 1)
            check_signatures(device_key, tail[-1:])
        except DeviceSignatureError as exc:
            raise JournalError(
                N_("journal signature refused: %(problem)s"), problem=exc.msg
            ) from None
        except ChainError as exc:
            raise JournalError(N_("journal chain broken: %(problem)s"), problem=exc.msg) from None
        return len(tail)

    def verify(self, device_key: Ed25519PublicKey | None = None) -> int:
        """Check the whole hash chain and, given the device's public key, every sale's
        device signature; return the number of sales. The error names the sale."""
        sales = self.sales()
        try:
            check_chain(sales, GENESIS, 0)
            if device_key is not None:
                check_signatures(device_key, sales)
        except DeviceSignatureError as exc:
            raise JournalError(
                N_("journal signature refused: %(problem)s"), problem=exc.msg
            ) from None
        except ChainError as exc:
            raise JournalError(N_("journal chain broken: %(problem)s"), problem=exc.msg) from None
        return len(sales)
