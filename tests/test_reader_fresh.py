"""reader.fresh.FreshCardReader: each card insertion is read for at most one sale.

Through real pcscd + vpcd + our emulator, in the daemon's shape (the cashier page
and the till API over a TerminalService) and directly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from central.serve import ThreadedServer
from pact.cards import PanTokenizer, token_for_pan
from reader.emulation.vpcd import CardEmulator
from reader.errors import CardBlockedError, NoCardError, NoReaderError, StaleCardError
from reader.fresh import EARLY, LAST_SALE, FreshCardReader
from reader.monitor import Insertion, MonitorState, ReaderState
from reader.pcsc import connect_reader
from terminal.service import TerminalService
from terminal.web import create_app
from tests.conftest import Site
from tests.fixtures_pcsc import READER_0, TEST_PAN, InsertCard, PcscdInfo
from tests.helpers import CARD_CLOCK, MEMBER_PAN, OTHER_PAN, browser_sign_in, till_client

pytestmark = pytest.mark.pcsc

KEY = bytes(range(1, 33))
TOKENIZE = PanTokenizer(KEY)
OTHER = "6222021234567894"


@pytest.fixture
def reader(pcscd: PcscdInfo) -> Iterator[FreshCardReader]:
    fresh = FreshCardReader(READER_0, clock=CARD_CLOCK, stale_grace=0.3).start()
    yield fresh
    fresh.close()
    assert not fresh.monitor.running


def read(fresh: FreshCardReader, timeout: float = 5.0) -> str:
    return fresh(timeout=timeout, tokenize=TOKENIZE).pan_last4


def seen(fresh: FreshCardReader, emulator: CardEmulator, timeout: float = 5.0) -> None:
    """Wait until the monitor has the card in (or out of) the reader."""
    deadline = time.monotonic() + timeout
    state = fresh.monitor.snapshot()
    while (state.reader(READER_0).card is not None) != emulator.inserted:  # type: ignore[union-attr]
        if time.monotonic() > deadline:
            pytest.fail(f"the monitor did not see the card change: {state}")
        state = fresh.monitor.wait_changed(state.version, 0.2)


def test_the_card_of_the_last_sale_is_not_read_again(
    reader: FreshCardReader, emulated_card: InsertCard
) -> None:
    card = emulated_card(pan=TEST_PAN)
    seen(reader, card)
    identity = reader(timeout=5, tokenize=TOKENIZE)
    assert identity.token == token_for_pan(TEST_PAN, KEY)
    commands = len(card.apdu_log)
    started = time.monotonic()
    with pytest.raises(StaleCardError) as info:
        read(reader, timeout=10)
    assert str(info.value) == LAST_SALE
    assert info.value.exit_code == 3 and isinstance(info.value, NoCardError)
    assert 0.3 <= time.monotonic() - started < 2.0  # the grace, not the 10 s timeout
    assert len(card.apdu_log) == commands  # not a single APDU more
    assert reader.status()["ready_for_new_card"] is False
    assert reader.status()["message"] == LAST_SALE


def test_taking_the_card_out_and_in_again_is_a_new_insertion(
    reader: FreshCardReader, emulated_card: InsertCard
) -> None:
    card = emulated_card(pan=TEST_PAN)
    seen(reader, card)
    assert read(reader) == TEST_PAN[-4:]
    card.remove()
    seen(reader, card)
    card.insert()  # the same card, back in
    assert read(reader) == TEST_PAN[-4:]


def test_a_card_inserted_before_the_button_is_read_at_once(
    reader: FreshCardReader, emulated_card: InsertCard
) -> None:
    """Customers insert early in a busy shop: a card put in after the last sale but
    before the cashier pressed the button is this sale's card."""
    first = emulated_card(pan=TEST_PAN)
    seen(reader, first)
    assert read(reader) == TEST_PAN[-4:]
    first.remove()
    second = emulated_card(pan=OTHER)  # waits until pcscd has seen it
    seen(reader, second)
    time.sleep(0.5)  # the customer waits; then the cashier presses the button
    started = time.monotonic()
    assert read(reader, timeout=5) == OTHER[-4:]
    assert time.monotonic() - started < 0.3


