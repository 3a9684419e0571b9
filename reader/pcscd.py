"""Starting the machine's pcscd for the demo, the tests and the benchmarks (an adapter).

:class:`Pcscd` makes sure the machine's pcscd runs with the vsmartcard virtual
reader: one that is already running is used as it is and never stopped; one that we
started is stopped when we are done, and only that one. The helpers
(:func:`pcscd_running`, :func:`virtual_readers`, :func:`vpcd_installed`,
:func:`pcscd_binary`, :func:`die_with_parent`, :func:`terminate`) are shared with the
tests' private pcscd (``tests/private_pcscd.py``).
"""

from __future__ import annotations

import ctypes
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from reader.errors import CardError, NoReaderError

SOCKET = Path("/run/pcscd/pcscd.comm")
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def pcscd_running(path: Path = SOCKET) -> bool:
    """True when a pcscd answers on its socket ``path``."""
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def die_with_parent() -> None:
    """In the child: ask Linux to stop pcscd if the process that started it dies."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def virtual_readers() -> list[str]:
    """The vsmartcard readers pcscd lists (empty when pcscd is down)."""
    # Imported here, not at the top: reader.pcsc imports pyscard, and this module must
    # import without it (tests/fixtures_pcsc.py, loaded for every test, imports it and
    # skips the card tests with a hint when pyscard is missing).
    from reader.pcsc import list_readers

    try:
        return [r for r in list_readers() if "Virtual PCD" in r]
    except CardError:
        return []


VPCD_DRIVERS = Path("/usr/lib/pcsc/drivers/serial")


def terminate(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 10 s; wait until the process has gone."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def vpcd_installed() -> bool:
    """True when vsmartcard's vpcd driver is installed for pcscd."""
    return any(VPCD_DRIVERS.glob("libifdvpcd.so*"))


def pcscd_binary() -> str | None:
    """The path of the pcscd program, or None when it is not installed."""
    return shutil.which("pcscd") or (
        "/usr/sbin/pcscd" if Path("/usr/sbin/pcscd").exists() else None
    )


class Pcscd:
    """Context manager: make sure pcscd runs with the virtual reader while inside."""

    def __init__(self, startup_timeout: float = 15.0, log_path: Path | None = None) -> None:
        self.startup_timeout = startup_timeout
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def started_here(self) -> bool:
        return self.process is not None

    def __enter__(self) -> Pcscd:
        if pcscd_running():
            return self
        binary = pcscd_binary()
        if binary is None:
            raise NoReaderError(
                "pcscd is not installed: run `make demo` or `apt-get install pcscd`"
            )
        if not vpcd_installed():
            raise NoReaderError(
                "the virtual card reader is not installed: `apt-get install vsmartcard-vpcd`"
            )
        log = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                [binary, "--foreground"],
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
        finally:
            if self.log_path:
                log.close()  # type: ignore[union-attr]
        deadline = time.monotonic() + self.startup_timeout
        while not (pcscd_running() and virtual_readers()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                where = f"see {self.log_path}" if self.log_path else "run `pcscd --foreground`"
                raise NoReaderError(f"pcscd did not start with the virtual reader: {where}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.process is not None:
            terminate(self.process)
            self.process = None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
