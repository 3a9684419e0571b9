"""The fault-injecting proxy (tests/faultproxy.py) against a tiny local HTTP server
whose answers are known to the byte: each fault does what it says, and nothing else."""

from __future__ import annotations

import http.client
import json
import logging
import random
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from sync.client import CentralClient, RetryPolicy
from sync.errors import CentralUnreachableError
from tests import faultproxy as fp
from tests.test_reader_recovery import free_port

BODY = json.dumps({"acked_through": 3, "accepted": 3, "duplicates": 0, "pad": "x" * 300}).encode()
ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    + f"Content-Length: {len(BODY)}\r\n\r\n".encode()
    + BODY
)
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
)
TO_CLOSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nuntil the end"
UPLOAD = b'{"format": "unioncard.sales.v1", "sales": []}' + b" " * 4000
NO_RETRY = RetryPolicy(attempts=1, backoff=0, jitter=0, connect_timeout=2, read_timeout=2)


@dataclass
class Seen:
    """What the server received: complete requests (method, path, body), and how many
    requests broke off before their body was all there."""

    complete: list[tuple[str, str, bytes]] = field(default_factory=list)
    incomplete: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_for(self, count: int, timeout: float = 5) -> None:
        deadline = time.monotonic() + timeout
        while len(self.complete) < count and time.monotonic() < deadline:
            time.sleep(0.01)


Server = tuple[int, Seen]  # the server's port, what it saw


@pytest.fixture
def server() -> Iterator[Server]:
    seen = Seen()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive unless asked otherwise

        def answer(self) -> None:
            if "chunked" in (self.headers.get("Transfer-Encoding") or ""):
                body = b""
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    body += self.rfile.read(size + 2)[:size]
                while self.rfile.readline() not in (b"\r\n", b""):  # trailers
                    pass
            else:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if len(body) < length:
                    with seen.lock:
                        seen.incomplete += 1
                    self.close_connection = True
                    return
            with seen.lock:
                seen.complete.append((self.command, self.path, body))
            if self.path == "/chunked":
                self.wfile.write(CHUNKED)
            elif self.path == "/close":
                self.wfile.write(TO_CLOSE)
                self.close_connection = True
            elif self.path == "/empty":
                self.wfile.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            else:
                self.wfile.write(ANSWER)

        do_GET = do_POST = do_PUT = answer

        def log_message(self, *args: object) -> None:
            pass

    class QuietServer(ThreadingHTTPServer):
        def handle_error(self, request: object, client_address: object) -> None:
            pass  # a connection the proxy reset: expected here

    httpd = QuietServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield int(httpd.server_address[1]), seen
    httpd.shutdown()
    httpd.server_close()


def proxy_for(port: int, *faults: fp.Fault, **kwargs: Any) -> fp.FaultProxy:
    return fp.FaultProxy(port, fp.scripted(faults), **kwargs)


