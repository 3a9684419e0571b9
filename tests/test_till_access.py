"""Who may call the till API and the cashier page, in which language, and the page's
live state, sync and end-of-day report (in process: the card is a function here; the
card path through pcscd is tested in test_web.py)."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from reader.identity import CardIdentity, Tokenize, identity_from_pan
from terminal.access import new_api_token, new_supervisor_token
from terminal.service import TerminalService
from terminal.supervisor import set_pin
from terminal.syncing import sync_terminal
from terminal.syncrecord import last_sync
from terminal.web import create_app
from tests.conftest import Site
from tests.helpers import MEMBER_PAN, OTHER_PAN, till_client

PIN = "2468"


class Cards:
    """The card "in the reader": a PAN, read at once (no pcscd here)."""

    def __init__(self) -> None:
        self.pan = MEMBER_PAN

    def __call__(self, *, timeout: float, tokenize: Tokenize) -> CardIdentity:
        return identity_from_pan("unionpay", b"\xa0", self.pan, "2030-12", tokenize)


@pytest.fixture
def shop(site: Site, clock) -> Iterator[tuple[TerminalService, Cards]]:
    site.sync(clock)
    site.journal.close()
    cards = Cards()
    service = TerminalService(site.state.dir, cards, clock, card_timeout=1)
    yield service, cards
    service.close()


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf-token" content="([^"]+)"', page)
    assert found, "the page carries its CSRF token"
    return found.group(1)


def _signed_in(app, token: str):
    browser = app.test_client()
    login = browser.get("/login").get_data(as_text=True)
    form_csrf = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', login)
    assert form_csrf
    answer = browser.post("/login", data={"token": token, "csrf_token": form_csrf.group(1)})
    assert answer.status_code == 302, answer.get_data(as_text=True)
    return browser


def test_every_endpoint_but_health_needs_the_till_token(shop) -> None:
    service, _ = shop
    app = create_app(service)
    anonymous = app.test_client()
    assert anonymous.get("/api/v1/health").get_json() == {"ok": True, "problem": None}
    for method, path in [
        ("get", "/api/v1/status"),
        ("get", "/api/v1/sales"),
        ("get", "/api/v1/reader"),
        ("get", "/api/v1/report"),
        ("get", "/api/v1/events"),
        ("get", "/api/v1/openapi.json"),
        ("get", "/api/v1/sales/1"),
        ("post", "/api/v1/checkout"),
        ("post", "/api/v1/checkout/x/confirm"),
        ("post", "/api/v1/checkout/x/cancel"),
        ("post", "/api/v1/sales/1/void"),
        ("post", "/api/v1/sales/1/refund"),
        ("post", "/api/v1/sales/1/print"),
        ("post", "/api/v1/sync"),
    ]:
        for headers in ({}, {"Authorization": "Bearer till_not-the-token"}):
            answer = getattr(anonymous, method)(path, headers=headers, json={})
            assert answer.status_code == 401, (method, path, answer.status_code)
            assert answer.get_json()["kind"] == "unauthorized"
            assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    # the page and the receipts send a browser to sign in
    for path in ("/", "/receipt/1", "/report"):
        answer = anonymous.get(path)
        assert answer.status_code == 302 and "/login" in answer.headers["Location"]
    assert service.journal.counts() == (0, 0)


def test_the_till_token_and_the_supervisor_token(shop) -> None:
    service, cards = shop
    set_pin(service.state.dir, PIN)
    app = create_app(service)
    till = till_client(app)
    sale = till.post("/api/v1/checkout", json={"amount": "128.00", "confirm": True}).get_json()
    assert sale["seq"] == 1 and sale["discount"] == "6.40"
    # the till token alone does not void: the supervisor's PIN is needed
    refused = till.post("/api/v1/sales/1/void", json={"reason": "test"})
    assert refused.status_code == 403 and refused.get_json()["kind"] == "supervisor"
    supervisor = {"Authorization": f"Bearer {new_supervisor_token(service.state.dir)}"}
    anonymous = app.test_client()
    # the supervisor token opens void and refund, and nothing else
    for path in ("/api/v1/status", "/api/v1/sales"):
        answer = anonymous.get(path, headers=supervisor)
        assert answer.status_code == 403 and answer.get_json()["kind"] == "forbidden"
    checkout = anonymous.post("/api/v1/checkout", headers=supervisor, json={"amount": "1"})
    assert checkout.status_code == 403
    voided = anonymous.post("/api/v1/sales/1/void", headers=supervisor, json={"reason": "twice"})
    assert voided.status_code == 200, voided.get_json()
    assert service.journal.counts() == (2, 2)
    # a new till token ends the old one
    new_api_token(service.state.dir)
    assert till.get("/api/v1/status").status_code == 401


def test_the_page_signs_in_once_and_its_posts_need_the_csrf_token(shop) -> None:
    service, _ = shop
    app = create_app(service)
    token = new_api_token(service.state.dir)
    browser = app.test_client()
    login = browser.get("/login").get_data(as_text=True)
    assert "登录" in login or "Sign in" in login
    form_csrf = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', login)
    assert form_csrf
    wrong = browser.post("/login", data={"token": "till_wrong", "csrf_token": form_csrf.group(1)})
    assert wrong.status_code == 401 and browser.get("/").status_code == 302
    browser = _signed_in(app, token)
    page = browser.get("/")
    assert page.status_code == 200
    cookie = page.request.headers.get("Cookie", "")
    assert "session=" in cookie
    set_cookie = browser.get_cookie("session")
    assert set_cookie is not None and set_cookie.http_only and set_cookie.same_site == "Strict"
    csrf = _csrf(page.get_data(as_text=True))
    # a POST from the page without its CSRF token is refused, and records nothing
    forged = browser.post("/api/v1/checkout", json={"amount": "10", "confirm": True})
    assert forged.status_code == 400 and forged.get_json()["kind"] == "csrf"
    assert service.journal.counts() == (0, 0)
    sale = browser.post(
        "/api/v1/checkout",
        json={"amount": "10", "confirm": True},
        headers={"X-CSRFToken": csrf},
    )
    assert sale.status_code == 200 and sale.get_json()["seq"] == 1
    # a new till token signs every browser out
    new_api_token(service.state.dir)
    assert browser.get("/").status_code == 302
    assert browser.get("/api/v1/status").status_code == 401


ELSEWHERE = ["//evil.example", "/%09/evil.example", "/%0A/evil.example", "/%5Cevil.example",
             "https://evil.example/", "/\\evil.example", "/%0D%0ASet-Cookie:x=1"]  # fmt: skip


def test_the_language_switch_and_sign_in_go_back_to_this_site_only(shop) -> None:
    """next=/<tab>/evil.example passed as a path: the tab dropped, the browser went to
    //evil.example (a look-alike page asking for the till token); with a newline the
    switch answered 500. Each now lands on the cashier page."""
    service, _ = shop
    app = create_app(service)
    token = new_api_token(service.state.dir)
    anonymous = app.test_client()
    for target in ELSEWHERE:
        answer = anonymous.get(f"/lang/en?next={target}")
        assert answer.status_code == 302 and answer.headers["Location"] == "/", target
    assert anonymous.get("/lang/en?next=/login").headers["Location"] == "/login"
    for target in ELSEWHERE:
        browser = app.test_client()
        login = browser.get("/login").get_data(as_text=True)
        csrf = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', login)
        assert csrf
        answer = browser.post(
            f"/login?next={target}", data={"token": token, "csrf_token": csrf.group(1)}
        )
        assert answer.status_code == 302 and answer.headers["Location"] == "/", target


def test_a_confirmation_asked_again_answers_the_same_sale(shop) -> None:
    """A till whose answer to a confirmation was lost asks again: it hears of the sale
    it made (it was told "check out again", and doing so charged the customer twice)."""
    service, _ = shop
    till = till_client(create_app(service))
    quote = till.post("/api/v1/checkout", json={"amount": "88.00"}).get_json()
    url = f"/api/v1/checkout/{quote['pending_id']}/confirm"
    first = till.post(url)
    again = till.post(url)
    assert first.status_code == again.status_code == 200
    assert again.get_json()["seq"] == first.get_json()["seq"] == 1
    assert again.get_json() == first.get_json()
    assert service.journal.counts()[0] == 1  # journaled once
    cancel = till.post(f"/api/v1/checkout/{quote['pending_id']}/cancel")
    assert cancel.status_code == 404  # confirmed: nothing to cancel


def test_a_confirm_and_a_cancel_at_once_agree_with_the_journal(shop) -> None:
    """Two tills' requests for one quote at the same moment: exactly one wins, and the
    journal says which (the cancel answered "cancelled" while the confirmation, under
    way, journaled the sale: 17 rounds in 40 did)."""
    service, _ = shop
    app = create_app(service)
    for _ in range(30):
        confirming, cancelling = till_client(app), till_client(app)
        quote = confirming.post("/api/v1/checkout", json={"amount": "100.00"}).get_json()
        before = service.journal.counts()[0]
        answers: dict[str, int] = {}
        start = threading.Barrier(2)
        base = f"/api/v1/checkout/{quote['pending_id']}"

        def ask(
            name: str, client: Any, answers: dict = answers, start: Any = start, base: str = base
        ) -> None:
            start.wait()
            answers[name] = client.post(f"{base}/{name}").status_code

        threads = [
            threading.Thread(target=ask, args=(name, client))
            for name, client in (("confirm", confirming), ("cancel", cancelling))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        journaled = service.journal.counts()[0] - before
        assert sorted(answers.values()) == [200, 404], answers
        assert journaled == (1 if answers["confirm"] == 200 else 0), answers


def test_errors_are_chinese_by_default_with_a_stable_kind(shop) -> None:
    service, _ = shop
    app = create_app(service)
    chinese = till_client(app, lang="zh-CN")
    english = till_client(app, lang="en")
    token = new_api_token(service.state.dir)  # one token (a new one replaces the old)
    for client in (chinese, english):
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    bad = {"amount": "12.345"}
    zh = chinese.post("/api/v1/checkout", json=bad)
    en = english.post("/api/v1/checkout", json=bad)
    assert zh.status_code == en.status_code == 400
    assert zh.get_json()["kind"] == en.get_json()["kind"] == "bad_request"
    assert "decimals" in en.get_json()["error"]
    assert re.search(r"[\u4e00-\u9fff]", zh.get_json()["error"]), zh.get_json()
    assert chinese.get("/api/v1/sales/99").get_json()["kind"] == "no_such_sale"
    # a till that says nothing of its language gets Chinese too
    silent = app.test_client()
    token = new_api_token(service.state.dir)
    answer = silent.get("/api/v1/sales/99", headers={"Authorization": f"Bearer {token}"})
    assert re.search(r"[\u4e00-\u9fff]", answer.get_json()["error"]), answer.get_json()


def test_the_page_is_chinese_unless_switched(shop) -> None:
    service, _ = shop
    app = create_app(service)
    browser = _signed_in(app, new_api_token(service.state.dir))
    # the browser's own language does not matter: the union's staff read Chinese
    page = browser.get("/", headers={"Accept-Language": "en-US"}).get_data(as_text=True)
    assert '<html lang="zh-CN">' in page and "日结" in page
    browser.get("/lang/en")
    page = browser.get("/").get_data(as_text=True)
    assert '<html lang="en">' in page and "End-of-day report" in page
    browser.get("/lang/zh")
    assert '<html lang="zh-CN">' in browser.get("/").get_data(as_text=True)


def _events(client, count: int, timeout: float = 10.0) -> list[dict]:
    """The first ``count`` update events of the page's stream."""
    response = client.get("/api/v1/events", buffered=False)
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    found: list[dict] = []
    deadline = time.monotonic() + timeout
    buffer = ""
    for chunk in response.response:
        buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
        while "\n\n" in buffer:
            message, buffer = buffer.split("\n\n", 1)
            if message.startswith("event: update"):
                found.append(json.loads(message.split("data: ", 1)[1]))
        if len(found) >= count or time.monotonic() > deadline:
            break
    response.close()
    return found


