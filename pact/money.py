"""Money is integer fen (1 yuan = 100 fen). These convert at the edges only."""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal, InvalidOperation

from pact.errors import BasketError
from pact.text import N_

MAX_SALE_FEN = 100_000_000  # 1,000,000.00 yuan: anything above is a typing slip
# An amount as typed: digits with a decimal point, or thousands grouped by commas
PLAIN = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")
GROUPED = re.compile(r"[+-]?\d{1,3}(,\d{3})+(\.\d*)?")


def fen(amount: int) -> str:
    """Format integer fen as yuan with two decimals: 12345 -> "123.45"."""
    sign = "-" if amount < 0 else ""
    return f"{sign}{abs(amount) // 100}.{abs(amount) % 100:02d}"


def parse_yuan(text: str) -> int:
    """Parse an amount typed in yuan ("128", "128.5", "128.50", "1,280.50"; full-width
    digits too) into fen.

    A comma only groups thousands: "12,50" (a decimal comma) is refused, not read as
    1250.00. Raises :class:`pact.errors.BasketError` (a ValueError) with a message fit
    for a cashier.
    """
    cleaned = unicodedata.normalize("NFKC", str(text)).strip()  # ０-９ ， ． as typed in Chinese
    shown = repr(text)
    if "," in cleaned:
        if not GROUPED.fullmatch(cleaned):
            raise BasketError(
                N_(
                    "amount %(amount)s: a comma only groups thousands (1,280.50); type the "
                    "fen after a point, like 12.50"
                ),
                amount=shown,
            )
        cleaned = cleaned.replace(",", "")
    if not PLAIN.fullmatch(cleaned):
        raise BasketError(
            N_("amount %(amount)s is not a number: type it like 128.50"), amount=shown
        )
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        raise BasketError(
            N_("amount %(amount)s is not a number: type it like 128.50"), amount=shown
        ) from None
    if not value.is_finite() or value <= 0:
        raise BasketError(N_("amount %(amount)s must be more than 0.00"), amount=shown)
    if value.as_tuple().exponent < -2:  # type: ignore[operator]
        raise BasketError(N_("amount %(amount)s has more than two decimals (fen)"), amount=shown)
    # compared before scaling: "1e999999999" is a finite Decimal, too big to multiply
    if value > Decimal(MAX_SALE_FEN).scaleb(-2):
        raise BasketError(
            N_("amount %(amount)s is above the limit of %(limit)s"),
            amount=shown,
            limit=fen(MAX_SALE_FEN),
        )
    return int(value * 100)
