"""The rule for the central service's address (pure), applied by the union at
enrolment and by the terminal's client (docs/protocol.md, "Enrolment bundle"):
https with the union's CA certificate, or plain http to this machine's own address
only (the demo, the tests)."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

NO_CA = "no_ca"  # https, but no CA certificate to check the service's against
REMOTE_HTTP = "remote_http"  # plain http to another machine
NOT_HTTPS = "not_https"  # not an http(s) URL with a host


def is_loopback(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 or ::1: this machine's own address."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def central_url_fault(url: str, has_ca: bool) -> str | None:
    """What is wrong with ``url`` as the central service's address (NO_CA, REMOTE_HTTP,
    NOT_HTTPS), or None when it may be used."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return NOT_HTTPS
    if parts.scheme == "https" and host:
        return None if has_ca else NO_CA
    if parts.scheme == "http" and host:
        return None if is_loopback(host) else REMOTE_HTTP
    return NOT_HTTPS