def raw_exchange(port: int, request: bytes, timeout: float = 5) -> tuple[bytes, str]:
    """Send ``request`` on a new connection; everything that came back, and how the
    connection ended ("eof" or "reset")."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        got = b""
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                return got, "reset"
            if not data:
                return got, "eof"
            got += data


def post(path: str = "/api/v1/sales", body: bytes = UPLOAD, close: bool = True) -> bytes:
    connection = b"Connection: close\r\n" if close else b""
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n".encode()
        + connection
        + b"\r\n"
        + body
    )


def test_passes_requests_through_and_keeps_the_connection_alive(server: Server) -> None:
    port, seen = server
    with proxy_for(port) as proxy:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
        for method, path, body in [
            ("GET", "/a", None),
            ("POST", "/b", UPLOAD),
            ("GET", "/c", None),
        ]:
            conn.request(method, path, body=body)
            response = conn.getresponse()
            assert (response.status, response.read()) == (200, BODY)
        conn.request("GET", "/empty")
        response = conn.getresponse()
        assert (response.status, response.read()) == (204, b"")
        conn.close()
        assert [r.outcome for r in proxy.log] == ["relayed 200"] * 3 + ["relayed 204"]
        assert {r.request.connection for r in proxy.log} == {1}  # one client connection
    assert [(m, p) for m, p, _ in seen.complete] == [
        ("GET", "/a"),
        ("POST", "/b"),
        ("GET", "/c"),
        ("GET", "/empty"),
    ]
    assert seen.complete[1][2] == UPLOAD


def test_chunked_bodies_and_answers_to_the_close_pass_whole(server: Server) -> None:
    port, seen = server
    with proxy_for(port) as proxy:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
        conn.request("PUT", "/chunked", body=iter([b"abc", b"defg"]), encode_chunked=True)
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"hello world")
        conn.request("GET", "/close")
        response = conn.getresponse()
        assert response.read() == b"until the end"
        conn.close()
        assert proxy.errors == []
    assert [(m, p, b) for m, p, b in seen.complete] == [
        ("PUT", "/chunked", b"abcdefg"),
        ("GET", "/close", b""),
    ]


def test_drop_cuts_the_request_off_midway_and_the_server_acts_on_nothing(server: Server) -> None:
    port, seen = server
    with proxy_for(port, fp.drop(0.5)) as proxy:
        got, end = raw_exchange(proxy.port, post())
        assert (got, end) == (b"", "reset")
        assert requests.post(proxy.url + "/again", data=UPLOAD, timeout=5).content == BODY
        assert [r.outcome for r in proxy.log] == ["dropped mid-request", "relayed 200"]
    deadline = time.monotonic() + 5
    while seen.incomplete < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen.incomplete == 1  # half of the body reached the server, then the end
    assert [p for _, p, _ in seen.complete] == ["/again"]


def test_drop_and_its_retry_through_the_sync_client(server: Server) -> None:
    port, seen = server
    with proxy_for(port, fp.drop(0.3)) as proxy:
        client = CentralClient(proxy.url, "T1", "s", RetryPolicy(attempts=2, backoff=0, jitter=0))
        assert client.upload_sales({"format": "x"}) == 3
        client.close()
    assert [p for _, p, _ in seen.complete] == ["/api/v1/sales"]  # once: the first broke off


@pytest.mark.parametrize("when", ["sent", "answered"])
def test_reset_after_the_request_went_through(server: Server, when: str) -> None:
    port, seen = server
    events: list[str] = []
    with proxy_for(port, fp.reset(when), observer=lambda e, r: events.append(e)) as proxy:
        client = CentralClient(proxy.url, "T1", "s", NO_RETRY)
        with pytest.raises(Exception, match="cannot reach the central service"):
            client.upload_sales({"format": "x"})
        client.close()
        seen.wait_for(1)
        assert len(seen.complete) == 1  # the server got it whole: it acted, no one heard
        expected = ["request", "sent"] if when == "sent" else ["request", "sent", "answered"]
        assert events == expected  # never relayed
        (record,) = proxy.log
        assert record.outcome.startswith("reset after the")


@pytest.mark.parametrize("where", ["request", "response"])
def test_delay(server: Server, where: str) -> None:
    port, seen = server
    with proxy_for(port, fp.delay(0.3, where)) as proxy:
        started = time.monotonic()
        response = requests.post(proxy.url + "/x", data=UPLOAD, timeout=5)
        elapsed = time.monotonic() - started
    assert (response.status_code, response.content) == (200, BODY)
    assert 0.3 <= elapsed < 2


def test_answer_without_the_server_seeing_the_request(server: Server) -> None:
    port, seen = server
    with proxy_for(port, fp.answer(503, retry_after=1)) as proxy:
        response = requests.post(proxy.url + "/x", data=UPLOAD, timeout=5)
        assert response.status_code == 503 and response.headers["Retry-After"] == "1"
        assert response.json() == {"error": "fault proxy: 503"}
        assert proxy.log[0].outcome == "answered 503 (the server saw nothing)"
    assert seen.complete == []


def test_answer_after_the_server_acted(server: Server) -> None:
    port, seen = server
    with proxy_for(port, fp.answer(500, forward=True)) as proxy:
        response = requests.post(proxy.url + "/x", data=UPLOAD, timeout=5)
        assert response.status_code == 500
        assert proxy.log[0].outcome == "answered 500 instead of 200"
    assert len(seen.complete) == 1


@pytest.mark.parametrize("at", [0.05, 0.5, 0.95])
def test_cut_relays_that_share_of_the_answer_then_closes(server: Server, at: float) -> None:
    port, _ = server
    with proxy_for(port, fp.cut(at)) as proxy:
        got, end = raw_exchange(proxy.port, post())
    assert got == ANSWER[: int(len(ANSWER) * at)] and end == "eof"


def test_cut_after_so_many_bytes(server: Server) -> None:
    port, _ = server
    with proxy_for(port, fp.cut(keep=17)) as proxy:
        got, end = raw_exchange(proxy.port, post())
        assert str(proxy.log[0].fault) == "cut the answer after 17 bytes"
    assert (got, end) == (b"HTTP/1.1 200 OK\r\n", "eof")


def test_a_cut_answer_as_requests_sees_it(server: Server) -> None:
    """Cut in the body: an error. Cut in the head after the status line: requests
    takes it for an answer of that status with no body and no length (urllib3 only logs
    the broken head)."""
    port, _ = server
    with proxy_for(port, fp.cut(0.9)) as proxy:
        with pytest.raises(requests.exceptions.ChunkedEncodingError, match="IncompleteRead"):
            requests.post(proxy.url + "/x", data=UPLOAD, timeout=5)
    with proxy_for(port, fp.cut(0.05)) as proxy:
        response = requests.post(proxy.url + "/x", data=UPLOAD, timeout=5)
    assert (response.status_code, response.content) == (200, b"")
    assert "Content-Length" not in response.headers


@pytest.mark.parametrize("keep", [17, 19, 0.5, 0.95])  # after the status line, in a header, ...
def test_the_sync_client_tries_a_cut_answer_again_without_urllib3_s_traceback(
    server: Server, keep: float, caplog: pytest.LogCaptureFixture
) -> None:
    """... in the body: whatever is left of the answer, the sync client tries again (the
    upload is idempotent), and urllib3's warning of a broken head does not get out."""
    port, seen = server
    fault = fp.cut(keep=keep) if isinstance(keep, int) else fp.cut(keep)
    with caplog.at_level(logging.DEBUG), proxy_for(port, fault) as proxy:
        client = CentralClient(proxy.url, "T1", "s", RetryPolicy(attempts=2, backoff=0, jitter=0))
        assert client.upload_sales({"format": "x"}) == 3
        client.close()
        assert [r.outcome.partition(" after")[0] for r in proxy.log] == ["cut", "relayed 200"]
    assert len(seen.complete) == 2
    messages = [r.getMessage() for r in caplog.records]
    assert [m for m in messages if "Failed to parse headers" in m] == []
    problem = (
        "an answer without its length, cut in its head"
        if isinstance(keep, int)
        else "the body broke off (ChunkedEncodingError)"
    )
    assert [m for m in messages if "broken answer" in m] == [
        f"POST /api/v1/sales: a broken answer ({problem})"
    ]


