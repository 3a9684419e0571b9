"""The central service's exception tree."""

from __future__ import annotations

from pact.errors import UnioncardError


class CentralError(UnioncardError):
    """A union operation failed; the message says what to do."""

    exit_code = 1
    http_status = 400


class NotFoundError(CentralError):
    http_status = 404


class AuthError(CentralError):
    http_status = 401


class ConflictError(CentralError):
    """An upload contradicts what the central service already holds."""

    http_status = 409


class InputError(CentralError, ValueError):
    """A file or argument given by a person is invalid."""


class StoreError(CentralError):
    """The database cannot be reached or used."""

    http_status = 503


class EvidenceError(CentralError):
    """An upload whose device signature does not verify: refused and recorded."""

    http_status = 422


class TooManyError(CentralError):
    """Too many wrong tries (enrolment codes): wait, then try again."""

    http_status = 429
