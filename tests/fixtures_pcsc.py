"""Fixtures for the real card path: pcscd, the vsmartcard virtual reader, our emulator.

``pcscd`` (session): uses a pcscd that already answers, else starts
``pcscd --foreground`` and stops only that process at the end. ``emulated_card``
(function): a factory that inserts :class:`reader.emulation.vpcd.CardEmulator` cards and
takes them out again after the test, waiting until pcscd has seen them go.
``private_pcscd`` (function): a pcscd of the test's own in a private mount
namespace, for tests that stop and restart pcscd (their client runs in a child
process, see :class:`tests.private_pcscd.PrivatePcscd`).

When pcscd, the vpcd driver or pyscard is missing the tests skip, except under
``CI=true``, where they fail: CI must exercise the real card path.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

from reader.emulation.vpcd import VPCD_PORT, CardEmulator
from reader.errors import NoReaderError
from reader.pcscd import Pcscd, pcscd_running, virtual_readers
from tests.private_pcscd import PrivatePcscd

READER_0 = "Virtual PCD 00 00"  # vpcd slot 0, port 35963
READER_1 = "Virtual PCD 00 01"  # vpcd slot 1, port 35964
TEST_PAN = "6212345678901232"  # Luhn-valid UnionPay-range test number


def unavailable(message: str) -> NoReturn:
    """Fail under CI (the card path must be tested there), skip elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: the real card path is required)", pytrace=False)
    pytest.skip(message)


@dataclass(frozen=True)
class PcscdInfo:
    """What the tests learn about the pcscd they run against."""

    started_here: bool  # False: a pcscd was already running and is left alone
    readers: tuple[str, ...]  # the vpcd readers it lists


@pytest.fixture(scope="session")
def pcscd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PcscdInfo]:
    """pcscd with the virtual reader: the running one, or one started (and stopped) here."""
    try:
        import smartcard.scard  # noqa: F401
    except ImportError as exc:
        unavailable(f"pyscard is not importable ({exc}): run `make venv`")
    if pcscd_running() and not virtual_readers():
        unavailable(
            "the running pcscd has no 'Virtual PCD' reader: install vsmartcard-vpcd "
            "and restart pcscd"
        )
    daemon = Pcscd(log_path=tmp_path_factory.mktemp("pcscd") / "pcscd.log")
    try:
        daemon.__enter__()
    except NoReaderError as exc:
        unavailable(str(exc))
    try:
        yield PcscdInfo(started_here=daemon.started_here, readers=tuple(virtual_readers()))
    finally:
        daemon.stop()  # stops only a pcscd it started


def reader_for_port(port: int) -> str:
    """vpcd's reader name for a port: 35963 -> 'Virtual PCD 00 00', 35964 -> '... 00 01'."""
    return f"Virtual PCD 00 {port - VPCD_PORT:02d}"


InsertCard = Callable[..., CardEmulator]


@pytest.fixture
def emulated_card(pcscd: PcscdInfo) -> Iterator[InsertCard]:
    """Factory: ``emulated_card(pan=TEST_PAN, expiry="2030-12", profile="unionpay",
    port=35963, wait=True)`` inserts a card; ``wait`` returns once pcscd sees it."""
    from reader.errors import CardError
    from reader.pcsc import wait_for_card, wait_for_removal

    inserted: list[CardEmulator] = []

    def insert(
        pan: str = TEST_PAN,
        expiry: str = "2030-12",
        profile: str = "unionpay",
        port: int = VPCD_PORT,
        wait: bool = True,
    ) -> CardEmulator:
        emulator = CardEmulator(pan, expiry, profile, port=port)
        try:
            emulator.insert()
        except ConnectionError as exc:
            unavailable(str(exc))
        inserted.append(emulator)
        if wait:
            try:
                # connect and let go: no APDU is sent, so the emulator's log stays empty
                with wait_for_card(reader_for_port(port), timeout=5.0):
                    pass
            except CardError as exc:
                pytest.fail(f"pcscd did not see the emulated card: {exc}")
        return emulator

    yield insert
    for emulator in inserted:
        emulator.remove()
    for port in {emulator.port for emulator in inserted}:
        if not wait_for_removal(reader_for_port(port), timeout=5.0):
            pytest.fail("pcscd still sees the emulated card after it was removed")


@pytest.fixture
def private_pcscd() -> Iterator[PrivatePcscd]:
    """A pcscd of the test's own (see :class:`tests.private_pcscd.PrivatePcscd`), free to stop
    and restart: no other PC/SC client on the machine sees it, so the session's pcscd
    (perhaps someone else's) is never touched. Only child processes can use it: give
    them ``private_pcscd.env``. Its vpcd slot 0 listens on ``private_pcscd.port``."""
    reason = PrivatePcscd.unavailable_reason()
    if reason is not None:
        unavailable(reason)
    folder = Path(tempfile.mkdtemp(prefix="uc-pcscd-"))  # short: a socket path has 108 bytes
    daemon = PrivatePcscd(folder)
    try:
        daemon.start()
    except NoReaderError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        unavailable(str(exc))
    try:
        yield daemon
    finally:
        daemon.stop()
        shutil.rmtree(folder, ignore_errors=True)
