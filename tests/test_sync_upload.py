"""Uploads are gzip-compressed and capped in size (issue 13, item 3): the client splits a
batch into requests within its limits; the central service takes gzip, refuses a body
too large as sent or once decompressed (413, also a "gzip bomb") and another encoding
(415); a batch sent again days after it was acknowledged is still held once. Against
the real central service over loopback HTTP, on SQLite and on PostgreSQL."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import sync.client
from central import create_app
from central.keys import create_keys
from central.serve import ThreadedServer
from central.service import CentralPaths, Union
from pact.sale import SaleDraft
from pact.wire import encode_sales
from sync.client import CentralClient, upload_bodies
from sync.errors import CentralRefusedError
from sync.run import run_sync
from terminal.journal import Journal
from terminal.state import TerminalState
from tests.conftest import FAST
from tests.helpers import MEMBER_PAN


# ------------------------------------------------------------------- splitting (pure)
def _batch(n: int, pad: int = 0, start: int = 1) -> dict[str, Any]:
    sales = [{"seq": seq, "note": os.urandom(pad // 2).hex()} for seq in range(start, start + n)]
    return {"format": "unioncard.sales.v1", "terminal_id": "T1", "sales": sales}


def _parts(bodies: list[tuple[int | None, bytes]]) -> list[list[int]]:
    return [[s["seq"] for s in json.loads(gzip.decompress(b))["sales"]] for _, b in bodies]


def test_a_batch_within_the_limits_is_one_gzip_body() -> None:
    batch = _batch(500, pad=400)
    ((last, body),) = list(upload_bodies(batch))
    assert last == 500 and json.loads(gzip.decompress(body)) == batch


def test_a_batch_is_split_by_count_by_json_size_and_by_gzip_size() -> None:
    by_count = list(upload_bodies(_batch(12), max_sales=5))
    assert _parts(by_count) == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10], [11, 12]]
    assert [last for last, _ in by_count] == [5, 10, 12]
    by_size = list(upload_bodies(_batch(40, pad=1000), max_bytes=10_000))
    assert all(len(gzip.decompress(b)) <= 10_000 for _, b in by_size) and len(by_size) == 5
    # random hex hardly compresses: the gzip limit halves the parts again
    by_gzip = list(upload_bodies(_batch(40, pad=1000), max_gzip=6_000))
    assert all(len(b) <= 6_000 for _, b in by_gzip) and len(by_gzip) > 1
    for bodies in (by_size, by_gzip):  # consecutive, in order, each entry once
        assert sum(_parts(bodies), []) == list(range(1, 41))


def test_an_entry_larger_than_the_limit_goes_alone_and_an_empty_batch_once() -> None:
    bodies = list(upload_bodies(_batch(3, pad=5000), max_bytes=4000))
    assert _parts(bodies) == [[1], [2], [3]]
    assert [
        (last, json.loads(gzip.decompress(b))["sales"]) for last, b in upload_bodies(_batch(0))
    ] == [(None, [])]


# ------------------------------------------------------------------- the central service
class Recorder:
    """WSGI middleware: each request's path, Content-Encoding and body size as sent."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seen: list[tuple[str, str | None, int]] = []

    def __call__(self, environ: dict, start_response: Any) -> Any:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        self.seen.append((environ["PATH_INFO"], environ.get("HTTP_CONTENT_ENCODING"), length))
        return self.app(environ, start_response)


class Shop:
    def __init__(
        self, union: Union, config: dict, url: str, state: TerminalState, recorder: Recorder
    ) -> None:
        self.union, self.config, self.url = union, config, url
        self.state, self.recorder = state, recorder
        self.journal = Journal(state.journal_path, state.signer())
        self.client = CentralClient(url, "T1", state.enrolment.api_secret, FAST)

    def sell(self, n: int, now: Any, lines: int = 3) -> None:
        """``n`` sales with baskets of ``lines`` lines, journaled (and signed)."""
        for i in range(n):
            basket = [
                {"sku": f"SKU{i:05d}-{k}", "category": "grocery", "qty": 1, "unit_price": 1000}
                for k in range(lines)
            ]
            for line in basket:
                line["discount"] = 0
            self.journal.append(
                SaleDraft(
                    terminal_id="T1",
                    merchant_id="M0001",
                    token=os.urandom(16).hex(),
                    pan_last4="0004",
                    member=True,
                    gross=1000 * lines,
                    discount=0,
                    net=1000 * lines,
                    rules=(),
                    roster_version=1,
                    policy_version=1,
                    basket={"lines": basket, "tier": 0, "discounts": {}},
                ),
                now,
            )


