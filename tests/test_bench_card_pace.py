"""The emulator's contactless pace (``CardEmulator(pace_bps=...)``), which the card
benchmark (bench/card.py) relies on: a paced answer never comes sooner than the air
time of its command and response.

The first tests play vpcd themselves over a local socket (no pcscd involved); the
last reads a paced card through a real pcscd of its own (the ``private_pcscd``
fixture: under ``CI=true`` a missing pcscd, virtual reader or root fails it).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reader.emulation.vpcd import CTRL_ATR, CTRL_ON, ISO14443A_106K, CardEmulator, air_seconds
from tests.fixtures_pcsc import READER_0, TEST_PAN
from tests.private_pcscd import PrivatePcscd

ROOT = Path(__file__).resolve().parent.parent
READ_RECORD_1 = bytes.fromhex("00B2010C00")  # SFI 1 record 1 of the unionpay profile
SELECT_DEBIT = bytes.fromhex("00A4040008A00000033301010100")


class FakeVpcd:
    """The vpcd end of the socket: 2-byte big-endian length, then the payload."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.conn: socket.socket | None = None

    def accept(self) -> None:
        self.server.settimeout(5)
        self.conn, _ = self.server.accept()
        self.conn.settimeout(5)
        self.conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, payload: bytes) -> None:
        assert self.conn is not None
        self.conn.sendall(len(payload).to_bytes(2, "big") + payload)

    def receive(self) -> bytes:
        size = int.from_bytes(self._exactly(2), "big")
        return self._exactly(size)

    def _exactly(self, size: int) -> bytes:
        assert self.conn is not None
        buf = b""
        while len(buf) < size:
            chunk = self.conn.recv(size - len(buf))
            assert chunk, "the emulator hung up"
            buf += chunk
        return buf

    def exchange(self, apdu: bytes) -> tuple[bytes, float]:
        """Send a command APDU; return the answer and the seconds it took."""
        started = time.monotonic()
        self.send(apdu)
        answer = self.receive()
        return answer, time.monotonic() - started

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.server.close()


@pytest.fixture
def vpcd() -> Iterator[FakeVpcd]:
    fake = FakeVpcd()
    yield fake
    fake.close()


def _powered(vpcd: FakeVpcd, pace_bps: float | None) -> CardEmulator:
    card = CardEmulator(TEST_PAN, port=vpcd.port, pace_bps=pace_bps).insert()
    vpcd.accept()
    vpcd.send(bytes([CTRL_ON]))
    vpcd.send(bytes([CTRL_ATR]))
    assert vpcd.receive() == card.card.image.atr  # control messages are not paced
    return card


def test_air_time_is_the_declared_rule() -> None:
    """PCB + APDU + CRC_A, 9 bit times a byte, 2 for start and end, at fc/128."""
    assert ISO14443A_106K == 105_937.5
    assert air_seconds(5, ISO14443A_106K) == pytest.approx((8 * 9 + 2) / 105_937.5)
    per_byte = air_seconds(101, ISO14443A_106K) - air_seconds(100, ISO14443A_106K)
    assert per_byte == pytest.approx(84.96e-6, rel=1e-3)
    with pytest.raises(ValueError, match="positive"):
        CardEmulator(TEST_PAN, pace_bps=0)


@pytest.mark.parametrize("pace_bps", [ISO14443A_106K, 4_000.0])
def test_a_paced_answer_waits_for_its_air_time(vpcd: FakeVpcd, pace_bps: float) -> None:
    card = _powered(vpcd, pace_bps)
    try:
        for apdu in (SELECT_DEBIT, READ_RECORD_1):
            answer, took = vpcd.exchange(apdu)
            assert answer[-2:] == b"\x90\x00"
            due = air_seconds(len(apdu), pace_bps) + air_seconds(len(answer), pace_bps)
            assert took >= due, f"{apdu.hex()}: answered in {took:.6f} s, air time {due:.6f} s"
        assert len(card.pace_late) == 2 and min(card.pace_late) >= 0
    finally:
        card.remove(timeout=0.5)


def test_an_unpaced_answer_does_not_wait(vpcd: FakeVpcd) -> None:
    """The same exchange without a pace is far quicker than the slow pace's air time,
    so the test above fails if pacing does nothing."""
    card = _powered(vpcd, None)
    try:
        answer, took = vpcd.exchange(READ_RECORD_1)
        due = air_seconds(len(READ_RECORD_1), 4_000.0) + air_seconds(len(answer), 4_000.0)
        assert took < due / 4, f"answered in {took:.6f} s without a pace"
        assert card.pace_late == []
    finally:
        card.remove(timeout=0.5)


@pytest.mark.pcsc
@pytest.mark.slow
def test_a_paced_card_read_through_pcscd_takes_its_air_time(private_pcscd: PrivatePcscd) -> None:
    """A child process reads the paced card through a pcscd of the test's own (so no
    other PC/SC client on the machine shares its virtual reader) and times the read."""
    code = (
        "import datetime, json, time\n"
        "from pact.cards import PanTokenizer\n"
        "from reader.pcsc import read_card, wait_for_card\n"
        f"with wait_for_card({READER_0!r}, timeout=5.0):\n"
        "    pass\n"
        "started = time.monotonic()\n"
        f"identity = read_card({READER_0!r}, timeout=5, tokenize=PanTokenizer(bytes(32)),\n"
        "                     today=datetime.date(2026, 11, 28))\n"
        "print(json.dumps({'took': time.monotonic() - started, 'last4': identity.pan_last4}))\n"
    )
    card = CardEmulator(TEST_PAN, port=private_pcscd.port, pace_bps=ISO14443A_106K).insert()
    try:
        done = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, **private_pcscd.env},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        card.remove()
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["last4"] == TEST_PAN[-4:]
    assert len(card.apdu_log) == 10 and len(card.pace_late) == 10
    air = sum(
        air_seconds(len(c), ISO14443A_106K) + air_seconds(len(r), ISO14443A_106K)
        for c, r in card.apdu_log
    )
    assert air > 0.035  # about 40 ms for the unionpay profile's 10 APDUs
    assert result["took"] >= air
