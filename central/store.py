"""The central store: one data layer over SQLite and PostgreSQL (SQLAlchemy Core).

Every method runs in its own transaction. Money columns are BIGINT fen.
"""

from __future__ import annotations

import hashlib
import json
import operator
import sqlite3
import types
import typing
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from central import migrate
from central.errors import ConflictError, InputError, NotFoundError, StoreError
from central.sqlitewait import BUSY_TIMEOUT_MS, begin_soon
from central.statement import UNION_TIMEZONE
from pact.cards import shown_member
from pact.chain import GENESIS, check_chain, entry_hash
from pact.errors import ChainError
from pact.money import fen
from pact.receipt import verification_code
from pact.sale import REVERSALS, Sale, field_types, row_encoders
from pact.tally import (
    MEMBER_FIGURES,
    SALE_FIGURES,
    add,
    by_month,
    fold_members,
    fold_sales,
    local_day,
    month_of,
)
from pact.text import N_

metadata = sa.MetaData()

members = sa.Table(
    "members",
    metadata,
    sa.Column("member_id", sa.String(64), primary_key=True),
    sa.Column("token", sa.String(32), nullable=False, unique=True),  # hex keyed token
    sa.Column("pan_last4", sa.String(4), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, server_default="active"),
    sa.Column("tier", sa.Integer, nullable=False, server_default="0"),
    sa.Column("valid_until", sa.Date, nullable=True),
    sa.Column("district", sa.String(64), nullable=True),
    sa.Column("workplace", sa.String(128), nullable=True),
)

