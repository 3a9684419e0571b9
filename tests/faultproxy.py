"""A fault-injecting HTTP proxy for the tests, on loopback between a client (the
terminal's sync) and a server (the central service).

Debian ships no Toxiproxy, and the faults the sync must survive need to know where
an HTTP request and its answer begin and end, so this is a small proxy of our own:
threads and sockets, HTTP/1.1 framing only (a request head, then a body by
Content-Length or chunked; an answer head, then a body by Content-Length, chunked or
up to the close). Each request the client sends is read, its fault chosen by the
``plan``, and then, depending on the fault:

- ``PASS``: forwarded, and the answer relayed (keep-alive as the two ends agree);
- ``drop(at)``: the request is cut off after ``at`` of it: only that part reaches
  the server and the client's connection is reset mid-request;
- ``reset(when)``: the whole request is forwarded, then the client's connection is
  reset, as soon as the body went upstream (``"sent"``) or once the server's answer
  came back (``"answered"``: the server acted, the client never hears of it);
- ``delay(seconds, where)``: the request (``"request"``) or the answer
  (``"response"``) waits that long;
- ``answer(status, forward)``: the client gets ``status`` (500, 503, ...) and the
  connection closes; with ``forward`` the server got the request first and acted; with
  ``body`` the answer carries those bytes (well framed) instead of a JSON error;
- ``cut(at)``: the server's answer is relayed up to ``at`` of its bytes (head and
  body; or its first ``keep`` bytes), then the connection closes: an answer cut in half;
- ``trickle(chunk, seconds)``: the answer is relayed ``chunk`` bytes at a time,
  ``seconds`` apart.

A plan is any callable from :class:`Request` to :class:`Fault`: :func:`scripted`
gives a list of faults in order, :class:`RandomFaults` draws them from a seeded
``random.Random``. ``observer(event, request)`` hears ``"request"`` (head read, fault
chosen), ``"sent"`` (the request is all upstream), ``"answered"`` (the server's whole
answer is in, before it is relayed) and ``"relayed"``: a test kills a process there.
``log`` records each request with its fault and what became of it.
"""

from __future__ import annotations

import json
import random
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

HEAD_LIMIT = 64 * 1024  # bytes of a request or answer head


@dataclass(frozen=True)
class Fault:
    kind: str = "pass"  # pass, drop, reset, delay, answer, cut, trickle
    at: float = 0.5  # drop: the share of the request sent on; cut: of the answer relayed
    when: str = "answered"  # reset: "sent" or "answered"; delay: "request" or "response"
    seconds: float = 0.0  # delay: the wait; trickle: the pause between chunks
    status: int = 0  # answer: the status the client gets
    forward: bool = False  # answer: the server got the request first
    retry_after: int | None = None  # answer: a Retry-After header (seconds)
    chunk: int = 1  # trickle: bytes per write
    keep: int | None = None  # cut: relay this many bytes (instead of the share ``at``)
    body: bytes | None = None  # answer: the body (None: a JSON error naming the status)

    def __str__(self) -> str:
        if self.kind == "pass":
            return "pass"
        if self.kind == "drop":
            return f"drop the request at {self.at:.0%}"
        if self.kind == "reset":
            return f"reset once the request was {self.when}"
        if self.kind == "delay":
            return f"delay the {self.when} {self.seconds:.2f} s"
        if self.kind == "answer":
            forwarded = ", after the server acted" if self.forward else ""
            after = f", Retry-After {self.retry_after}" if self.retry_after is not None else ""
            body = f" with a body of {len(self.body)} bytes" if self.body is not None else ""
            return f"answer {self.status}{body}{forwarded}{after}"
        if self.kind == "cut":
            if self.keep is not None:
                return f"cut the answer after {self.keep} bytes"
            return f"cut the answer at {self.at:.0%}"
        return f"trickle the answer {self.chunk} B every {self.seconds * 1000:.1f} ms"


PASS = Fault()


def drop(at: float = 0.5) -> Fault:
    return Fault("drop", at=at)


def reset(when: str = "answered") -> Fault:
    if when not in ("sent", "answered"):
        raise ValueError("reset when 'sent' or 'answered'")
    return Fault("reset", when=when)


def delay(seconds: float, where: str = "response") -> Fault:
    if where not in ("request", "response"):
        raise ValueError("delay the 'request' or the 'response'")
    return Fault("delay", seconds=seconds, when=where)


def answer(
    status: int, forward: bool = False, retry_after: int | None = None, body: bytes | None = None
) -> Fault:
    return Fault("answer", status=status, forward=forward, retry_after=retry_after, body=body)


def cut(at: float = 0.5, keep: int | None = None) -> Fault:
    """Relay the share ``at`` of the answer's bytes, or its first ``keep`` bytes."""
    return Fault("cut", at=at, keep=keep)


