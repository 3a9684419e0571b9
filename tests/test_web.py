"""The till's JSON API and the cashier page, with cards read through real pcscd + vpcd."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from central.serve import ThreadedServer
from reader.fresh import FreshCardReader
from terminal.service import TerminalService
from terminal.supervisor import set_pin
from terminal.syncing import sync_terminal
from terminal.web import create_app
from tests.conftest import Site, missing
from tests.helpers import CARD_CLOCK, MEMBER_PAN, OTHER_PAN, browser_sign_in, till_client

READER = "Virtual PCD 00 00"
SUPERVISOR_PIN = "2468"


@pytest.fixture
def service(site: Site, clock, pcscd) -> Iterator[TerminalService]:
    site.sync(clock)

    # as the daemon reads cards: the monitor watches from the start
    reader = FreshCardReader(READER, clock=CARD_CLOCK, accept_present=True).start()
    svc = TerminalService(site.state.dir, reader, clock, card_timeout=5)
    yield svc
    svc.close()
    reader.close()


@pytest.mark.pcsc
def test_checkout_api_member_and_non_member(service, emulated_card) -> None:
    client = till_client(create_app(service))
    card = emulated_card(pan=MEMBER_PAN)
    quote = client.post("/api/v1/checkout", json={"amount": "128.00"}).get_json()
    assert (quote["state"], quote["member"], quote["gross"], quote["discount"], quote["net"]) == (
        "pending",
        True,
        "128.00",
        "6.40",
        "121.60",
    )
    assert "seq" not in quote and service.journal.counts() == (0, 0)  # nothing recorded yet
    body = client.post(f"/api/v1/checkout/{quote['pending_id']}/confirm").get_json()
    assert (body["state"], body["seq"], body["net"]) == ("confirmed", 1, "121.60")
    assert body["pan_last4"] == MEMBER_PAN[-4:] and MEMBER_PAN not in str(body)
    card.remove()
    emulated_card(pan=OTHER_PAN)
    body = client.post("/api/v1/checkout", json={"amount": "45.50", "confirm": True}).get_json()
    assert (body["member"], body["discount_fen"], body["reasons"]) == (
        False,
        0,
        ["not a union member"],
    )
    status = client.get("/api/v1/status").get_json()
    assert (status["sales"], status["pending_upload"], status["roster_version"]) == (2, 2, 1)
    recent = client.get("/api/v1/sales").get_json()["sales"]
    assert [s["seq"] for s in recent] == [2, 1]


@pytest.mark.pcsc
@pytest.mark.parametrize(
    "payload, status, text",
    [
        ({"amount": "abc"}, 400, "not a number"),
        ({"amount": "0"}, 400, "more than 0.00"),
        ({}, 400, "send {"),
        ({"amount": "1", "timeout": 1}, 408, "no card presented within 1 s"),
    ],
)
def test_checkout_api_errors(service, payload, status, text) -> None:
    client = till_client(create_app(service))
    response = client.post("/api/v1/checkout", json=payload)
    assert response.status_code == status
    assert text in response.get_json()["error"]
    assert service.journal.counts() == (0, 0)


@pytest.mark.pcsc
def test_second_checkout_while_waiting_is_refused(service) -> None:
    client = till_client(create_app(service))
    first: dict = {}
    waiting = threading.Thread(
        target=lambda: first.update(
            r=client.post("/api/v1/checkout", json={"amount": "1", "timeout": 2})
        )
    )
    waiting.start()
    time.sleep(0.3)
    second = client.post("/api/v1/checkout", json={"amount": "1", "timeout": 1})
    waiting.join()
    assert second.status_code == 409 and "another checkout" in second.get_json()["error"]
    assert first["r"].status_code == 408


def chromium_driver():
    chromium = shutil.which("chromium")
    chromedriver = shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        missing("headless Chromium", "apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1100,900",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(chromedriver), options=options)


def _shot(driver, tmp_path: Path, name: str) -> None:
    """Save a screenshot: into $UNIONCARD_SCREENSHOTS (the README's, `make screenshots`)
    or the test's own folder."""
    folder = Path(os.environ.get("UNIONCARD_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(folder / name))


@pytest.mark.pcsc
@pytest.mark.browser
def test_cashier_page_in_chromium(service, emulated_card, tmp_path: Path) -> None:
    """The cashier's day on the page, with cards through pcscd: a member sale in Chinese
    (the card event pushed live), English, a non-member sale, a void with the PIN, the
    PIN locked after five wrong tries, the end-of-day report; the keyboard alone."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    set_pin(service.state.dir, SUPERVISOR_PIN)
    sync_terminal(service.state, service.journal, service.clock)  # recorded: the page shows it
    driver = chromium_driver()
    try:
        app = create_app(service)
        with ThreadedServer(app) as web:
            browser_sign_in(driver, web.url, app, lang=None)  # the page's default language
            driver.get(web.url + "/")
            wait = WebDriverWait(driver, 15)
            has = ec.text_to_be_present_in_element
            assert driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "zh-CN"
            # the first event may wait for a stream thread on a loaded machine (a stream
            # of the page the sign-in redirected to holds one until its keepalive)
            WebDriverWait(driver, 40).until(has((By.ID, "live"), "实时"))
            wait.until(has((By.ID, "reader"), "就绪"))
            wait.until(has((By.ID, "status"), "会员名单 v1"))
            assert "上次同步成功：2026-11-28 17:30:00" in driver.find_element(By.ID, "status").text
            # a card goes in: the page hears of it without asking (server-sent event)
            card = emulated_card(pan=MEMBER_PAN)
            wait.until(has((By.ID, "reader"), "新卡"))
            # the keyboard alone: type the amount, Enter reads the card, Enter confirms
            amount = driver.find_element(By.ID, "amount")
            assert driver.switch_to.active_element == amount
            amount.send_keys("128", Keys.ENTER)
            wait.until(ec.visibility_of_element_located((By.ID, "confirm")))
            wait.until(has((By.ID, "net"), "121.60"))
            assert driver.find_element(By.ID, "verdict").text == "会员 ✓ 优惠 ¥6.40"
            assert "待确认" in driver.find_element(By.ID, "card").text
            assert service.journal.counts() == (0, 0)
            assert driver.switch_to.active_element.get_attribute("id") == "confirm"
            driver.switch_to.active_element.send_keys(Keys.ENTER)
            wait.until(has((By.ID, "card"), "交易 #1 已记录"))
            link = driver.find_element(By.ID, "receipt").get_attribute("href")
            assert link is not None and link.endswith("/receipt/1")
            assert service.journal.counts() == (1, 1)
            wait.until(has((By.ID, "recent"), MEMBER_PAN[-4:]))
            assert "17:30:00" in driver.find_element(By.ID, "recent").text  # Shanghai time
            # the card still in the reader is flagged; taken out, the page is clean
            wait.until(has((By.ID, "reader"), "取出"))
            card.remove()
            wait.until(has((By.ID, "reader"), "就绪"))
            _shot(driver, tmp_path, "cashier-zh.png")
            assert MEMBER_PAN not in driver.page_source
            # English, from the page's switch
            driver.find_element(By.ID, "lang-switch").click()
            wait.until(has((By.ID, "live"), "Live"))
            assert driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en"
            card = emulated_card(pan=MEMBER_PAN)
            wait.until(has((By.ID, "reader"), "new card"))
            driver.find_element(By.ID, "amount").send_keys("128", Keys.ENTER)
            wait.until(ec.visibility_of_element_located((By.ID, "confirm"))).click()
            wait.until(has((By.ID, "card"), "Sale #2 recorded"))
            assert driver.find_element(By.ID, "verdict").text == "Member ✓ −¥6.40"
            card.remove()
            wait.until(has((By.ID, "reader"), "Ready"))
            _shot(driver, tmp_path, "cashier-en.png")
            # a non-member's sale: no discount, and says why
            emulated_card(pan=OTHER_PAN)
            driver.find_element(By.ID, "amount").send_keys("45.50", Keys.ENTER)
            wait.until(ec.visibility_of_element_located((By.ID, "confirm")))
            assert driver.find_element(By.ID, "verdict").text == "Not a member"
            assert "not a union member" in driver.find_element(By.ID, "reason").text
            driver.find_element(By.ID, "confirm").click()
            wait.until(has((By.ID, "card"), "Sale #3 recorded"))
            assert service.journal.counts() == (3, 3)
            # the supervisor voids sale 2: a wrong PIN, then the right one
            wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "button.void[data-seq='2']")))
            driver.find_element(By.CSS_SELECTOR, "button.void[data-seq='2']").click()
            wait.until(ec.visibility_of_element_located((By.ID, "void-reason")))
            driver.find_element(By.ID, "void-reason").send_keys("charged twice")
            driver.find_element(By.ID, "void-pin").send_keys("0000", Keys.ENTER)
            wait.until(has((By.ID, "void-error"), "4 tries left"))
            driver.find_element(By.ID, "void-pin").send_keys(SUPERVISOR_PIN, Keys.ENTER)
            wait.until(has((By.ID, "verdict"), "Sale #2 voided (entry #4)"))
            wait.until(has((By.ID, "recent"), "Voided (#4)"))
            assert service.journal.counts() == (4, 4)
            # five wrong tries lock the PIN: even the right one is refused then
            wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "button.void[data-seq='3']")))
            driver.find_element(By.CSS_SELECTOR, "button.void[data-seq='3']").click()
            wait.until(ec.visibility_of_element_located((By.ID, "void-reason")))
            driver.find_element(By.ID, "void-reason").send_keys("test")
            for _ in range(5):
                driver.find_element(By.ID, "void-pin").send_keys("1111", Keys.ENTER)
                time.sleep(0.3)
            wait.until(has((By.ID, "void-error"), "locked for 5 minutes"))
            driver.find_element(By.ID, "void-pin").send_keys(SUPERVISOR_PIN, Keys.ENTER)
            wait.until(has((By.ID, "void-error"), "locked"))
            assert service.journal.counts() == (4, 4)
            driver.find_element(By.ID, "void-cancel").click()
            assert "Traceback" not in driver.page_source
            # a basket's quantity is whole units in digits: "1e1" was read as 10 units
            set_basket = "document.getElementById('basket').value = arguments[0];"
            catch = "try { basketLines(); return null; } catch (e) { return e.message; }"
            lines = driver.execute_script(
                set_basket + "return basketLines();", "COLA drink ２ 3.00\nTEA drink 3 2.00"
            )
            assert [line["qty"] for line in lines] == [2, 3]
            for odd in ("COLA drink 1e1 3.00", "COLA drink 0x10 3.00", "COLA drink 1.5 3.00"):
                refused = driver.execute_script(set_basket + catch, odd)
                assert refused and refused.startswith("Line 1"), (odd, refused)
            # the end-of-day report: sales 1 and 3 (2 was voided)
            driver.get(web.url + "/report")
            wait.until(ec.visibility_of_element_located((By.ID, "r-net")))
            assert driver.find_element(By.ID, "report-date").text == "2026-11-28"
            assert driver.find_element(By.ID, "r-sales").text == "2"
            assert driver.find_element(By.ID, "r-voids").text == "1"
            assert driver.find_element(By.ID, "r-gross").text == "¥173.50"
            assert driver.find_element(By.ID, "r-discount").text == "−¥6.40"
            assert driver.find_element(By.ID, "r-net").text == "¥167.10"
            assert "member-discount" in driver.find_element(By.ID, "by-rule").text
            _shot(driver, tmp_path, "report.png")
            # the receipt of the first sale: an 80 mm page with its code
            driver.get(web.url + "/receipt/1")
            wait.until(ec.visibility_of_element_located((By.ID, "code")))
            code = service.receipt(1).code
            assert code and driver.find_element(By.ID, "code").text == code
            assert driver.find_elements(By.CSS_SELECTOR, ".qr svg")
    finally:
        driver.quit()


@pytest.mark.pcsc
def test_cancel_and_the_pending_timeout_record_nothing_and_use_no_quota(
    service, emulated_card, clock
) -> None:
    client = till_client(create_app(service))
    card = emulated_card(pan=MEMBER_PAN)
    quote = client.post("/api/v1/checkout", json={"amount": "128.00"}).get_json()
    busy = client.post("/api/v1/checkout", json={"amount": "1.00", "timeout": 1})
    assert busy.status_code == 409 and "waiting to be confirmed" in busy.get_json()["error"]
    cancelled = client.post(f"/api/v1/checkout/{quote['pending_id']}/cancel")
    assert cancelled.get_json() == {"state": "cancelled", "pending_id": quote["pending_id"]}
    late = client.post(f"/api/v1/checkout/{quote['pending_id']}/confirm")
    assert late.status_code == 404 and late.get_json()["kind"] == "no_pending_sale"
    assert service.journal.counts() == (0, 0)
    card.remove()
    card.insert()  # the customer tries again: a new insertion
    quote = client.post("/api/v1/checkout", json={"amount": "128.00"}).get_json()
    clock.advance(service.pending_timeout)  # the cashier walked away
    expired = client.post(f"/api/v1/checkout/{quote['pending_id']}/confirm")
    assert expired.status_code == 404 and "nothing was recorded" in expired.get_json()["error"]
    assert service.journal.counts() == (0, 0) and service.pending() is None
    wrong = client.post("/api/v1/checkout/no-such-id/cancel")
    assert wrong.status_code == 404
