"""Money is integer fen (1 yuan = 100 fen). These convert at the edges only."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from pact.errors import BasketError
from pact.text import N_

MAX_SALE_FEN = 100_000_000  # 1,000,000.00 yuan: anything above is a typing slip


def fen(amount: int) -> str:
    """Format integer fen as yuan with two decimals: 12345 -> "123.45"."""
    sign = "-" if amount < 0 else ""
    return f"{sign}{abs(amount) // 100}.{abs(amount) % 100:02d}"


def parse_yuan(text: str) -> int:
    """Parse an amount typed in yuan ("128", "128.5", "128.50") into fen.

    Raises :class:`pact.errors.BasketError` (a ValueError) with a message fit for a
    cashier.
    """
    cleaned = str(text).strip().replace(",", "")
    shown = repr(text)
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