def trickle(chunk: int = 1, seconds: float = 0.005) -> Fault:
    return Fault("trickle", chunk=max(1, chunk), seconds=seconds)


@dataclass
class Request:
    """One request as the proxy read it (``body`` is filled once it is all read)."""

    number: int  # of the proxy's requests, from 1
    connection: int  # the client connection's number, from 1
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    head: bytes = b""  # the request line and headers, as sent

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    def header(self, name: str) -> str | None:
        return _header(self.headers, name)

    def __str__(self) -> str:
        return f"#{self.number} {self.method} {self.target}"


@dataclass
class Record:
    request: Request
    fault: Fault
    outcome: str = "open"  # "relayed 200", "dropped", "reset", "answered 503", ...

    def __str__(self) -> str:
        return f"{self.request}: {self.fault} -> {self.outcome}"


Plan = Callable[[Request], Fault]
Observer = Callable[[str, Request], None]


def no_faults(request: Request) -> Fault:
    return PASS


def scripted(faults: Iterable[Fault]) -> Plan:
    """The faults in order, one per request, then PASS."""
    queue = list(faults)

    def plan(request: Request) -> Fault:
        return queue.pop(0) if queue else PASS

    return plan


FaultMaker = Callable[[random.Random], Fault]

# Every kind of fault, its knobs drawn from the plan's random numbers (each wait well
# inside the sync's read timeout).
FAULT_MAKERS: dict[str, FaultMaker] = {
    "drop": lambda r: drop(r.uniform(0.05, 0.95)),
    "reset": lambda r: reset(r.choice(("sent", "answered"))),
    "delay": lambda r: delay(r.uniform(0.05, 1.0), r.choice(("request", "response"))),
    "answer": lambda r: answer(r.choice((500, 503)), forward=r.random() < 0.5),
    "cut": lambda r: cut(r.uniform(0.02, 0.98)),
    "trickle": lambda r: trickle(r.randint(1, 24), r.uniform(0.0005, 0.004)),
}


class RandomFaults:
    """A seeded plan: each request gets a fault with probability ``rate(request)``
    (a number, or a function of the request), of a kind drawn from ``kinds``, until
    ``limit`` faults were given."""

    def __init__(
        self,
        rng: random.Random,
        rate: float | Callable[[Request], float] = 0.3,
        limit: int | None = None,
        kinds: Sequence[str] = tuple(FAULT_MAKERS),
    ) -> None:
        self.rng = rng
        self.rate = rate
        self.limit = limit
        self.kinds = list(kinds)
        self.given: list[tuple[Request, Fault]] = []

    def __call__(self, request: Request) -> Fault:
        if self.limit is not None and len(self.given) >= self.limit:
            return PASS
        rate = self.rate(request) if callable(self.rate) else self.rate
        if self.rng.random() >= rate:
            return PASS
        fault = FAULT_MAKERS[self.rng.choice(self.kinds)](self.rng)
        self.given.append((request, fault))
        return fault


class _Closed(Exception):
    """The other end closed (or reset) the connection."""


