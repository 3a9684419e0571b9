"""The cashier page's hardening in headless Chromium (the card a function): a double
click refunds once; a waiting sale survives a reload and a language switch, and a
confirm whose answer was lost is sent again; the cashier can stop waiting for a card;
a damaged journal shows the status and its warning; the keyboard's focus stays on a
sensible control; a replaced till token sends the page to the sign-in page."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest

from central.serve import ThreadedServer
from reader.identity import CardIdentity, Tokenize
from terminal.access import new_api_token
from tests.test_cashier_hardening import COLD, PIN, Shop, make_shop, member_card

pytestmark = pytest.mark.browser


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Shop]:
    made = make_shop(tmp_path, sync=lambda: time.sleep(1))  # "sync now" runs a second
    yield made
    made.service.close()
    for close in made.closers:
        close()


@contextmanager
def page(shop: Shop, lang: str | None = "en") -> Iterator[tuple[Any, Any, str]]:
    """Chromium signed in to ``shop``'s cashier page (in ``lang``; None: Chinese), the
    page open and live: (driver, wait, url)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.test_web import chromium_driver

    driver = chromium_driver()
    try:
        with ThreadedServer(shop.app) as web:
            driver.get(web.url + (f"/lang/{lang}?next=/login" if lang else "/login"))
            driver.find_element(By.ID, "token").send_keys(shop.till)
            driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
            wait = WebDriverWait(driver, 20)
            wait.until(lambda d: "/login" not in d.current_url)
            driver.get(web.url + "/")
            live = "Live" if lang == "en" else "实时"
            WebDriverWait(driver, 40).until(ec.text_to_be_present_in_element((By.ID, "live"), live))
            yield driver, wait, web.url
    finally:
        driver.quit()


def _active(driver: Any) -> tuple[str | None, str | None, str | None]:
    element = driver.switch_to.active_element
    return (
        element.get_attribute("id"),
        element.get_attribute("class"),
        element.get_attribute("data-seq"),
    )


def test_a_double_click_on_refund_journals_one_refund(shop: Shop) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    shop.client().post("/api/v1/checkout", json={"basket": COLD, "confirm": True})
    with page(shop) as (driver, wait, _):
        refund = (By.CSS_SELECTOR, "button.refund[data-seq='1']")
        wait.until(ec.element_to_be_clickable(refund)).click()
        wait.until(ec.visibility_of_element_located((By.ID, "refund-qty-0")))
        quantity = driver.find_element(By.ID, "refund-qty-0")
        quantity.clear()
        quantity.send_keys("1")
        driver.find_element(By.ID, "refund-reason").send_keys("returned")
        driver.find_element(By.ID, "refund-pin").send_keys(PIN)
        ActionChains(driver).double_click(driver.find_element(By.ID, "refund-confirm")).perform()
        verdict = (By.ID, "verdict")
        wait.until(ec.text_to_be_present_in_element(verdict, "Refund of sale #1 (entry #"))
        time.sleep(1.5)  # a second request, had one gone, is answered by now
        assert shop.service.journal.counts()[0] == 2, "one sale, one refund"
        assert "(entry #2)" in driver.find_element(*verdict).text
        assert shop.service.entry_json(1)["refunds"] == [2]
        with closing(sqlite3.connect(shop.state.dir / "journal.db")) as db:  # sent with its key
            assert db.execute("SELECT seq FROM replays").fetchall() == [(2,)]


