"""pact.signing.canonical_json writes orjson's bytes, which must be the standard
library's definition to the byte: every signature and chain hash made before (and by
terminals not yet updated) rests on it."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pact.chain import entry_hash
from pact.signing import canonical_json
from tests.test_sale import STRANGER


def stdlib(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def outcome(fn, value):  # type: ignore[no-untyped-def]
    try:
        return fn(value)
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
        return TypeError if isinstance(exc, TypeError) else ValueError  # whichever both raise


# every code point but lone surrogates, which UTF-8 cannot carry (both refuse them: below)
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | text
    | st.sampled_from([math.nan, math.inf, -math.inf])
)
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(text, inner, max_size=5),
    max_leaves=30,
)


@settings(derandomize=True, max_examples=600, deadline=None)
@given(documents)
@example({"b": 1, "a": {"é": 1, "z": 2, "Z": 3, "\U0001f600": 1, "\uffff": 2}})
@example({"tier": math.nan})  # orjson would write null: no number may pass for one
@example({"q": '\x00\x1f\x7f\u2028 "\\ \b\f\n\r\t null'})
@example({"big": 2**64, "small": -(2**63) - 1})
def test_the_bytes_are_the_standard_librarys(value: object) -> None:
    assert canonical_json(value) == stdlib(value)


@pytest.mark.parametrize(
    "value",
    [{"lone": "\ud800"}, {1: 2}, {"when": __import__("datetime").date(2026, 1, 1)}, [b"x"]],
    ids=["lone surrogate", "number key", "date", "bytes"],
)
def test_what_the_standard_library_refuses_or_converts_is_left_to_it(value: object) -> None:
    assert outcome(canonical_json, value) == outcome(stdlib, value)


def test_a_nan_cannot_stand_in_for_a_null_in_a_chain_hash() -> None:
    sale = STRANGER  # a sale pinned with the hash the release before orjson gave it
    assert sale.basket is not None and sale.basket["tier"] is None
    forged = replace(sale, basket={**sale.basket, "tier": math.nan})
    assert entry_hash(sale.prev_hash, forged) != sale.hash
    assert entry_hash(sale.prev_hash, sale) == sale.hash
