"""The sale record (pure): one typed, frozen value for the journal, the hash chain,
the wire and the central store.

:class:`Sale` is the one place a sale's fields are named. The chain hashes
:meth:`Sale.hashed`, the wire carries :meth:`Sale.as_json`, the terminal's journal
and the central store keep :meth:`Sale.as_row`, and each derives its field list
(the wire its type checks, the central store its column types) from the
dataclass. docs/protocol.md ("Journal", "Upload body") documents the formats,
which are on disk in shops. A new field must admit None and be in
:data:`OPTIONAL_FIELDS`, so the sales before it keep their hashes, and needs a
journal migration (``terminal.journal.MIGRATIONS``); the central store adds its
nullable column itself.

A checkout prices a :class:`SaleDraft`; the journal gives it its place in the
chain (``seq``, ``sale_id``, ``at``, ``prev_hash``) and its ``hash``
(:func:`pact.chain.seal`).
"""

from __future__ import annotations

import json
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Protocol, Self, get_args, get_type_hints

from pact.signing import canonical_json


class Row(Protocol):
    """A table row by column name (a dict, or SQLAlchemy's ``RowMapping``)."""

    def __getitem__(self, name: str, /) -> Any: ...


# Field metadata: how a refusal describes the field's value ("sales[3].token must be
# a hex string or null"); without it, pact.wire describes the field's type.
DESCRIBE = "describe"


@dataclass(frozen=True, slots=True)
class Sale:
    """One journaled sale. Money is integer fen, times ISO 8601 UTC (``...Z``).

    ``basket`` is JSON-shaped (``lines``, ``tier``, ``discounts``; docs/protocol.md,
    "Journal"): read-only by contract like the rest of the record, but a dict, so a
    sale with a basket is not hashable.
    """

    seq: int  # 1, 2, ... per terminal
    sale_id: str  # UUID
    at: str
    terminal_id: str
    merchant_id: str
    token: str | None = field(metadata={DESCRIBE: "a hex string or null"})  # keyed card token
    pan_last4: str
    member: bool
    gross: int
    discount: int
    net: int
    rules: tuple[str, ...] = field(metadata={DESCRIBE: "a list of rule ids"})  # in order applied
    roster_version: int
    policy_version: int
    basket: Mapping[str, Any] | None  # hashed only when not None (OPTIONAL_FIELDS)
    # The card's Application Transaction Counter (EMV tag 9F36) at this sale, when the
    # card gave it: card-presence evidence. Hashed only when not None.
    atc: int | None = field(
        metadata={DESCRIBE: "the card's transaction counter (0 to 65535) or null"}
    )
    # What the entry is: None a sale; "void" the reversal of sale ``ref_seq`` whole
    # (the same amounts, rules and basket as that sale); "refund" the reversal of some
    # units of its lines (pact.reversal); "event" something that happened to the terminal
    # (pact.event; no money). Hashed only when not None.
    kind: str | None = field(metadata={DESCRIBE: '"void", "refund", "event" or null (a sale)'})
    ref_seq: int | None = field(metadata={DESCRIBE: "the seq of the sale reversed, or null"})
    # why a void or refund was made; what an event was
    note: str | None = field(metadata={DESCRIBE: "a reason (text) or null"})
    prev_hash: str  # the previous sale's hash; GENESIS for the first
    hash: str
    # The terminal's device signature over ``hash`` (pact.device; hex Ed25519); not hashed.
    # None only on sales journaled before terminals had device keys.
    sig: str | None = field(default=None, metadata={DESCRIBE: "a hex device signature or null"})

    @property
    def is_sale(self) -> bool:
        """A sale (not a void)."""
        return self.kind is None

    def hashed(self) -> dict[str, Any]:
        """What the sale's hash covers: every field but ``prev_hash``, ``hash`` and
        ``sig``, an optional field only when it is not None (JSON values: rules as a
        list)."""
        return _json(self, _layout(type(self)).hashed)

    def as_json(self) -> dict[str, Any]:
        """The sale on the wire: every field in order (rules as a list), an optional
        field left out when it is None."""
        return _json(self, _layout(type(self)).to_json)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        """The sale in ``data``, a mapping shaped as :meth:`as_json` gives (a field whose
        type admits None may be absent). Checks nothing: :func:`pact.wire.decode_sales`
        does."""
        layout = _layout(cls)
        values = {name: data[name] for name in layout.required}
        for name in layout.nullable:
            values[name] = data.get(name)
        for name in layout.tuples:
            values[name] = tuple(values[name])
        return cls(**values)

    def as_row(self) -> dict[str, Any]:
        """The sale as a row of the journal's and the central store's ``sales`` table:
        every field, rules as JSON text (a list), basket as JSON text (keys sorted) or
        None."""
        return {
            name: getattr(self, name) if encode is None else encode(getattr(self, name))
            for name, encode, _ in _layout(type(self)).row
        }

    @classmethod
    def from_row(cls, row: Row) -> Self:
        """The sale in a ``sales`` row (:meth:`as_row`'s shape; other columns ignored)."""
        return cls(
            **{
                name: row[name] if decode is None else decode(row[name])
                for name, _, decode in _layout(cls).row
            }
        )


REVERSALS = frozenset({"void", "refund"})  # the kinds of entry that reverse a sale (ref_seq)
MAX_NOTE = 200  # characters of a reason
CHAIN_FIELDS = ("prev_hash", "hash")  # link a sale to the one before it; not hashed
UNHASHED_FIELDS = (*CHAIN_FIELDS, "sig")  # the signature signs the hash: not in it
# Hashed only when not None, left out on the wire when None: sales journaled before
# the field existed keep their hash (sig is never hashed).
OPTIONAL_FIELDS = frozenset({"basket", "atc", "kind", "ref_seq", "note", "sig"})
# What the journal fills in when it records a SaleDraft.
JOURNAL_FIELDS = ("seq", "sale_id", "at", *UNHASHED_FIELDS)