def test_the_event_stream_pushes_a_sale_as_it_is_journaled(shop) -> None:
    service, _ = shop
    app = create_app(service)
    till = till_client(app)
    got: list[dict] = []
    listener = threading.Thread(target=lambda: got.extend(_events(till_client(app), 2)))
    listener.start()
    time.sleep(0.5)  # the first picture is sent at once
    till.post("/api/v1/checkout", json={"amount": "20.00", "confirm": True})
    listener.join(15)
    assert len(got) == 2, got
    first, second = got
    assert first["status"]["sales"] == 0 and first["sales"] == []
    assert second["status"]["sales"] == 1
    assert [row["seq"] for row in second["sales"]] == [1]
    row = second["sales"][0]
    # 2026-11-28T09:30:00Z is 17:30 in Shanghai
    assert (row["at"], row["at_local"]) == ("2026-11-28T09:30:00Z", "2026-11-28 17:30:00")
    assert MEMBER_PAN not in json.dumps(got)


def test_sync_now_runs_in_the_background_and_is_recorded(shop, clock) -> None:
    service, _ = shop
    finished = threading.Event()
    release = threading.Event()

    def sync() -> object:
        release.wait(10)
        try:
            return sync_terminal(service.state, service.journal, service.clock)
        finally:
            finished.set()

    app = create_app(service, sync)
    till = till_client(app)
    assert till.get("/api/v1/status").get_json()["sync"]["last_success_at"] is None
    till.post("/api/v1/checkout", json={"amount": "20.00", "confirm": True})
    started = till.post("/api/v1/sync")
    assert started.status_code == 202 and started.get_json()["sync"]["running"] is True
    again = till.post("/api/v1/sync")
    assert again.status_code == 409 and again.get_json()["kind"] == "busy"
    release.set()
    assert finished.wait(15)
    app.extensions["unioncard_sync"].join(5)
    status = till.get("/api/v1/status").get_json()
    assert status["pending_upload"] == 0
    assert status["sync"]["last_success_at"] == "2026-11-28T09:30:00Z"
    assert status["sync"]["last_success_local"] == "2026-11-28 17:30:00"
    assert status["sync"]["last_error"] is None and status["sync"]["running"] is False
    assert last_sync(service.state.dir)["last_summary"].startswith("uploaded 1 entry")