def test_a_card_waiting_at_start_up_is_refused_until_inserted_again(
    emulated_card: InsertCard,
) -> None:
    card = emulated_card(pan=TEST_PAN)
    with FreshCardReader(READER_0, clock=CARD_CLOCK, stale_grace=0.2) as fresh:
        assert fresh.status()["readers"][0]["card"] == "already in the reader at start-up"
        with pytest.raises(StaleCardError, match="before the terminal was ready") as info:
            read(fresh)
        assert str(info.value) == EARLY
        assert card.apdu_log == []
        card.remove()
        seen(fresh, card)
        card.insert()
        assert read(fresh) == TEST_PAN[-4:]


def test_accept_present_reads_a_card_waiting_at_start_up(emulated_card: InsertCard) -> None:
    emulated_card(pan=TEST_PAN)
    with FreshCardReader(READER_0, clock=CARD_CLOCK, accept_present=True) as fresh:
        assert read(fresh) == TEST_PAN[-4:]


def test_a_failed_read_leaves_the_insertion_unused(
    reader: FreshCardReader, emulated_card: InsertCard
) -> None:
    """A blocked card (or a bad contact) may be tried again: it stays this sale's card."""
    card = emulated_card(profile="blocked")
    seen(reader, card)
    for _ in range(2):
        with pytest.raises(CardBlockedError):
            read(reader)
    status = reader.status()
    assert status["ready_for_new_card"] is True
    assert "blocked" in status["last_error"]


def test_a_card_inserted_while_waiting_is_read(reader: FreshCardReader, pcscd: PcscdInfo) -> None:
    emulator = CardEmulator(TEST_PAN)
    timer = threading.Timer(0.3, emulator.insert)
    timer.start()
    try:
        started = time.monotonic()
        assert read(reader) == TEST_PAN[-4:]
        assert time.monotonic() - started >= 0.3
    finally:
        timer.join()
        emulator.remove()


def test_no_card_times_out(reader: FreshCardReader) -> None:
    started = time.monotonic()
    with pytest.raises(NoCardError, match=r"^no card presented within 0.5 s$"):
        read(reader, timeout=0.5)
    assert 0.45 <= time.monotonic() - started < 1.5
    assert reader.status()["message"] == "ready: insert or tap the card"


def test_no_matching_reader_fails_at_once(pcscd: PcscdInfo) -> None:
    with FreshCardReader("Gemalto", clock=CARD_CLOCK) as fresh:
        started = time.monotonic()
        with pytest.raises(NoReaderError, match="no card reader found matching 'Gemalto'"):
            read(fresh, timeout=30)
        assert time.monotonic() - started < 0.5
        assert fresh.status()["ready_for_new_card"] is False


class FrozenMonitor:
    """A monitor that stopped looking: it keeps announcing one insertion."""

    def __init__(self, reader: ReaderState) -> None:
        self.state = MonitorState(True, True, (reader,), None, 1)

    running = True

    def start(self) -> None: ...

    def stop(self) -> bool:
        return True

    def snapshot(self) -> MonitorState:
        return self.state

    def wait_changed(self, version: int, timeout: float) -> MonitorState:
        time.sleep(timeout)
        return self.state


def test_a_card_swapped_after_the_announcement_is_never_read(emulated_card: InsertCard) -> None:
    """The connection's pcscd event counter must match the announced insertion's: a
    card that went in after it (the monitor has not caught up) is not read under the
    old insertion's name, which would let one insertion pay for two sales."""
    card = emulated_card(pan=TEST_PAN)
    with connect_reader(READER_0) as connection:
        counter = connection.event_counter
    assert counter is not None
    announced = Insertion(7, READER_0, card.card.image.atr, True, False, time.monotonic())
    monitor = FrozenMonitor(ReaderState(READER_0, announced, (counter - 2) & 0xFFFF))
    fresh = FreshCardReader(READER_0, clock=CARD_CLOCK, monitor=monitor)  # type: ignore[arg-type]
    with pytest.raises(NoCardError):
        read(fresh, timeout=1.0)
    assert card.apdu_log == []
    monitor.state = MonitorState(True, True, (ReaderState(READER_0, announced, counter),), None, 2)
    assert read(fresh) == TEST_PAN[-4:]


