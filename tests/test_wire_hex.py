"""An upload's signatures and a registration's key must be lower-case hex of their
length (pact.wire._is_hex, one regex match since it was a third of the decoding)."""

from __future__ import annotations

import pytest

from pact.wire import _is_hex, decode_device_key, encode_device_key


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