def test_a_reloaded_page_shows_the_waiting_sale_and_confirms_or_cancels_it(shop: Shop) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec

    with page(shop, lang=None) as (driver, wait, _):
        driver.find_element(By.ID, "amount").send_keys("128", Keys.ENTER)
        wait.until(ec.visibility_of_element_located((By.ID, "confirm")))
        # the language switch reloads the page: the sale still waits, and shows
        driver.find_element(By.ID, "lang-switch").click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "live"), "Live"))
        wait.until(ec.visibility_of_element_located((By.ID, "confirm")))
        assert "Waiting to be confirmed" in driver.find_element(By.ID, "card").text
        assert driver.find_element(By.ID, "gross").text == "¥128.00"
        assert _active(driver)[0] == "confirm"
        # Esc cancels it
        driver.switch_to.active_element.send_keys(Keys.ESCAPE)
        wait.until(ec.text_to_be_present_in_element((By.ID, "verdict"), "Cancelled"))
        assert shop.service.pending() is None and shop.service.journal.counts()[0] == 0
        # another, then F5: Enter confirms it
        driver.find_element(By.ID, "amount").send_keys("45", Keys.ENTER)
        wait.until(ec.visibility_of_element_located((By.ID, "confirm")))
        driver.refresh()
        wait.until(ec.visibility_of_element_located((By.ID, "confirm")))
        assert driver.find_element(By.ID, "gross").text == "¥45.00"
        driver.switch_to.active_element.send_keys(Keys.ENTER)
        wait.until(ec.text_to_be_present_in_element((By.ID, "card"), "Sale #1 recorded"))
        assert shop.service.journal.counts()[0] == 1 and shop.service.pending() is None


def test_a_confirm_whose_answer_was_lost_is_sent_again(shop: Shop) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec

    offline = {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}
    with page(shop) as (driver, wait, _):
        driver.find_element(By.ID, "amount").send_keys("128", Keys.ENTER)
        wait.until(ec.visibility_of_element_located((By.ID, "confirm")))
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.emulateNetworkConditions", offline)
        driver.switch_to.active_element.send_keys(Keys.ENTER)  # Confirm: no answer
        wait.until(ec.text_to_be_present_in_element((By.ID, "prompt"), "trying again"))
        assert shop.service.journal.counts()[0] == 0
        driver.execute_cdp_cmd("Network.emulateNetworkConditions", {**offline, "offline": False})
        wait.until(ec.text_to_be_present_in_element((By.ID, "card"), "Sale #1 recorded"))
        assert shop.service.journal.counts()[0] == 1 and shop.service.pending() is None
        assert not driver.find_element(By.ID, "confirm").is_displayed()


def test_the_cashier_stops_waiting_for_a_card(shop: Shop) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec

    inserted = threading.Event()

    def slow_card(tokenize: Tokenize) -> CardIdentity:
        inserted.wait(30)
        return member_card(tokenize)

    shop.cards.turns.append(slow_card)
    with page(shop) as (driver, wait, _):
        amount = driver.find_element(By.ID, "amount")
        amount.send_keys("1280", Keys.ENTER)  # a zero too many
        stop = wait.until(ec.visibility_of_element_located((By.ID, "stop-wait")))
        wait.until(lambda _: shop.service.waiting_for_card())
        stop.click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "verdict"), "Stopped waiting"))
        wait.until(ec.invisibility_of_element_located((By.ID, "stop-wait")))
        assert not shop.service.waiting_for_card() and shop.service.pending() is None
        assert _active(driver)[0] == "amount"
        # typed again; the card comes: priced at 128, not 1280
        amount.clear()
        amount.send_keys("128", Keys.ENTER)
        wait.until(ec.visibility_of_element_located((By.ID, "stop-wait")))
        inserted.set()
        wait.until(ec.visibility_of_element_located((By.ID, "confirm")))
        assert driver.find_element(By.ID, "gross").text == "¥128.00"
        driver.find_element(By.ID, "cancel").click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "verdict"), "Cancelled"))
        # a wait the page did not start (it was reloaded meanwhile): shown, Esc stops it
        inserted.clear()
        shop.cards.turns.append(slow_card)
        driver.find_element(By.ID, "amount").send_keys(Keys.ENTER)
        wait.until(lambda _: shop.service.waiting_for_card())
        driver.refresh()
        wait.until(ec.visibility_of_element_located((By.ID, "stop-wait")))
        assert "waiting for a card" in driver.find_element(By.ID, "prompt").text
        driver.switch_to.active_element.send_keys(Keys.ESCAPE)
        wait.until(ec.invisibility_of_element_located((By.ID, "stop-wait")))
        assert not shop.service.waiting_for_card()
        inserted.set()


