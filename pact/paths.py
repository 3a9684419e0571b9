"""Where a page may send a browser next (pure)."""

from __future__ import annotations

from urllib.parse import urlsplit


def local_path(target: str | None, prefix: str = "/") -> str | None:
    """``target`` when it is a path of this site under ``prefix``, else None: it starts
    with one "/", names no scheme or host, and holds no control character or backslash
    (browsers drop a tab or a newline and read "\\" as "/", so "/<tab>/evil.example" and
    "/\\evil.example" lead to another host; and a newline is no header's)."""
    if not target or not target.startswith(prefix) or target.startswith("//"):
        return None
    if "\\" in target or any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return None
    parts = urlsplit(target)
    return None if parts.scheme or parts.netloc else target