class _Stream:
    """Buffered reads from a socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self) -> None:
        try:
            data = self.sock.recv(65536)
        except OSError as exc:
            raise _Closed(str(exc)) from None
        if not data:
            raise _Closed("end of stream")
        self.buffer += data

    def read_until(self, marker: bytes, limit: int = HEAD_LIMIT) -> bytes:
        while marker not in self.buffer:
            if len(self.buffer) > limit:
                raise _Closed("head too long")
            self._fill()
        end = self.buffer.index(marker) + len(marker)
        data, self.buffer = self.buffer[:end], self.buffer[end:]
        return data

    def read_exact(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self._fill()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def read_some(self, n: int) -> bytes:
        """At most ``n`` bytes, waiting only for the first."""
        if not self.buffer:
            self._fill()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def read_to_end(self) -> bytes:
        while True:
            try:
                self._fill()
            except _Closed:
                data, self.buffer = self.buffer, b""
                return data

    def read_chunked(self) -> bytes:
        """A chunked body, as sent (sizes, data, trailers)."""
        raw = b""
        while True:
            line = self.read_until(b"\r\n")
            raw += line
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, up to the empty line
                    trailer = self.read_until(b"\r\n")
                    raw += trailer
                    if trailer == b"\r\n":
                        return raw
            raw += self.read_exact(size + 2)


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    for key, value in headers:
        if key.lower() == name.lower():
            return value
    return None


def _parse_head(head: bytes) -> tuple[str, list[tuple[str, str]]]:
    lines = head.decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        if line:
            key, _, value = line.partition(":")
            headers.append((key.strip(), value.strip()))
    return lines[0], headers


def _chunked(headers: list[tuple[str, str]]) -> bool:
    return "chunked" in (_header(headers, "Transfer-Encoding") or "").lower()


def _wants_close(version: str, headers: list[tuple[str, str]]) -> bool:
    connection = (_header(headers, "Connection") or "").lower()
    return "close" in connection or (version == "HTTP/1.0" and "keep-alive" not in connection)


def _abort(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a crashed peer or a middlebox does."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


@dataclass
class _Answer:
    head: bytes
    body: bytes
    status: int
    close: bool  # the server closes after it (or its end is the close)

    @property
    def raw(self) -> bytes:
        return self.head + self.body


class FaultProxy:
    """``with FaultProxy(upstream_port, plan) as proxy:`` then send to ``proxy.url``."""

    def __init__(
        self,
        upstream_port: int,
        plan: Plan = no_faults,
        observer: Observer | None = None,
        upstream_host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.plan = plan
        self.observer = observer
        self.log: list[Record] = []
        self.errors: list[str] = []  # the observer's exceptions, the proxy's own surprises
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", port))
        self.port = int(self._listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._threads: list[threading.Thread] = []
        self._sockets: set[socket.socket] = set()
        self._connections = 0
        self._requests = 0
        self._stopping = False
        self._acceptor = threading.Thread(target=self._accept, name="faultproxy", daemon=True)

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._acceptor.start()

    def stop(self) -> None:
        self._stopping = True
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            open_sockets = list(self._sockets)
        for sock in open_sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._acceptor.join(5)
        for thread in list(self._threads):
            thread.join(5)

    def faults(self) -> list[Record]:
        """The requests that met a fault."""
        with self._lock:
            return [r for r in self.log if r.fault.kind != "pass"]

    def clear(self) -> None:
        with self._lock:
            self.log.clear()
            self.errors.clear()

    # -- plumbing ---------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._stopping:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._connections += 1
                number = self._connections
                self._sockets.add(client)
            thread = threading.Thread(
                target=self._serve, args=(client, number), name=f"faultproxy-{number}", daemon=True
            )
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
            thread.start()

    def _track(self, sock: socket.socket, keep: bool) -> None:
        with self._lock:
            if keep:
                self._sockets.add(sock)
            else:
                self._sockets.discard(sock)

    def _tell(self, event: str, request: Request) -> None:
        if self.observer is None:
            return
        try:
            self.observer(event, request)
        except Exception as exc:  # a test's hook failed: keep it for the test to see
            self.errors.append(f"observer at {event} of {request}: {exc!r}")

    def _serve(self, client: socket.socket, connection: int) -> None:
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        stream = _Stream(client)
        try:
            while not self._stopping:
                if not self._one(client, stream, connection):
                    break
        except _Closed:
            pass
        except OSError:
            pass
        except Exception as exc:  # a bug of the proxy: the test should hear of it
            self.errors.append(f"proxy connection {connection}: {exc!r}")
        finally:
            self._track(client, False)
            try:
                client.close()
            except OSError:
                pass

    def _one(self, client: socket.socket, stream: _Stream, connection: int) -> bool:
        """Serve one request on the client's connection; False when it is over."""
        try:
            head = stream.read_until(b"\r\n\r\n")
        except _Closed:
            return False  # the client is done (or gone) between requests
        start, headers = _parse_head(head)
        method, target, version = (start.split(" ", 2) + ["", ""])[:3]
        with self._lock:
            self._requests += 1
            request = Request(self._requests, connection, method, target, headers, head=head)
        try:
            fault = self.plan(request)
        except Exception as exc:
            self.errors.append(f"plan at {request}: {exc!r}")
            fault = PASS
        record = Record(request, fault)
        with self._lock:
            self.log.append(record)
        self._tell("request", request)
        try:
            return self._forward(client, stream, request, record, version)
        except (_Closed, OSError):
            if record.outcome == "open":
                record.outcome = "a connection ended before the answer was relayed"
            raise

    def _forward(
        self,
        client: socket.socket,
        stream: _Stream,
        request: Request,
        record: Record,
        version: str,
    ) -> bool:
        """Apply the request's fault (``record.fault``); False when the connection is over."""
        fault, headers, method = record.fault, request.headers, request.method
        head = request.head
        length = int(request.header("Content-Length") or 0)
        if fault.kind == "drop":
            # part of the request goes on, then both connections die mid-request
            keep = int(len(head) + length * fault.at) if length else int(len(head) * fault.at)
            partial = head[:keep]
            if keep > len(head):
                partial += stream.read_some(keep - len(head))
                while len(partial) < keep:
                    partial += stream.read_some(keep - len(partial))
            record.outcome = "dropped mid-request"
            upstream = self._connect()
            if upstream is not None:
                try:
                    upstream.sendall(partial)
                    upstream.shutdown(socket.SHUT_WR)  # the server sees the request end short
                except OSError:
                    pass
                upstream.close()
                self._track(upstream, False)
            _abort(client)
            return False

        if _chunked(headers):
            request.body = stream.read_chunked()
        elif length:
            request.body = stream.read_exact(length)
        client_close = _wants_close(version, headers)

        if fault.kind == "answer" and not fault.forward:
            record.outcome = f"answered {fault.status} (the server saw nothing)"
            self._reply(client, fault)
            return False
        if fault.kind == "delay" and fault.when == "request":
            time.sleep(fault.seconds)

        upstream = self._connect()
        if upstream is None:
            record.outcome = "upstream down: reset"
            _abort(client)
            return False
        try:
            try:
                upstream.sendall(head + request.body)
            except OSError:
                record.outcome = "upstream gone while sending: reset"
                _abort(client)
                return False
            self._tell("sent", request)
            if fault.kind == "reset" and fault.when == "sent":
                record.outcome = "reset after the request was sent"
                _abort(client)
                return False
            try:
                reply = self._read_answer(_Stream(upstream), method)
            except _Closed:
                record.outcome = "upstream closed without an answer: reset"
                _abort(client)
                return False
        finally:
            upstream.close()
            self._track(upstream, False)
        self._tell("answered", request)

        if fault.kind == "reset":
            record.outcome = f"reset after the server answered {reply.status}"
            _abort(client)
            return False
        if fault.kind == "answer":
            record.outcome = f"answered {fault.status} instead of {reply.status}"
            self._reply(client, fault)
            return False
        if fault.kind == "delay":
            time.sleep(fault.seconds)
        if fault.kind == "cut":
            raw = reply.raw
            share = int(len(raw) * fault.at) if fault.keep is None else fault.keep
            keep = max(1, min(len(raw) - 1, share))
            record.outcome = f"cut after {keep} of {len(raw)} bytes of {reply.status}"
            client.sendall(raw[:keep])
            client.shutdown(socket.SHUT_WR)
            return False
        # the outcome is set before the last byte goes: the client may look at once
        record.outcome = f"relayed {reply.status}"
        try:
            if fault.kind == "trickle":
                raw = reply.raw
                for i in range(0, len(raw), fault.chunk):
                    client.sendall(raw[i : i + fault.chunk])
                    time.sleep(fault.seconds)
            else:
                client.sendall(reply.raw)
        except OSError:
            record.outcome = f"client gone before the answer {reply.status} was relayed"
            raise
        self._tell("relayed", request)
        return not (client_close or reply.close)

    def _connect(self) -> socket.socket | None:
        try:
            upstream = socket.create_connection(self.upstream, timeout=30)
        except OSError:
            return None
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._track(upstream, True)
        return upstream

    def _read_answer(self, stream: _Stream, method: str) -> _Answer:
        head = stream.read_until(b"\r\n\r\n")
        interim = b""
        status_line, headers = _parse_head(head)
        status = int(status_line.split(" ", 2)[1])
        while 100 <= status < 200 and status != 101:  # 100 Continue and such: relay, go on
            interim += head
            head = stream.read_until(b"\r\n\r\n")
            status_line, headers = _parse_head(head)
            status = int(status_line.split(" ", 2)[1])
        version = status_line.split(" ", 1)[0]
        close = _wants_close(version, headers)
        if method == "HEAD" or status in (204, 304):
            body = b""
        elif _chunked(headers):
            body = stream.read_chunked()
        elif _header(headers, "Content-Length") is not None:
            body = stream.read_exact(int(_header(headers, "Content-Length") or 0))
        else:
            body, close = stream.read_to_end(), True
        return _Answer(interim + head, body, status, close)

    @staticmethod
    def _reply(client: socket.socket, fault: Fault) -> None:
        body = json.dumps({"error": f"fault proxy: {fault.status}"}).encode()
        kind = "application/json"
        if fault.body is not None:
            body, kind = fault.body, "application/octet-stream"
        reason = {
            200: "OK",
            500: "Internal Server Error",
            502: "Bad Gateway",
            503: "Service Unavailable",
        }
        lines = [
            f"HTTP/1.1 {fault.status} {reason.get(fault.status, 'Error')}",
            f"Content-Type: {kind}",
            f"Content-Length: {len(body)}",
            "Connection: close",
        ]
        if fault.retry_after is not None:
            lines.append(f"Retry-After: {fault.retry_after}")
        client.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        client.shutdown(socket.SHUT_WR)


@dataclass
class Tally:
    """What a run of faults did, by fault kind and outcome (for a test's report)."""

    kinds: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)

    def add(self, records: Iterable[Record]) -> None:
        for record in records:
            if record.fault.kind == "pass":
                continue
            self.kinds[record.fault.kind] = self.kinds.get(record.fault.kind, 0) + 1
            key = f"{record.fault.kind}: {re.sub(r'[0-9]+', 'N', record.outcome)}"
            self.outcomes[key] = self.outcomes.get(key, 0) + 1
