"""An upload's signatures and a registration's key must be lower-case hex of their
length (pact.wire._is_hex, one regex match since it was a third of the decoding)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pact.errors import WireFormatError
from pact.wire import _is_hex, decode_device_key, decode_sales, encode_device_key, encode_sales
from tests.test_central import make_sales


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("0123456789abcdef", True),
        ("0123456789abcdeF", False),  # upper case
        ("0123456789abcdeg", False),
        ("0123456789abcde", False),  # one short
        ("0123456789abcdef0", False),  # one long
        ("0123456789abcde\n", False),
        ("0123456789abcde٣", False),  # a digit, but not an ASCII one
        ("0123456789abcd e", False),
    ],
)
def test_hex_of_a_given_length(text: str, ok: bool) -> None:
    assert _is_hex(text, 16) is ok


def test_a_registration_needs_64_hex_digits() -> None:
    assert decode_device_key(encode_device_key("T1", "ab" * 32)) == ("T1", "ab" * 32)
    with pytest.raises(Exception, match="64 hex digits"):
        decode_device_key(encode_device_key("T1", "AB" * 32))


@pytest.mark.parametrize(
    ("at", "ok"),
    [
        ("2026-11-28T09:30:00Z", True),
        ("2026-11-28T20:00:00+08:00", False),  # an offset: the union's days read text
        ("2026-11-28T09:30:00.5Z", False),
        ("2026-02-30T09:30:00Z", False),  # no such day
        ("2026-11-28T24:00:00Z", False),
        ("yesterday", False),
        ("2026-11-28T09:30:00Z\n", False),
        ("9997-12-31T23:59:59Z", True),
        ("9998-12-31T16:00:00Z", False),  # 9999-01-01 in Shanghai: no statement covers it
        ("9999-12-31T20:00:00Z", False),  # the year 10000 in Shanghai: the ingest's 500
        ("2001-01-01T00:00:00Z", True),
        ("2000-01-01T05:00:00Z", False),  # 1999-12-31 in New York
        ("1999-12-31T23:59:59Z", False),
        ("0001-01-01T00:00:00Z", False),
    ],
)
def test_an_uploaded_entrys_time_is_utc_to_the_second(at: str, ok: bool) -> None:
    """The terminal journals one form (pact.timefmt.iso); anything else is a 400, not an
    error inside the ingest's transaction (the dashboard's days key on the text)."""
    body = encode_sales("T1", [replace(s, at=at) for s in make_sales("T1", 1)])
    if ok:
        assert decode_sales(body)[1][0].at == at
    else:
        with pytest.raises(WireFormatError, match=r"sales\[0\]\.at must be a UTC time"):
            decode_sales(body)


@pytest.mark.parametrize("name", ["prev_hash", "hash"])
@pytest.mark.parametrize("bad", ["0" * 63 + "g", "0" * 63, "A" * 64, "0" * 65])
def test_an_uploaded_entrys_hashes_are_64_hex_digits(name: str, bad: str) -> None:
    """The union hashes ``prev_hash`` into the chain check (bytes.fromhex): anything
    but 64 lower-case hex digits is a 400 naming the field, not a 500 inside the
    ingest (found by test_fuzz_inputs: an edited repeat of a held entry)."""
    sales = make_sales("T1", 1)
    assert decode_sales(encode_sales("T1", sales))[1] == sales
    body = encode_sales("T1", [replace(s, **{name: bad}) for s in sales])
    with pytest.raises(WireFormatError, match=rf"sales\[0\]\.{name} must be 64 lower-case hex"):
        decode_sales(body)


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        ({"gross": 2**63 - 1, "net": 2**63 - 1 - 50}, r"sales\[0\]\.gross is above 100000000 fen"),
        ({"seq": 2**63}, r"a seq must be at most"),
        ({"roster_version": 2**64}, r"a roster or policy version must be at most"),
        ({"pan_last4": "621483000"}, r"sales\[0\]\.pan_last4 must be the card's last four"),
        ({"token": "not hex at all, a name?"}, r"sales\[0\]\.token must be 32 lower-case hex"),
        ({"sale_id": "x" * 100}, r"sales\[0\]\.sale_id must be 1 to 36"),
        ({"rules": ["r" * 65]}, r"sales\[0\]\.rules must be at most"),
        ({"note": "a\x00b"}, r"sales\[0\]\.note must not hold a NUL"),
    ],
)
def test_an_uploaded_entry_stays_within_what_the_union_stores(change, refusal) -> None:
    """Each was taken and then a 500 in the ingest (a seq of 2**63: the refusal meant for
    the audit was lost too), broke the union's settlement on SQLite (an amount of
    2**63 - 1), or kept what should never be kept (a pan_last4 with room for a card)."""
    body = encode_sales("T1", make_sales("T1", 1))
    body["sales"][0].update(change)
    with pytest.raises(WireFormatError, match=refusal):
        decode_sales(body)
