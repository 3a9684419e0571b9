"""The cashier page's and the till API's hardening (in process, the card a function):
a void or refund sent twice is journaled once (Idempotency-Key); the waiting sale and
the card wait are in the status and the event stream, and the wait can be stopped; a
damaged journal still streams the status; times in warnings are the shop's; a sync
error is said in the page's language; a replaced till token ends the page's stream;
printable pages fail as pages; every status is documented; Accept-Language by quality;
and the small ones (the report's rule discount and date, other digits, hex ids)."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from central.keys import create_keys
from pact.text import Msg
from pact.timefmt import iso
from reader.errors import NoCardError
from reader.identity import CardIdentity, Tokenize, identity_from_pan
from terminal import web
from terminal.access import new_api_token, new_supervisor_token
from terminal.journal import Once
from terminal.openapi import document
from terminal.service import TerminalService
from terminal.state import TerminalState
from terminal.supervisor import set_pin
from terminal.syncrecord import keep_sync
from terminal.web import create_app, negotiate
from tests.helpers import MEMBER_PAN, bundle, policy_bytes, roster_bytes, snapshot_bytes

ROOT = Path(__file__).resolve().parents[1]
START = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)  # 14:00 in Shanghai
ISSUED = START - timedelta(days=40)
LIFETIME = timedelta(days=400)
PIN = "2468"
COLD = [{"sku": "COLD", "category": "otc", "qty": 3, "unit_price": "15.00"}]
HEX_ID = re.compile(r"[0-9a-f]{32}")
NO_ID = "0" * 32


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Mono:
    """The service's monotonic clock (the waiting sale's deadline), moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Cards:
    """The card reader: each read takes the next turn (a PAN, an error, or a function of
    the tokenizer), the member's card when none is left."""

    def __init__(self) -> None:
        self.turns: list[Any] = []
        self.reads = 0

    def __call__(self, *, timeout: float, tokenize: Tokenize) -> CardIdentity:
        self.reads += 1
        turn = self.turns.pop(0) if self.turns else MEMBER_PAN
        if isinstance(turn, Exception):
            raise turn
        if callable(turn):
            result: CardIdentity = turn(tokenize)
            return result
        return identity_from_pan("unionpay", b"\xa0", turn, "2030-12", tokenize, atc=self.reads)


def member_card(tokenize: Tokenize) -> CardIdentity:
    return identity_from_pan("unionpay", b"\xa0", MEMBER_PAN, "2030-12", tokenize, atc=99)


@dataclass
class Shop:
    service: TerminalService
    app: Flask
    till: str
    clock: Clock
    cards: Cards
    mono: Mono
    state: TerminalState
    closers: list[Callable[[], None]] = field(default_factory=list)

    def client(self, lang: str = "en") -> Any:
        """The till API with the till token, in ``lang``."""
        client = self.app.test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {self.till}"
        client.environ_base["HTTP_ACCEPT_LANGUAGE"] = lang
        return client

    def page(self, lang: str | None = None) -> Any:
        """A browser's session of the cashier page (signed in, with its CSRF token)."""
        client = self.app.test_client()
        if lang:
            client.get(f"/lang/{lang}")
        login = client.get("/login").get_data(as_text=True)
        form = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', login)
        assert form
        signed = client.post("/login", data={"csrf_token": form.group(1), "token": self.till})
        assert signed.status_code == 302
        page = client.get("/").get_data(as_text=True)
        csrf = re.search(r'name="csrf-token" content="([^"]+)"', page)
        assert csrf
        client.environ_base["HTTP_X_CSRFTOKEN"] = csrf.group(1)
        return client

    def restarted(self) -> Shop:
        """This terminal's daemon started again on the same files."""
        self.service.close()
        service = TerminalService(self.state.dir, self.cards, self.clock, card_timeout=5,
                                  monotonic=self.mono)  # fmt: skip
        self.closers.append(service.close)
        return Shop(service, create_app(service), self.till, self.clock, self.cards, self.mono,
                    self.state)  # fmt: skip

    def damaged(self) -> Shop:
        """This terminal restarted on a journal found damaged."""
        self.service.close()
        (self.state.dir / "journal.db.damaged").write_text('{"problem": "page 3 torn"}')
        service = TerminalService(self.state.dir, self.cards, self.clock, card_timeout=1)
        self.closers.append(service.close)
        return Shop(service, create_app(service), self.till, self.clock, self.cards, self.mono,
                    self.state)  # fmt: skip


