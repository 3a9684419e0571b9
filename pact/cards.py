"""Card numbers: the Luhn check and the keyed token that stands for a card.

A card number (PAN) is never kept: the union turns each member's into a token
when it imports members, and the terminal turns the card's into a token while
it reads the card (the reader calls a :class:`PanTokenizer`). Both sides use
the same function, so the same card gives the same token.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

from argon2.low_level import Type, hash_secret_raw

TOKEN_BYTES = 16  # every scheme's token is 128 bits
MIN_KEY_BYTES = 32


@dataclass(frozen=True)
class TokenScheme:
    """How a card number becomes its token: named in the roster's signed header
    (``token_scheme``), so that a terminal tokenises a tap as its roster was made.

    - ``hmac-sha256-128``: HMAC-SHA256(token key, ASCII digits)[:16]. Fast (about 2 µs):
      whoever holds a terminal's token key and roster can try every card number under
      a BIN in half an hour of one core (docs/security.md, "The stolen terminal").
    - ``argon2id-hmac-128;m=M,t=T,p=P``: Argon2id(password = that HMAC, salt =
      SHA-256("unioncard-token-2" ‖ token key)[:16], M KiB, T passes, P lanes)[:16].
      Each candidate costs the attacker M KiB of memory and milliseconds of one core
      (``ARGON2ID``: 8 MiB, about 7 ms here, about 30 ms on a Raspberry Pi 4).
    """

    name: str
    memory_kib: int = 0
    passes: int = 0
    lanes: int = 0

    @property
    def label(self) -> str:
        """What the roster's header carries."""
        if self.name == _HMAC:
            return _HMAC
        return f"{self.name};m={self.memory_kib},t={self.passes},p={self.lanes}"

    @classmethod
    def parse(cls, label: str) -> TokenScheme:
        """The scheme a header names; ``ValueError`` for one this release does not know,
        or Argon2id costs outside what a terminal can bear (8 KiB-64 MiB, 1-10 passes,
        1-4 lanes)."""
        if label == _HMAC:
            return HMAC_SHA256
        found = _ARGON_LABEL.fullmatch(label)
        if found is None:
            raise ValueError(f"unknown token scheme {label[:60]!r}")
        memory, passes, lanes = (int(g) for g in found.groups())
        if not (8 * lanes <= memory <= 65536 and 1 <= passes <= 10 and 1 <= lanes <= 4):
            raise ValueError(f"token scheme {label!r} asks for costs a terminal cannot bear")
        return cls(_ARGON, memory, passes, lanes)

    def token(self, pan: str, token_key: bytes) -> bytes:
        """The token of ``pan`` (12 to 19 digits) under ``token_key``."""
        if not pan.isdigit() or not pan.isascii() or not 12 <= len(pan) <= 19:
            raise ValueError("a PAN is 12 to 19 decimal digits")
        if len(token_key) < MIN_KEY_BYTES:
            raise ValueError("the token key must be at least 32 bytes")
        keyed = hmac.new(token_key, pan.encode("ascii"), hashlib.sha256).digest()
        if self.name == _HMAC:
            return keyed[:TOKEN_BYTES]
        salt = hashlib.sha256(b"unioncard-token-2" + token_key).digest()[:16]
        return hash_secret_raw(
            keyed,
            salt,
            time_cost=self.passes,
            memory_cost=self.memory_kib,
            parallelism=self.lanes,
            hash_len=TOKEN_BYTES,
            type=Type.ID,
        )


_HMAC = "hmac-sha256-128"
_ARGON = "argon2id-hmac-128"
_ARGON_LABEL = re.compile(r"argon2id-hmac-128;m=([1-9][0-9]{0,5}),t=([1-9][0-9]?),p=([1-9])")

HMAC_SHA256 = TokenScheme(_HMAC)  # the first releases' tokens (rosters without a newer scheme)
ARGON2ID = TokenScheme(_ARGON, memory_kib=8192, passes=1, lanes=1)  # a new union's default
DEFAULT_SCHEME = ARGON2ID


def token_for_pan(pan: str, token_key: bytes, scheme: TokenScheme = DEFAULT_SCHEME) -> bytes:
    """Keyed token of a PAN under ``scheme`` (a new union's scheme unless given)."""
    return scheme.token(pan, token_key)


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


def shown_member(member_id: str) -> str:
    """A member id as an error message may show it: one that is a card number (a file
    whose columns are shifted) is shown by its last four digits only."""
    digits = member_id.replace(" ", "").replace("-", "")
    return f"••••{digits[-4:]}" if is_card_number(digits) else member_id


class PanTokenizer:
    """What the card reader calls with the PAN it read (``reader.identity.Tokenize``).

    Returns the keyed token under ``scheme`` (the installed roster's), or None when
    the terminal has no token key (a technician's read). Raises ``ValueError`` for a
    number that is not a card number (wrong length, not digits, Luhn check fails).
    """

    __slots__ = ("_key", "scheme")

    def __init__(self, token_key: bytes | None, scheme: TokenScheme = DEFAULT_SCHEME) -> None:
        if token_key is not None and len(token_key) < MIN_KEY_BYTES:
            raise ValueError("the token key must be at least 32 bytes")
        self._key = token_key
        self.scheme = scheme

    def __repr__(self) -> str:  # never the key
        return f"PanTokenizer(keyed={self._key is not None}, scheme={self.scheme.label!r})"

    def __call__(self, pan: str) -> bytes | None:
        if not is_card_number(pan):
            raise ValueError("the card number fails the Luhn check (ISO/IEC 7812-1)")
        return None if self._key is None else self.scheme.token(pan, self._key)