# Each member's values from a date on (an import that changed them, or the first):
# the audit reads a member's standing at a past time from here.
member_history = sa.Table(
    "member_history",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("member_id", sa.String(64), nullable=False, index=True),
    sa.Column("at", sa.String(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # active, suspended, left
    sa.Column("tier", sa.Integer, nullable=False),
    sa.Column("valid_until", sa.Date, nullable=True),
    sa.Column("district", sa.String(64), nullable=True),
    sa.Column("workplace", sa.String(128), nullable=True),
)
HISTORY_FIELDS = ("status", "tier", "valid_until", "district", "workplace")
MEMBER_FIELDS = ("token", "pan_last4", *HISTORY_FIELDS)  # an import compares these
IMPORT_CHUNK = 2000  # members read, compared and written at a time

merchants = sa.Table(
    "merchants",
    metadata,
    sa.Column("merchant_id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("basis_points", sa.Integer, nullable=False),
    sa.Column("status_changed_at", sa.String(32), nullable=False),
    # the registry
    sa.Column("category", sa.String(32), nullable=True),  # supermarket, pharmacy, cinema, ...
    sa.Column("district", sa.String(64), nullable=True),
    sa.Column("address", sa.String(200), nullable=True),
    sa.Column("contact", sa.String(100), nullable=True),
    # admission: the standards it agreed to (a JSON list), when, and by which admin
    sa.Column("standards", sa.Text, nullable=True),
    sa.Column("admitted_at", sa.String(32), nullable=True),
    sa.Column("admitted_by", sa.String(64), nullable=True),
    # closing, once it has left: its final statement and audit bundle written (to
    # final_folder), kept until retain_until
    sa.Column("closed_at", sa.String(32), nullable=True),
    sa.Column("retain_until", sa.String(32), nullable=True),
    sa.Column("final_folder", sa.String(500), nullable=True),
)

# A merchant's registry entry (`central add-merchant`, the console): field -> characters
REGISTRY_LENGTHS = {
    name: typing.cast(sa.String, merchants.c[name].type).length or 0
    for name in ("category", "district", "address", "contact")
}

# Each change of a merchant's status (admitted active, suspended, exited, active again):
# when it was decided (``at``), when it takes effect (``effective_at``: later when it was
# decided ahead, and signed into the policy's status_changes), why, and by whom.
merchant_status_history = sa.Table(
    "merchant_status_history",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("merchant_id", sa.ForeignKey("merchants.merchant_id"), nullable=False, index=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("at", sa.String(32), nullable=False),
    sa.Column("effective_at", sa.String(32), nullable=True),
    sa.Column("reason", sa.String(500), nullable=True),
    sa.Column("decided_by", sa.String(64), nullable=True),
)

terminals = sa.Table(
    "terminals",
    metadata,
    sa.Column("terminal_id", sa.String(32), primary_key=True),
    sa.Column("merchant_id", sa.ForeignKey("merchants.merchant_id"), nullable=False),
    sa.Column("secret_sha256", sa.String(64), nullable=False),
    sa.Column("enrolled_at", sa.String(32), nullable=False),
    # The device's Ed25519 public key (hex), registered at its first sync; then fixed.
    sa.Column("device_key", sa.String(64), nullable=True),
    sa.Column("device_key_at", sa.String(32), nullable=True),
    # The fleet view: when it last called, and what it reported at the end of its last
    # sync (versions installed, entries still pending, warnings as a JSON list).
    sa.Column("last_contact_at", sa.String(32), nullable=True),
    sa.Column("reported_at", sa.String(32), nullable=True),
    sa.Column("root_version", sa.Integer, nullable=True),
    sa.Column("snapshot_version", sa.Integer, nullable=True),
    sa.Column("roster_version", sa.Integer, nullable=True),
    sa.Column("policy_version", sa.Integer, nullable=True),
    sa.Column("pending", sa.BigInteger, nullable=True),
    sa.Column("warnings", sa.Text, nullable=True),
    sa.Column("software", sa.String(64), nullable=True),
    # Revoked: its calls are refused from then on; the last entry held then.
    sa.Column("revoked_at", sa.String(32), nullable=True),
    sa.Column("revoked_reason", sa.String(200), nullable=True),
    sa.Column("revoked_last_seq", sa.BigInteger, nullable=True),
    # Decommissioned by its shop once the union held every entry (then also revoked).
    sa.Column("decommissioned_at", sa.String(32), nullable=True),
)

# Uploads refused as evidence (a device signature or the chain does not verify), kept
# for the compliance audit: the batch is not stored, the refusal is.
upload_refusals = sa.Table(
    "upload_refusals",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("terminal_id", sa.String(32), nullable=False, index=True),
    sa.Column("received_at", sa.String(32), nullable=False),
    sa.Column("first_seq", sa.BigInteger, nullable=True),
    sa.Column("last_seq", sa.BigInteger, nullable=True),
    sa.Column("reason", sa.Text, nullable=False),
)

# The column type of each type a sale's field may have (pact.sale.Sale; ``X | None``
# makes a nullable column of X's type). The Text columns hold JSON (Sale.as_row):
# rules as a list; basket (lines, tier, discounts; hashed) or NULL.
SALE_COLUMN_TYPES: dict[Any, type[sa.types.TypeEngine[Any]]] = {
    int: sa.BigInteger,
    bool: sa.Boolean,
    str: sa.String,  # of its length in SALE_STRING_LENGTHS
    tuple[str, ...]: sa.Text,
    Mapping[str, Any]: sa.Text,
}
SALE_STRING_LENGTHS = {
    "sale_id": 36,  # a UUID
    "at": 32,
    "terminal_id": 32,
    "merchant_id": 32,
    "token": 32,  # hex keyed token
    "pan_last4": 4,
    "prev_hash": 64,
    "hash": 64,
    "sig": 128,  # hex Ed25519 device signature
    "kind": 16,  # null (a sale), "void", "refund" or "event"
    "note": 800,  # a void's reason: 200 characters (up to 4 bytes each in UTF-8)
}
SALE_COLUMN_OPTIONS: dict[str, dict[str, Any]] = {
    "terminal_id": {"primary_key": True},
    "seq": {"primary_key": True, "autoincrement": False},
    "sale_id": {"unique": True},
    # by merchant: ix_sales_merchant_at (merchant_id, at), below (0014 dropped the other)
}


def sale_column(name: str, kind: Any) -> sa.Column[Any]:
    """The ``sales`` column of the sale's field ``name``, of type ``kind``."""
    args = typing.get_args(kind) if isinstance(kind, types.UnionType) else ()
    nullable = types.NoneType in args
    if nullable:
        (kind,) = (a for a in args if a is not types.NoneType)
    if kind not in SALE_COLUMN_TYPES:
        raise TypeError(f"the central store has no column type for Sale.{name} ({kind})")
    if kind is str:
        if name not in SALE_STRING_LENGTHS:
            raise TypeError(f"give sales.{name} a length in SALE_STRING_LENGTHS")
        column_type: sa.types.TypeEngine[Any] = sa.String(SALE_STRING_LENGTHS[name])
    else:
        column_type = SALE_COLUMN_TYPES[kind]()
    options = SALE_COLUMN_OPTIONS.get(name, {})
    if not options.get("primary_key"):
        options = {**options, "nullable": nullable}
    return sa.Column(name, column_type, **options)


def sale_columns(cls: type[Sale] = Sale) -> list[sa.Column[Any]]:
    """A column for each field of ``cls``: terminal_id first (the primary key is
    (terminal_id, seq)), then the others in field order."""
    kinds = field_types(cls)
    order = ["terminal_id", *(name for name in kinds if name != "terminal_id")]
    return [sale_column(name, kinds[name]) for name in order]


sales = sa.Table(
    "sales",
    metadata,
    *sale_columns(),
    sa.Column("received_at", sa.String(32), nullable=False),
    # the receipt's verification code (pact.receipt), to find a slip's entry
    sa.Column("receipt_code", sa.String(11), nullable=True, index=True),
    # a merchant's entries since a time: the usage file (pact.usage), statements
    sa.Index("ix_sales_merchant_at", "merchant_id", "at"),
)

# One-time enrolment codes (central.service.Union.create_enrol_code): the SHA-256 of
# the code only; used once, before it expires.
enrol_codes = sa.Table(
    "enrol_codes",
    metadata,
    sa.Column("code_sha256", sa.String(64), primary_key=True),
    sa.Column("terminal_id", sa.String(32), nullable=False),
    sa.Column("merchant_id", sa.ForeignKey("merchants.merchant_id"), nullable=False),
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("expires_at", sa.String(32), nullable=False),
    sa.Column("used_at", sa.String(32), nullable=True),
)

# The people of the console (central.console): union admins, auditors and merchant
# users (bound to one merchant). Passwords as argon2id hashes; a lock after failures.
ROLES = ("admin", "auditor", "merchant")
users = sa.Table(
    "users",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("merchant_id", sa.ForeignKey("merchants.merchant_id"), nullable=True),
    sa.Column("password_hash", sa.String(200), nullable=False),
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
    sa.Column("locked_until", sa.String(32), nullable=True),
    # the number of the user's sessions: a console cookie names it, and signing out
    # moves it on (Flask keeps the session in the signed cookie: nothing else ends it)
    sa.Column("sessions", sa.Integer, nullable=False, server_default="0"),
)

# Policy drafts: terms a union admin proposed, signed only once a second admin approves
# them (four eyes); the decision and the version it became are kept.
policy_drafts = sa.Table(
    "policy_drafts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("merchant_id", sa.ForeignKey("merchants.merchant_id"), nullable=False),
    sa.Column("terms", sa.Text, nullable=False),
    sa.Column("drafted_by", sa.String(64), nullable=False),
    sa.Column("drafted_at", sa.String(32), nullable=False),
    sa.Column("decided_by", sa.String(64), nullable=True),
    sa.Column("decided_at", sa.String(32), nullable=True),
    sa.Column("decision", sa.String(16), nullable=True),  # approved, rejected
    sa.Column("version", sa.Integer, nullable=True),  # the signed version it became
)

# Members' complaints against merchants, recorded by union staff: they stand among the
# merchant's audit findings, so that an exit rests on evidence.
complaints = sa.Table(
    "complaints",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("merchant_id", sa.ForeignKey("merchants.merchant_id"), nullable=False, index=True),
    sa.Column("day", sa.Date, nullable=False),  # when it happened
    sa.Column("what", sa.Text, nullable=False),
    sa.Column("pan_last4", sa.String(4), nullable=True),
    sa.Column("recorded_at", sa.String(32), nullable=False),
    sa.Column("recorded_by", sa.String(64), nullable=False),
)

# The audit's runs (``unioncard central audit run``, the console's Audit page): which
# merchant and days, when, by whom, how many findings; and each run's findings
# (pact.audit.Finding), the explanation kept in English and as its message id with
# parameters (pact.text.Msg, JSON) so the console shows it in the reader's language.
audit_runs = sa.Table(
    "audit_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("merchant_id", sa.ForeignKey("merchants.merchant_id"), nullable=False, index=True),
    sa.Column("first_day", sa.Date, nullable=False),
    sa.Column("last_day", sa.Date, nullable=False),
    sa.Column("run_at", sa.String(32), nullable=False),
    sa.Column("run_by", sa.String(64), nullable=False),
    sa.Column("findings", sa.Integer, nullable=False),
    # running (started by the console, its findings not stored yet), done, failed
    sa.Column("state", sa.String(8), nullable=False, server_default="done"),
    sa.Column("finished_at", sa.String(32), nullable=True),
    sa.Column("error", sa.String(500), nullable=True),  # why a failed run stopped
    # when a running run last said it is alive (Union.finish_audit, every minute)
    sa.Column("alive_at", sa.String(32), nullable=True),
)
audit_findings = sa.Table(
    "audit_findings",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("run_id", sa.ForeignKey("audit_runs.id"), nullable=False, index=True),
    sa.Column("severity", sa.String(8), nullable=False),  # high, medium, low
    sa.Column("terminal_id", sa.String(32), nullable=False),  # "-" for none (a complaint)
    sa.Column("seqs", sa.Text, nullable=False),  # a JSON list of the entries' seqs
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),  # English
    sa.Column("message", sa.Text, nullable=False),  # {"id": ..., "params": {...}}
)

# Wrong enrolment codes tried, by where from: the guessing limit counts them.
enrol_failures = sa.Table(
    "enrol_failures",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("at", sa.String(32), nullable=False, index=True),
)

# The terms (offers) of each merchant's policy, as union staff set them (central.policies).
merchant_terms = sa.Table(
    "merchant_terms",
    metadata,
    sa.Column("merchant_id", sa.ForeignKey("merchants.merchant_id"), primary_key=True),
    sa.Column("terms", sa.Text, nullable=False),  # canonical JSON (pact.policy terms)
    sa.Column("updated_at", sa.String(32), nullable=False),
)

# A member's earlier tokens: a new card, or the switch to another token scheme, gives
# a member a new token; sales made with the old one still belong to the member until
# the change (the audit's membership, bundles' member facts).
member_tokens = sa.Table(
    "member_tokens",
    metadata,
    sa.Column("token", sa.String(32), primary_key=True),  # hex keyed token, no longer in use
    sa.Column("member_id", sa.String(64), nullable=False, index=True),
    sa.Column("until", sa.String(32), nullable=False),  # the import that replaced it
)

# The union's own facts about its data: ``token_scheme``, the scheme (pact.cards label)
# the members' tokens are made by (none before the first import).
union_settings = sa.Table(
    "union_settings",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(256), nullable=False),
)

signed_files = sa.Table(
    "signed_files",
    metadata,
    sa.Column("kind", sa.String(48), primary_key=True),  # "roster" or "policy:<merchant>"
    sa.Column("version", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("digest", sa.String(64), nullable=True),  # roster: body SHA-256; else file SHA-256
    sa.Column("data", sa.LargeBinary, nullable=False),
)


# The dashboard's running totals (pact.tally), kept up to date by ingest and the
# members' import in their own transactions, so the dashboard never reads the sales:
# per local day (the union's time zone) and merchant, and the same per local month
# (what the dashboard reads: its rows do not grow with the sales). Money in fen.
def _sales_totals(name: str, period: sa.Column[Any]) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        period,
        sa.Column("merchant_id", sa.String(32), primary_key=True),
        *(sa.Column(f, sa.BigInteger, nullable=False) for f in SALE_FIGURES),
    )


sales_daily = _sales_totals("sales_daily", sa.Column("day", sa.Date, primary_key=True))
sales_monthly = _sales_totals(
    "sales_monthly",
    sa.Column("month", sa.String(7), primary_key=True),  # YYYY-MM
)
# Members by local month, district and workplace ('' for none): the change in active
# members (a sum up to a month gives those active then), those who joined and left.
member_monthly = sa.Table(
    "member_monthly",
    metadata,
    sa.Column("month", sa.String(7), primary_key=True),
    sa.Column("district", sa.String(64), primary_key=True),
    sa.Column("workplace", sa.String(128), primary_key=True),
    *(sa.Column(f, sa.BigInteger, nullable=False) for f in MEMBER_FIGURES),
    sa.Index("ix_member_monthly_district", "district", "month"),
)


@dataclass(frozen=True)
class Settlement:
    merchant_id: str
    name: str
    status: str
    sales: int
    member_sales: int
    gross: int
    discount: int
    net: int
    voids: int = 0  # void entries; the other figures already have them subtracted
    refunds: int = 0  # refund entries; the money already has them subtracted

    def as_json(self) -> dict[str, Any]:
        return {
            "merchant_id": self.merchant_id,
            "name": self.name,
            "status": self.status,
            "sales": self.sales,
            "member_sales": self.member_sales,
            "gross_fen": self.gross,
            "discount_fen": self.discount,
            "net_fen": self.net,
            "voids": self.voids,
            "refunds": self.refunds,
        }


def settlement_table(rows: Sequence[Settlement]) -> list[str]:
    """The settlement as a text table, amounts in yuan (``unioncard central settlement``)."""
    out = [
        f"{'merchant':<10} {'name':<22} {'status':<9} {'sales':>6} {'members':>8} "
        f"{'gross':>12} {'discount':>10} {'net':>12} {'voids':>6} {'refunds':>7}"
    ]
    for r in rows:
        out.append(
            f"{r.merchant_id:<10} {r.name[:22]:<22} {r.status:<9} {r.sales:>6} "
            f"{r.member_sales:>8} {fen(r.gross):>12} {fen(r.discount):>10} {fen(r.net):>12}"
            f" {r.voids:>6} {r.refunds:>7}"
        )
    return out


LEFT_QUIETLY_SHARE = 10  # per cent of the members a full import may mark left unasked
LEFT_QUIETLY_MIN = 100  # ... and at least this many (a small union's month)


def left_quietly(held: int) -> int:
    """How many of ``held`` members a full import may mark left without being told
    (``allow_left``): a tenth, and at least 100."""
    return max(LEFT_QUIETLY_MIN, held * LEFT_QUIETLY_SHARE // 100)


@dataclass
class ImportResult:
    read: int = 0  # members in the file
    added: int = 0
    changed: int = 0  # whose card, status, tier, validity, district or workplace changed
    left: int = 0  # with --full: members not in the file, marked left

    def describe(self) -> str:
        text = f"read {self.read} members: {self.added} new, {self.changed} changed"
        return text + (f", {self.left} left the union" if self.left else "")


@dataclass(frozen=True)
class IngestResult:
    acked_through: int
    accepted: int
    duplicates: int
    # The upload began after the union's copy of the chain ends (its database restored
    # from an older backup): nothing stored, and the ack asks for the entries after
    # ``acked_through`` again.
    behind: bool = False


class _Overtaken(Exception):
    """An ingest's insert broke a unique key of ``sales``: another ingest of the same
    terminal may have stored entries after ``last_seq``, the tail this one had read."""

    def __init__(self, last_seq: int, reason: str) -> None:
        super().__init__(reason)
        self.last_seq, self.reason = last_seq, reason


_UPSERTS: dict[tuple[str, str], Any] = {}  # add_totals' statements, by dialect and table


def add_totals(
    conn: Connection,
    table: sa.Table,
    keys: Sequence[str],
    rows: Mapping[tuple[Any, ...], Mapping[str, int]],
) -> None:
    """Add ``rows`` (key values to figures) to the running totals of ``table``: a new
    row, or the figures added to the one there. In key order, so that two transactions
    adding to the same rows wait for each other rather than deadlock."""
    rows = {k: v for k, v in rows.items() if any(v.values())}
    if not rows:
        return
    names = [c.name for c in table.columns if c.name not in keys]
    stmt = _UPSERTS.get((conn.dialect.name, table.name))
    if stmt is None:  # the upsert is each dialect's own; made once
        stmt = (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(table)
        stmt = _UPSERTS[(conn.dialect.name, table.name)] = stmt.on_conflict_do_update(
            index_elements=list(keys), set_={n: table.c[n] + stmt.excluded[n] for n in names}
        )
    conn.execute(
        stmt,
        [
            {**dict(zip(keys, key, strict=True)), **{n: rows[key].get(n, 0) for n in names}}
            for key in sorted(rows)
        ],
    )


def among(conn: Connection, column: sa.Column[Any], values: Sequence[str]) -> Any:
    """``column IN values`` for thousands of values: on PostgreSQL ``= ANY(array)``, one
    parameter (an IN list of a chunk's 2,000 members is 2,000 parameters, a new
    statement text to parse each time)."""
    if conn.dialect.name == "postgresql":
        return column == sa.any_(sa.bindparam(None, list(values), type_=postgresql.ARRAY(sa.Text)))
    return column.in_(values)


def insert_rows(conn: Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` (mappings with the same keys) into ``table``: on PostgreSQL by
    ``COPY`` (the members' import writes millions of rows; psycopg's executemany sends
    an INSERT a row, which made the import about three times slower), elsewhere by
    executemany. A broken key or constraint is sa.exc.IntegrityError either way."""
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        conn.execute(table.insert(), list(rows))
        return
    import psycopg

    names = list(rows[0])
    sql = f"COPY {table.name} ({', '.join(names)}) FROM STDIN"
    driver = conn.connection.driver_connection  # psycopg's, in this transaction
    assert driver is not None
    try:
        with driver.cursor() as cur, cur.copy(sql) as copy:
            for row in rows:
                copy.write_row([row[n] for n in names])
    except psycopg.errors.IntegrityError as exc:
        raise sa.exc.IntegrityError(sql, None, exc) from None


# An ingest's new entries go into ``sales`` as lists of values in INGEST_COLUMNS order,
# straight to the connection's driver (sqlite3's executemany, psycopg's COPY) in the
# ingest's transaction: a dict a row (Sale.as_row) and SQLAlchemy's parameter handling
# of each took longer than the rest of the ingest (issue 14). The values are those of
# Sale.as_row, then received_at and the receipt code; tests/test_ingest_path.py checks
# that the rows stored are the very rows the dict insert stored, on both databases.
SALE_FIELDS = field_types(Sale)
INGEST_COLUMNS = (*SALE_FIELDS, "received_at", "receipt_code")
# the fields Sale.as_row encodes (rules, basket), with its own encoders
_ENCODED = [(i, encode) for i, encode in enumerate(row_encoders(Sale)) if encode is not None]
_sale_values = operator.attrgetter(*SALE_FIELDS)
_INSERT_SALES = (
    f"INSERT INTO sales ({', '.join(INGEST_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(INGEST_COLUMNS))})"
)
_COPY_SALES = f"COPY sales ({', '.join(INGEST_COLUMNS)}) FROM STDIN"
_TAIL = (  # a terminal's newest entry held (Store._tail), made once
    sa.select(sales.c.seq, sales.c.hash)
    .where(sales.c.terminal_id == sa.bindparam("terminal_id"))
    .order_by(sales.c.seq.desc())
    .limit(1)
)
# each column's type for psycopg's COPY (text format: it picks each value's writer once)
_COPY_TYPES = [
    {bool: "bool", int: "int8"}.get(sales.c[name].type.python_type, "text")
    for name in INGEST_COLUMNS
]


def sale_rows(entries: Iterable[Sale], received_at: str) -> Iterator[list[Any]]:
    """Each entry's row of ``sales``, INGEST_COLUMNS in order: its fields as
    Sale.as_row gives them (rules as JSON text of a list, basket as canonical JSON text,
    or None), ``received_at``, and its receipt code (pact.receipt)."""
    texts: dict[tuple[int, tuple[str, ...]], str] = {}  # a batch shares a few lists of rules
    for sale in entries:
        row = [*_sale_values(sale), received_at, verification_code(sale)]
        for i, encode in _ENCODED:
            value = row[i]
            if isinstance(value, tuple):  # a list of rule ids: encoded once a batch
                text = texts.get((i, value))
                if text is None:
                    text = texts[(i, value)] = encode(value)
                row[i] = text
            else:
                row[i] = encode(value)
        yield row


def insert_sales(conn: Connection, rows: Iterable[Sequence[Any]]) -> None:
    """Insert ``rows`` (:func:`sale_rows`) into ``sales`` in ``conn``'s transaction: on
    PostgreSQL by ``COPY``, on SQLite by sqlite3's executemany, each taking the rows
    as they are made; elsewhere through SQLAlchemy. A broken key or constraint is
    sa.exc.IntegrityError either way."""
    driver: Any = conn.connection.driver_connection  # the driver's, in this transaction
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg":
        import psycopg

        try:
            with driver.cursor() as cur, cur.copy(_COPY_SALES) as copy:
                copy.set_types(_COPY_TYPES)
                for row in rows:
                    copy.write_row(row)
        except psycopg.errors.IntegrityError as exc:
            raise sa.exc.IntegrityError(_COPY_SALES, None, exc) from None
    elif conn.dialect.name == "sqlite" and conn.dialect.driver == "pysqlite":
        import sqlite3

        try:
            driver.executemany(_INSERT_SALES, rows)
        except sqlite3.IntegrityError as exc:
            raise sa.exc.IntegrityError(_INSERT_SALES, None, exc) from None
    else:
        conn.execute(sales.insert(), [dict(zip(INGEST_COLUMNS, row, strict=True)) for row in rows])


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = sa.create_engine(url)

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # the driver begins nothing: _begin does
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            # A write transaction takes SQLite's write lock at its start, waiting out
            # busy_timeout behind another writer. Deferred, one that has read first
            # fails at once ("database is locked", SQLITE_BUSY_SNAPSHOT) when another
            # writer committed meanwhile: the soak's import beside uploads did.
            write = conn.get_execution_options().get(WRITE_OPTION, False)
            raw = conn.connection.driver_connection
            if write and isinstance(raw, sqlite3.Connection) and begin_soon(raw):
                return
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return sa.create_engine(url, pool_pre_ping=True)


WRITE_OPTION = "unioncard_write"  # a transaction that writes (see make_engine)


class Store:
    def __init__(self, engine: Engine, timezone: str = UNION_TIMEZONE) -> None:
        self.engine = engine
        self._writer = engine.execution_options(**{WRITE_OPTION: True})
        self.zone = ZoneInfo(timezone)  # the union's days and months of the dashboard's totals

    def _writing(self) -> AbstractContextManager[Connection]:
        """A transaction that writes (on SQLite: BEGIN IMMEDIATE, make_engine)."""
        return self._writer.begin()

    @classmethod
    def open(cls, url: str) -> Store:
        """Connect and create what is missing; a database that cannot be reached or used
        is a :class:`StoreError` naming it (without its password)."""
        try:
            store = cls(make_engine(url))
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise StoreError(
                N_("the database URL is not valid (%(reason)s): check --database-url"),
                reason=str(exc),
            ) from None
        shown = store.engine.url.render_as_string(hide_password=True)
        try:
            other = migrate.ready(store.engine)  # a new one is made at the head
            if other is not None:
                store.close()
                raise StoreError(
                    N_(
                        "the database %(database)s has the schema of another release "
                        "(revision %(revision)s; this release needs %(head)s): back it up, "
                        "then run `unioncard central migrate`"
                    ),
                    database=shown,
                    revision=other,
                    head=migrate.head(),
                )
        except sa.exc.SQLAlchemyError as exc:
            store.close()
            reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            raise StoreError(
                N_("cannot open the database %(database)s: %(reason)s"),
                database=shown,
                reason=reason,
            ) from None
        return store

    @staticmethod
    def migrate(url: str) -> tuple[str | None, str]:
        """Bring the database at ``url`` to this release's schema (central.migrate);
        returns (the revision it was at, the one it is at now)."""
        try:
            engine = make_engine(url)
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise StoreError(
                N_("the database URL is not valid (%(reason)s): check --database-url"),
                reason=str(exc),
            ) from None
        shown = engine.url.render_as_string(hide_password=True)
        try:
            return migrate.upgrade(engine)
        except migrate.UnknownRevision as exc:
            raise StoreError(
                N_(
                    "the database %(database)s is at revision %(revision)s, which this "
                    "release does not know: it was made by a newer release; run that one, "
                    "or restore a backup"
                ),
                database=shown,
                revision=str(exc),
            ) from None
        except sa.exc.SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            raise StoreError(
                N_("cannot migrate the database %(database)s: %(reason)s"),
                database=shown,
                reason=reason,
            ) from None
        finally:
            engine.dispose()

    def close(self) -> None:
        self.engine.dispose()

    def holds_a_union(self) -> bool:
        """Whether any member, merchant, terminal or sale is stored: a union's data,
        which only its own keys match."""
        with self.engine.connect() as conn:
            return any(
                conn.execute(sa.select(table).limit(1)).first() is not None
                for table in (members, merchants, terminals, sales)
            )

    # -- members -----------------------------------------------------------------
    def import_members(
        self,
        rows: Iterable[tuple[int, Mapping[str, Any]]],
        at: str,
        full: bool = False,
        progress: Callable[[int], object] | None = None,
        token_scheme: str | None = None,
        allow_left: int | None = None,
    ) -> ImportResult:
        """Add or update members (``(line, row)``), all in one transaction, a chunk at a
        time: new and changed members get a history row at ``at``; with ``full``, the
        members not in ``rows`` are marked left. InputError (nothing written) names the
        line of a member listed twice or of a card another member has.

        A full import that would mark more members left than :func:`left_quietly`
        allows (a file cut short, or another district's) is refused, unless
        ``allow_left`` says how many may leave; more than that is refused too.

        ``token_scheme`` names the scheme the rows' tokens are made by: it is recorded
        with them. Tokens of another scheme than the members held are taken only with
        ``full`` (the switch-over: every member re-tokenised at once)."""
        seen = sa.Table(
            f"import_seen_{uuid.uuid4().hex[:12]}",  # its own: a failed import's may linger
            sa.MetaData(),
            sa.Column("member_id", sa.String(64), primary_key=True),
            sa.Column("line", sa.Integer, nullable=False),
            prefixes=["TEMPORARY"],
        )
        result = ImportResult()
        month = month_of(local_day(at, self.zone))
        tally: dict[Any, dict[str, int]] = {}  # the dashboard's totals (member_monthly)

        def count(changes: Iterable[tuple[Mapping[str, Any] | None, Mapping[str, Any]]]) -> None:
            for key, figures in fold_members(changes, month).items():
                add(tally, key, figures)

        with self._writing() as conn:
            held = self._members_held(conn)  # before the file's: its new ones leave none
            held_scheme = self._token_scheme(conn)
            switching = token_scheme is not None and token_scheme != held_scheme
            if switching and held_scheme is not None and not full:
                raise InputError(
                    N_(
                        "the members' tokens are of the scheme %(held)s and the keys now make "
                        "%(scheme)s: import the full members file with --full, which "
                        "re-tokenises every member at once"
                    ),
                    held=str(held_scheme),
                    scheme=str(token_scheme),
                )
            seen.create(conn)  # (a failure rolls back; on SQLite the table stays unused)
            chunk: list[tuple[int, Mapping[str, Any]]] = []
            for item in rows:
                chunk.append(item)
                if len(chunk) >= IMPORT_CHUNK:
                    self._import_chunk(conn, seen, chunk, at, result, count)
                    if progress is not None:
                        progress(len(chunk))
                    chunk = []
            if chunk:
                self._import_chunk(conn, seen, chunk, at, result, count)
                if progress is not None:
                    progress(len(chunk))
            if full and not result.read:  # (rolled back: nothing written)
                raise InputError(
                    N_(
                        "the members file lists no members: a full import (--full) would mark "
                        "every member as left; check the file (an export cut short?)"
                    )
                )
            if full:
                self._check_leaving(conn, seen, allow_left, held)
                result.left = self._mark_left(conn, seen, at, count)
            add_totals(conn, member_monthly, ("month", "district", "workplace"), tally)
            seen.drop(conn)
            if switching:
                conn.execute(union_settings.delete().where(union_settings.c.name == "token_scheme"))
                conn.execute(
                    union_settings.insert().values(name="token_scheme", value=token_scheme)
                )
        return result

    @staticmethod
    def _token_scheme(conn: Connection) -> str | None:
        return conn.execute(
            sa.select(union_settings.c.value).where(union_settings.c.name == "token_scheme")
        ).scalar_one_or_none()

    def token_scheme(self) -> str | None:
        """The scheme the members' tokens are made by (None before the first import)."""
        with self.engine.connect() as conn:
            return self._token_scheme(conn)

    @staticmethod
    def _import_chunk(
        conn: Connection,
        seen: sa.Table,
        chunk: Sequence[tuple[int, Mapping[str, Any]]],
        at: str,
        result: ImportResult,
        count: Callable[[list[tuple[Mapping[str, Any] | None, Mapping[str, Any]]]], None],
    ) -> None:
        ids = [row["member_id"] for _, row in chunk]
        lines = {row["member_id"]: line for line, row in chunk}
        if len(lines) < len(chunk):
            twice = next(line for line, row in chunk if lines[row["member_id"]] != line)
            member = next(row["member_id"] for line, row in chunk if line == twice)
            raise InputError(
                N_("members file line %(line)s: member %(member)s is listed twice"),
                line=twice,
                member=shown_member(member),
            )
        earlier = conn.execute(
            sa.select(seen.c.member_id, seen.c.line).where(among(conn, seen.c.member_id, ids))
        ).first()
        if earlier is not None:
            raise InputError(
                N_(
                    "members file line %(line)s: member %(member)s is listed twice "
                    "(first on line %(first)s)"
                ),
                line=lines[earlier[0]],
                member=shown_member(earlier[0]),
                first=str(earlier[1]),
            )
        insert_rows(conn, seen, [{"member_id": m, "line": lines[m]} for m in ids])
        held = {
            r["member_id"]: dict(r)
            for r in conn.execute(
                members.select().where(among(conn, members.c.member_id, ids))
            ).mappings()
        }
        new = [dict(row) for _, row in chunk if row["member_id"] not in held]
        changed = [
            dict(row)
            for _, row in chunk
            if row["member_id"] in held
            and any(
                held[row["member_id"]][k] != row[k] for k in ("token", "pan_last4", *HISTORY_FIELDS)
            )
        ]
        try:
            if changed:
                conn.execute(
                    members.delete().where(
                        among(conn, members.c.member_id, [r["member_id"] for r in changed])
                    )
                )
            insert_rows(conn, members, new + changed)
        except sa.exc.IntegrityError:
            raise InputError(
                N_(
                    "two members have the same card: each card may belong to one member "
                    "(in the lines %(first)s to %(last)s)"
                ),
                first=min(lines.values()),
                last=max(lines.values()),
            ) from None
        history = [
            {"member_id": r["member_id"], "at": at, **{k: r[k] for k in HISTORY_FIELDS}}
            for r in new + changed
            if r["member_id"] not in held
            or any(held[r["member_id"]][k] != r[k] for k in HISTORY_FIELDS)
        ]
        insert_rows(conn, member_history, history)
        replaced = [
            {"token": old, "member_id": r["member_id"], "until": at}
            for r in changed
            if (old := held[r["member_id"]]["token"]) != r["token"]
        ]
        if replaced:
            conn.execute(
                member_tokens.delete().where(
                    among(conn, member_tokens.c.token, [r["token"] for r in replaced])
                )
            )
            insert_rows(conn, member_tokens, replaced)
        count([(held.get(r["member_id"]), r) for r in new + changed])
        result.read += len(chunk)
        result.added += len(new)
        result.changed += len(changed)

    @staticmethod
    def _missing(seen: sa.Table) -> sa.Select[tuple[str]]:
        """The members held, not left, whom the file does not list."""
        return (
            sa.select(members.c.member_id)
            .where(members.c.status != "left")
            .where(~sa.exists().where(seen.c.member_id == members.c.member_id))
        )

    @staticmethod
    def _members_held(conn: Connection) -> int:
        """The members who have not left."""
        return int(
            conn.execute(
                sa.select(sa.func.count()).select_from(members).where(members.c.status != "left")
            ).scalar_one()
        )

    def _check_leaving(
        self, conn: Connection, seen: sa.Table, allow_left: int | None, held: int
    ) -> None:
        """Refuse a full import that would mark more of the ``held`` members (those
        held before the file) left than allowed."""
        leaving = conn.execute(
            sa.select(sa.func.count()).select_from(self._missing(seen).subquery())
        ).scalar_one()
        if allow_left is not None and leaving > allow_left:
            if leaving == 1:
                raise InputError(
                    N_(
                        "the members file would mark %(count)s member as left, more than the "
                        "%(allowed)s allowed (--allow-left): check the file; nothing was "
                        "imported"
                    ),
                    count=f"{leaving:,}",
                    allowed=f"{allow_left:,}",
                )
            raise InputError(
                N_(
                    "the members file would mark %(count)s members as left, more than the "
                    "%(allowed)s allowed (--allow-left): check the file; nothing was imported"
                ),
                count=f"{leaving:,}",
                allowed=f"{allow_left:,}",
            )
        if allow_left is None and leaving > left_quietly(held):
            raise InputError(
                N_(
                    "the members file would mark %(count)s of the %(held)s members as left "
                    "(%(percent)s%%): check the file (an export cut short, or another "
                    "district's?); if they did leave, import it again with --allow-left "
                    "%(leaving)s"
                ),
                count=f"{leaving:,}",
                held=f"{held:,}",
                percent=leaving * 100 // held,
                leaving=leaving,
            )

    @staticmethod
    def _mark_left(
        conn: Connection,
        seen: sa.Table,
        at: str,
        count: Callable[[list[tuple[Mapping[str, Any] | None, Mapping[str, Any]]]], None],
    ) -> int:
        missing = Store._missing(seen)
        # the dashboard's totals: who leaves, by status and place (a row per kind)
        leaving = conn.execute(
            sa.select(members.c.status, members.c.district, members.c.workplace, sa.func.count())
            .where(members.c.member_id.in_(missing))
            .group_by(members.c.status, members.c.district, members.c.workplace)
        ).all()
        for status, district, workplace, n in leaving:
            old = {"status": status, "district": district, "workplace": workplace}
            count([(old, {**old, "status": "left"})] * int(n))
        conn.execute(
            member_history.insert().from_select(
                ["member_id", "at", *HISTORY_FIELDS],
                sa.select(
                    members.c.member_id,
                    sa.literal(at),
                    sa.literal("left"),
                    members.c.tier,
                    members.c.valid_until,
                    members.c.district,
                    members.c.workplace,
                ).where(members.c.member_id.in_(missing)),
            )
        )
        return int(
            conn.execute(
                members.update().where(members.c.member_id.in_(missing)).values(status="left")
            ).rowcount
        )

    def member(self, member_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(members.select().where(members.c.member_id == member_id))
                .mappings()
                .first()
            )
        return None if row is None else dict(row)

    def member_use(self, token: str, member_id: str | None = None) -> list[dict[str, Any]]:
        """A card's use at each merchant: sales (less voided), member discount (less
        voids and refunds), first and last. With ``member_id``, the member's earlier
        cards too (:data:`member_tokens`: a new card, a new token scheme), each until
        the import that replaced it, as :meth:`token_histories` counts them."""
        sign = sa.case((sales.c.kind.is_(None), 1), else_=-1)
        count = sa.case((sales.c.kind.is_(None), 1), (sales.c.kind == "void", -1), else_=0)
        with self.engine.connect() as conn:
            earlier = (
                conn.execute(
                    sa.select(member_tokens.c.token, member_tokens.c.until).where(
                        member_tokens.c.member_id == member_id, member_tokens.c.token != token
                    )
                ).all()
                if member_id is not None
                else []
            )
            cards = sa.or_(
                sales.c.token == token,
                *((sales.c.token == old) & (sales.c.at < until) for old, until in earlier),
            )
            query = (
                sa.select(
                    sales.c.merchant_id,
                    sa.func.sum(count).label("sales"),
                    sa.func.sum(sign * sales.c.discount).label("discount"),
                    sa.func.min(sales.c.at).label("first_at"),
                    sa.func.max(sales.c.at).label("last_at"),
                )
                .where(cards)
                .where(sales.c.kind.is_(None) | sales.c.kind.in_(("void", "refund")))
                .group_by(sales.c.merchant_id)
                .order_by(sales.c.merchant_id)
            )
            # (PostgreSQL's sums are NUMERIC: ints, as the page's yuan want them)
            return [_ints(r, ("sales", "discount")) for r in conn.execute(query).mappings()]

    def token_history(self, token: str) -> list[dict[str, Any]]:
        """The standing of the member a token was issued to, oldest first (as
        :meth:`member_history`), or [] for a token no member ever had. A token the member
        no longer uses (a new card, a new token scheme) ends with a ``left`` row at the
        import that replaced it: sales with it after that were not a member's."""
        return self.token_histories([token])[token]

    def token_histories(self, tokens: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
        """:meth:`token_history` of each of ``tokens``, read a chunk of tokens at a time
        (the audit of a merchant-year asks for thousands of cards)."""
        wanted = list(dict.fromkeys(tokens))
        current: dict[str, str] = {}  # token -> member
        earlier: dict[str, tuple[str, str]] = {}  # token -> (member, until)
        history: dict[str, list[dict[str, Any]]] = {}  # member -> rows, oldest first
        with self.engine.connect() as conn:
            for i in range(0, len(wanted), IMPORT_CHUNK):
                chunk = wanted[i : i + IMPORT_CHUNK]
                for token, member_id in conn.execute(
                    sa.select(members.c.token, members.c.member_id).where(
                        members.c.token.in_(chunk)
                    )
                ):
                    current[token] = member_id
                old = [t for t in chunk if t not in current]
                for token, member_id, until in conn.execute(
                    sa.select(
                        member_tokens.c.token, member_tokens.c.member_id, member_tokens.c.until
                    ).where(member_tokens.c.token.in_(old))
                ):
                    earlier[token] = (member_id, until)
            ids = list(dict.fromkeys([*current.values(), *(m for m, _ in earlier.values())]))
            for i in range(0, len(ids), IMPORT_CHUNK):
                rows = conn.execute(
                    member_history.select()
                    .where(member_history.c.member_id.in_(ids[i : i + IMPORT_CHUNK]))
                    .order_by(member_history.c.id)
                ).mappings()
                for row in rows:
                    history.setdefault(row["member_id"], []).append(dict(row))
        out: dict[str, list[dict[str, Any]]] = {}
        for token in wanted:
            if token in current:
                out[token] = history.get(current[token], [])
            elif token in earlier:
                member_id, until = earlier[token]
                then = [h for h in history.get(member_id, []) if h["at"] <= until]
                left = {"member_id": member_id, "at": until, "status": "left", "tier": 0}
                out[token] = [
                    *then,
                    {**left, "valid_until": None, "district": None, "workplace": None},
                ]
            else:
                out[token] = []
        return out

    def member_history(self, member_id: str) -> list[dict[str, Any]]:
        """The member's values from each date on, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                member_history.select()
                .where(member_history.c.member_id == member_id)
                .order_by(member_history.c.id)
            ).mappings()
            return [dict(r) for r in rows]

    def roster_records(self) -> Iterable[dict[str, Any]]:
        """The members of the roster: every member but those who left."""
        with self.engine.connect() as conn:
            for row in conn.execute(
                sa.select(
                    members.c.token, members.c.status, members.c.tier, members.c.valid_until
                ).where(members.c.status != "left")
            ).mappings():
                yield dict(row)

    def member_count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(members)).scalar_one())

    # -- merchants and terminals --------------------------------------------------
    def add_merchant(self, merchant_id: str, name: str, basis_points: int, at: str) -> None:
        with self._writing() as conn:
            if conn.execute(
                sa.select(merchants.c.merchant_id).where(merchants.c.merchant_id == merchant_id)
            ).first():
                raise InputError(N_("merchant %(merchant)s already exists"), merchant=merchant_id)
            conn.execute(
                merchants.insert().values(
                    merchant_id=merchant_id,
                    name=name,
                    status="active",
                    basis_points=basis_points,
                    status_changed_at=at,
                )
            )
            conn.execute(
                merchant_status_history.insert().values(
                    merchant_id=merchant_id, status="active", at=at
                )
            )

    def merchant(self, merchant_id: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = (
                conn.execute(merchants.select().where(merchants.c.merchant_id == merchant_id))
                .mappings()
                .first()
            )
        if row is None:
            raise NotFoundError(
                N_("no merchant %(merchant)s: list them with `unioncard central merchants`"),
                merchant=merchant_id,
            )
        return dict(row)

    def merchants(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            query = merchants.select().order_by(merchants.c.merchant_id)
            return [dict(r) for r in conn.execute(query).mappings()]

    def set_merchant_status(
        self,
        merchant_id: str,
        status: str,
        at: str,
        *,
        effective_at: str | None = None,
        reason: str | None = None,
        by: str | None = None,
    ) -> None:
        """Record a change of the merchant's status decided at ``at``, in force from
        ``effective_at`` (default: at once). The merchant's ``status`` is the one in
        force: a change decided ahead is applied by :meth:`apply_status`."""
        self.merchant(merchant_id)
        effective = effective_at or at
        with self._writing() as conn:
            if effective <= at:
                conn.execute(
                    merchants.update()
                    .where(merchants.c.merchant_id == merchant_id)
                    .values(status=status, status_changed_at=effective)
                )
            conn.execute(
                merchant_status_history.insert().values(
                    merchant_id=merchant_id,
                    status=status,
                    at=at,
                    effective_at=effective,
                    reason=None if reason is None else reason[:500],
                    decided_by=by,
                )
            )

    def apply_status(self, merchant_id: str, status: str, since: str) -> None:
        """Keep ``status`` as the one in force (a change decided ahead has come)."""
        with self._writing() as conn:
            conn.execute(
                merchants.update()
                .where(
                    merchants.c.merchant_id == merchant_id,
                    sa.or_(merchants.c.status != status, merchants.c.status_changed_at != since),
                )
                .values(status=status, status_changed_at=since)
            )

    def close_merchant(self, merchant_id: str, at: str, retain_until: str, folder: str) -> None:
        """The merchant has left and its final statement and bundle are in ``folder``."""
        with self._writing() as conn:
            conn.execute(
                merchants.update()
                .where(merchants.c.merchant_id == merchant_id)
                .values(closed_at=at, retain_until=retain_until, final_folder=folder)
            )

    def set_registry(self, merchant_id: str, **fields: str | None) -> None:
        """The merchant's category, district, address, contact (those given)."""
        self.merchant(merchant_id)
        with self._writing() as conn:
            conn.execute(
                merchants.update().where(merchants.c.merchant_id == merchant_id).values(**fields)
            )

    def admit(self, merchant_id: str, standards: str, at: str, by: str) -> None:
        self.merchant(merchant_id)
        with self._writing() as conn:
            conn.execute(
                merchants.update()
                .where(merchants.c.merchant_id == merchant_id)
                .values(standards=standards, admitted_at=at, admitted_by=by)
            )

    def status_history(self, merchant_id: str) -> list[dict[str, Any]]:
        """Each status change of the merchant, in the order they take effect."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                merchant_status_history.select()
                .where(merchant_status_history.c.merchant_id == merchant_id)
                .order_by(merchant_status_history.c.id)
            ).mappings()
            found = [dict(r) for r in rows]
        for row in found:
            row["effective_at"] = row["effective_at"] or row["at"]
        return sorted(found, key=lambda r: (r["effective_at"], r["id"]))

    def set_terms(self, merchant_id: str, terms: str, at: str) -> None:
        """Keep a merchant's policy terms (canonical JSON, validated by the caller)."""
        self.merchant(merchant_id)
        with self._writing() as conn:
            conn.execute(merchant_terms.delete().where(merchant_terms.c.merchant_id == merchant_id))
            conn.execute(
                merchant_terms.insert().values(merchant_id=merchant_id, terms=terms, updated_at=at)
            )

    def terms(self, merchant_id: str) -> str | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(merchant_terms.c.terms).where(merchant_terms.c.merchant_id == merchant_id)
            ).first()
        return None if row is None else str(row[0])

    def add_terminal(self, terminal_id: str, merchant_id: str, secret_sha256: str, at: str) -> None:
        self.merchant(merchant_id)
        with self._writing() as conn:
            try:
                conn.execute(
                    terminals.insert().values(
                        terminal_id=terminal_id,
                        merchant_id=merchant_id,
                        secret_sha256=secret_sha256,
                        enrolled_at=at,
                    )
                )
            except sa.exc.IntegrityError:
                raise InputError(
                    N_("terminal %(terminal)s is already enrolled"), terminal=terminal_id
                ) from None

    # -- enrolment codes ------------------------------------------------------------
    def add_enrol_code(
        self, code_sha256: str, terminal_id: str, merchant_id: str, at: str, expires_at: str
    ) -> None:
        self.merchant(merchant_id)
        if self.terminal(terminal_id) is not None:
            raise InputError(N_("terminal %(terminal)s is already enrolled"), terminal=terminal_id)
        with self._writing() as conn:
            conn.execute(
                enrol_codes.insert().values(
                    code_sha256=code_sha256,
                    terminal_id=terminal_id,
                    merchant_id=merchant_id,
                    created_at=at,
                    expires_at=expires_at,
                )
            )

    def enrol_code(self, code_sha256: str) -> dict[str, Any] | None:
        """The enrolment code of this digest (used or not), or None."""
        with self.engine.connect() as conn:
            row = (
                conn.execute(enrol_codes.select().where(enrol_codes.c.code_sha256 == code_sha256))
                .mappings()
                .first()
            )
        return None if row is None else dict(row)

    def enrol_with_code(
        self, code_sha256: str, at: str, secret_sha256: str, device_key: str
    ) -> tuple[str, dict[str, Any] | None]:
        """Use the code and enrol its terminal with this secret and device key, in one
        transaction. ``("ok", the code's row)``; or why not, with the row when there is
        one: "unknown", "used", "expired", "enrolled" (its terminal is already, by
        other means: nothing is changed)."""
        with self._writing() as conn:
            taken = conn.execute(
                enrol_codes.update()
                .where(
                    enrol_codes.c.code_sha256 == code_sha256,
                    enrol_codes.c.used_at.is_(None),
                    enrol_codes.c.expires_at > at,
                )
                .values(used_at=at)
            ).rowcount
            found = (
                conn.execute(enrol_codes.select().where(enrol_codes.c.code_sha256 == code_sha256))
                .mappings()
                .first()
            )
            row = None if found is None else dict(found)
            if taken != 1 or row is None:
                if row is None:
                    return "unknown", None
                return ("used" if row["used_at"] is not None else "expired"), row
            try:
                with conn.begin_nested():
                    conn.execute(
                        terminals.insert().values(
                            terminal_id=row["terminal_id"],
                            merchant_id=row["merchant_id"],
                            secret_sha256=secret_sha256,
                            enrolled_at=at,
                            device_key=device_key,
                            device_key_at=at,
                        )
                    )
            except sa.exc.IntegrityError:
                conn.rollback()
                return "enrolled", row
            return "ok", row

    def set_terminal_secret(self, terminal_id: str, secret_sha256: str) -> None:
        with self._writing() as conn:
            conn.execute(
                terminals.update()
                .where(terminals.c.terminal_id == terminal_id)
                .values(secret_sha256=secret_sha256)
            )

    def record_enrol_failure(self, source: str, at: str) -> None:
        with self._writing() as conn:
            conn.execute(enrol_failures.insert().values(source=source[:64], at=at))

    def enrol_failures_since(self, since: str, source: str) -> tuple[int, int]:
        """(wrong codes tried from ``source``, from anywhere) since ``since``."""
        with self.engine.connect() as conn:
            recent = enrol_failures.c.at >= since
            everywhere = conn.execute(
                sa.select(sa.func.count()).select_from(enrol_failures).where(recent)
            ).scalar_one()
            here = conn.execute(
                sa.select(sa.func.count())
                .select_from(enrol_failures)
                .where(recent, enrol_failures.c.source == source[:64])
            ).scalar_one()
        return int(here), int(everywhere)

    # -- policy drafts (four eyes) -----------------------------------------------------
    def add_draft(self, merchant_id: str, terms: str, by: str, at: str) -> int:
        self.merchant(merchant_id)
        with self._writing() as conn:
            key = conn.execute(
                policy_drafts.insert().values(
                    merchant_id=merchant_id, terms=terms, drafted_by=by, drafted_at=at
                )
            ).inserted_primary_key
        assert key is not None
        return int(key[0])

    def draft(self, draft_id: int) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(policy_drafts.select().where(policy_drafts.c.id == draft_id))
                .mappings()
                .first()
            )
        return None if row is None else dict(row)

    def drafts(self, pending_only: bool = True) -> list[dict[str, Any]]:
        query = policy_drafts.select().order_by(policy_drafts.c.id)
        if pending_only:
            query = query.where(policy_drafts.c.decision.is_(None))
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def decide_draft(
        self,
        draft_id: int,
        decision: str,
        by: str,
        at: str,
        version: int | None,
        taking_over: Mapping[str, Any] | None = None,
    ) -> bool:
        """Record the decision once; False when it was decided already. With
        ``taking_over`` (the draft as read, approved and never signed), that approval
        is replaced instead, if nobody replaced it or signed it meanwhile."""
        still: sa.ColumnElement[bool]
        if taking_over is None:
            still = policy_drafts.c.decision.is_(None)
        else:
            still = sa.and_(
                policy_drafts.c.decision == "approved",
                policy_drafts.c.version.is_(None),
                policy_drafts.c.decided_by == taking_over["decided_by"],
                policy_drafts.c.decided_at == taking_over["decided_at"],
            )
        with self._writing() as conn:
            done = conn.execute(
                policy_drafts.update()
                .where(policy_drafts.c.id == draft_id, still)
                .values(decision=decision, decided_by=by, decided_at=at, version=version)
            )
        return done.rowcount == 1

    def draft_signed(self, draft_id: int, version: int) -> None:
        """The version an approved draft became, once signed."""
        with self._writing() as conn:
            conn.execute(
                policy_drafts.update()
                .where(policy_drafts.c.id == draft_id, policy_drafts.c.decision == "approved")
                .values(version=version)
            )

    def reopen_draft(self, draft_id: int, by: str) -> bool:
        """Undo ``by``'s approval of a draft that was not signed (signing failed): it
        waits for a decision again. False when it is not that approval any more."""
        with self._writing() as conn:
            done = conn.execute(
                policy_drafts.update()
                .where(
                    policy_drafts.c.id == draft_id,
                    policy_drafts.c.decision == "approved",
                    policy_drafts.c.decided_by == by,
                    policy_drafts.c.version.is_(None),
                )
                .values(decision=None, decided_by=None, decided_at=None)
            )
        return done.rowcount == 1

    # -- complaints ----------------------------------------------------------------
    def add_complaint(
        self, merchant_id: str, day: date, what: str, pan_last4: str | None, at: str, by: str
    ) -> int:
        self.merchant(merchant_id)
        with self._writing() as conn:
            done = conn.execute(
                complaints.insert().values(
                    merchant_id=merchant_id,
                    day=day,
                    what=what,
                    pan_last4=pan_last4,
                    recorded_at=at,
                    recorded_by=by,
                )
            )
            key = done.inserted_primary_key
            assert key is not None
            return int(key[0])

    def complaints_between(self, merchant_id: str, first: date, last: date) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                complaints.select()
                .where(
                    complaints.c.merchant_id == merchant_id,
                    complaints.c.day >= first,
                    complaints.c.day <= last,
                )
                .order_by(complaints.c.day, complaints.c.id)
            ).mappings()
            return [dict(r) for r in rows]

    # -- the audit's runs and findings --------------------------------------------
    def add_audit_run(
        self,
        merchant_id: str,
        first: date,
        last: date,
        at: str,
        by: str,
        findings: Sequence[Mapping[str, Any]],
    ) -> int:
        """Keep one audit run and its findings (each ``pact.audit.Finding.as_json()``)
        in one transaction; return the run's number."""
        with self._writing() as conn:
            run_id = self._new_audit_run(conn, merchant_id, first, last, at, by, "done")
            self._keep_findings(conn, run_id, findings, at)
        return run_id

    def start_audit_run(self, merchant_id: str, first: date, last: date, at: str, by: str) -> int:
        """Number a run that starts now (state ``running``); its findings follow with
        :meth:`finish_audit_run`, or :meth:`fail_audit_run` says why there are none."""
        with self._writing() as conn:
            return self._new_audit_run(conn, merchant_id, first, last, at, by, "running")

    def audit_run_alive(self, run_id: int, at: str) -> None:
        """A running run goes on at ``at`` (nothing, once it is done or failed)."""
        with self._writing() as conn:
            conn.execute(
                audit_runs.update()
                .where(audit_runs.c.id == run_id, audit_runs.c.state == "running")
                .values(alive_at=at)
            )

    def finish_audit_run(self, run_id: int, findings: Sequence[Mapping[str, Any]], at: str) -> None:
        """A running run's findings, stored in one transaction with its state ``done``."""
        with self._writing() as conn:
            self._keep_findings(conn, run_id, findings, at)

    def fail_audit_run(self, run_id: int, error: str, at: str) -> None:
        """A running run that stopped without findings, and the line that says why."""
        with self._writing() as conn:
            conn.execute(
                audit_runs.update()
                .where(audit_runs.c.id == run_id, audit_runs.c.state == "running")
                .values(state="failed", finished_at=at, error=error[:500])
            )

    @staticmethod
    def _new_audit_run(
        conn: Connection, merchant_id: str, first: date, last: date, at: str, by: str, state: str
    ) -> int:
        done = conn.execute(
            audit_runs.insert().values(
                merchant_id=merchant_id,
                first_day=first,
                last_day=last,
                run_at=at,
                run_by=by,
                findings=0,
                state=state,
                alive_at=at,
            )
        )
        key = done.inserted_primary_key
        if key is None:  # pragma: no cover - every dialect here returns it
            raise StoreError(N_("the audit run was not numbered"))
        return int(key[0])

    @staticmethod
    def _keep_findings(
        conn: Connection, run_id: int, findings: Sequence[Mapping[str, Any]], at: str
    ) -> None:
        if findings:
            conn.execute(
                audit_findings.insert(),
                [
                    {
                        "run_id": run_id,
                        "severity": f["severity"],
                        "terminal_id": f["terminal_id"],
                        "seqs": json.dumps(list(f["seqs"])),
                        "kind": f["kind"],
                        "detail": f["detail"],
                        "message": json.dumps(f["detail_id"], ensure_ascii=False),
                    }
                    for f in findings
                ],
            )
        conn.execute(
            audit_runs.update()
            .where(audit_runs.c.id == run_id)
            .values(findings=len(findings), state="done", finished_at=at)
        )

    def audit_runs(self, merchant_id: str | None = None) -> list[dict[str, Any]]:
        """The audit runs, newest first (of one merchant, if given)."""
        query = audit_runs.select().order_by(audit_runs.c.id.desc())
        if merchant_id is not None:
            query = query.where(audit_runs.c.merchant_id == merchant_id)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def audit_findings(
        self,
        *,
        merchant_id: str | None = None,
        run_id: int | None = None,
        kind: str | None = None,
        severity: str | None = None,
        terminal_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Stored findings (newest run first, then by terminal and seq as found), with
        their run's merchant, days and time; ``seqs`` a list, ``message`` a dict."""
        query = (
            sa.select(
                audit_findings,
                audit_runs.c.merchant_id,
                audit_runs.c.first_day,
                audit_runs.c.last_day,
                audit_runs.c.run_at,
            )
            .select_from(audit_findings.join(audit_runs))
            .order_by(audit_runs.c.id.desc(), audit_findings.c.id)
        )
        for column, value in (
            (audit_runs.c.merchant_id, merchant_id),
            (audit_findings.c.run_id, run_id),
            (audit_findings.c.kind, kind),
            (audit_findings.c.severity, severity),
            (audit_findings.c.terminal_id, terminal_id),
        ):
            if value is not None:
                query = query.where(column == value)
        with self.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(query).mappings()]
        for row in rows:
            row["seqs"] = json.loads(row["seqs"])
            row["message"] = json.loads(row["message"])
        return rows

    def terminal_contacts(self, merchant_id: str) -> list[dict[str, Any]]:
        """The merchant's terminals with when each last called, enrolled, was revoked,
        the policy it reported, and the newest entry the union holds from it (seq and
        when received): the audit's silence check."""
        held = (
            sa.select(
                sales.c.terminal_id,
                sa.func.max(sales.c.seq).label("last_seq"),
                sa.func.max(sales.c.received_at).label("last_upload_at"),
            )
            .where(sales.c.merchant_id == merchant_id)
            .group_by(sales.c.terminal_id)
            .subquery()
        )
        query = (
            sa.select(
                terminals.c.terminal_id,
                terminals.c.merchant_id,
                terminals.c.enrolled_at,
                terminals.c.last_contact_at,
                terminals.c.policy_version,
                terminals.c.revoked_at,
                terminals.c.reported_at,
                terminals.c.pending,
                held.c.last_seq,
                held.c.last_upload_at,
            )
            .select_from(terminals.outerjoin(held, held.c.terminal_id == terminals.c.terminal_id))
            .where(terminals.c.merchant_id == merchant_id)
            .order_by(terminals.c.terminal_id)
        )
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    # -- the console's people ------------------------------------------------------
    def add_user(
        self, name: str, role: str, merchant_id: str | None, password_hash: str, at: str
    ) -> None:
        if merchant_id is not None:
            self.merchant(merchant_id)
        with self._writing() as conn:
            try:
                conn.execute(
                    users.insert().values(
                        name=name,
                        role=role,
                        merchant_id=merchant_id,
                        password_hash=password_hash,
                        created_at=at,
                    )
                )
            except sa.exc.IntegrityError:
                raise InputError(
                    N_("there is a user %(user)s already: choose another name"), user=name
                ) from None

    def user(self, name: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(users.select().where(users.c.name == name)).mappings().first()
        return None if row is None else dict(row)

    def end_sessions(self, name: str) -> None:
        """Every console session of ``name`` made so far stops signing anyone in."""
        with self._writing() as conn:
            conn.execute(
                users.update().where(users.c.name == name).values(sessions=users.c.sessions + 1)
            )

    def login_attempt(self, name: str, now: str, lock_until: str, limit: int) -> bool:
        """Count a try of ``name``'s password before it is checked, in one conditional
        UPDATE: False (nothing counted) while the account is locked; the try that makes
        ``limit`` locks it until ``lock_until`` (the count starts again). Tries that
        arrive together are counted one after the other by the database (the row's
        lock), so no more than ``limit`` passwords are checked before the lock holds,
        however many workers and threads take them. A right password then clears the
        count (:meth:`login_succeeded`); a wrong one stays counted."""
        reaches = users.c.failures + 1 >= limit
        with self._writing() as conn:
            done = conn.execute(
                users.update()
                .where(
                    users.c.name == name,
                    users.c.locked_until.is_(None) | (users.c.locked_until <= now),
                )
                .values(
                    failures=sa.case((reaches, 0), else_=users.c.failures + 1),
                    locked_until=sa.case((reaches, lock_until), else_=sa.null()),
                )
            )
        return done.rowcount == 1

    def login_succeeded(self, name: str, password_hash: str | None = None) -> None:
        values: dict[str, Any] = {"failures": 0, "locked_until": None}
        if password_hash is not None:
            values["password_hash"] = password_hash  # re-hashed with today's parameters
        with self._writing() as conn:
            conn.execute(users.update().where(users.c.name == name).values(**values))

    # -- the fleet ---------------------------------------------------------------------
    def touch_terminal(self, terminal_id: str, at: str, unless_since: str) -> None:
        """Record a call from the terminal at ``at``, unless one is recorded since
        ``unless_since`` (a write a minute at most, not one a request)."""
        with self._writing() as conn:
            conn.execute(
                terminals.update()
                .where(
                    terminals.c.terminal_id == terminal_id,
                    terminals.c.last_contact_at.is_(None)
                    | (terminals.c.last_contact_at < unless_since),
                )
                .values(last_contact_at=at)
            )

    def report_terminal(self, terminal_id: str, at: str, report: Mapping[str, Any]) -> None:
        """Keep what the terminal reported at the end of its sync (FLEET_REPORT fields)."""
        with self._writing() as conn:
            conn.execute(
                terminals.update()
                .where(terminals.c.terminal_id == terminal_id)
                .values(reported_at=at, last_contact_at=at, **report)
            )

    def revoke_terminal(self, terminal_id: str, at: str, reason: str) -> int:
        """Revoke the terminal (once: a second revocation changes nothing); return the
        last seq held from it then."""
        row = self.terminal(terminal_id)
        if row is None:
            raise NotFoundError(
                N_("no terminal %(terminal)s: see `unioncard central terminals`"),
                terminal=terminal_id,
            )
        if row["revoked_at"] is not None:
            return int(row["revoked_last_seq"] or 0)
        with self._writing() as conn:
            self._hold_terminal(conn, terminal_id)  # an upload under way finishes first
            last, _ = self._tail(conn, terminal_id)
            conn.execute(
                terminals.update()
                .where(terminals.c.terminal_id == terminal_id, terminals.c.revoked_at.is_(None))
                .values(revoked_at=at, revoked_reason=reason[:200], revoked_last_seq=last)
            )
        return last

    @staticmethod
    def _hold_terminal(conn: Connection, terminal_id: str) -> Any:
        """The terminal's row, locked for this transaction (PostgreSQL: FOR UPDATE; on
        SQLite the write transaction holds the whole database already): an upload and a
        revocation of one terminal take turns, so a revocation's last seq is what the
        union held, and an upload after it is refused."""
        return conn.execute(
            sa.select(terminals.c.revoked_at, terminals.c.revoked_reason)
            .where(terminals.c.terminal_id == terminal_id)
            .with_for_update()
        ).first()

    def tail_seq(self, terminal_id: str) -> int:
        """The last seq the union holds from the terminal (0: none)."""
        with self.engine.connect() as conn:
            return self._tail(conn, terminal_id)[0]

    def decommission_terminal(self, terminal_id: str, at: str, last_seq: int) -> bool:
        """Revoke a terminal its shop took out of service, if the union holds its entries
        up to ``last_seq`` (and nothing after); False, and nothing changed, otherwise."""
        with self._writing() as conn:
            self._hold_terminal(conn, terminal_id)
            held, _ = self._tail(conn, terminal_id)
            if held != last_seq:
                return False
            conn.execute(
                terminals.update()
                .where(terminals.c.terminal_id == terminal_id, terminals.c.revoked_at.is_(None))
                .values(
                    revoked_at=at,
                    revoked_reason="decommissioned by its shop",
                    revoked_last_seq=held,
                    decommissioned_at=at,
                )
            )
        return True

    def fleet(self) -> list[dict[str, Any]]:
        """Every terminal with its merchant and the last seq the union holds from it."""
        held = (
            sa.select(sales.c.terminal_id, sa.func.max(sales.c.seq).label("acked_seq"))
            .group_by(sales.c.terminal_id)
            .subquery()
        )
        query = (
            sa.select(terminals, held.c.acked_seq)
            .select_from(terminals.outerjoin(held, held.c.terminal_id == terminals.c.terminal_id))
            .order_by(terminals.c.merchant_id, terminals.c.terminal_id)
        )
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def set_device_key(self, terminal_id: str, key_hex: str, at: str) -> str:
        """Record the terminal's device key if it has none; return the key it has now."""
        with self._writing() as conn:
            conn.execute(
                terminals.update()
                .where(terminals.c.terminal_id == terminal_id, terminals.c.device_key.is_(None))
                .values(device_key=key_hex, device_key_at=at)
            )
            key = conn.execute(
                sa.select(terminals.c.device_key).where(terminals.c.terminal_id == terminal_id)
            ).scalar_one()
        return str(key)

    def record_refusal(
        self, terminal_id: str, at: str, first_seq: int | None, last_seq: int | None, reason: str
    ) -> None:
        """Keep a refused upload's reason for the audit (its own transaction)."""
        with self._writing() as conn:
            conn.execute(
                upload_refusals.insert().values(
                    terminal_id=terminal_id,
                    received_at=at,
                    first_seq=first_seq,
                    last_seq=last_seq,
                    reason=reason,
                )
            )

    def refusals(self, terminal_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            query = (
                upload_refusals.select()
                .where(upload_refusals.c.terminal_id == terminal_id)
                .order_by(upload_refusals.c.id)
            )
            return [dict(r) for r in conn.execute(query).mappings()]

    def terminal(self, terminal_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(terminals.select().where(terminals.c.terminal_id == terminal_id))
                .mappings()
                .first()
            )
        return None if row is None else dict(row)

    # -- signed files (rosters, policies) -------------------------------------------
    def put_signed(
        self, kind: str, version: int, data: bytes, at: str, digest: str | None = None
    ) -> bool:
        """Store a signed file; False when that (kind, version) exists already."""
        return self.put_signed_together(at, (kind, version, data, digest))

    def put_signed_together(self, at: str, *files: tuple[str, int, bytes, str | None]) -> bool:
        """Store signed files, each ``(kind, version, data, digest)``, in one transaction:
        all of them, or none (False) when any (kind, version) exists already (a full
        roster and its delta: two publications at once kept one's full roster and the
        other's delta of the same version, which disagreed)."""
        try:
            with self._writing() as conn:
                for kind, version, data, digest in files:
                    conn.execute(
                        signed_files.insert().values(
                            kind=kind,
                            version=version,
                            data=data,
                            created_at=at,
                            digest=digest or hashlib.sha256(data).hexdigest(),
                        )
                    )
        except sa.exc.IntegrityError:
            return False
        return True

    def latest_signed(self, kind: str) -> tuple[int, bytes] | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(signed_files.c.version, signed_files.c.data)
                .where(signed_files.c.kind == kind)
                .order_by(signed_files.c.version.desc())
                .limit(1)
            ).first()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def latest_version(self, kind: str) -> tuple[int, str] | None:
        """(version, digest) of the newest file of ``kind``, without loading it."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(signed_files.c.version, signed_files.c.digest)
                .where(signed_files.c.kind == kind)
                .order_by(signed_files.c.version.desc())
                .limit(1)
            ).first()
        return None if row is None else (int(row[0]), str(row[1]))

    def prune_signed(self, kind: str, below: int, created_before: str) -> int:
        """Delete the files of ``kind`` older than version ``below`` and made before
        ``created_before``; return how many."""
        with self._writing() as conn:
            return int(
                conn.execute(
                    signed_files.delete().where(
                        signed_files.c.kind == kind,
                        signed_files.c.version < below,
                        signed_files.c.created_at < created_before,
                    )
                ).rowcount
            )

    def signed_count(self, kind: str) -> tuple[int, int]:
        """(files of ``kind``, their bytes)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(
                    sa.func.count(),
                    sa.func.coalesce(sa.func.sum(sa.func.length(signed_files.c.data)), 0),
                ).where(signed_files.c.kind == kind)
            ).one()
        return int(row[0]), int(row[1])

    def oldest_live_roster(self, contact_since: str) -> int | None:
        """The oldest roster version a live terminal (not revoked, heard from since
        ``contact_since``) reported, or None."""
        with self.engine.connect() as conn:
            found = conn.execute(
                sa.select(sa.func.min(terminals.c.roster_version)).where(
                    terminals.c.revoked_at.is_(None),
                    terminals.c.last_contact_at >= contact_since,
                    terminals.c.roster_version.is_not(None),
                )
            ).scalar()
        return None if found is None else int(found)

    def signed_versions(self, kind: str) -> list[dict[str, Any]]:
        """Every version of ``kind`` held, with when it was made, newest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(signed_files.c.version, signed_files.c.created_at)
                .where(signed_files.c.kind == kind)
                .order_by(signed_files.c.version.desc())
            ).mappings()
            return [dict(r) for r in rows]

    def signed(self, kind: str, version: int) -> bytes | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(signed_files.c.data).where(
                    signed_files.c.kind == kind, signed_files.c.version == version
                )
            ).first()
        return None if row is None else bytes(row[0])

    # -- sales ------------------------------------------------------------------------
    def ingest(
        self,
        terminal_id: str,
        merchant_id: str,
        batch: Sequence[Sale],
        received_at: str,
        check_new: Callable[[Sequence[Sale]], None] | None = None,
    ) -> IngestResult:
        """Store a batch idempotently. Repeats are acknowledged; a fork of the chain is refused.

        ``check_new`` sees the entries this store does not hold yet, in order, before
        anything is written (the device-signature check), and may raise to refuse all.

        Two ingests of one terminal may run at once: a retry that arrives while its
        original is still being stored (the terminal's connection was reset once the
        request went through). Both read the same tail; the second's insert then breaks
        the key (terminal, seq) the first has just filled, and it starts over in a fresh
        transaction, where it finds those entries held and compares them as any repeat:
        the result is what a retry after the first would get. A unique key broken while
        nothing was stored meanwhile is no race: that batch is refused as a conflict.
        """
        while True:
            try:
                return self._ingest_once(terminal_id, merchant_id, batch, received_at, check_new)
            except _Overtaken as exc:
                with self.engine.connect() as conn:
                    last_seq, _ = self._tail(conn, terminal_id)
                if last_seq == exc.last_seq:  # nothing was stored since: not a race
                    raise ConflictError(
                        N_(
                            "upload refused: an entry is already held under another number "
                            "(%(reason)s)"
                        ),
                        reason=exc.reason,
                    ) from None

    def _ingest_once(
        self,
        terminal_id: str,
        merchant_id: str,
        batch: Sequence[Sale],
        received_at: str,
        check_new: Callable[[Sequence[Sale]], None] | None,
    ) -> IngestResult:
        """One try of :meth:`ingest`, in one transaction (:class:`_Overtaken` when its
        insert breaks a unique key)."""
        with self._writing() as conn:
            held = self._hold_terminal(conn, terminal_id)
            if held is not None and held.revoked_at is not None:  # since it was authenticated
                raise ConflictError(
                    N_(
                        "terminal %(terminal)s was revoked at %(at)s (%(reason)s): the union "
                        "refuses its uploads"
                    ),
                    terminal=terminal_id,
                    at=str(held.revoked_at),
                    reason=str(held.revoked_reason),
                )
            last_seq, last_hash = self._tail(conn, terminal_id)
            old = [s for s in batch if s.seq <= last_seq]
            new = [s for s in batch if s.seq > last_seq]
            if old:
                stored = dict(
                    conn.execute(
                        sa.select(sales.c.seq, sales.c.hash).where(
                            sales.c.terminal_id == terminal_id,
                            sales.c.seq.in_([s.seq for s in old]),
                        )
                    ).all()
                )
                for s in old:
                    intact = entry_hash(s.prev_hash, s) == s.hash
                    if not intact or stored.get(s.seq) != s.hash:
                        raise ConflictError(
                            N_(
                                "sale %(seq)s differs from the copy already received: "
                                "the terminal's journal has been altered"
                            ),
                            seq=s.seq,
                        )
            for s in new:
                if s.merchant_id != merchant_id:
                    raise ConflictError(N_("sale %(seq)s names another merchant"), seq=s.seq)
            if new and new[0].seq > last_seq + 1:  # (a batch is contiguous: ``old`` is empty)
                return IngestResult(last_seq, 0, 0, behind=True)
            try:
                check_chain(new, last_hash, last_seq)
            except ChainError as exc:
                raise ConflictError(N_("upload refused: %(reason)s"), reason=str(exc)) from None
            if new and check_new is not None:
                check_new(new)
            if new:
                try:
                    insert_sales(conn, sale_rows(new, received_at))  # COPY on PostgreSQL
                except sa.exc.IntegrityError as exc:
                    reason = str(exc.orig or exc).splitlines()[0]
                    raise _Overtaken(last_seq, reason) from None
                self._tally_sales(conn, new)
            acked = new[-1].seq if new else last_seq
        return IngestResult(acked, len(new), len(old))

    def _tally_sales(self, conn: Connection, entries: Sequence[Sale]) -> None:
        """Add the new entries to the dashboard's daily and monthly totals (in the
        ingest's transaction: a batch stored is counted, once)."""
        daily = fold_sales(
            ((s.at, s.merchant_id, s.kind, s.member, s.gross, s.discount, s.net) for s in entries),
            self.zone,
        )
        add_totals(conn, sales_daily, ("day", "merchant_id"), daily)
        add_totals(conn, sales_monthly, ("month", "merchant_id"), by_month(daily))

    @staticmethod
    def _tail(conn: Connection, terminal_id: str) -> tuple[int, str]:
        row = conn.execute(_TAIL, {"terminal_id": terminal_id}).first()
        return (0, GENESIS) if row is None else (int(row[0]), str(row[1]))

    def merchant_entries_since(
        self, merchant_id: str, since: str, except_terminal: str
    ) -> list[Sale]:
        """The entries of ``merchant_id``'s terminals but ``except_terminal`` journaled
        at ``since`` (ISO 8601 UTC) or later: what a usage file counts (pact.usage)."""
        query = (
            sales.select()
            .where(sales.c.merchant_id == merchant_id)
            .where(sales.c.terminal_id != except_terminal)
            .where(sales.c.at >= since)
            .where(sales.c.kind.is_(None) | sales.c.kind.in_(("void", "refund")))
            .order_by(sales.c.terminal_id, sales.c.seq)
        )
        with self.engine.connect() as conn:
            return [Sale.from_row(r) for r in conn.execute(query).mappings()]

    def merchant_entries_between(self, merchant_id: str, start: str, end: str) -> list[Sale]:
        """The sales, voids and refunds of ``merchant_id``'s terminals journaled at
        ``start`` or later and before ``end`` (ISO 8601 UTC): a statement's period."""
        query = (
            sales.select()
            .where(sales.c.merchant_id == merchant_id, sales.c.at >= start, sales.c.at < end)
            .where(sales.c.kind.is_(None) | sales.c.kind.in_(("void", "refund")))
            .order_by(sales.c.at, sales.c.terminal_id, sales.c.seq)
        )
        with self.engine.connect() as conn:
            return [Sale.from_row(r) for r in conn.execute(query).mappings()]

    def merchant_chains_between(self, merchant_id: str, start: str, end: str) -> list[Sale]:
        """Every entry (events too) of each of ``merchant_id``'s terminals from its
        first journaled at ``start`` or later to its last before ``end``, and the entry
        before that first (the chain's anchor, journaled before ``start``), by terminal
        and seq: unbroken runs of each chain, what an audit bundle holds. The anchor
        shows that nothing between it and ``start`` is left out (pact.audit's
        ``chained_from``)."""
        span = (
            sa.select(
                sales.c.terminal_id,
                sa.func.min(sales.c.seq).label("first"),
                sa.func.max(sales.c.seq).label("last"),
            )
            .where(sales.c.merchant_id == merchant_id, sales.c.at >= start, sales.c.at < end)
            .group_by(sales.c.terminal_id)
            .subquery()
        )
        query = (
            sales.select()
            .join(span, span.c.terminal_id == sales.c.terminal_id)
            .where(sales.c.seq >= span.c.first - 1, sales.c.seq <= span.c.last)
            .order_by(sales.c.terminal_id, sales.c.seq)
        )
        with self.engine.connect() as conn:
            return [Sale.from_row(r) for r in conn.execute(query).mappings()]

    def newest_seq_between(
        self, terminal_id: str, start: str, end: str, received_by: str | None = None
    ) -> int:
        """The newest seq the union holds of ``terminal_id``'s entries journaled at
        ``start`` or later and before ``end`` (0: none); only those it had received by
        ``received_by`` when given (an export's moment: not an upload stored since)."""
        query = sa.select(sa.func.max(sales.c.seq)).where(
            sales.c.terminal_id == terminal_id, sales.c.at >= start, sales.c.at < end
        )
        if received_by is not None:
            query = query.where(sales.c.received_at <= received_by)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one() or 0)

    def merchant_sales_span(self, merchant_id: str) -> tuple[str, str] | None:
        """When the first and the last entry the union holds from the merchant's
        terminals were journaled (None: none)."""
        query = sa.select(sa.func.min(sales.c.at), sa.func.max(sales.c.at)).where(
            sales.c.merchant_id == merchant_id
        )
        with self.engine.connect() as conn:
            first, last = conn.execute(query).one()
        return None if first is None else (str(first), str(last))

    def sales_for(self, terminal_id: str) -> list[Sale]:
        """The sales held for ``terminal_id``, in order."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sales.select().where(sales.c.terminal_id == terminal_id).order_by(sales.c.seq)
            ).mappings()
            return [Sale.from_row(r) for r in rows]

    def by_receipt_code(self, code: str) -> list[tuple[Sale, str | None]]:
        """The entries whose receipt shows ``code`` (normally one), each with the device
        key the union holds for its terminal."""
        query = (
            sa.select(sales, terminals.c.device_key)
            .select_from(sales.outerjoin(terminals, terminals.c.terminal_id == sales.c.terminal_id))
            .where(sales.c.receipt_code == code)
            .order_by(sales.c.terminal_id, sales.c.seq)
        )
        with self.engine.connect() as conn:
            return [(Sale.from_row(r), r["device_key"]) for r in conn.execute(query).mappings()]

    def settlement(self, start: str | None = None, end: str | None = None) -> list[Settlement]:
        """Totals per merchant for entries with ``start <= at < end`` (ISO 8601 UTC
        instants): the sales less their voids, in count and member sales; the money of
        the sales less their voids and refunds (each carries the amounts it takes back);
        the voids and refunds counted."""
        cond = []
        if start is not None:
            cond.append(sales.c.at >= start)
        if end is not None:
            cond.append(sales.c.at < end)
        is_sale = sales.c.kind.is_(None)
        is_void = sales.c.kind == "void"
        # money: a sale adds, a void or refund takes back what it carries, an event nothing
        sign = sa.case((is_sale, 1), (sales.c.kind.in_(REVERSALS), -1), else_=0)
        # counts: a void takes its sale out; a refund leaves the sale standing
        count_sign = sa.case((sales.c.seq.is_(None), 0), (is_sale, 1), (is_void, -1), else_=0)
        member_int = sa.case((sales.c.member, count_sign), else_=0)
        query = (
            sa.select(
                merchants.c.merchant_id,
                merchants.c.name,
                merchants.c.status,
                sa.func.coalesce(sa.func.sum(count_sign), 0),
                sa.func.coalesce(sa.func.sum(member_int), 0),
                sa.func.coalesce(sa.func.sum(sign * sales.c.gross), 0),
                sa.func.coalesce(sa.func.sum(sign * sales.c.discount), 0),
                sa.func.coalesce(sa.func.sum(sign * sales.c.net), 0),
                sa.func.count(sales.c.seq).filter(is_void),
                sa.func.count(sales.c.seq).filter(sales.c.kind == "refund"),
            )
            .select_from(
                merchants.outerjoin(
                    sales, sa.and_(sales.c.merchant_id == merchants.c.merchant_id, *cond)
                )
            )
            .group_by(merchants.c.merchant_id, merchants.c.name, merchants.c.status)
            .order_by(merchants.c.merchant_id)
        )
        with self.engine.connect() as conn:
            return [
                Settlement(r[0], r[1], r[2], *(int(v) for v in r[3:]))
                for r in conn.execute(query).all()
            ]

    # -- the dashboard: its running totals, never the sales ----------------------------
    def use_by_merchant(
        self, first_month: str, last_month: str, merchant_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Each merchant's figures (pact.tally.SALE_FIGURES) over the months ``first_month``
        to ``last_month`` (YYYY-MM, inclusive), with its name and category; the merchants
        with no entries then are left out."""
        t = sales_monthly
        query = (
            sa.select(
                merchants.c.merchant_id,
                merchants.c.name,
                merchants.c.category,
                *(sa.func.sum(t.c[f]).label(f) for f in SALE_FIGURES),
            )
            .select_from(t.join(merchants, merchants.c.merchant_id == t.c.merchant_id))
            .where(t.c.month >= first_month, t.c.month <= last_month)
            .group_by(merchants.c.merchant_id, merchants.c.name, merchants.c.category)
            .order_by(merchants.c.merchant_id)
        )
        if merchant_id is not None:
            query = query.where(t.c.merchant_id == merchant_id)
        with self.engine.connect() as conn:
            return [_ints(r, SALE_FIGURES) for r in conn.execute(query).mappings()]

    def use_by_month(
        self, first_month: str, last_month: str, merchant_id: str | None = None
    ) -> list[dict[str, Any]]:
        """The figures of each month (of one merchant, or all), oldest first."""
        t = sales_monthly
        query = (
            sa.select(t.c.month, *(sa.func.sum(t.c[f]).label(f) for f in SALE_FIGURES))
            .where(t.c.month >= first_month, t.c.month <= last_month)
            .group_by(t.c.month)
            .order_by(t.c.month)
        )
        if merchant_id is not None:
            query = query.where(t.c.merchant_id == merchant_id)
        with self.engine.connect() as conn:
            return [_ints(r, SALE_FIGURES) for r in conn.execute(query).mappings()]

    def use_by_day(self, first: date, last: date, merchant_id: str) -> list[dict[str, Any]]:
        """One merchant's figures of each local day ``first`` to ``last``, oldest first."""
        t = sales_daily
        query = (
            t.select()
            .where(t.c.merchant_id == merchant_id, t.c.day >= first, t.c.day <= last)
            .order_by(t.c.day)
        )
        with self.engine.connect() as conn:
            return [_ints(r, SALE_FIGURES) for r in conn.execute(query).mappings()]

    def members_by_month(self, district: str | None = None) -> list[dict[str, Any]]:
        """Per month and district (or, given a district, per month and workplace of it):
        the change in active members, those who joined and who left; oldest first."""
        t = member_monthly
        place = t.c.district if district is None else t.c.workplace
        query = (
            sa.select(
                t.c.month,
                place.label("place"),
                *(sa.func.sum(t.c[f]).label(f) for f in MEMBER_FIGURES),
            )
            .group_by(t.c.month, place)
            .order_by(t.c.month, place)
        )
        if district is not None:
            query = query.where(t.c.district == district)
        with self.engine.connect() as conn:
            return [_ints(r, MEMBER_FIGURES) for r in conn.execute(query).mappings()]

    def quiet_terminals(self, before: str) -> list[dict[str, Any]]:
        """The terminals not revoked whose last contact (or, never heard from, their
        enrolment) is before ``before``: the dashboard's silent ones, from the terminals'
        table alone."""
        since = sa.func.coalesce(terminals.c.last_contact_at, terminals.c.enrolled_at)
        query = (
            sa.select(
                terminals.c.terminal_id,
                terminals.c.merchant_id,
                terminals.c.last_contact_at,
                since.label("since"),
            )
            .where(terminals.c.revoked_at.is_(None), since < before)
            .order_by(since, terminals.c.terminal_id)
        )
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def newest_versions(self, prefix: str) -> dict[str, int]:
        """The newest version of each kind of signed file starting ``prefix``
        (``policy:``: each merchant's newest policy), by the rest of its kind."""
        query = (
            sa.select(signed_files.c.kind, sa.func.max(signed_files.c.version))
            .where(signed_files.c.kind.startswith(prefix, autoescape=True))
            .group_by(signed_files.c.kind)
        )
        with self.engine.connect() as conn:
            return {k.removeprefix(prefix): int(v) for k, v in conn.execute(query).all()}


def _ints(row: Any, names: Sequence[str]) -> dict[str, Any]:
    """A row with its sums as ints (NULL, of no rows, as 0; PostgreSQL's NUMERIC too)."""
    return {k: int(v or 0) if k in names else v for k, v in row.items()}
