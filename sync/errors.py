"""The sync's exception tree. ``requests`` failures become these in sync/client.py."""

from __future__ import annotations

from pact.errors import UnioncardError


class SyncError(UnioncardError):
    """A sync step failed; nothing was lost (un-acknowledged sales stay queued)."""

    exit_code = 6


class CentralUnreachableError(SyncError):
    """The central service could not be reached (network, DNS, timeout)."""


class CentralRefusedError(SyncError):
    """The central service answered, but refused the request (or answered nonsense):
    trying again will not help until a person looks."""

    exit_code = 7


class CentralForgotError(CentralRefusedError):
    """The central service does not know this terminal's credentials any more (401):
    revoked, or enrolled again elsewhere."""


class CentralAddressError(SyncError):
    """The enrolment names a central service the terminal may not talk to: plain HTTP to
    another machine, or https without the union's CA certificate to check it with."""

    exit_code = 8


class CentralUntrustedError(CentralUnreachableError):
    """The central service's TLS certificate is not one the union's CA signed (or not for
    its address): the terminal does not talk to it. Not retried."""

    exit_code = 8