def test_a_failed_sync_is_recorded_with_its_error(shop, site: Site) -> None:
    service, _ = shop
    enrolment = json.loads(service.state.enrolment_path.read_text())
    enrolment["central_url"] = "http://127.0.0.1:9"  # nothing listens there
    service.state.enrolment_path.write_text(json.dumps(enrolment))
    service.state._enrolment = None
    with pytest.raises(Exception) as failure:
        sync_terminal(service.state, service.journal, service.clock)
    record = last_sync(service.state.dir)
    assert record["last_success_at"] is None and record["last_attempt_at"] is not None
    assert record["last_error"] == str(failure.value)


def test_the_end_of_day_report(shop, clock) -> None:
    service, cards = shop
    set_pin(service.state.dir, PIN)
    till = till_client(create_app(service))
    sell = lambda amount: till.post(  # noqa: E731
        "/api/v1/checkout", json={"amount": amount, "confirm": True}
    ).get_json()
    assert sell("100.00")["discount"] == "5.00"
    assert sell("40.00")["discount"] == "2.00"
    cards.pan = OTHER_PAN
    assert sell("10.00")["discount"] == "0.00"
    void = till.post("/api/v1/sales/2/void", json={"reason": "twice", "pin": PIN})
    assert void.status_code == 200
    report = till.get("/api/v1/report").get_json()
    assert report["date"] == "2026-11-28" and report["timezone"] == "Asia/Shanghai"
    assert (report["sales"], report["member_sales"], report["voids"], report["refunds"]) == (
        2,
        1,
        1,
        0,
    )
    assert (report["gross"], report["discount"], report["net"]) == ("110.00", "5.00", "105.00")
    assert [(r["rule"], r["sales"], r["discount"]) for r in report["by_rule"]] == [
        ("member-discount", 1, "5.00")
    ]
    other_day = till.get("/api/v1/report?date=2026-11-27").get_json()
    assert (other_day["sales"], other_day["net"]) == (0, "0.00")
    bad = till.get("/api/v1/report?date=yesterday")
    assert bad.status_code == 400 and bad.get_json()["kind"] == "bad_request"
    page = till.get("/report").get_data(as_text=True)
    assert "105.00" in page and "2026-11-28" in page


