"""Card numbers: the Luhn check and the keyed token that stands for a card.

A card number (PAN) is never kept: the union turns each member's into a token
when it imports members, and the terminal turns the card's into a token while
it reads the card (the reader calls a :class:`PanTokenizer`). Both sides use
the same function, so the same card gives the same token.
"""

from __future__ import annotations

import hashlib
import hmac

TOKEN_BYTES = 16  # HMAC-SHA256 truncated to 128 bits
TOKEN_SCHEME = "hmac-sha256-128"
MIN_KEY_BYTES = 32


def token_for_pan(pan: str, token_key: bytes) -> bytes:
    """Keyed token of a PAN: HMAC-SHA256(token_key, ASCII digits), first 16 bytes."""
    if not pan.isdigit() or not 12 <= len(pan) <= 19:
        raise ValueError("a PAN is 12 to 19 decimal digits")
    if len(token_key) < MIN_KEY_BYTES:
        raise ValueError("the token key must be at least 32 bytes")
    return hmac.new(token_key, pan.encode("ascii"), hashlib.sha256).digest()[:TOKEN_BYTES]


def luhn_ok(pan: str) -> bool:
    """True when the last digit of ``pan`` is its Luhn check digit (ISO/IEC 7812-1)."""
    if not pan.isdigit() or not pan.isascii():
        return False
    backwards = pan[::-1]
    total = sum(map(int, backwards[0::2])) + sum(_DOUBLED[int(d)] for d in backwards[1::2])
    return total % 10 == 0


_DOUBLED = tuple(sum(divmod(2 * d, 10)) for d in range(10))  # 2d with its digits summed


def luhn_complete(body: str) -> str:
    """``body`` followed by its Luhn check digit (for test and demo card numbers): the
    digits of ``body`` from its right are doubled first, as the check digit will stand
    to their right."""
    if not body.isdigit() or not body.isascii():
        raise ValueError("a card number's body is decimal digits")
    backwards = body[::-1]
    total = sum(_DOUBLED[int(d)] for d in backwards[0::2]) + sum(map(int, backwards[1::2]))
    return body + str(-total % 10)


def is_card_number(pan: str) -> bool:
    """12 to 19 ASCII digits whose last is the Luhn check digit."""
    return 12 <= len(pan) <= 19 and luhn_ok(pan)


class PanTokenizer:
    """What the card reader calls with the PAN it read (``reader.identity.Tokenize``).

    Returns the keyed token, or None when the terminal has no token key (a
    technician's read). Raises ``ValueError`` for a number that is not a card
    number (wrong length, not digits, Luhn check fails).
    """

    __slots__ = ("_key",)

    def __init__(self, token_key: bytes | None) -> None:
        if token_key is not None and len(token_key) < MIN_KEY_BYTES:
            raise ValueError("the token key must be at least 32 bytes")
        self._key = token_key

    def __repr__(self) -> str:  # never the key
        return f"PanTokenizer(keyed={self._key is not None})"

    def __call__(self, pan: str) -> bytes | None:
        if not is_card_number(pan):
            raise ValueError("the card number fails the Luhn check (ISO/IEC 7812-1)")
        return None if self._key is None else token_for_pan(pan, self._key)
