"""The sync client's retries (urllib3's Retry on requests' HTTPAdapter), against a real
HTTP server that answers from a script: backoff, Retry-After, POST retried, no retry on
a 4xx other than 409 and 429, read and connect timeouts, and a clear line at the end."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sync.client import RETRY_STATUSES, CentralClient, RetryPolicy
from sync.errors import CentralRefusedError, CentralUnreachableError
from tests.test_reader_recovery import free_port

ACK = {"acked_through": 3, "accepted": 3, "duplicates": 0}
BATCH = {"format": "unioncard.sales.v1", "terminal_id": "T1", "sales": []}
QUICK = RetryPolicy(attempts=3, backoff=0.01, jitter=0, connect_timeout=1, read_timeout=1)


class Script:
    """The answers, in order: (status, headers, body, seconds to wait first)."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, dict[str, str], dict, float]] = []
        self.seen: list[tuple[str, float]] = []  # (method, monotonic time)


@pytest.fixture
def server() -> Iterator[tuple[str, Script]]:
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        def answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            script.seen.append((self.command, time.monotonic()))
            status, headers, body, wait = (
                script.answers.pop(0) if script.answers else (200, {}, ACK, 0.0)
            )
            time.sleep(wait)
            data = json.dumps(body).encode()
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = answer

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", script
    httpd.shutdown()
    httpd.server_close()


def client(url: str, policy: RetryPolicy = QUICK) -> CentralClient:
    return CentralClient(url, "T1", "secret", policy)


def test_an_upload_is_retried_after_a_503_and_honours_retry_after(server) -> None:
    url, script = server
    script.answers = [(503, {"Retry-After": "1"}, {"error": "busy"}, 0.0)]
    assert client(url).upload_sales(BATCH) == 3
    (m1, t1), (m2, t2) = script.seen
    assert (m1, m2) == ("POST", "POST")  # POST is retried: the ingest is idempotent
    assert t2 - t1 >= 0.95  # waited as the server asked, not the 0.01 s backoff


@pytest.mark.parametrize("status", sorted(RETRY_STATUSES))
def test_the_retried_statuses(server, status: int) -> None:
    url, script = server
    script.answers = [(status, {}, {"error": "again"}, 0.0)]
    assert client(url).upload_sales(BATCH) == 3
    assert len(script.seen) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 413, 422])
def test_no_retry_on_another_4xx_and_one_clear_line(server, status: int, caplog) -> None:
    url, script = server
    script.answers = [(status, {}, {"error": "sales[0].seq must be ..."}, 0.0)]
    with caplog.at_level(logging.INFO, logger="sync.client"):
        with pytest.raises(CentralRefusedError) as refused:
            client(url).upload_sales(BATCH)
    assert len(script.seen) == 1
    message = str(refused.value)
    assert "\n" not in message and (str(status) in message or "re-enrol" in message)
    assert [r.getMessage() for r in caplog.records] == [f"POST /api/v1/sales: {message}"]


def test_retries_end_with_a_line_that_says_the_sync_will_try_again(server) -> None:
    url, script = server
    script.answers = [(429, {"Retry-After": "0"}, {"error": "slow down"}, 0.0)] * 3
    # a service too busy or failing each time: try again later (exit 6), not a refusal
    with pytest.raises(
        CentralUnreachableError, match="answered 429 \\(slow down\\) 3 times"
    ) as busy:
        client(url).upload_sales(BATCH)
    assert len(script.seen) == 3 and busy.value.exit_code == 6
    script.answers = [(503, {}, {"error": "down"}, 0.0)] * 3
    script.seen.clear()
    with pytest.raises(CentralUnreachableError, match="answered 503"):
        client(url).upload_sales(BATCH)
    # a conflict that lasts is a refusal: a person must look (exit 7)
    script.answers = [(409, {}, {"error": "another device key"}, 0.0)] * 3
    with pytest.raises(CentralRefusedError, match="answered 409") as conflict:
        client(url).upload_sales(BATCH)
    assert conflict.value.exit_code == 7


def test_a_read_timeout_is_retried(server) -> None:
    url, script = server
    script.answers = [(200, {}, ACK, 1.5)]  # the first answer comes after the read timeout
    assert client(url).upload_sales(BATCH) == 3
    assert len(script.seen) == 2  # the upload went twice; the union keeps it once


@pytest.mark.parametrize("body", [{"acked": "all"}, ["not", "an", "ack"]])
def test_an_answer_that_is_not_an_acknowledgement_is_tried_again(server, body) -> None:
    url, script = server
    script.answers = [(200, {}, body, 0.0)]
    assert client(url).upload_sales(BATCH) == 3
    assert len(script.seen) == 2
    script.answers = [(200, {}, body, 0.0)] * 3
    with pytest.raises(CentralUnreachableError, match="no whole and valid answer in 3 tries"):
        client(url).upload_sales(BATCH)


def test_backoff_grows_between_tries() -> None:
    """Nothing listens: every try fails to connect, with doubling waits between them."""
    policy = RetryPolicy(attempts=4, backoff=0.1, jitter=0, connect_timeout=1, read_timeout=1)
    started = time.monotonic()
    with pytest.raises(CentralUnreachableError, match="after 4 tries"):
        client(f"http://127.0.0.1:{free_port()}", policy).upload_sales(BATCH)
    # urllib3 waits 0 after the first failure, then 0.2 and 0.4 (backoff * 2**n)
    assert time.monotonic() - started >= 0.55


def test_jitter_spreads_the_waits() -> None:
    retry = RetryPolicy(attempts=5, backoff=1, jitter=1).retry()
    waits = set()
    for _ in range(20):
        step = retry.increment(method="POST", url="/api/v1/sales")
        step = step.increment(method="POST", url="/api/v1/sales")
        waits.add(round(step.get_backoff_time(), 3))
    assert len(waits) > 1 and all(2 <= w <= 3 for w in waits)
