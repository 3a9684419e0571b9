"""The small value the reader hands to the rest of the product.

The PAN exists only inside :func:`identity_from_pan` (in memory, during a read).
The reader does not know how a card becomes a token: the caller passes a
``tokenize`` function, and what leaves is its token and the last four digits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

Tokenize = Callable[[str], "bytes | None"]
"""PAN -> keyed token (None: no key configured); ``ValueError`` for a number that is
not a card number. unioncard passes a ``pact.cards.PanTokenizer``."""


@dataclass(frozen=True)
class CardIdentity:
    """What a card read yields. Never holds the PAN."""

    scheme: str  # "unionpay", "visa", ...
    aid: bytes
    pan_last4: str
    expiry: str  # "YYYY-MM"
    token: bytes | None  # None when no token key is configured
    atc: int | None = None  # the card's transaction counter for this read, if it gave it

    def as_json(self) -> dict[str, str | int | None]:
        return {
            "scheme": self.scheme,
            "aid": self.aid.hex().upper(),
            "pan_last4": self.pan_last4,
            "expiry": self.expiry,
            "token": self.token.hex() if self.token is not None else None,
            "atc": self.atc,
        }


def identity_from_pan(
    scheme: str, aid: bytes, pan: str, expiry: str, tokenize: Tokenize, atc: int | None = None
) -> CardIdentity:
    """Build the identity; the PAN is consumed here and not kept.

    Raises ``ValueError`` when ``tokenize`` refuses the number.
    """
    token = tokenize(pan)
    return CardIdentity(
        scheme=scheme, aid=aid, pan_last4=pan[-4:], expiry=expiry, token=token, atc=atc
    )
