"""The real card path: our emulator -> vpcd -> pcscd -> pyscard -> reader.pcsc.

Nothing here is faked: the fixtures in tests/fixtures_pcsc.py run (or reuse) pcscd
with the vsmartcard virtual reader, and the emulator answers over vpcd's socket.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pact.cards import PanTokenizer, token_for_pan
from reader.emulation.vpcd import CardEmulator
from reader.errors import (
    CardBlockedError,
    CardError,
    CardRemovedError,
    NoCardError,
    NoReaderError,
    UnsupportedCardError,
)
from reader.pcsc import list_readers, read_card, wait_for_card
from tests.fixtures_pcsc import READER_0, READER_1, TEST_PAN, InsertCard, PcscdInfo

pytestmark = pytest.mark.pcsc

KEY = bytes(range(1, 33))
TOKENIZE = PanTokenizer(KEY)
NOW = datetime.date(2026, 11, 28)
ROOT = Path(__file__).resolve().parent.parent

# What pcscd must pass to the card for the "unionpay" profile (EMV 4.3 Book 1, 12.3.2):
# PPSE (6A82), PSE, directory records 1-3, SELECT debit, GPO, records 1-2 of SFI 1.
UNIONPAY_COMMANDS = [
    "00A404000E325041592E5359532E444446303100",
    "00A404000E315041592E5359532E444446303100",
    "00B2010C00",
    "00B2020C00",
    "00B2030C00",
    "00A4040008A00000033301010100",
    "80A8000002830000",
    "00B2010C00",
    "00B2020C00",
    "80CA9F3600",  # GET DATA: the transaction counter
]


def test_pcscd_lists_both_virtual_readers(pcscd: PcscdInfo) -> None:
    readers = list_readers()
    assert READER_0 in readers and READER_1 in readers


def test_read_unionpay_card_through_pcscd(emulated_card: InsertCard) -> None:
    card = emulated_card(pan=TEST_PAN, expiry="2029-08")
    identity = read_card(READER_0, timeout=5, tokenize=TOKENIZE, today=NOW)
    assert identity.scheme == "unionpay"
    assert identity.aid == bytes.fromhex("A000000333010101")
    assert identity.pan_last4 == TEST_PAN[-4:]
    assert identity.expiry == "2029-08"
    assert identity.token == token_for_pan(TEST_PAN, KEY)
    assert [c.hex().upper() for c, _ in card.apdu_log] == UNIONPAY_COMMANDS
    assert identity.atc == 0x0101  # the emulated card's counter, one GPO later
    text = repr(identity) + json.dumps(identity.as_json())
    assert TEST_PAN not in text and TEST_PAN[:-4] not in text


def test_a_full_read_is_fast(emulated_card: InsertCard) -> None:
    """With TCP_QUICKACK in the emulator, ten APDUs through pcscd take a few ms."""
    emulated_card()
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        read_card(READER_0, timeout=5, tokenize=TOKENIZE, today=NOW)
        timings.append(time.perf_counter() - started)
    assert min(timings) < 0.1, f"full reads took {timings}"


def test_a_nonmember_card_is_read_the_same_way(emulated_card: InsertCard) -> None:
    other = "6222021234567894"
    emulated_card(pan=other)
    identity = read_card(READER_0, timeout=5, tokenize=TOKENIZE, today=NOW)
    assert identity.pan_last4 == "7894" and identity.token == token_for_pan(other, KEY)
    assert identity.token != token_for_pan(TEST_PAN, KEY)


@pytest.mark.parametrize(
    ("profile", "scheme"),
    [("unionpay-t0", "unionpay"), ("contactless", "unionpay"), ("visa", "visa")],
)
def test_other_profiles_through_pcscd(emulated_card: InsertCard, profile: str, scheme: str) -> None:
    emulated_card(profile=profile, expiry="2031-01")
    identity = read_card(READER_0, timeout=5, tokenize=TOKENIZE, today=NOW)
    assert (identity.scheme, identity.pan_last4, identity.expiry) == (scheme, "1232", "2031-01")


@pytest.mark.parametrize(
    ("profile", "error"),
    [
        ("blocked", CardBlockedError),
        ("transit", UnsupportedCardError),
        ("pulled", CardRemovedError),
    ],
)
def test_card_failures_through_pcscd(
    emulated_card: InsertCard, profile: str, error: type[CardError]
) -> None:
    emulated_card(profile=profile)
    with pytest.raises(error):
        read_card(READER_0, timeout=5, tokenize=TOKENIZE, today=NOW)


def test_a_card_pulled_mid_read_says_so(emulated_card: InsertCard) -> None:
    card = emulated_card(profile="pulled")
    with pytest.raises(CardRemovedError, match="taken away") as info:
        read_card(READER_0, timeout=5, tokenize=TOKENIZE, today=NOW)
    assert info.value.exit_code == 5
    assert len(card.apdu_log) == 7  # it vanished at the first READ RECORD after GPO


def test_no_card_times_out(pcscd: PcscdInfo) -> None:
    started = time.monotonic()
    with pytest.raises(NoCardError, match=r"no card presented within 0.5 s"):
        read_card(READER_1, timeout=0.5, tokenize=TOKENIZE, today=NOW)
    assert 0.45 <= time.monotonic() - started < 2.0


def test_a_card_in_the_second_reader(emulated_card: InsertCard) -> None:
    emulated_card(port=35964)
    with pytest.raises(NoCardError):
        read_card(READER_0, timeout=0.3, tokenize=TOKENIZE, today=NOW)
    assert read_card(None, timeout=5, tokenize=TOKENIZE, today=NOW).pan_last4 == "1232"
    assert read_card("00 01", timeout=5, tokenize=TOKENIZE, today=NOW).pan_last4 == "1232"


def test_a_card_inserted_while_waiting_is_read(pcscd: PcscdInfo) -> None:
    emulator = CardEmulator(TEST_PAN)
    started = time.monotonic()
    timer = threading.Timer(0.3, emulator.insert)
    timer.start()
    try:
        identity = read_card(READER_0, timeout=5, tokenize=TOKENIZE, today=NOW)
    finally:
        timer.join()
        emulator.remove()
    assert identity.pan_last4 == "1232"
    assert time.monotonic() - started >= 0.3


def test_unknown_reader_fails_fast(pcscd: PcscdInfo) -> None:
    started = time.monotonic()
    with pytest.raises(NoReaderError, match="no card reader found matching 'Gemalto'"):
        read_card("Gemalto", timeout=30, tokenize=TOKENIZE, today=NOW)
    assert time.monotonic() - started < 1.0
    with pytest.raises(NoReaderError):
        wait_for_card("Gemalto", timeout=30)


@pytest.mark.slow
def test_pcscd_not_running_is_a_no_reader_error() -> None:
    """libpcsclite finds pcscd through $PCSCLITE_CSOCK_NAME: point a child process at
    a socket that does not exist. No running pcscd is touched."""
    code = (
        "import datetime\n"
        "from reader.errors import NoReaderError\n"
        "from reader.pcsc import list_readers, read_card\n"
        "day = datetime.date(2026, 11, 28)\n"
        "for call in (list_readers, lambda: read_card(timeout=30, tokenize=str, today=day)):\n"
        "    try:\n"
        "        call()\n"
        "    except NoReaderError as exc:\n"
        "        print(type(exc).__name__, exc.exit_code, exc)\n"
    )
    env = dict(os.environ, PCSCLITE_CSOCK_NAME="/nonexistent/pcscd.comm")
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    expected = "NoReaderError 2 pcscd is not running: start it with `systemctl start pcscd`"
    assert done.stdout.splitlines() == [expected, expected]
    assert time.monotonic() - started < 10


def test_emulator_without_vpcd_raises_connection_error() -> None:
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    emulator = CardEmulator(TEST_PAN, port=port)
    with pytest.raises(ConnectionError, match=f"127.0.0.1:{port}"):
        emulator.insert()
    assert not emulator.inserted
