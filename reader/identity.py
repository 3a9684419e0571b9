"""The small value the reader hands to the rest of the product.

The PAN exists only inside :func:`identity_from_pan` (in memory, during a read);
what leaves is a keyed token and the last four digits.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

TOKEN_BYTES = 16  # HMAC-SHA256 truncated to 128 bits
TOKEN_SCHEME = "hmac-sha256-128"


def token_for_pan(pan: str, token_key: bytes) -> bytes:
    """Keyed token of a PAN: HMAC-SHA256(token_key, ASCII digits), first 16 bytes."""
    if not pan.isdigit() or not 12 <= len(pan) <= 19:
        raise ValueError("a PAN is 12 to 19 decimal digits")
    if len(token_key) < 32:
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
    """``body`` followed by its Luhn check digit (for test and demo card numbers)."""
    return next(body + d for d in "0123456789" if luhn_ok(body + d))


@dataclass(frozen=True)
class CardIdentity:
    """What a card read yields. Never holds the PAN."""

    scheme: str  # "unionpay", "visa", ...
    aid: bytes
    pan_last4: str
    expiry: str  # "YYYY-MM"
    token: bytes | None  # None when no token key is configured

    def as_json(self) -> dict[str, str | None]:
        return {
            "scheme": self.scheme,
            "aid": self.aid.hex().upper(),
            "pan_last4": self.pan_last4,
            "expiry": self.expiry,
            "token": self.token.hex() if self.token is not None else None,
        }


def identity_from_pan(
    scheme: str, aid: bytes, pan: str, expiry: str, token_key: bytes | None
) -> CardIdentity:
    """Build the identity; the PAN is consumed here and not kept."""
    token = token_for_pan(pan, token_key) if token_key is not None else None
    return CardIdentity(scheme=scheme, aid=aid, pan_last4=pan[-4:], expiry=expiry, token=token)
