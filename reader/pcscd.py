"""Starting pcscd for the demo, the tests and the benchmarks (an adapter).

:class:`Pcscd` makes sure the machine's pcscd runs: one that is already running is
used as it is and never stopped; one that we started is stopped when we are done,
and only that one. :class:`PrivatePcscd` runs a pcscd of our own that no other PC/SC
client on the machine sees, which tests may stop and restart at will.
"""

from __future__ import annotations

import ctypes
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from reader.errors import NoReaderError

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


def _die_with_parent() -> None:
    """In the child: ask Linux to stop pcscd if the process that started it dies."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def virtual_readers() -> list[str]:
    """The vsmartcard readers pcscd lists (empty when pcscd is down)."""
    from reader.errors import CardError
    from reader.pcsc import list_readers

    try:
        return [r for r in list_readers() if "Virtual PCD" in r]
    except CardError:
        return []


VPCD_DRIVERS = Path("/usr/lib/pcsc/drivers/serial")


def _terminate(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 10 s; wait until the process has gone."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def vpcd_installed() -> bool:
    return any(VPCD_DRIVERS.glob("libifdvpcd.so*"))


def _pcscd_binary() -> str | None:
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
        binary = _pcscd_binary()
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
                preexec_fn=_die_with_parent,
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
            _terminate(self.process)
            self.process = None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _free_port_pair() -> int:
    """A port P such that P and P + 1 are free (vpcd's two slots listen on both)."""
    for _ in range(200):
        port = random.randrange(20000, 60000, 2)
        probes = []
        try:
            for p in (port, port + 1):
                probe = socket.socket()
                probes.append(probe)
                probe.bind(("", p))
            return port
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
    raise OSError("no two free TCP ports in a row for vpcd")


class PrivatePcscd:
    """A pcscd of our own, invisible to every other PC/SC client on the machine.

    pcsc-lite 1.9 hard-codes ``/run/pcscd`` for its socket and pid file, and a
    pcscd that stops deletes the socket there, so a second one started beside the
    system's would cut off everyone else. This one runs in a private mount
    namespace (``unshare --mount``) in which ``folder/run`` is mounted on
    ``/run/pcscd``; its socket is therefore ``folder/run/pcscd.comm`` for everyone
    else. Its only readers come from ``folder/reader.conf.d``: vpcd slots listening
    on ``port`` ("Virtual PCD 00 00") and ``port + 1`` ("Virtual PCD 00 01"), so the
    vpcd ports of the system's pcscd are not touched either.

    A client process reaches it by setting :attr:`env` (``PCSCLITE_CSOCK_NAME``)
    before its first PC/SC call: libpcsclite reads that variable once per process,
    so a process that has talked to the system's pcscd cannot switch. Needs root
    (for the mount) and util-linux's ``unshare``; :meth:`unavailable_reason` says
    why not when it cannot run.
    """

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.folder = folder
        self.port = port if port is not None else _free_port_pair()
        self.log_path = folder / "pcscd.log"
        self.process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"PrivatePcscd(folder={str(self.folder)!r}, port={self.port})"

    @staticmethod
    def unavailable_reason() -> str | None:
        """Why a private pcscd cannot run here, or None when it can."""
        if os.geteuid() != 0:
            return "a private pcscd needs root (it mounts its own /run/pcscd)"
        if shutil.which("unshare") is None:
            return "a private pcscd needs `unshare` (util-linux)"
        if _pcscd_binary() is None:
            return "pcscd is not installed: `apt-get install pcscd`"
        if not vpcd_installed():
            return "the virtual card reader is not installed: `apt-get install vsmartcard-vpcd`"
        return None

    @property
    def socket(self) -> Path:
        return self.folder / "run" / "pcscd.comm"

    @property
    def env(self) -> dict[str, str]:
        """What a client process needs in its environment to use this pcscd."""
        return {"PCSCLITE_CSOCK_NAME": str(self.socket)}

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _configure(self) -> Path:
        conf = self.folder / "reader.conf.d"
        conf.mkdir(parents=True, exist_ok=True)
        driver = sorted(VPCD_DRIVERS.glob("libifdvpcd.so*"))[0]
        (conf / "vpcd").write_text(
            'FRIENDLYNAME "Virtual PCD"\n'
            f"DEVICENAME   /dev/null:0x{self.port:04X}\n"
            f"LIBPATH      {driver}\n"
            f"CHANNELID    0x{self.port:04X}\n"
        )
        return conf

    def start(self, timeout: float = 15.0) -> PrivatePcscd:
        """Start it and return once it answers on its socket (readers loaded)."""
        reason = self.unavailable_reason()
        if reason is not None:
            raise NoReaderError(reason)
        if self.running:
            return self
        binary = _pcscd_binary()
        run = self.folder / "run"
        run.mkdir(parents=True, exist_ok=True)
        for stale in run.iterdir():
            stale.unlink()
        conf = self._configure()
        SOCKET.parent.mkdir(parents=True, exist_ok=True)  # the mount point
        script = 'mount --bind "$1" "$2" && exec "$3" --foreground -c "$4"'
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"]
                + [str(run), str(SOCKET.parent), str(binary), str(conf)],
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + timeout
        # pcscd opens its socket after it has loaded the readers of reader.conf.d
        while not pcscd_running(self.socket):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise NoReaderError(f"the private pcscd did not start: see {self.log_path}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Stop it (SIGTERM, as systemd does) and wait until it has gone."""
        if self.process is not None:
            _terminate(self.process)
            self.process = None

    def restart(self, pause: float = 0.0) -> None:
        """Stop, wait ``pause`` seconds, start again (like ``systemctl restart``)."""
        self.stop()
        time.sleep(pause)
        self.start()

    def __enter__(self) -> PrivatePcscd:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