def test_the_report_day_is_the_shops_local_day_and_refunds_count_on_theirs(shop, clock) -> None:
    from datetime import timedelta

    service, _ = shop
    set_pin(service.state.dir, PIN)
    till = till_client(create_app(service))
    basket = [{"sku": "A1", "category": "food", "qty": 2, "unit_price": "30.00"}]
    clock.advance(timedelta(hours=6, minutes=29, seconds=59))  # 23:59:59 in Shanghai
    late = till.post("/api/v1/checkout", json={"basket": basket, "confirm": True}).get_json()
    assert (late["gross"], late["discount"]) == ("60.00", "3.00")
    clock.advance(timedelta(seconds=1))  # midnight in Shanghai: the next business day
    refund = till.post(
        "/api/v1/sales/1/refund",
        json={"lines": [{"index": 0, "qty": 1}], "reason": "broken", "pin": PIN},
    )
    assert refund.status_code == 200, refund.get_json()
    day1 = till.get("/api/v1/report?date=2026-11-28").get_json()
    day2 = till.get("/api/v1/report").get_json()
    assert day2["date"] == "2026-11-29"
    assert (day1["sales"], day1["refunds"], day1["net"]) == (1, 0, "57.00")
    assert (day2["sales"], day2["refunds"], day2["net"]) == (0, 1, "-28.50")
    assert [(r["sales"], r["discount"]) for r in day2["by_rule"]] == [(0, "-1.50")]
    page = till.get("/report").get_data(as_text=True)  # a day of a refund only: no "−¥-"
    assert "¥-" not in page and 'id="r-net">−¥28.50<' in page and 'id="r-discount">+¥1.50<' in page
    # the page lists today's entries only: yesterday's sale is not among them
    assert [row["seq"] for row in till.get("/api/v1/sales").get_json()["sales"]] == [2]