def make_shop(tmp_path: Path, sync: Callable[[], object] | None = None) -> Shop:
    """An enrolled terminal: the pharmacy's policy, one member, synced at START (14:00
    in Shanghai), a supervisor PIN, the till token."""
    keys = create_keys(tmp_path / "keys", now=ISSUED)
    terms = json.loads((ROOT / "config" / "policies" / "pharmacy.json").read_text())
    roster = roster_bytes(keys, [MEMBER_PAN], ISSUED, lifetime=LIFETIME)
    policy = policy_bytes(keys, ISSUED, terms=terms, lifetime=LIFETIME)
    state = TerminalState(tmp_path / "terminal")
    state.enrol(bundle(keys))
    snapshot = snapshot_bytes(keys, ISSUED, roster, policy, lifetime=LIFETIME)
    state.install(snapshot, ISSUED, roster, policy)
    keep_sync(state.dir, last_success_at=iso(START))
    clock, cards, mono = Clock(START), Cards(), Mono()
    service = TerminalService(state.dir, cards, clock, card_timeout=5, monotonic=mono)
    set_pin(state.dir, PIN)
    app = create_app(service, sync=sync)
    till = new_api_token(state.dir)
    new_supervisor_token(state.dir)
    return Shop(service, app, till, clock, cards, mono, state)


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Shop]:
    made = make_shop(tmp_path)
    yield made
    made.service.close()
    for close in made.closers:
        close()


def _events(client: Any, count: int, timeout: float = 10.0) -> list[tuple[str, str]]:
    """The first ``count`` events (name, data) of the event stream, or fewer when it
    ends or ``timeout`` passes."""
    response = client.get("/api/v1/events", buffered=False)
    assert response.status_code == 200
    found: list[tuple[str, str]] = []
    deadline = time.monotonic() + timeout
    buffer = ""
    for chunk in response.response:
        buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
        while "\n\n" in buffer:
            message, buffer = buffer.split("\n\n", 1)
            if message.startswith("event: "):
                name, _, data = message[len("event: ") :].partition("\ndata: ")
                found.append((name, data))
        if len(found) >= count or time.monotonic() > deadline:
            break
    response.close()
    return found


# ------------------------------------------------------------ 1. once per key


def test_a_refund_sent_again_with_its_key_is_answered_once(shop: Shop) -> None:
    till = shop.client()
    assert till.post("/api/v1/checkout", json={"basket": COLD, "confirm": True}).status_code == 200
    body = {"lines": [{"index": 0, "qty": 1}], "reason": "returned", "pin": PIN}
    key = {"Idempotency-Key": "a3f0c2d4e5f60718293a4b5c6d7e8f90"}
    first = till.post("/api/v1/sales/1/refund", json=body, headers=key)
    again = till.post("/api/v1/sales/1/refund", json=body, headers=key)
    assert first.status_code == again.status_code == 200
    assert again.get_json() == first.get_json() and first.get_json()["seq"] == 2
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert shop.service.journal.counts()[0] == 2  # the sale and one refund
    assert till.get("/api/v1/sales/1").get_json()["refunds"] == [2]
    # the same key with another request: refused, with a stable kind; nothing journaled
    other = till.post(
        "/api/v1/sales/1/refund", json={**body, "lines": [{"index": 0, "qty": 2}]}, headers=key
    )
    assert other.status_code == 409 and other.get_json()["kind"] == "idempotency_key_reused"
    void = till.post("/api/v1/sales/1/void", json={"reason": "x", "pin": PIN}, headers=key)
    assert void.status_code == 409 and void.get_json()["kind"] == "idempotency_key_reused"
    assert shop.service.journal.counts()[0] == 2
    # without a key, a second refund is a second refund (as before)
    assert till.post("/api/v1/sales/1/refund", json=body).get_json()["seq"] == 3