# ------------------------------------------------------------ the daemon's shape


@pytest.fixture
def service(site: Site, clock, pcscd: PcscdInfo) -> Iterator[TerminalService]:
    site.sync(clock)
    fresh = FreshCardReader(READER_0, clock=CARD_CLOCK, stale_grace=0.3).start()
    svc = TerminalService(site.state.dir, fresh, clock, card_timeout=5)
    yield svc
    svc.close()
    fresh.close()


def test_reader_api_and_checkout_refuse_the_last_sales_card(
    service: TerminalService, emulated_card: InsertCard
) -> None:
    client = till_client(create_app(service))
    state = client.get("/api/v1/reader").get_json()
    assert state == {
        "reader": READER_0,
        "readers": [{"name": READER_0, "card_present": False, "card": None}],
        "pcscd_connected": True,
        "card_present": False,
        "ready_for_new_card": True,
        "waiting_for_card": False,
        "state": "ready",
        "message": "Ready: insert or tap the card",  # the cashier's words for the state
        "last_error": None,
    }
    card = emulated_card(pan=MEMBER_PAN)
    seen(service.read_card, card)  # type: ignore[arg-type]
    state = client.get("/api/v1/reader").get_json()
    assert (state["card_present"], state["ready_for_new_card"]) == (True, True)
    assert (state["state"], state["message"]) == ("new_card", "A new card is in the reader")
    sale = client.post("/api/v1/checkout", json={"amount": "128.00", "confirm": True})
    assert sale.status_code == 200 and sale.get_json()["member"] is True
    again = client.post("/api/v1/checkout", json={"amount": "45.50", "confirm": True})
    assert again.status_code == 408
    assert again.get_json() == {"error": LAST_SALE, "kind": "stale_card"}
    state = client.get("/api/v1/reader").get_json()
    assert (state["card_present"], state["ready_for_new_card"]) == (True, False)
    assert state["readers"][0]["card"] == "read for the last sale"
    assert (state["state"], state["last_error"]) == ("stale_card", LAST_SALE)
    assert state["message"] == "The card in the reader is not a new one: take it out"
    assert service.journal.counts()[0] == 1
    card.remove()
    emulated_card(pan=OTHER_PAN)
    assert (
        client.post("/api/v1/checkout", json={"amount": "45.50", "confirm": True}).status_code
        == 200
    )
    assert client.get("/api/v1/reader").get_json()["last_error"] is None


def test_a_checkout_waiting_before_the_card_goes_in(
    service: TerminalService, pcscd: PcscdInfo
) -> None:
    client = till_client(create_app(service))
    result: dict = {}
    waiting = threading.Thread(
        target=lambda: result.update(
            r=client.post("/api/v1/checkout", json={"amount": "12.80", "confirm": True})
        )
    )
    waiting.start()
    time.sleep(0.3)
    assert client.get("/api/v1/reader").get_json()["waiting_for_card"] is True
    with CardEmulator(MEMBER_PAN):
        waiting.join(10)
    assert result["r"].status_code == 200 and result["r"].get_json()["pan_last4"] == MEMBER_PAN[-4:]
    assert client.get("/api/v1/reader").get_json()["waiting_for_card"] is False


