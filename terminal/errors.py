"""The terminal's exception tree (under ``pact.errors.UnioncardError``).

Each error carries ``exit_code`` (for the CLI) and a message that names what is
wrong and what to do, fit to show a cashier or a technician on one line.
"""

from __future__ import annotations

from pact.errors import UnioncardError


class TerminalError(UnioncardError):
    """Base of every failure of the shop's terminal itself."""


class ConfigError(TerminalError):
    """Settings, the data folder or enrolment data are missing or invalid."""


class NotEnrolledError(ConfigError):
    """The terminal has no enrolment bundle yet."""


class InputError(TerminalError):
    """A value a person typed (an amount, a file) is invalid."""


class JournalError(TerminalError):
    """The journal cannot be written or its hash chain is broken."""


class BusyError(TerminalError):
    """Another checkout is already waiting for a card."""


class PendingError(TerminalError):
    """No such sale waits for confirmation (confirmed, cancelled, replaced or timed out)."""


class SupervisorError(TerminalError):
    """The supervisor's PIN is wrong, locked, or not set."""


class PrinterError(TerminalError):
    """The receipt printer is missing, or did not take the receipt."""


class UnknownSaleError(TerminalError):
    """No journal entry has that number."""


class DiskFullError(TerminalError):
    """The disk of the terminal's data folder is full: nothing was written (a sale, an
    update, a sync's records); what was written before is kept."""


class JournalDamagedError(JournalError):
    """The journal's files are damaged (the database or its WAL): the terminal records
    nothing and gives no discounts; the files are kept untouched as evidence."""
