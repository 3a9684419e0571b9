"""The requests adapter to the central service. The only module that imports requests.

Retries are urllib3's ``Retry`` on requests' ``HTTPAdapter``: exponential backoff with
jitter, honouring ``Retry-After``, on connection errors, read errors and the statuses
in :data:`RETRY_STATUSES`. POST is retried too: the central service de-duplicates
sales by (terminal_id, seq) and checks the hash chain, so a repeated upload is
acknowledged, never stored twice. Any other 4xx is not retried: it ends the sync with
one line that names it. Nor is a TLS certificate the union's CA does not vouch for:
repeating cannot change it, and the sync ends at once with a line that says so.

An answer that comes back broken is retried the same way, from the same count of tries
(:meth:`CentralClient._call`): one cut short in its body, one that cannot be known whole
(a 200 with neither a Content-Length nor chunks, read up to the close: what is left of
an answer cut in its head, which urllib3 only logs and requests takes for an answer with
no body; the central service frames every answer), and one that is not what the request
answers (an upload's acknowledgement that is not JSON or not an acknowledgement). The
sync ends, after the last try, with one line; urllib3's log of the broken head (at
WARNING, with a traceback) is dropped, as the client handles it.

The terminal talks to the central service over https and trusts only the union's CA
certificate from its enrolment bundle (``verify=`` that file, never the system's store);
plain http only to this machine's own address (the demo and the tests).
:func:`central_url_problem` is the rule, checked at enrolment and here.

An upload is gzip-compressed and split into requests of at most :data:`MAX_UPLOAD_SALES`
entries, :data:`MAX_UPLOAD_BYTES` of JSON and :data:`MAX_UPLOAD_GZIP` on the wire
(:func:`upload_bodies`); the central service refuses a larger body (413).
"""

from __future__ import annotations

import copy
import gzip
import json
import logging
import os
import ssl
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import requests
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import ConnectionPool
from urllib3.exceptions import MaxRetryError, ProtocolError
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry
from urllib3.util.ssl_match_hostname import CertificateError

