"""The sync's exception tree. ``requests`` failures become these in sync/client.py."""

from __future__ import annotations

from pact.errors import UnioncardError


class SyncError(UnioncardError):
    """A sync step failed; nothing was lost (un-acknowledged sales stay queued)."""

    exit_code = 6


class CentralUnreachableError(SyncError):
    """The central service could not be reached (network, DNS, timeout)."""


class CentralRefusedError(SyncError):
    """The central service answered, but refused the request (or answered nonsense)."""