def test_a_void_sent_again_with_its_key_is_answered_once(shop: Shop) -> None:
    till = shop.client()
    till.post("/api/v1/checkout", json={"amount": "9.00", "confirm": True})
    key = {"Idempotency-Key": "void-1"}
    # a refused request (a wrong PIN) keeps nothing: the key may be sent again, right
    wrong = till.post("/api/v1/sales/1/void", json={"reason": "oops", "pin": "0000"}, headers=key)
    assert wrong.status_code == 403
    answers = [
        till.post("/api/v1/sales/1/void", json={"reason": "oops", "pin": PIN}, headers=key)
        for _ in range(2)
    ]
    assert [a.status_code for a in answers] == [200, 200]
    assert (
        answers[0].get_json()
        == answers[1].get_json()
        == {
            "state": "voided",
            "seq": 2,
            "ref_seq": 1,
            "net": "9.00",
        }
    )
    assert shop.service.journal.counts()[0] == 2
    bad = till.post("/api/v1/sales/1/void", json={"reason": "x"}, headers={"Idempotency-Key": ""})
    assert bad.status_code == 400 and bad.get_json()["kind"] == "bad_request"


def test_two_copies_at_once_journal_one_refund(shop: Shop) -> None:
    """A double click's two requests, in flight together: the second waits for the
    first and is answered the same."""
    shop.client().post("/api/v1/checkout", json={"basket": COLD, "confirm": True})
    body = {"lines": [{"index": 0, "qty": 1}], "reason": "returned", "pin": PIN}
    answers: list[Any] = []

    def send() -> None:
        answers.append(
            shop.client().post(
                "/api/v1/sales/1/refund", json=body, headers={"Idempotency-Key": "k-twice"}
            )
        )

    threads = [threading.Thread(target=send) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].get_json() == answers[1].get_json()
    assert shop.service.journal.counts()[0] == 2


def test_a_refund_sent_again_after_a_restart_is_answered_once(shop: Shop) -> None:
    """The answer is kept in the journal with the refund it journaled: the till that
    lost it when the terminal restarted sends it again and is answered it."""
    shop.client().post("/api/v1/checkout", json={"basket": COLD, "confirm": True})
    body = {"lines": [{"index": 0, "qty": 1}], "reason": "returned", "pin": PIN}
    key = {"Idempotency-Key": "after-restart"}
    first = shop.client().post("/api/v1/sales/1/refund", json=body, headers=key)
    assert first.status_code == 200 and first.get_json()["seq"] == 2
    again = shop.restarted()
    assert again.service is not shop.service
    replayed = again.client().post("/api/v1/sales/1/refund", json=body, headers=key)
    assert replayed.status_code == 200 and replayed.get_json() == first.get_json()
    assert replayed.headers.get("Idempotent-Replayed") == "true"
    assert again.service.journal.counts()[0] == 2  # the sale and one refund
    other = again.client().post(
        "/api/v1/sales/1/void", json={"reason": "x", "pin": PIN}, headers=key
    )
    assert other.status_code == 409 and other.get_json()["kind"] == "idempotency_key_reused"


def test_a_key_is_kept_for_a_day(shop: Shop) -> None:
    shop.client().post("/api/v1/checkout", json={"basket": COLD, "confirm": True})
    body = {"lines": [{"index": 0, "qty": 1}], "reason": "returned", "pin": PIN}
    key = {"Idempotency-Key": "a-day"}
    assert shop.client().post("/api/v1/sales/1/refund", json=body, headers=key).status_code == 200
    shop.clock.now += timedelta(hours=23)
    shop.mono.now += 23 * 3600  # (the clocks agree: no clock jump)
    kept = shop.client().post("/api/v1/sales/1/refund", json=body, headers=key)
    assert kept.headers.get("Idempotent-Replayed") == "true"
    shop.clock.now += timedelta(hours=2)  # 25 hours on: the key is forgotten
    shop.mono.now += 2 * 3600
    later = shop.client().post("/api/v1/sales/1/refund", json=body, headers=key)
    assert later.status_code == 200 and "Idempotent-Replayed" not in later.headers
    assert later.get_json()["seq"] == 3
    with closing(sqlite3.connect(shop.state.dir / "journal.db")) as db:  # the old answer was pruned
        assert db.execute("SELECT key, seq FROM replays").fetchall() == [("a-day", 3)]