def test_reader_api_with_a_reader_that_does_not_report(site: Site, clock) -> None:
    def plain(*, timeout: float, tokenize: object):  # a bare CardReaderFn
        raise NoCardError("none")

    svc = TerminalService(site.state.dir, plain, clock)
    try:
        body = till_client(create_app(svc)).get("/api/v1/reader").get_json()
    finally:
        svc.close()
    assert body["ready_for_new_card"] is None
    assert body["message"] == "the card reader does not report its state"


@pytest.mark.browser
def test_cashier_page_shows_the_reader_line(
    service: TerminalService, emulated_card: InsertCard
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.test_web import chromium_driver

    driver = chromium_driver()
    try:
        app = create_app(service)
        with ThreadedServer(app) as web:
            browser_sign_in(driver, web.url, app)
            driver.get(web.url + "/")
            wait = WebDriverWait(driver, 15)
            wait.until(ec.text_to_be_present_in_element((By.ID, "reader"), "Ready"))
            assert READER_0 in driver.find_element(By.ID, "reader").text
            emulated_card(pan=MEMBER_PAN)
            driver.find_element(By.ID, "amount").send_keys("128")
            driver.find_element(By.ID, "charge").click()
            wait.until(ec.text_to_be_present_in_element((By.ID, "net"), "121.60"))
            wait.until(ec.text_to_be_present_in_element((By.ID, "reader"), "not a new one"))
            line = driver.find_element(By.ID, "reader")
            assert "take it out" in line.text and "problem" in line.get_attribute("class")
    finally:
        driver.quit()


def test_terminal_checkout_cli_refuses_a_card_already_in_the_reader(
    site: Site, clock, emulated_card: InsertCard
) -> None:
    """The one-shot command cannot know whether a card that was in before it started
    is the last customer's: it says so (exit 3, one line); a card put in while it
    waits is read."""
    import subprocess
    import sys
    from pathlib import Path

    site.sync(clock)
    unioncard = str(Path(sys.executable).parent / "unioncard")
    command = [unioncard, "terminal", "checkout", "12.80", "--data", str(site.state.dir)]
    command += ["--reader", "00 00", "--timeout", "15", "--json"]
    card = emulated_card(pan=MEMBER_PAN)
    started = time.monotonic()
    refused = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 3, refused.stderr
    assert refused.stderr == f"error: {EARLY}\n"
    assert time.monotonic() - started < 10  # refused after the grace, not the timeout
    card.remove()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3.0)  # the command is up and waiting; now the customer inserts the card
    with CardEmulator(MEMBER_PAN):
        out, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    assert '"pan_last4": "' + MEMBER_PAN[-4:] in out


@pytest.mark.pcsc
def test_each_sale_journals_the_cards_transaction_counter(
    service: TerminalService, site: Site, clock, emulated_card: InsertCard
) -> None:
    """Card-presence evidence through the real pcscd: the same card twice gives two
    sales whose counters follow each other; a card without GET DATA gives none; the
    counters reach the union with the sales."""
    client = till_client(create_app(service))
    card = emulated_card(pan=MEMBER_PAN)
    seen(service.read_card, card)  # type: ignore[arg-type]
    assert (
        client.post("/api/v1/checkout", json={"amount": "128.00", "confirm": True}).status_code
        == 200
    )
    card.remove()
    card.insert()  # the same card (the same counter), inserted again
    seen(service.read_card, card)  # type: ignore[arg-type]
    assert (
        client.post("/api/v1/checkout", json={"amount": "20.00", "confirm": True}).status_code
        == 200
    )
    card.remove()
    other = emulated_card(pan=OTHER_PAN, profile="no-get-data")
    seen(service.read_card, other)  # type: ignore[arg-type]
    assert (
        client.post("/api/v1/checkout", json={"amount": "5.00", "confirm": True}).status_code == 200
    )
    first, second, third = service.journal.sales()
    assert first.atc is not None and second.atc == first.atc + 1 and third.atc is None
    assert first.hashed()["atc"] == first.atc  # the counter is in the signed hash
    site.sync(clock)
    assert [s.atc for s in site.union.store.sales_for("T1")] == [first.atc, second.atc, None]