@dataclass(frozen=True, slots=True)
class SaleDraft:
    """A sale as the checkout prices it: every field of :class:`Sale` but
    :data:`JOURNAL_FIELDS`, in the same order and of the same types."""

    terminal_id: str
    merchant_id: str
    token: str | None
    pan_last4: str
    member: bool
    gross: int
    discount: int
    net: int
    rules: tuple[str, ...]
    roster_version: int
    policy_version: int
    basket: Mapping[str, Any] | None = None
    atc: int | None = None
    kind: str | None = None
    ref_seq: int | None = None
    note: str | None = None

    def complete(self, *, seq: int, sale_id: str, at: str, prev_hash: str, hash: str) -> Sale:
        """The :class:`Sale` with the journal's fields (:func:`pact.chain.seal` hashes it)."""
        drafted = {f.name: getattr(self, f.name) for f in fields(self)}
        return Sale(
            seq=seq, sale_id=sale_id, at=at, prev_hash=prev_hash, hash=hash, sig=None, **drafted
        )


def field_types(cls: type[Sale] = Sale) -> dict[str, Any]:
    """Each field of ``cls`` (Sale or a subclass) and its type, in order: the types
    adapters map to their own (pact.wire's checks, the central store's columns)."""
    return dict(_layout(cls).types)


def row_encoders(cls: type[Sale] = Sale) -> tuple[Codec | None, ...]:
    """Each field's encoder into a row, in field order, as :meth:`Sale.as_row` applies
    it (None: the value as it is), for adapters that build rows of their own."""
    return tuple(encode for _, encode, _ in _layout(cls).row)


# --------------------------------------------------------------------- the field layout


def _dumps_list(value: tuple[str, ...]) -> str:
    return json.dumps(list(value))


def _loads_tuple(text: str) -> tuple[str, ...]:
    return tuple(json.loads(text))


def _dumps_object(value: Mapping[str, Any] | None) -> str | None:
    """A JSON object field's text in a row: canonical JSON (pact.signing; rows written
    before it have spaces and ASCII escapes: any JSON reader takes both)."""
    return None if value is None else canonical_json(value).decode()


def _loads_object(text: str | None) -> Any:
    return json.loads(text) if text else None


Codec = Callable[[Any], Any]

# Each type a Sale field may have, and how a table row keeps it (encode, decode);
# None: as it is. A field of another type is refused when the layout is made.
_ROW_CODECS: dict[Any, tuple[Codec | None, Codec | None]] = {
    int: (None, None),
    int | None: (None, None),
    str: (None, None),
    str | None: (None, None),
    bool: (None, bool),
    tuple[str, ...]: (_dumps_list, _loads_tuple),
    Mapping[str, Any] | None: (_dumps_object, _loads_object),
}


Entry = tuple[str, bool, bool]  # (field, hashed only when not None, a tuple: a JSON list)


@dataclass(frozen=True)
class _Layout:
    """What the methods of a Sale class need of its fields, worked out once."""

    types: tuple[tuple[str, Any], ...]  # (field, its type), in field order
    to_json: tuple[Entry, ...]
    hashed: tuple[Entry, ...]
    required: tuple[str, ...]  # fields whose type does not admit None
    nullable: tuple[str, ...]  # fields whose type admits None: may be absent from JSON
    tuples: tuple[str, ...]
    row: tuple[tuple[str, Codec | None, Codec | None], ...]  # (field, encode, decode)


_layouts: dict[type[Sale], _Layout] = {}


def _layout(cls: type[Sale]) -> _Layout:
    """The layout of ``cls`` (Sale, or a subclass with more fields)."""
    layout = _layouts.get(cls)
    if layout is None:
        layout = _layouts[cls] = _make_layout(cls)
    return layout


def _make_layout(cls: type[Sale]) -> _Layout:
    hints = get_type_hints(cls)
    typed = tuple((f.name, hints[f.name]) for f in fields(cls))
    for name, kind in typed:
        if kind not in _ROW_CODECS:
            raise TypeError(f"Sale.{name}: {kind} is not one of the types a sale field may have")
    to_json = tuple(
        (name, name in OPTIONAL_FIELDS, kind == tuple[str, ...]) for name, kind in typed
    )
    nullable = tuple(name for name, kind in typed if types.NoneType in get_args(kind))
    return _Layout(
        types=typed,
        to_json=to_json,
        hashed=tuple(entry for entry in to_json if entry[0] not in UNHASHED_FIELDS),
        required=tuple(name for name, _ in typed if name not in nullable),
        nullable=nullable,
        tuples=tuple(name for name, kind in typed if kind == tuple[str, ...]),
        row=tuple((name, *_ROW_CODECS[kind]) for name, kind in typed),
    )


def _json(sale: Sale, entries: tuple[Entry, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, optional, is_tuple in entries:
        value = getattr(sale, name)
        if optional and value is None:
            continue
        out[name] = list(value) if is_tuple else value
    return out


# Every field, in order: the order on the wire and of the journal's INSERT.
FIELDS = tuple(name for name, _ in _layout(Sale).types)
HASHED_FIELDS = tuple(name for name in FIELDS if name not in UNHASHED_FIELDS)
DRAFT_FIELDS = tuple(name for name in FIELDS if name not in JOURNAL_FIELDS)