def test_the_answer_and_the_entry_are_kept_together_or_not_at_all(shop: Shop) -> None:
    """The kept answer is written in the refund's own transaction: when it cannot be
    kept, the refund is not journaled either (a till's retry would journal it twice)."""
    shop.client().post("/api/v1/checkout", json={"basket": COLD, "confirm": True})

    def broken(entry: Any) -> dict[str, Any]:
        raise RuntimeError("the answer could not be made")

    once = Once("k-broken", "f" * 64, broken)
    with pytest.raises(RuntimeError, match="could not be made"):
        shop.service.refund(1, [(0, 1)], "returned", PIN, once=once)
    assert shop.service.journal.counts()[0] == 1  # the sale alone
    assert shop.service.replay("k-broken") is None
    refund = shop.service.refund(
        1, [(0, 1)], "returned", PIN, once=Once("k", "f", lambda e: {"seq": e.seq})
    )
    assert refund.seq == 2 and shop.service.replay("k") is not None


def test_the_document_has_the_idempotency_key() -> None:
    doc = document()
    for path in ("/api/v1/sales/{seq}/void", "/api/v1/sales/{seq}/refund"):
        op = doc["paths"][path]["post"]
        assert {"$ref": "#/components/parameters/IdempotencyKey"} in op["parameters"]
        assert "Idempotent-Replayed" in op["responses"]["200"]["headers"]
    assert doc["components"]["parameters"]["IdempotencyKey"]["name"] == "Idempotency-Key"
    assert (
        "idempotency_key_reused"
        in doc["components"]["schemas"]["Error"]["properties"]["kind"]["enum"]
    )


def test_the_page_sends_each_void_and_refund_with_a_key(shop: Shop) -> None:
    page = shop.page().get("/").get_data(as_text=True)
    assert "'Idempotency-Key'" in page and "inFlight" in page


# ------------------------------------------------------------ 2. the waiting sale


def test_the_waiting_sale_is_in_the_status_and_the_event_stream(shop: Shop) -> None:
    page = shop.page()
    assert page.get("/api/v1/status").get_json()["pending_sale"] is None
    quote = page.post("/api/v1/checkout", json={"basket": COLD}).get_json()
    status = page.get("/api/v1/status").get_json()
    waiting = status["pending_sale"]
    assert waiting["pending_id"] == quote["pending_id"]
    assert (waiting["gross"], waiting["discount"], waiting["net"]) == ("45.00", "3.60", "41.40")
    assert waiting["expires_at"] == "2026-11-30T06:02:00Z"
    assert waiting["expires_local"] == "2026-11-30 14:02:00"
    assert waiting["pan_last4"] == MEMBER_PAN[-4:] and waiting["verdict"] == "member"
    assert status["waiting_for_card"] is False
    # no card number, no token: the last four digits only
    shown = json.dumps(status)
    assert MEMBER_PAN[:6] not in shown and "token" not in waiting
    # the page's stream, after a reload, has it too
    [(name, data)] = _events(shop.page(), 1)
    assert name == "update"
    assert json.loads(data)["status"]["pending_sale"]["pending_id"] == quote["pending_id"]
    # confirmed from what the status said; asked again (its answer lost): the same sale
    done = page.post(f"/api/v1/checkout/{waiting['pending_id']}/confirm")
    again = page.post(f"/api/v1/checkout/{waiting['pending_id']}/confirm")
    assert done.get_json()["seq"] == again.get_json()["seq"] == 1
    assert shop.service.journal.counts()[0] == 1
    assert page.get("/api/v1/status").get_json()["pending_sale"] is None