@pytest.fixture
def shop(tmp_path: Path, clock, database_url: str | None) -> Iterator[Shop]:
    paths = CentralPaths(tmp_path / "central")
    create_keys(paths.keys, now=clock())
    union = Union.open(paths, database_url, clock)
    union.import_members(f"member_id,pan\nU1,{MEMBER_PAN}\n")
    union.add_merchant("M0001", "Shop", 500)
    union.publish_roster()
    config = {"DATA_DIR": str(paths.data_dir), "DATABASE_URL": database_url, "CLOCK": clock}
    app = create_app(config)
    recorder = Recorder(app.wsgi_app)
    app.wsgi_app = recorder  # type: ignore[method-assign]
    with ThreadedServer(app) as server:
        state = TerminalState(tmp_path / "terminal")
        state.enrol(union.enrol_terminal("T1", "M0001", server.url))
        s = Shop(union, config, server.url, state, recorder)
        run_sync("T1", state, s.journal, s.client, clock)  # device key, roster, policy
        yield s
        s.client.close()
        s.journal.close()
    union.close()
    app.extensions["unioncard"].close()  # the served app's store (its connection pool)


def test_a_sync_uploads_gzip_in_requests_within_the_limits(shop: Shop, clock, monkeypatch) -> None:
    monkeypatch.setattr(sync.client, "MAX_UPLOAD_BYTES", 16 * 1024)
    shop.sell(60, clock())
    shop.recorder.seen.clear()
    report = run_sync("T1", shop.state, shop.journal, shop.client, clock)
    assert report.uploaded == 60 and shop.journal.counts() == (60, 0)
    uploads = [(enc, size) for path, enc, size in shop.recorder.seen if path == "/api/v1/sales"]
    assert len(uploads) >= 3  # ~50 KB of JSON in parts of at most 16 KiB
    assert all(enc == "gzip" and 0 < size < 16 * 1024 for enc, size in uploads)
    assert [s.seq for s in shop.union.store.sales_for("T1")] == list(range(1, 61))
    assert shop.union.store.sales_for("T1") == shop.journal.sales()


def test_a_batch_acknowledged_days_ago_is_still_held_once(shop: Shop, clock) -> None:
    """The terminal never heard the acknowledgement and, after days of silence, sends
    the same batch again: the union acknowledges it as duplicates and holds each once."""
    shop.sell(5, clock())
    batch = encode_sales("T1", shop.journal.pending())
    assert shop.client.upload_sales(batch) == 5  # ... and the answer is lost
    assert shop.journal.counts() == (5, 5)
    clock.advance(timedelta(days=6))
    first = shop.union.store.sales_for("T1")
    response = shop.client.session.post(
        f"{shop.url}/api/v1/sales", json=batch, timeout=5
    )  # the same batch, as it was
    assert response.json() == {"acked_through": 5, "accepted": 0, "duplicates": 5}
    report = run_sync("T1", shop.state, shop.journal, shop.client, clock)
    assert report.uploaded == 5 and shop.journal.counts() == (5, 0)
    assert shop.union.store.sales_for("T1") == first == shop.journal.sales()
    with shop.union.store.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT seq, received_at FROM sales ORDER BY seq")).all()
    assert [seq for seq, _ in rows] == [1, 2, 3, 4, 5]
    assert {at for _, at in rows} == {"2026-11-28T09:30:00Z"}  # as first received


