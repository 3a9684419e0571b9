"""The till API's secrets (an adapter): bearer tokens kept as their SHA-256 only.

- The till token (``api.token``): every endpoint of the till API but health needs it
  as ``Authorization: Bearer ...``. Made at enrolment (printed once);
  ``unioncard terminal api-token`` makes a new one, which replaces the old.
- The supervisor token (``supervisor.token``): grants voids and refunds only.

Each file holds ``{"sha256": ...}`` (0600). A token is shown once, when it is made.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from pathlib import Path

from pact.files import atomic_write

API_TOKEN_FILE = "api.token"
SUPERVISOR_TOKEN_FILE = "supervisor.token"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def make_token(path: Path, prefix: str) -> str:
    """A new random token (``prefix`` + 43 URL-safe characters); only its SHA-256 is
    kept at ``path``, replacing the old one."""
    token = prefix + secrets.token_urlsafe(32)
    atomic_write(path, json.dumps({"sha256": _digest(token)}).encode(), mode=0o600)
    return token


def token_digest(path: Path) -> str | None:
    """The SHA-256 kept at ``path``, or None when no token was made."""
    try:
        record = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except ValueError:
        return ""  # a damaged file: no token matches it
    digest = record.get("sha256") if isinstance(record, dict) else None
    return digest if isinstance(digest, str) else ""


def token_matches(path: Path, token: str) -> bool:
    """Whether ``token`` is the one whose digest ``path`` keeps (in constant time)."""
    return digest_matches(token_digest(path), token)


def digest_matches(digest: str | None, token: str) -> bool:
    """Whether ``token`` is the one whose kept digest is ``digest`` (in constant time;
    never when no token was made or its file is damaged)."""
    return bool(digest) and hmac.compare_digest(_digest(token), str(digest))


def new_api_token(data_dir: Path) -> str:
    """Make the till token (replacing the old one) and return it."""
    return make_token(data_dir / API_TOKEN_FILE, "till_")


def new_supervisor_token(data_dir: Path) -> str:
    """Make the supervisor token (replacing the old one) and return it."""
    return make_token(data_dir / SUPERVISOR_TOKEN_FILE, "sup_")
