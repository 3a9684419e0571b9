"""The one error base, and the core's own tree.

Every failure unioncard reports to a person is a :class:`UnioncardError` (the
card reader's :class:`reader.errors.CardError` aside: the reader is a library
that knows nothing of unioncard, and carries ``exit_code`` the same way). Each
carries ``exit_code`` for the command line and a message that names what is
wrong and what to do, on one line. Each part has its tree under this base:

- here, the core's: refused signed files and updates, broken chains, wire and
  basket formats;
- ``terminal.errors.TerminalError`` (settings, enrolment, journal, busy);
- ``sync.errors.SyncError`` (the network and the central service's answers);
- ``central.errors.CentralError`` (the union's operations, with an HTTP status).

Bad arguments to a function stay ``ValueError``.
"""

from __future__ import annotations

from pact.text import Msg, Param


class UnioncardError(Exception):
    """Base of every failure unioncard reports to a person.

    Raised with a message id and its parameters (``pact.text``), so that the page can
    say it in the cashier's language: ``BasketError(N_("line %(line)s: ..."), line=2)``;
    ``str()`` is the English, ``msg`` the message to translate. A plain sentence is
    accepted too (it is shown in English only).
    """

    exit_code = 1

    def __init__(self, message: str | Msg = "", /, **params: Param) -> None:
        self.msg = message if isinstance(message, Msg) else Msg.of(message, **params)
        super().__init__(str(self.msg))


class RefusedError(UnioncardError):
    """A signed file or an update was refused; what is installed stays in service."""


class SignatureError(RefusedError):
    """A signed document failed verification (bad signature, unknown key, malformed)."""


class TrustError(SignatureError):
    """Root metadata was refused."""


class SnapshotError(SignatureError):
    """A snapshot was refused, or a file does not match the installed snapshot."""


class RosterError(SignatureError):
    """A roster was refused. The last good roster stays in service."""


class PolicyError(SignatureError):
    """A merchant policy was refused or is invalid."""


class UsageError(SignatureError):
    """A usage file (quota use at the merchant's other terminals, pact.usage) was
    refused; the one installed stays, while it is valid."""


class BundleError(SignatureError):
    """An audit bundle (pact.bundle) is malformed, or a signature or digest in it fails:
    the message names the part, and the terminal and seq or the version, where."""

    exit_code = 2


class ClockError(RefusedError):
    """The wall clock is earlier than a signed timestamp the terminal already trusts."""


class CompactionNeededError(UnioncardError):
    """The base roster already holds as many layers, or as many changes, as a version
    may: sign a full roster of one layer (``pact.roster.sign_packed``) instead of a delta."""


class ChainError(UnioncardError):
    """A sequence of journal entries does not form an unbroken chain."""


class DeviceSignatureError(ChainError):
    """A journal entry's device signature does not verify under the terminal's key."""


class WireFormatError(UnioncardError):
    """A message on the wire does not have the documented shape."""


class BasketError(UnioncardError, ValueError):
    """A basket, an amount or a usage file is invalid (a ValueError too: bad input)."""


class ReversalError(UnioncardError):
    """A void that may not be made (not a sale, already voided, not today's, no reason)."""
