"""The record of the terminal's syncs (an adapter): ``sync.json`` in the data folder.

Written by every sync (terminal.syncing), read by the status, the page and the
offline limits (pact.offline count from ``last_success_at``). 0600, written
atomically; an unreadable record reads as none.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from pact.files import atomic_write
from pact.timefmt import parse_iso

RECORD_FILE = "sync.json"
# last_error_id: the last error as a message (pact.text, {"id", "params"}), said in the
# page's language; None when the error was not one
FIELDS = ("last_attempt_at", "last_success_at", "last_summary", "last_error", "last_error_id")


def last_sync(data_dir: Path) -> dict[str, Any]:
    """``last_attempt_at``, ``last_success_at``, ``last_summary``, ``last_error`` (each
    None until known)."""
    record: dict[str, Any] = dict.fromkeys(FIELDS)
    try:
        kept = json.loads((data_dir / RECORD_FILE).read_bytes())
    except (FileNotFoundError, ValueError):
        return record
    if isinstance(kept, dict):
        record.update({k: kept.get(k) for k in record})
    return record


def last_success(data_dir: Path) -> datetime | None:
    """When the last sync succeeded, or None (never, or the record is unreadable)."""
    return success_at(last_sync(data_dir))


def success_at(record: Mapping[str, Any]) -> datetime | None:
    """When the sync ``record`` (:func:`last_sync`) last succeeded, or None."""
    at = record["last_success_at"]
    try:
        return parse_iso(at) if isinstance(at, str) else None
    except ValueError:
        return None


def keep_sync(data_dir: Path, **changes: Any) -> None:
    """Update the record with ``changes`` (of :data:`FIELDS`)."""
    record = {**last_sync(data_dir), **changes}
    atomic_write(data_dir / RECORD_FILE, json.dumps(record).encode(), mode=0o600)