def test_the_sync_client_tries_again_whatever_byte_an_answer_is_cut_at(server: Server) -> None:
    """Every cut of the answer, in its status line, in each header (a Content-Length cut
    to ``Content-Length: `` included), at the blank line and in the body: never taken
    for the answer (a file, which the client cannot check: the try after it brings it)."""
    port, seen = server
    cuts = range(1, len(ANSWER))
    plan = fp.scripted(f for keep in cuts for f in (fp.cut(keep=keep), fp.PASS))
    with fp.FaultProxy(port, plan) as proxy:
        client = CentralClient(proxy.url, "T1", "s", RetryPolicy(attempts=2, backoff=0, jitter=0))
        for _ in cuts:
            assert client.fetch_root(2) == BODY
        client.close()
        assert [r.outcome.partition(" after")[0] for r in proxy.log] == [
            "cut",
            "relayed 200",
        ] * len(cuts)
    assert len(seen.complete) == 2 * len(cuts)


def test_answers_cut_at_every_try_end_in_one_line(server: Server) -> None:
    port, seen = server
    with proxy_for(port, *[fp.cut(keep=19)] * 3) as proxy:
        client = CentralClient(proxy.url, "T1", "s", RetryPolicy(attempts=3, backoff=0, jitter=0))
        with pytest.raises(CentralUnreachableError) as failed:
            client.upload_sales({"format": "x"})
        client.close()
    message = str(failed.value)
    assert "\n" not in message
    assert message == (
        f"the central service at {proxy.url} gave no whole and valid answer in 3 tries (the "
        "last: an answer without its length, cut in its head): check the network and try "
        "`unioncard sync` again"
    )
    assert len(seen.complete) == 3