def test_a_body_over_the_limit_is_refused_413_in_one_line(shop: Shop, clock, monkeypatch) -> None:
    """A central service that takes less than the terminal sends: 413, not retried."""
    app = create_app({**shop.config, "MAX_CONTENT_LENGTH": 4096})
    shop.sell(40, clock())
    with ThreadedServer(app) as small:
        client = CentralClient(small.url, "T1", shop.state.enrolment.api_secret, FAST)
        with pytest.raises(CentralRefusedError, match="413: the request body is larger than 4096"):
            client.upload_sales(encode_sales("T1", shop.journal.pending()))
        client.close()
    app.extensions["unioncard"].close()
    assert shop.journal.counts() == (40, 40)


# ------------------------------------------------------------------- the API, in-process
@pytest.fixture
def api(tmp_path: Path, clock) -> Iterator[tuple[Any, dict[str, str]]]:
    paths = CentralPaths(tmp_path / "central")
    create_keys(paths.keys, now=clock())
    union = Union.open(paths, None, clock)
    union.add_merchant("M0001", "Shop", 500)
    secret = json.loads(union.enrol_terminal("T1", "M0001", "http://127.0.0.1:9"))["api_secret"]
    union.close()
    app = create_app(
        {"DATA_DIR": str(paths.data_dir), "CLOCK": clock, "MAX_CONTENT_LENGTH": 64 * 1024}
    )
    yield app.test_client(), {"Authorization": f"Bearer T1.{secret}"}
    app.extensions["unioncard"].close()


def _post(api, body: bytes, encoding: str | None = "gzip") -> Any:
    client, auth = api
    headers = {**auth, "Content-Type": "application/json"}
    if encoding is not None:
        headers["Content-Encoding"] = encoding
    return client.post("/api/v1/sales", data=body, headers=headers)


EMPTY = json.dumps({"format": "unioncard.sales.v1", "terminal_id": "T1", "sales": []}).encode()


def test_the_service_takes_gzip_and_plain_json(api) -> None:
    ack = {"acked_through": 0, "accepted": 0, "duplicates": 0}
    for body, encoding in ((gzip.compress(EMPTY), "gzip"), (EMPTY, None), (EMPTY, "identity")):
        response = _post(api, body, encoding)
        assert (response.status_code, response.get_json()) == (200, ack)


def test_a_body_too_large_as_sent_is_413(api) -> None:
    response = _post(api, b"x" * (64 * 1024 + 1), None)
    assert response.status_code == 413
    assert response.get_json() == {
        "error": "the request body is larger than 65536 bytes: send smaller batches"
    }


def test_a_gzip_bomb_is_413_without_inflating_it(api) -> None:
    bomb = gzip.compress(b" " * (64 * 1024 * 1024))  # 64 MiB of spaces in ~64 KB
    assert len(bomb) < 64 * 1024
    response = _post(api, bomb)
    assert response.status_code == 413
    assert response.get_json()["error"] == (
        "the request body is larger than 8388608 bytes once decompressed: send smaller batches"
    )


@pytest.mark.parametrize("encoding", ["br", "deflate", "gzip, gzip"])
def test_another_content_encoding_is_415(api, encoding: str) -> None:
    response = _post(api, EMPTY, encoding)
    assert response.status_code == 415
    assert "is not supported: send the body as it is or gzip" in response.get_json()["error"]


@pytest.mark.parametrize(
    "body, problem",
    [
        (b"not gzip at all", "not valid gzip"),
        (gzip.compress(EMPTY, mtime=0)[:-6], "cut short, or more after it"),
        (gzip.compress(EMPTY, mtime=0) + b"junk", "cut short, or more after it"),
    ],
    ids=["not-gzip", "cut-short", "trailing-junk"],
)
def test_broken_gzip_is_400(api, body: bytes, problem: str) -> None:
    response = _post(api, body)
    assert response.status_code == 400 and problem in response.get_json()["error"]


def test_bodies_are_compressed_at_zlibs_fastest_level() -> None:
    """Level 1 (the gzip header's XFL byte says 4, "fastest"): gzip.compress's default
    (9) cost a sixth of a sync's time for a few per cent fewer bytes."""
    for batch in (_batch(500, pad=400), _batch(40, pad=1000)):
        for _, body in upload_bodies(batch, max_bytes=10_000):
            assert body[8] == 4