def test_a_damaged_journal_shows_the_status_and_its_warning(shop: Shop) -> None:
    from selenium.webdriver.common.by import By

    shop.client().post("/api/v1/checkout", json={"amount": "10.00", "confirm": True})
    damaged = shop.damaged()
    with page(damaged) as (driver, _, _url):
        status = driver.find_element(By.ID, "status").text
        assert (
            "page 3 torn" in status and "Test Shop" in driver.find_element(By.ID, "terminal").text
        )
        assert "Pending upload: — of —" in status
        assert driver.find_element(By.ID, "live").text == "● Live"


def test_the_focus_stays_on_a_sensible_control(shop: Shop) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec

    for _ in range(3):
        shop.client().post("/api/v1/checkout", json={"basket": COLD, "confirm": True})
    with page(shop) as (driver, wait, _):
        keys = ActionChains(driver)

        def tab_to(wanted: tuple[str | None, str | None, str | None]) -> None:
            for _ in range(60):
                if _active(driver) == wanted:
                    return
                ActionChains(driver).send_keys(Keys.TAB).perform()
            pytest.fail(f"the keyboard did not reach {wanted}")

        # a void by keys: the focus goes back to the amount
        wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "button.void[data-seq='3']")))
        driver.find_element(By.ID, "amount").click()
        tab_to(("", "void", "3"))
        keys.send_keys(Keys.ENTER).perform()
        wait.until(ec.visibility_of_element_located((By.ID, "void-reason")))
        ActionChains(driver).send_keys("typo", Keys.TAB, PIN, Keys.ENTER).perform()
        wait.until(ec.text_to_be_present_in_element((By.ID, "verdict"), "voided"))
        wait.until(ec.text_to_be_present_in_element((By.ID, "recent"), "Void of #3"))
        time.sleep(0.5)
        assert _active(driver)[0] == "amount"
        # a refund by keys: likewise
        driver.find_element(By.ID, "amount").click()
        tab_to(("", "refund", "2"))
        ActionChains(driver).send_keys(Keys.ENTER).perform()
        wait.until(ec.visibility_of_element_located((By.ID, "refund-qty-0")))
        driver.execute_script("document.getElementById('refund-qty-0').value = 1")
        ActionChains(driver).send_keys("back", Keys.TAB, PIN, Keys.ENTER).perform()
        wait.until(ec.text_to_be_present_in_element((By.ID, "verdict"), "Refund of sale #2"))
        time.sleep(0.5)
        assert _active(driver)[0] == "amount"
        # a live update rebuilds the list: the Void button with the focus keeps it
        driver.find_element(By.ID, "amount").click()
        tab_to(("", "void", "1"))
        shop.service.checkout(500, confirm=True)  # e.g. the till's sale
        shop.app.extensions["unioncard_changes"].bump()
        wait.until(ec.text_to_be_present_in_element((By.ID, "recent"), "5.00"))
        time.sleep(0.3)
        assert _active(driver) == ("", "void", "1")
        # "sync now" by Enter: the focus stays on it while the sync runs, and after
        driver.find_element(By.ID, "amount").click()
        for _ in range(60):
            if _active(driver)[0] == "sync-now":
                break
            ActionChains(driver).send_keys(Keys.TAB).perform()
        ActionChains(driver).send_keys(Keys.ENTER).perform()
        wait.until(ec.text_to_be_present_in_element((By.ID, "sync-now"), "Syncing"))
        assert _active(driver)[0] == "sync-now"
        wait.until(ec.text_to_be_present_in_element((By.ID, "sync-now"), "Sync now"))
        assert _active(driver)[0] == "sync-now"


def test_a_replaced_till_token_sends_the_page_to_sign_in(shop: Shop) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    with page(shop, lang=None) as (driver, wait, _):
        new_api_token(shop.state.dir)  # `unioncard terminal api-token`
        shop.app.extensions["unioncard_changes"].bump()
        wait.until(lambda d: "/login" in d.current_url)
        line = wait.until(ec.visibility_of_element_located((By.ID, "signed-out"))).text
        assert line and "Authorization" not in driver.page_source
        assert "signed_out=1" in driver.current_url
