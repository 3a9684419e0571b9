"""The terminal's exception tree: one kind of failure, one class.

Each error carries ``exit_code`` (for the CLI) and a message that names what is
wrong and what to do, fit to show a cashier or a technician on one line.
"""

from __future__ import annotations


class TerminalError(Exception):
    """Base of every failure the terminal reports to a person."""

    exit_code = 1


class ConfigError(TerminalError):
    """Settings or enrolment data are missing or invalid."""


class NotEnrolledError(ConfigError):
    """The terminal has no enrolment bundle yet."""


class SignatureError(TerminalError):
    """A signed document failed verification (bad signature, unknown key, ...)."""


class RosterError(SignatureError):
    """A roster was refused. The last good roster stays in service."""


class PolicyError(SignatureError):
    """A merchant policy was refused or is invalid."""


class JournalError(TerminalError):
    """The journal cannot be written or its hash chain is broken."""


class BusyError(TerminalError):
    """Another checkout is already waiting for a card."""


class BasketError(TerminalError):
    """A basket or usage file given to `unioncard quote` is invalid."""
