"""The journal's hash chain (pure).

Each sale carries ``prev_hash`` (the previous sale's ``hash``; 64 zeros for the
first) and ``hash = SHA-256(prev_hash bytes || canonical JSON of the sale's fields)``.
Removing, reordering or editing any sale breaks every hash after it, so the
central service and an auditor can prove the upload is the terminal's record.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from pact.errors import ChainError
from pact.signing import canonical_json

GENESIS = "0" * 64

# The fields a sale's hash covers, in the journal and on the wire.
SALE_FIELDS = (
    "seq",
    "sale_id",
    "at",
    "terminal_id",
    "merchant_id",
    "token",
    "pan_last4",
    "member",
    "gross",
    "discount",
    "net",
    "rules",
    "roster_version",
    "policy_version",
    "basket",
)
# Hashed only when not null: sales journaled before the field existed keep their hash.
OPTIONAL_SALE_FIELDS = frozenset({"basket"})


def entry_hash(prev_hash: str, sale: Mapping[str, Any]) -> str:
    fields = {
        name: sale[name]
        for name in SALE_FIELDS
        if name not in OPTIONAL_SALE_FIELDS or sale.get(name) is not None
    }
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical_json(fields)).hexdigest()


def check_chain(sales: Iterable[Mapping[str, Any]], prev_hash: str, prev_seq: int) -> str:
    """Verify that ``sales`` continue the chain ending at (prev_seq, prev_hash).

    Returns the last hash. Raises :class:`ChainError` naming the first bad sale.
    """
    for sale in sales:
        seq = sale["seq"]
        if seq != prev_seq + 1:
            raise ChainError(f"sale {seq} does not follow sale {prev_seq}")
        if sale["prev_hash"] != prev_hash:
            raise ChainError(f"sale {seq} does not link to the previous sale's hash")
        if entry_hash(prev_hash, sale) != sale["hash"]:
            raise ChainError(f"sale {seq} has been altered (hash mismatch)")
        prev_hash, prev_seq = sale["hash"], seq
    return prev_hash
