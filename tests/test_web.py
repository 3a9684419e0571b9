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
from terminal.web import create_app
from tests.conftest import Site, missing
from tests.helpers import CARD_CLOCK, MEMBER_PAN, OTHER_PAN

READER = "Virtual PCD 00 00"
SUPERVISOR_PIN = "2468"


@pytest.fixture
def service(site: Site, clock, pcscd) -> Iterator[TerminalService]:
    site.sync(clock)

    reader = FreshCardReader(
        READER, clock=CARD_CLOCK, accept_present=True
    )  # as the daemon reads cards
    svc = TerminalService(site.state.dir, reader, clock, card_timeout=5)
    yield svc
    svc.close()
    reader.close()


@pytest.mark.pcsc
def test_checkout_api_member_and_non_member(service, emulated_card) -> None:
    client = create_app(service).test_client()
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
    client = create_app(service).test_client()
    response = client.post("/api/v1/checkout", json=payload)
    assert response.status_code == status
    assert text in response.get_json()["error"]
    assert service.journal.counts() == (0, 0)


@pytest.mark.pcsc
def test_second_checkout_while_waiting_is_refused(service) -> None:
    client = create_app(service).test_client()
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


@pytest.mark.pcsc
@pytest.mark.browser
def test_cashier_page_in_chromium(service, emulated_card, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    set_pin(service.state.dir, SUPERVISOR_PIN)
    card = emulated_card(pan=MEMBER_PAN)
    driver = chromium_driver()
    try:
        with ThreadedServer(create_app(service)) as web:
            driver.get(web.url + "/")
            wait = WebDriverWait(driver, 15)
            wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "Roster v1"))
            driver.find_element(By.ID, "amount").send_keys("128")
            driver.find_element(By.ID, "charge").click()
            # the quote, waiting for the cashier: nothing recorded yet
            wait.until(ec.visibility_of_element_located((By.ID, "confirm")))
            wait.until(ec.text_to_be_present_in_element((By.ID, "net"), "121.60"))
            assert "waiting to be confirmed" in driver.find_element(By.ID, "card").text
            assert service.journal.counts() == (0, 0)
            assert driver.switch_to.active_element.get_attribute("id") == "confirm"
            driver.find_element(By.ID, "confirm").click()
            wait.until(ec.text_to_be_present_in_element((By.ID, "card"), "sale #1 recorded"))
            link = driver.find_element(By.ID, "receipt").get_attribute("href")
            assert link is not None and link.endswith("/receipt/1")
            assert "Member" in driver.find_element(By.CSS_SELECTOR, "#result .verdict").text
            assert driver.find_element(By.ID, "discount").text == "−¥6.40"
            assert not driver.find_element(By.ID, "confirm").is_displayed()
            wait.until(ec.text_to_be_present_in_element((By.ID, "recent"), MEMBER_PAN[-4:]))
            shot = os.environ.get("UNIONCARD_SCREENSHOT") or str(tmp_path / "cashier.png")
            driver.save_screenshot(shot)
            assert MEMBER_PAN not in driver.page_source
            assert service.journal.counts() == (1, 1)
            # the supervisor voids it: a wrong PIN first, then the right one
            driver.find_element(By.CSS_SELECTOR, "button.void[data-seq='1']").click()
            wait.until(ec.visibility_of_element_located((By.ID, "void-reason")))
            driver.find_element(By.ID, "void-reason").send_keys("charged twice")
            driver.find_element(By.ID, "void-pin").send_keys("0000")
            driver.find_element(By.ID, "void-confirm").click()
            wait.until(ec.text_to_be_present_in_element((By.ID, "void-error"), "wrong"))
            driver.find_element(By.ID, "void-pin").send_keys(SUPERVISOR_PIN)
            driver.find_element(By.ID, "void-confirm").click()
            wait.until(
                ec.text_to_be_present_in_element(
                    (By.CSS_SELECTOR, "#result .verdict"), "Sale #1 voided (entry #2)"
                )
            )
            wait.until(ec.text_to_be_present_in_element((By.ID, "recent"), "void of #1"))
            assert "voided (#2)" in driver.find_element(By.ID, "recent").text
            assert service.journal.counts() == (2, 2)
            # the next customer changes their mind: cancel records nothing
            card.remove()
            emulated_card(pan=OTHER_PAN)
            driver.find_element(By.ID, "amount").send_keys("45.50")
            driver.find_element(By.ID, "charge").click()
            wait.until(ec.visibility_of_element_located((By.ID, "cancel")))
            driver.find_element(By.ID, "cancel").click()
            wait.until(
                ec.text_to_be_present_in_element((By.CSS_SELECTOR, "#result .verdict"), "Cancelled")
            )
            assert service.journal.counts() == (2, 2)
            amount = driver.find_element(By.ID, "amount")
            assert amount.get_attribute("value") == "45.50"  # kept for another try
            amount.clear()
            amount.send_keys("12.345")
            driver.find_element(By.ID, "charge").click()
            wait.until(
                ec.text_to_be_present_in_element(
                    (By.CSS_SELECTOR, "#result .verdict"), "more than two decimals"
                )
            )
            assert "Traceback" not in driver.page_source
            # the receipt of the first sale, from its link: an 80 mm page with its code
            driver.get(web.url + "/receipt/1")
            wait.until(ec.visibility_of_element_located((By.ID, "code")))
            code = service.receipt(1).code
            assert code and driver.find_element(By.ID, "code").text == code
            assert driver.find_elements(By.CSS_SELECTOR, ".qr svg")
            driver.save_screenshot(str(tmp_path / "receipt.png"))
    finally:
        driver.quit()


@pytest.mark.pcsc
def test_cancel_and_the_pending_timeout_record_nothing_and_use_no_quota(
    service, emulated_card, clock
) -> None:
    client = create_app(service).test_client()
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