def test_a_roster_download_cut_short_is_fetched_again(server: Server, tmp_path: Path) -> None:
    port, seen = server
    with proxy_for(port, fp.cut(0.6)) as proxy:
        client = CentralClient(proxy.url, "T1", "s", RetryPolicy(attempts=2, backoff=0, jitter=0))
        into = client.fetch_roster(1, 2, tmp_path / "roster.tmp")
        client.close()
    assert into.read_bytes() == BODY and len(seen.complete) == 2


def test_answer_with_a_body_of_its_own(server: Server) -> None:
    port, seen = server
    with proxy_for(port, fp.answer(200, forward=True, body=b"")) as proxy:
        response = requests.get(proxy.url + "/x", timeout=5)
        assert (response.status_code, response.content) == (200, b"")
        assert response.headers["Content-Length"] == "0"
        assert (
            str(proxy.log[0].fault) == "answer 200 with a body of 0 bytes, after the server acted"
        )
    assert len(seen.complete) == 1


def test_trickle_relays_the_whole_answer_slowly(server: Server) -> None:
    port, _ = server
    with proxy_for(port, fp.trickle(chunk=16, seconds=0.005)) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
            sock.sendall(post())
            started, pieces, got = time.monotonic(), 0, b""
            while data := sock.recv(65536):
                pieces, got = pieces + 1, got + data
            elapsed = time.monotonic() - started
    assert got == ANSWER
    writes = -(-len(ANSWER) // 16)
    assert pieces > writes // 2 and elapsed >= (writes - 1) * 0.005


def test_a_server_that_is_down_resets_the_client() -> None:
    with fp.FaultProxy(free_port()) as proxy:
        got, end = raw_exchange(proxy.port, post())
        assert (got, end) == (b"", "reset")
        assert proxy.log[0].outcome == "upstream down: reset"


def test_events_in_order_and_an_observer_that_fails_is_reported(server: Server) -> None:
    port, _ = server
    events: list[tuple[str, int]] = []

    def observer(event: str, request: fp.Request) -> None:
        events.append((event, request.number))
        if event == "relayed" and request.number == 2:
            raise RuntimeError("boom")

    with proxy_for(port, observer=observer) as proxy:
        for _ in range(2):
            assert requests.post(proxy.url + "/x", data=UPLOAD, timeout=5).status_code == 200
    assert proxy.errors == ["observer at relayed of #2 POST /x: RuntimeError('boom')"]
    # each request's events in order (the first's "relayed" may come after the second's
    # "request": the client has the answer, and asks again, as the proxy notes it)
    for number in (1, 2):
        assert [e for e, n in events if n == number] == ["request", "sent", "answered", "relayed"]
    assert len(events) == 8
    assert proxy.log[0].request.body == UPLOAD


def test_scripted_and_seeded_plans() -> None:
    def request(n: int, path: str = "/api/v1/sales") -> fp.Request:
        return fp.Request(n, n, "POST", path, [])

    plan = fp.scripted([fp.drop(), fp.PASS, fp.cut()])
    assert [plan(request(n)).kind for n in range(5)] == ["drop", "pass", "cut", "pass", "pass"]

    def draw(seed: int) -> list[str]:
        plan = fp.RandomFaults(
            random.Random(seed), rate=lambda r: 1.0 if r.path.endswith("sales") else 0.0, limit=3
        )
        return [str(plan(request(n, "/api/v1/sales" if n % 2 else "/root"))) for n in range(12)]

    assert draw(7) == draw(7)  # a seed replays its faults
    assert draw(7) != draw(8)
    faults = draw(7)
    assert sum(f != "pass" for f in faults) == 3  # the limit
    assert all(f == "pass" for f in faults[0::2])  # only where the rate says


def test_tally_groups_outcomes() -> None:
    tally = fp.Tally()
    req = fp.Request(1, 1, "GET", "/", [])
    tally.add(
        [
            fp.Record(req, fp.cut(0.2), "cut after 12 of 300 bytes of 200"),
            fp.Record(req, fp.cut(0.7), "cut after 210 of 300 bytes of 200"),
            fp.Record(req, fp.PASS, "relayed 200"),
        ]
    )
    assert tally.kinds == {"cut": 2}
    assert tally.outcomes == {"cut: cut after N of N bytes of N": 2}
