"""The requests adapter to the central service. The only module that imports requests.

Retries are urllib3's ``Retry`` on requests' ``HTTPAdapter``: exponential backoff with
jitter, honouring ``Retry-After``, on connection errors, read errors and the statuses
in :data:`RETRY_STATUSES`. POST is retried too: the central service de-duplicates
sales by (terminal_id, seq) and checks the hash chain, so a repeated upload is
acknowledged, never stored twice. Any other 4xx is not retried: it ends the sync with
one line that names it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from pact.errors import WireFormatError
from pact.wire import decode_ack
from sync.errors import CentralRefusedError, CentralUnreachableError, SyncError

log = logging.getLogger(__name__)

# Retried: the server busy or failing (5xx), rate-limited (429, with Retry-After), or a
# conflict that may be a race with our own earlier attempt (409). Not retried: any
# other 4xx, which repeating cannot change.
RETRY_STATUSES = frozenset({409, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5  # tries in all, the first included
    backoff: float = 1.0  # seconds: the n-th retry waits backoff * 2**(n-1) (at most 2 min) ...
    jitter: float = 1.0  # ... plus a random 0..jitter seconds, so shops do not retry in step
    connect_timeout: float = 10.0  # seconds to connect
    read_timeout: float = 60.0  # seconds between bytes of the answer

    def retry(self) -> Retry:
        return Retry(
            total=self.attempts - 1,
            backoff_factor=self.backoff,
            backoff_jitter=self.jitter,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=frozenset({"GET", "POST"}),
            respect_retry_after_header=True,
            raise_on_status=False,  # the last answer comes back, and is worded below
        )


class CentralClient:
    def __init__(
        self, base_url: str, terminal_id: str, secret: str, retry: RetryPolicy | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self.session = requests.Session()
        adapter = HTTPAdapter(max_retries=self.retry.retry())
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["Authorization"] = f"Bearer {terminal_id}.{secret}"
        self.session.headers["User-Agent"] = "unioncard-terminal/0.1"

    def close(self) -> None:
        self.session.close()

    def _request(
        self, method: str, path: str, missing_ok: bool = False, **kwargs: Any
    ) -> requests.Response:
        url = f"{self.base_url}{path}"
        timeout = (self.retry.connect_timeout, self.retry.read_timeout)
        try:
            response = self.session.request(method, url, timeout=timeout, **kwargs)
        except requests.RequestException as exc:
            raise CentralUnreachableError(
                f"cannot reach the central service at {self.base_url} after "
                f"{self.retry.attempts} tries ({type(exc).__name__}): check the network "
                "and try `unioncard sync` again"
            ) from None
        if missing_ok and response.status_code == 404:
            return response
        return self._checked(response)

    def _checked(self, response: requests.Response) -> requests.Response:
        if response.status_code in (200, 204):
            return response
        try:
            message = response.json().get("error", response.reason)
        except ValueError:
            message = response.reason
        if response.status_code == 401:
            problem = f"the central service does not know this terminal ({message}): re-enrol it"
        elif response.status_code in RETRY_STATUSES:
            problem = (
                f"the central service answered {response.status_code} ({message}) "
                f"{self.retry.attempts} times: the sync will try again later"
            )
        else:
            problem = f"the central service refused the request ({response.status_code}: {message})"
        # logged for the daemon's journal; the command line prints it as its error line
        log.info("%s %s: %s", response.request.method, response.request.path_url, problem)
        raise CentralRefusedError(problem)

    def register_device_key(self, registration: dict[str, str]) -> None:
        """POST the terminal's device public key (idempotent: the same key again is fine)."""
        self._request("POST", "/api/v1/device-key", json=registration)

    def upload_sales(self, batch: dict[str, Any]) -> int:
        """POST a batch; return the acknowledged sequence number."""
        response = self._request("POST", "/api/v1/sales", json=batch)
        try:
            return decode_ack(response.json())
        except (ValueError, WireFormatError) as exc:  # not JSON, or not an acknowledgement
            raise CentralRefusedError(f"the central service's answer is not valid: {exc}") from None

    def _get_optional(self, path: str, params: dict[str, int] | None = None) -> bytes | None:
        """GET a file: its bytes, or None on 204 (nothing newer) or 404 (no such version)."""
        response = self._request("GET", path, params=params, missing_ok=True)
        return None if response.status_code in (204, 404) else response.content

    def fetch_root(self, version: int) -> bytes | None:
        """Root metadata ``version``, or None when the union has not published it."""
        return self._get_optional(f"/api/v1/root/{version}")

    def fetch_snapshot(self, have_version: int) -> bytes | None:
        """The newest snapshot for this terminal's merchant, or None when ``have`` is current."""
        return self._get_optional("/api/v1/snapshot", {"have": have_version})

    def fetch_roster(
        self, have_version: int, want_version: int, into: Path, max_bytes: int = 400 * 1024 * 1024
    ) -> Path:
        """Download roster ``want`` (a delta from ``have`` when the union has one, else the
        full file) into the file ``into``, streaming, so it never sits in memory whole."""
        params = {"have": have_version, "want": want_version}
        response = self._request(
            "GET", "/api/v1/roster", params=params, missing_ok=True, stream=True
        )
        with response:
            if response.status_code in (204, 404):
                raise CentralRefusedError(f"the central service has no roster v{want_version}")
            size = 0
            try:
                with open(into, "wb") as fh:
                    for chunk in response.iter_content(1 << 20):
                        size += len(chunk)
                        if size > max_bytes:
                            raise SyncError(
                                f"roster download refused: larger than {max_bytes} bytes"
                            )
                        fh.write(chunk)
                    fh.flush()
                    os.fsync(fh.fileno())
            except requests.RequestException as exc:
                into.unlink(missing_ok=True)
                raise CentralUnreachableError(
                    f"the roster download from {self.base_url} broke off ({type(exc).__name__}): "
                    "try `unioncard sync` again"
                ) from None
            except BaseException:
                into.unlink(missing_ok=True)
                raise
        return into

    def fetch_policy(self, version: int) -> bytes:
        data = self._get_optional("/api/v1/policy", {"version": version})
        if data is None:
            raise CentralRefusedError(f"the central service has no policy v{version}")
        return data