def test_the_cashier_can_stop_waiting_for_a_card(shop: Shop) -> None:
    """The cashier typed 1280 for 128 and stops the wait: the checkout answers at once
    and nothing is left waiting; the card inserted a moment later is priced with the
    amount typed again (the next checkout takes the read over), not as 1280."""
    page = shop.page()
    assert page.post("/api/v1/checkout/stop").get_json() == {"stopped": False}
    inserted = threading.Event()

    def slow_card(tokenize: Tokenize) -> CardIdentity:
        inserted.wait(20)
        return member_card(tokenize)

    shop.cards.turns.append(slow_card)
    first: dict[str, Any] = {}
    wrong = threading.Thread(
        target=lambda: first.update(r=page.post("/api/v1/checkout", json={"amount": "1280"}))
    )
    wrong.start()
    for _ in range(100):
        if page.get("/api/v1/status").get_json()["waiting_for_card"]:
            break
        time.sleep(0.05)
    assert page.get("/api/v1/status").get_json()["waiting_for_card"] is True
    busy = page.post("/api/v1/checkout", json={"amount": "128"})
    assert busy.status_code == 409 and busy.get_json()["kind"] == "busy"
    started = time.monotonic()
    assert page.post("/api/v1/checkout/stop").get_json() == {"stopped": True}
    wrong.join(5)
    assert not wrong.is_alive() and time.monotonic() - started < 3
    stopped = first["r"]
    assert stopped.status_code == 409 and stopped.get_json()["kind"] == "refused"
    status = page.get("/api/v1/status").get_json()
    assert status["waiting_for_card"] is False and status["pending_sale"] is None
    # the next checkout waits for the same read: the card comes, priced at 128.00
    second: dict[str, Any] = {}
    right = threading.Thread(
        target=lambda: second.update(r=page.post("/api/v1/checkout", json={"amount": "128"}))
    )
    right.start()
    time.sleep(0.3)
    inserted.set()
    right.join(10)
    quote = second["r"].get_json()
    assert second["r"].status_code == 200, quote
    assert quote["state"] == "pending" and quote["gross"] == "128.00"
    assert shop.cards.reads == 1  # one read, taken over
    waiting = shop.service.pending()
    assert waiting is not None and waiting.id == quote["pending_id"]


def test_a_stopped_wait_with_no_card_leaves_the_till_free(shop: Shop) -> None:
    page = shop.page()
    gate = threading.Event()

    def no_card(tokenize: Tokenize) -> CardIdentity:
        gate.wait(20)
        raise NoCardError("no card presented within 5 s")

    shop.cards.turns.append(no_card)
    thread = threading.Thread(target=lambda: page.post("/api/v1/checkout", json={"amount": "5"}))
    thread.start()
    for _ in range(100):
        if shop.service.waiting_for_card():
            break
        time.sleep(0.05)
    assert shop.service.stop_waiting() is True
    thread.join(5)
    gate.set()  # the read ends with no card: nothing waits, the till is free
    for _ in range(100):
        if not shop.service.busy():
            break
        time.sleep(0.05)
    assert not shop.service.busy()
    assert page.post("/api/v1/checkout", json={"amount": "5"}).get_json()["state"] == "pending"


def test_busy_and_expired_say_the_sale_not_a_hex_id(shop: Shop) -> None:
    till = shop.client()
    quote = till.post("/api/v1/checkout", json={"amount": "128.00"}).get_json()
    busy = till.post("/api/v1/checkout", json={"amount": "5.00"}).get_json()
    assert busy["kind"] == "busy" and not HEX_ID.search(busy["error"])
    assert "128.00" in busy["error"] and "waiting to be confirmed" in busy["error"]
    shop.mono.now += 121
    late = till.post(f"/api/v1/checkout/{quote['pending_id']}/confirm").get_json()
    assert late["kind"] == "no_pending_sale" and not HEX_ID.search(late["error"])
    gone = till.post(f"/api/v1/checkout/{quote['pending_id']}/cancel").get_json()
    assert gone["kind"] == "no_pending_sale" and not HEX_ID.search(gone["error"])


# ------------------------------------------------------------ 3. a damaged journal


def test_a_damaged_journal_streams_the_status_and_its_warning(shop: Shop) -> None:
    shop.client().post("/api/v1/checkout", json={"amount": "10.00", "confirm": True})
    damaged = shop.damaged()
    events = _events(damaged.page(), 1, timeout=5)
    assert [name for name, _ in events] == ["update"], events
    picture = json.loads(events[0][1])
    assert picture["sales"] == []
    status = picture["status"]
    assert status["journal_damaged"] and status["sales"] is None
    assert any("page 3 torn" in w for w in status["warnings"])
    assert damaged.page().get("/api/v1/sales").status_code == 503  # as documented


# ------------------------------------------------------------ 4. the shop's times