def test_a_decimal_comma_is_refused_not_read_as_a_hundred_times_more(shop) -> None:
    """An amount of "12,50" (12.50 with a decimal comma) was journaled as 1250.00."""
    service, _ = shop
    till = till_client(create_app(service))
    answer = till.post("/api/v1/checkout", json={"amount": "12,50", "confirm": True})
    assert answer.status_code == 400 and answer.get_json()["kind"] == "bad_request"
    assert "a comma only groups thousands" in answer.get_json()["error"]
    assert service.journal.counts() == (0, 0)
    grouped = till.post("/api/v1/checkout", json={"amount": "1,280.50", "confirm": True})
    assert grouped.status_code == 200 and grouped.get_json()["gross_fen"] == 128050


def test_input_that_once_gave_a_500_is_refused_in_one_line(shop) -> None:
    """Found by schemathesis and by reading: each is a 400 now, and nothing is journaled."""
    service, _ = shop
    set_pin(service.state.dir, PIN)
    till = till_client(create_app(service))
    line = {"sku": "\ud800", "category": "food", "qty": 1, "unit_price": "1.00"}
    for body in (
        {"amount": "1e999999999"},  # a finite Decimal too big to scale to fen
        {"basket": [{**line, "unit_price": "1e999999999"}]},
        {"basket": [line]},  # a lone surrogate cannot be hashed into the journal
        {"amount": "1", "timeout": True},  # a bool is not a number of seconds
    ):
        answer = till.post("/api/v1/checkout", json=body)
        assert answer.status_code == 400, (body, answer.get_json())
        assert answer.get_json()["kind"] == "bad_request"
    assert service.journal.counts() == (0, 0)
    till.post("/api/v1/checkout", json={"amount": "1", "confirm": True})
    odd = till.post("/api/v1/sales/1/void", json={"reason": "\ud800", "pin": PIN})
    assert odd.status_code == 409 and odd.get_json()["kind"] == "reversal_refused"
    # a sale that is not there is 404 no_such_sale, as reading it is (it was 409)
    lines = [{"index": 0, "qty": 1}]
    for what, body in (("void", {}), ("refund", {"lines": lines})):
        missing = till.post(f"/api/v1/sales/99/{what}", json={**body, "reason": "x", "pin": PIN})
        assert (missing.status_code, missing.get_json()["kind"]) == (404, "no_such_sale"), what
    assert service.journal.counts() == (1, 1)
    assert service.journal.entry(2**63) is None and service.journal.entry(0) is None