from pact.address import NO_CA, REMOTE_HTTP, central_url_fault
from pact.errors import WireFormatError
from pact.text import N_, Msg
from pact.wire import PIPELINED_HEADER, decode_ack
from sync.errors import (
    CentralAddressError,
    CentralForgotError,
    CentralRefusedError,
    CentralUnreachableError,
    CentralUntrustedError,
    SyncError,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

# Retried: the server busy or failing (5xx), rate-limited (429, with Retry-After), or a
# conflict that may be a race with our own earlier attempt (409). Not retried: any
# other 4xx, which repeating cannot change.
RETRY_STATUSES = frozenset({409, 429, 500, 502, 503, 504})
ENROL_PATH = "/api/v1/enrol"

# One upload request at the most (docs/protocol.md, "HTTP API"): a batch is split into
# as many requests as these need. 512 KiB on the wire stays under the 1 MiB that nginx
# takes by default (client_max_body_size) in front of the central service, which itself
# takes up to 4 MiB, 8 MiB once decompressed (central.create_app).
MAX_UPLOAD_SALES = 500  # entries per request
MAX_UPLOAD_BYTES = 1 << 20  # bytes of JSON per request, before compression
MAX_UPLOAD_GZIP = 512 << 10  # bytes per request as sent (gzip)
# zlib's fastest level: a 500-sale batch (310 kB of JSON) in 2.4 ms to 98 kB, against
# 13 ms to 91 kB at gzip.compress's default (9), which made gzip a sixth of a sync's
# time (bench/central.py); nginx compresses at 1 by default too.
GZIP_LEVEL = 1


def central_url_problem(url: str, has_ca: bool) -> Msg | None:
    """Why a terminal may not talk to the central service at ``url`` (None: it may): an
    https URL needs the union's CA certificate (``has_ca``); plain http is only for this
    machine's own address (the demo, the tests). Checked at enrolment and by the client."""
    fault = central_url_fault(url, has_ca)
    if fault is None:
        return None
    if fault == NO_CA:
        return Msg.of(
            N_(
                "the central URL %(url)s is https, but the enrolment has no CA certificate of "
                "the union to check it with: ask the union for a new bundle (made with "
                "--ca-cert)"
            ),
            url=url,
        )
    if fault == REMOTE_HTTP:
        return Msg.of(
            N_(
                "the central URL %(url)s is plain http to another machine: ask the union for "
                "a new bundle with an https URL and the union's CA certificate"
            ),
            url=url,
        )
    return Msg.of(
        N_("the central URL %(url)s is not an https address: ask the union for a new bundle"),
        url=url,
    )


def certificate_refused(
    exc: BaseException,
) -> ssl.SSLCertVerificationError | CertificateError | None:
    """The certificate verification failure behind a requests or urllib3 error, if any
    (a certificate from another CA, expired, or not for this address)."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ssl.SSLCertVerificationError | CertificateError):
            return e
        inner = [getattr(e, "reason", None), e.__cause__, e.__context__, *e.args]
        todo.extend(i for i in inner if isinstance(i, BaseException))
    return None


class _Retry(Retry):
    """urllib3's Retry, except that a refused server certificate ends the tries at once
    (urllib3 counts it among the "other" errors and would retry it with backoff)."""

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: ConnectionPool | None = None,
        _stacktrace: TracebackType | None = None,
    ) -> Self:
        if error is not None and certificate_refused(error) is not None:
            raise error.with_traceback(_stacktrace)
        return super().increment(method, url, response, error, _pool, _stacktrace)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5  # tries in all, the first included
    backoff: float = 1.0  # seconds: the n-th retry waits backoff * 2**(n-1) (at most 2 min) ...
    jitter: float = 1.0  # ... plus a random 0..jitter seconds, so shops do not retry in step
    connect_timeout: float = 10.0  # seconds to connect
    read_timeout: float = 60.0  # seconds between bytes of the answer

    def retry(self) -> Retry:
        return _Retry(
            total=self.attempts - 1,
            backoff_factor=self.backoff,
            backoff_jitter=self.jitter,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=frozenset({"GET", "POST"}),
            respect_retry_after_header=True,
            raise_on_status=False,  # the last answer comes back, and is worded below
        )


def upload_limits() -> tuple[int, int, int]:
    """The upload's limits (:func:`upload_bodies`), read when asked: tests set them."""
    return MAX_UPLOAD_SALES, MAX_UPLOAD_BYTES, MAX_UPLOAD_GZIP


def upload_bodies(
    batch: dict[str, Any],
    max_sales: int = MAX_UPLOAD_SALES,
    max_bytes: int = MAX_UPLOAD_BYTES,
    max_gzip: int = MAX_UPLOAD_GZIP,
) -> Iterator[tuple[int | None, bytes]]:
    """A batch (``pact.wire.encode_sales``) as gzip-compressed request bodies, each of
    consecutive entries, at most ``max_sales`` of them, ``max_bytes`` of JSON and
    ``max_gzip`` compressed: ``(the last entry's seq, body)``, in order. An entry larger
    than the limits on its own goes alone."""
    if not isinstance(batch.get("sales"), list):  # not a batch of sales: as it is
        yield None, _gzip(json.dumps(batch).encode())
        return
    head = {k: v for k, v in batch.items() if k != "sales"}
    entries = [(int(sale["seq"]), json.dumps(sale).encode()) for sale in batch["sales"]]
    yield from entry_bodies(head, entries, max_sales, max_bytes, max_gzip)


def entry_bodies(
    head: dict[str, Any],
    entries: Sequence[tuple[int, bytes]],
    max_sales: int = MAX_UPLOAD_SALES,
    max_bytes: int = MAX_UPLOAD_BYTES,
    max_gzip: int = MAX_UPLOAD_GZIP,
) -> Iterator[tuple[int | None, bytes]]:
    """:func:`upload_bodies` of entries already in JSON, ``(seq, the entry's JSON)``
    (the journal's ``pending_json``), under ``head`` (format, terminal_id)."""
    envelope = json.dumps({**head, "sales": []}).encode()
    prefix, suffix = envelope[:-2], envelope[-2:]  # ... "sales": [ and ]}
    empty = len(envelope)

    def parts() -> Iterator[Sequence[tuple[int, bytes]]]:
        """The parts within the count and JSON limits."""
        part: list[tuple[int, bytes]] = []
        size = empty
        for entry in entries:
            n = len(entry[1]) + 2  # and the ", " before it
            if part and (len(part) >= max_sales or size + n > max_bytes):
                yield part
                part, size = [], empty
            part.append(entry)
            size += n
        yield part

    def bodies(part: Sequence[tuple[int, bytes]]) -> Iterator[tuple[int | None, bytes]]:
        body = _gzip(prefix + b", ".join(data for _, data in part) + suffix)
        if len(body) > max_gzip and len(part) > 1:  # JSON that compresses badly: halve
            yield from bodies(part[: len(part) // 2])
            yield from bodies(part[len(part) // 2 :])
        else:
            yield (part[-1][0] if part else None), body

    for part in parts():
        yield from bodies(part)


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)


class BrokenAnswerError(ProtocolError):
    """An answer that came back broken, or that is not what the request answers. A
    urllib3 ``ProtocolError``, so that ``Retry`` counts it as a read error: the request
    went through, and is retried only as a method in ``allowed_methods`` is."""


def framing_problem(response: requests.Response) -> str | None:
    """Why a 200 answer cannot be known to be whole (None: it can). The central service
    gives every answer a Content-Length or chunks; an answer with neither (as urllib3
    reads it: a Content-Length cut to ``Content-Length: `` is none) runs up to the
    connection's close, as what is left of one cut in its head does (the head stops at
    the cut, the body is whatever followed: nothing)."""
    raw = response.raw
    if response.status_code != 200 or raw.chunked or raw.length_remaining is not None:
        return None
    return "an answer without its length, cut in its head"


def _not_urllib3_broken_head(record: logging.LogRecord) -> bool:
    """A filter for urllib3's connection logger: drops its warning of a head it could
    not parse (with a traceback on the sync's stderr), as :func:`framing_problem` and
    the body's length find that answer and the client retries it."""
    return not str(record.msg).startswith("Failed to parse headers")


def _ack(response: requests.Response) -> int:
    """The sequence number an upload's answer acknowledges."""
    try:
        return decode_ack(json.loads(response.content))
    except (ValueError, RecursionError, WireFormatError) as exc:  # not JSON, or not an ack
        raise BrokenAnswerError(f"not an acknowledgement ({exc})") from None


class CentralClient:
    """The terminal's client of the central service at ``base_url``, authenticated as
    ``terminal_id`` with its secret. ``ca_cert`` is the union's CA certificate (PEM file)
    the service's certificate is checked against; an https URL needs it, and plain http
    is refused but to this machine's own address (:func:`central_url_problem`).

    One sync at a time uses a client: each call sets the tries it has left on the
    session's adapter (:meth:`_call`)."""

    def __init__(
        self,
        base_url: str,
        terminal_id: str,
        secret: str,
        retry: RetryPolicy | None = None,
        ca_cert: Path | None = None,
    ) -> None:
        problem = central_url_problem(base_url, ca_cert is not None)
        if problem is not None:
            raise CentralAddressError(problem)
        if ca_cert is not None and not ca_cert.is_file():
            raise CentralAddressError(
                N_("the union's CA certificate %(file)s is missing: re-enrol the terminal"),
                file=str(ca_cert),
            )
        self.base_url = base_url.rstrip("/")
        self.terminal_id = terminal_id
        # The union's CA only: given with every request, as requests lets the environment
        # (REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE) override a session's own `verify`.
        self.verify: str | bool = str(ca_cert) if ca_cert is not None else True
        self.retry = retry or RetryPolicy()
        self.session = requests.Session()
        self.adapter = HTTPAdapter(max_retries=self.retry.retry())
        self.session.mount("http://", self.adapter)
        self.session.mount("https://", self.adapter)
        logging.getLogger("urllib3.connection").addFilter(_not_urllib3_broken_head)  # once
        self.session.headers["Authorization"] = f"Bearer {terminal_id}.{secret}"
        self.session.headers["User-Agent"] = "unioncard-terminal/0.1"

    def twin(self) -> CentralClient:
        """A client of the same service and terminal with a session of its own, for a
        request sent beside this client's (one call at a time uses a client)."""
        other = copy.copy(self)
        other.session = requests.Session()
        other.adapter = HTTPAdapter(max_retries=self.retry.retry())
        other.session.mount("http://", other.adapter)
        other.session.mount("https://", other.adapter)
        other.session.headers.update(self.session.headers)
        return other

    def close(self) -> None:
        self.session.close()

    def _call(
        self,
        method: str,
        path: str,
        read: Callable[[requests.Response], T],
        missing_ok: bool = False,
        **kwargs: Any,
    ) -> T | None:
        """Send a request and ``read`` its answer (a 200 or 204; with ``missing_ok``, a
        204 or 404 is None and not read). urllib3 retries what fails before an answer
        (connection, timeout, a status of :data:`RETRY_STATUSES`); an answer broken in
        its framing or its body, or that ``read`` finds wrong (:class:`BrokenAnswerError`),
        is retried here, from the same count of tries and with the same waits."""
        url = f"{self.base_url}{path}"
        timeout = (self.retry.connect_timeout, self.retry.read_timeout)
        retry = self.retry.retry()
        while True:
            self.adapter.max_retries = retry  # the tries this call has left
            try:
                response = self.session.request(
                    method, url, timeout=timeout, verify=self.verify, stream=True, **kwargs
                )
            except requests.RequestException as exc:
                raise self._unreachable(exc) from None
            with response:
                if missing_ok and response.status_code in (204, 404):
                    return None
                self._checked(response)
                try:
                    problem = framing_problem(response)
                    if problem is None:
                        return read(response)
                except BrokenAnswerError as exc:
                    problem = str(exc)
                except requests.RequestException as exc:  # the body broke off
                    problem = f"the body broke off ({type(exc).__name__})"
            log.info("%s %s: a broken answer (%s)", method, path, problem)
            used: Retry = response.raw.retries or retry  # what urllib3's own tries left
            try:
                retry = used.increment(method, url, error=BrokenAnswerError(problem))
            except MaxRetryError:
                raise CentralUnreachableError(
                    N_(
                        "the central service at %(url)s gave no whole and valid answer in "
                        "%(tries)s tries (the last: %(problem)s): check the network and try "
                        "`unioncard sync` again"
                    ),
                    url=self.base_url,
                    tries=self.retry.attempts,
                    problem=problem,
                ) from None
            retry.sleep()

    def _unreachable(self, exc: requests.RequestException) -> SyncError:
        """The error for a request that got no answer after its tries."""
        refused = certificate_refused(exc)
        if refused is not None:
            reason = getattr(refused, "verify_message", None) or str(refused)
            return CentralUntrustedError(
                N_(
                    "the central service at %(url)s is not the union's: its TLS "
                    "certificate was refused (%(reason)s). Check central_url, or ask the "
                    "union for a new enrolment bundle with its CA certificate"
                ),
                url=self.base_url,
                reason=reason,
            )
        return CentralUnreachableError(
            N_(
                "cannot reach the central service at %(url)s after %(tries)s tries "
                "(%(error)s): check the network and try `unioncard sync` again"
            ),
            url=self.base_url,
            tries=self.retry.attempts,
            error=type(exc).__name__,
        )

    def _checked(self, response: requests.Response) -> requests.Response:
        if response.status_code in (200, 204):
            return response
        try:
            message = response.json().get("error", response.reason)
        except (ValueError, RecursionError, AttributeError):  # not JSON, not an object
            message = response.reason
        if response.request.path_url == ENROL_PATH:
            problem = f"the enrolment was refused ({response.status_code}: {message})"
        elif response.status_code == 401:
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
        if response.status_code >= 500 or response.status_code == 429:
            # the service failing or too busy, try after try: try again later (exit 6)
            raise CentralUnreachableError(problem)
        if response.status_code == 401 and response.request.path_url != ENROL_PATH:
            raise CentralForgotError(problem)
        raise CentralRefusedError(problem)  # a person must look (exit 7)

    def register_device_key(self, registration: dict[str, str]) -> None:
        """POST the terminal's device public key (idempotent: the same key again is fine)."""
        self._call("POST", "/api/v1/device-key", lambda response: None, json=registration)

    def upload_sales(self, batch: dict[str, Any]) -> int:
        """POST a batch, gzip-compressed, in as many requests as its size needs
        (:func:`upload_bodies`); return the acknowledged sequence number. Stops after a
        request of which the union acknowledged less than was sent."""
        return self.post_sales(upload_bodies(batch, *upload_limits()))

    def post_sales(
        self, bodies: Iterable[tuple[int | None, bytes]], pipelined: bool = False
    ) -> int:
        """POST the request bodies :func:`upload_bodies` made of a batch, in order; return
        the acknowledged sequence number. Stops after a request of which the union
        acknowledged less than was sent. ``pipelined``: sent while a request before it
        may still be on its way (the union waits for that one's entries)."""
        acked = 0
        headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
        if pipelined:
            headers[PIPELINED_HEADER] = "1"
        for last_seq, body in bodies:
            answered = self._call("POST", "/api/v1/sales", _ack, data=body, headers=headers)
            acked = 0 if answered is None else answered
            if last_seq is not None and acked < last_seq:
                break
        return acked

    def _get_optional(self, path: str, params: dict[str, int] | None = None) -> bytes | None:
        """GET a file: its bytes, or None on 204 (nothing newer) or 404 (no such version)."""
        return self._call("GET", path, lambda response: response.content, True, params=params)

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

        def download(response: requests.Response) -> Path:
            size = 0
            with open(into, "wb") as fh:  # a try again starts the file again
                for chunk in response.iter_content(1 << 20):
                    size += len(chunk)
                    if size > max_bytes:
                        raise SyncError(f"roster download refused: larger than {max_bytes} bytes")
                    fh.write(chunk)
                fh.flush()
                os.fsync(fh.fileno())
            return into

        try:
            found = self._call("GET", "/api/v1/roster", download, True, params=params)
        except BaseException:
            into.unlink(missing_ok=True)
            raise
        if found is None:
            raise CentralRefusedError(f"the central service has no roster v{want_version}")
        return found

    def fetch_policy(self, version: int) -> bytes:
        data = self._get_optional("/api/v1/policy", {"version": version})
        if data is None:
            raise CentralRefusedError(f"the central service has no policy v{version}")
        return data

    def enrol_by_code(
        self, code: str, device_key: str, signature: str, central_url: str, has_ca: bool
    ) -> bytes:
        """POST a one-time enrolment code with the device key that signed the request
        (pact.enrolcode); the answer is the enrolment bundle. Retried like any call: a
        repeat from the same device is answered with a new secret."""
        body = {
            "code": code,
            "device_key": device_key,
            "signature": signature,
            "central_url": central_url,
            "has_ca": has_ca,
        }
        answer = self._call(
            "POST",
            ENROL_PATH,
            lambda response: response.content,
            json=body,
            headers={"Authorization": None},  # no terminal credentials yet
        )
        assert answer is not None
        return answer

    def report(self, body: dict[str, Any]) -> None:
        """POST what the terminal holds at the end of its sync (the union's fleet view)."""
        self._call("POST", "/api/v1/report", lambda response: None, json=body)

    def decommission(self, last_seq: int) -> None:
        """Tell the union this terminal is taken out of service, holding entries up to
        ``last_seq``: it revokes the terminal (409 when it holds fewer)."""
        self._call(
            "POST",
            "/api/v1/decommission",
            lambda response: None,
            json={"terminal_id": self.terminal_id, "last_seq": last_seq},
        )

    def fetch_usage(self) -> bytes:
        """The usage file for this terminal (pact.usage: the merchant's other terminals'
        quota use)."""
        data = self._get_optional("/api/v1/usage", {})
        if data is None:
            raise CentralRefusedError("the central service has no usage file for this terminal")
        return data
