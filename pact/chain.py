"""The journal's hash chain (pure).

Each sale carries ``prev_hash`` (the previous sale's ``hash``; 64 zeros for the
first) and ``hash = SHA-256(prev_hash bytes || canonical JSON of the sale's fields)``,
the fields being :meth:`pact.sale.Sale.hashed` (every field but the two hashes; an
optional one only when not null).
Removing, reordering or editing any sale breaks every hash after it, so the
central service and an auditor can prove the upload is the terminal's record.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable

from pact.errors import ChainError
from pact.sale import Sale, SaleDraft
from pact.signing import canonical_json

GENESIS = "0" * 64


def entry_hash(prev_hash: str, sale: Sale) -> str:
    """``hex(SHA-256(bytes(prev_hash) || canonical_json(sale.hashed())))``."""
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical_json(sale.hashed())).hexdigest()


def seal(draft: SaleDraft, *, seq: int, sale_id: str, at: str, prev_hash: str) -> Sale:
    """The sale ``draft`` becomes as entry ``seq`` of a chain whose last hash is
    ``prev_hash``: with that ``prev_hash`` and its own ``hash``."""
    sale = draft.complete(seq=seq, sale_id=sale_id, at=at, prev_hash=prev_hash, hash="")
    return dataclasses.replace(sale, hash=entry_hash(prev_hash, sale))


def check_chain(sales: Iterable[Sale], prev_hash: str, prev_seq: int) -> str:
    """Verify that ``sales`` continue the chain ending at (prev_seq, prev_hash).

    Returns the last hash. Raises :class:`ChainError` naming the first bad sale.
    """
    for sale in sales:
        seq = sale.seq
        if seq != prev_seq + 1:
            raise ChainError(f"sale {seq} does not follow sale {prev_seq}")
        if sale.prev_hash != prev_hash:
            raise ChainError(f"sale {seq} does not link to the previous sale's hash")
        if entry_hash(prev_hash, sale) != sale.hash:
            raise ChainError(f"sale {seq} has been altered (hash mismatch)")
        prev_hash, prev_seq = sale.hash, seq
    return prev_hash
