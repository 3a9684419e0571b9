"""The one exception tree for everything that can go wrong reading a card.

Every failure below pyscard is translated into one of these at the boundary
(``reader/pcsc.py``). Each class carries the exit status that
``unioncard card read`` uses, and a message a cashier can act on.
"""

from __future__ import annotations


class CardError(Exception):
    """A card could not be read. ``exit_code`` is the CLI's exit status."""

    exit_code = 4


class NoReaderError(CardError):
    """pcscd is not running, or it has no (matching) reader."""

    exit_code = 2


class NoCardError(CardError):
    """No card was presented within the timeout."""

    exit_code = 3


class UnsupportedCardError(CardError):
    """The card has no payment application we accept (e.g. a transit card)."""

    exit_code = 4


class CardBlockedError(CardError):
    """The card or its application is blocked."""

    exit_code = 4


class MalformedResponseError(CardError):
    """The card answered with bytes that do not parse as EMV data."""

    exit_code = 4


class CardRemovedError(CardError):
    """The card was taken away during the read."""

    exit_code = 5


class StaleCardError(NoCardError):
    """No new card: the card in the reader was already read for a sale, or was there
    before the terminal started watching (it may be the last customer's).

    Exit status 3, like :class:`NoCardError`: no card to read was presented.
    """

    exit_code = 3