def test_offline_warnings_and_reasons_say_the_shops_time(shop: Shop) -> None:
    page = shop.page()  # Chinese
    shop.clock.now += timedelta(hours=26)
    for client in (page, shop.client("en")):
        warnings = client.get("/api/v1/status").get_json()["warnings"]
        line = next(w for w in warnings if "2026-11-30 14:00:00" in w)
        assert "2026-12-03 14:00:00" in line, line
        assert not any(re.search(r"T\d\d:\d\d:\d\dZ", w) for w in warnings), warnings
    status = shop.client().get("/api/v1/status").get_json()
    assert status["warning_ids"][0]["params"]["at"] == "2026-11-30T06:00:00Z"  # for programs
    shop.clock.now += timedelta(hours=50)  # past the stop: no discount, and why
    sale = page.post("/api/v1/checkout", json={"amount": "20.00"}).get_json()
    assert sale["verdict"] == "sync_needed"
    assert any("2026-11-30 14:00:00" in r for r in sale["reasons"]), sale["reasons"]
    assert not any("06:00:00Z" in r for r in sale["reasons"])


def test_the_clock_problem_says_the_shops_time(shop: Shop) -> None:
    shop.clock.now = ISSUED - timedelta(days=1)  # behind the union's signed time
    warnings = shop.client().get("/api/v1/status").get_json()["warnings"]
    clock = next(w for w in warnings if "clock" in w)
    assert "2026-10-20 14:00:00" in clock and "2026-10-21 14:00:00" in clock, clock
    assert "Z)" not in clock


def test_expiry_warnings_say_the_shops_time(shop: Shop) -> None:
    keep_sync(shop.state.dir, last_success_at=iso(ISSUED + LIFETIME - timedelta(hours=13)))
    shop.clock.now = ISSUED + LIFETIME - timedelta(hours=12)  # the roster expires today
    warnings = shop.client().get("/api/v1/status").get_json()["warnings"]
    roster = next(w for w in warnings if w.startswith("member roster expires"))
    assert roster == "member roster expires at 2027-11-25 14:00:00: sync today"
    assert not any(re.search(r"T\d\d:\d\d:\d\dZ", w) for w in warnings), warnings


def test_a_message_in_a_message_says_the_shops_time(shop: Shop) -> None:
    inner = Msg.of("expired at %(at)s", at="2026-11-30T16:30:00Z")
    outer = Msg.of("update: %(why)s (%(id)s)", why=inner, id="2026-11-30T16:30:00Z-x")
    with shop.app.test_request_context("/"):
        assert web.say(outer) == "update: expired at 2026-12-01 00:30:00 (2026-11-30T16:30:00Z-x)"


# ------------------------------------------------------------ 5. the sync error


def test_the_last_sync_error_is_said_in_the_pages_language(shop: Shop) -> None:
    english = (
        "cannot reach the central service at http://127.0.0.1:9 after 5 tries "
        "(ConnectionError): check the network and try `unioncard sync` again"
    )
    keep_sync(shop.state.dir, last_attempt_at=iso(START), last_error=english)
    chinese = shop.page().get("/api/v1/status").get_json()["sync"]
    assert chinese["last_error"] == english  # for programs, as kept
    assert chinese["last_error_text"] != english and chinese["last_error_detail"] == english
    en = shop.page("en").get("/api/v1/status").get_json()["sync"]
    assert en["last_error_text"] == english and en["last_error_detail"] is None
    keep_sync(shop.state.dir, last_error=None)
    cleared = shop.page().get("/api/v1/status").get_json()["sync"]
    assert cleared["last_error_text"] is None and cleared["last_error_detail"] is None


def test_a_sync_error_kept_as_a_message_is_translated(shop: Shop) -> None:
    """When sync.json keeps the error's message (``last_error_id``), the page says it in
    its language; a message the catalogue lacks is the general line and the English."""
    disk = Msg.of(
        "sync stopped: the disk of the terminal's data folder %(folder)s is full (%(free)s "
        "free); free space there (docs/operations.md, Recover): the sales not yet uploaded "
        "stay queued, the installed roster and policy stay in service",
        folder="/var/lib/unioncard",
        free="0 B",
    )
    chinese = {"Authorization": "Bearer x", "Accept-Language": "zh"}
    with shop.app.test_request_context("/", headers=chinese):
        kept = {"last_error": str(disk), "last_error_id": disk.as_json()}
        text, detail = web._sync_error(kept)
        assert text is not None and "同步已停止" in text and detail is None
        unknown = Msg.of("something new went wrong")
        text, detail = web._sync_error(
            {"last_error": str(unknown), "last_error_id": unknown.as_json()}
        )
        assert detail == "something new went wrong" and text != detail


def test_the_page_shows_the_sync_error_and_its_detail(shop: Shop) -> None:
    page = shop.page().get("/").get_data(as_text=True)
    assert "sync.last_error_text" in page and "sync-error-detail" in page


# ------------------------------------------------------------ 7. a replaced till token


def test_a_replaced_till_token_ends_the_pages_stream(shop: Shop) -> None:
    page = shop.page()
    got: list[tuple[str, str]] = []
    listener = threading.Thread(target=lambda: got.extend(_events(page, 3, timeout=10)))
    listener.start()
    time.sleep(0.5)
    new_api_token(shop.state.dir)  # `unioncard terminal api-token`
    shop.app.extensions["unioncard_changes"].bump()
    listener.join(15)
    assert [name for name, _ in got] == ["update", "signed_out"], got
    assert page.get("/api/v1/status").status_code == 401
    signed_out = page.get("/login?signed_out=1&next=/").get_data(as_text=True)
    assert 'id="signed-out"' in signed_out
    assert 'id="signed-out"' not in page.get("/login").get_data(as_text=True)


def test_a_tills_stream_ends_too(shop: Shop) -> None:
    till = shop.client()
    got: list[tuple[str, str]] = []
    listener = threading.Thread(target=lambda: got.extend(_events(till, 3, timeout=10)))
    listener.start()
    time.sleep(0.5)
    new_api_token(shop.state.dir)
    shop.app.extensions["unioncard_changes"].bump()
    listener.join(15)
    assert [name for name, _ in got] == ["update", "signed_out"], got


# ------------------------------------------------------------ 8. printable pages


@pytest.mark.parametrize(
    "path, status, line",
    [
        ("/report?date=2026-11-31", 400, "日期须为 YYYY-MM-DD"),
        ("/report?date=1999-01-01", 400, "日期须为 YYYY-MM-DD"),
        ("/receipt/99", 404, "没有交易 99"),
        ("/receipt/2", 404, "没有小票"),
        ("/no-such-page", 404, None),
    ],
)
def test_printable_pages_fail_as_pages(shop: Shop, path: str, status: int, line: str) -> None:
    till = shop.client()
    till.post("/api/v1/checkout", json={"amount": "5.00", "confirm": True})
    shop.service.record_event("startup", "unioncard test")  # entry 2: an event
    answer = shop.page().get(path)
    assert answer.status_code == status and answer.mimetype == "text/html"
    html = answer.get_data(as_text=True)
    assert '<p id="error" role="alert">' in html and '"kind"' not in html and "\\u" not in html
    assert '<html lang="zh-CN">' in html
    if line:
        assert line in html
    # the API keeps its JSON
    api = till.get("/api/v1/report?date=2026-11-31")
    assert api.status_code == 400 and api.get_json()["kind"] == "bad_request"


# ------------------------------------------------------------ 9. every status documented


def _documented(doc: dict[str, Any], method: str, path: str) -> set[str]:
    return set(doc["paths"][path][method]["responses"])


def test_a_damaged_journals_answers_are_documented(shop: Shop) -> None:
    damaged = shop.damaged()
    till, doc = damaged.client(), document()
    asks = [
        ("get", "/api/v1/status", "/api/v1/status", None),
        ("get", "/api/v1/sales", "/api/v1/sales", None),
        ("get", "/api/v1/report", "/api/v1/report", None),
        ("get", "/api/v1/reader", "/api/v1/reader", None),
        ("get", "/api/v1/sales/{seq}", "/api/v1/sales/1", None),
        ("post", "/api/v1/checkout", "/api/v1/checkout", {"amount": "1.00"}),
        ("post", "/api/v1/checkout/stop", "/api/v1/checkout/stop", {}),
        ("post", "/api/v1/sales/{seq}/void", "/api/v1/sales/1/void", {"reason": "x", "pin": PIN}),
        (
            "post",
            "/api/v1/sales/{seq}/refund",
            "/api/v1/sales/1/refund",
            {"lines": [{"index": 0, "qty": 1}], "reason": "x", "pin": PIN},
        ),
        ("post", "/api/v1/sales/{seq}/print", "/api/v1/sales/1/print", {}),
        ("post", "/api/v1/checkout/{pending_id}/confirm", f"/api/v1/checkout/{NO_ID}/confirm", {}),
    ]  # fmt: skip
    for method, path, url, body in asks:
        answer = till.open(url, method=method.upper(), json=body)
        assert str(answer.status_code) in _documented(doc, method, path), (url, answer.get_json())
    report = till.get("/api/v1/report")
    assert report.status_code == 503 and report.get_json()["kind"] == "journal_damaged"


def test_a_pages_post_without_csrf_and_a_large_get_are_documented(shop: Shop) -> None:
    doc, page = document(), shop.page()
    del page.environ_base["HTTP_X_CSRFTOKEN"]
    for path, item in doc["paths"].items():
        if "post" not in item:
            continue
        url = path.replace("{seq}", "1").replace("{pending_id}", "0" * 32)
        answer = page.post(url, json={})
        assert answer.status_code == 400 and answer.get_json()["kind"] == "csrf", url
        assert "400" in _documented(doc, "post", path), path
    large = shop.client().get(
        "/api/v1/status", data=b"x" * (web.MAX_BODY + 1), content_type="text/plain"
    )
    assert large.status_code == 413
    for path, item in doc["paths"].items():
        for method in item:
            assert "413" in _documented(doc, method, path), (method, path)


# ------------------------------------------------------------ 10. Accept-Language


@pytest.mark.parametrize(
    "header, lang",
    [
        ("en-US,zh;q=0.1", "en"),
        ("en-GB, en;q=0.9", "en"),
        ("zh-CN,en;q=0.5", "zh"),
        ("zh-Hans-CN", "zh"),
        ("fr, en;q=0.3, *;q=0.5", "zh"),
        ("fr, en;q=0.3", "en"),
        ("en;q=0", "zh"),
        ("", "zh"),
        ("de", "zh"),
        ("EN-us", "en"),
    ],
)
def test_accept_language_by_quality_and_primary_subtag(header: str, lang: str) -> None:
    from werkzeug.datastructures import LanguageAccept
    from werkzeug.http import parse_accept_header

    assert negotiate(list(parse_accept_header(header, LanguageAccept))) == lang


def test_a_till_asking_en_us_first_gets_english(shop: Shop) -> None:
    answer = shop.client("en-US,zh;q=0.1").post("/api/v1/checkout", json={})
    assert answer.get_json()["error"].startswith("send {")
    chinese = shop.client("zh-CN,en;q=0.1").post("/api/v1/checkout", json={})
    assert not chinese.get_json()["error"].startswith("send {")


# ------------------------------------------------------------ the small ones


def test_the_report_shows_a_rules_discount_as_a_deduction(shop: Shop) -> None:
    shop.client().post("/api/v1/checkout", json={"basket": COLD, "confirm": True})
    html = shop.page().get("/report").get_data(as_text=True)
    rules = html.split('id="by-rule"', 1)[1]
    assert "−¥3.60" in rules and ">¥3.60<" not in rules


@pytest.mark.parametrize("text", ["2026-W48-1", "20261130", "2026-11-30T00:00", "２０２６-11-30"])
def test_the_report_date_is_yyyy_mm_dd_only(shop: Shop, text: str) -> None:
    answer = shop.client().get("/api/v1/report", query_string={"date": text})
    assert answer.status_code == 400 and answer.get_json()["kind"] == "bad_request"
    assert shop.client().get("/api/v1/report?date=2026-11-30").status_code == 200


@pytest.mark.parametrize("amount", ["١٢٣", "۱۲۳", "१२३", "12٫50"])
def test_other_digits_are_not_an_amount(shop: Shop, amount: str) -> None:
    till = shop.client()
    answer = till.post("/api/v1/checkout", json={"amount": amount})
    assert answer.status_code == 400 and "not a number" in answer.get_json()["error"]
    line = [{"sku": "A", "category": "otc", "qty": 1, "unit_price": amount}]
    assert till.post("/api/v1/checkout", json={"basket": line}).status_code == 400
    assert shop.cards.reads == 0
    # full-width digits, as typed in Chinese, still are
    assert till.post("/api/v1/checkout", json={"amount": "１２８"}).get_json()["gross"] == "128.00"
