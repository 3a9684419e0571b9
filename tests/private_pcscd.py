"""A pcscd of the test's own, in a private mount namespace: :class:`PrivatePcscd`.

A test tool, not part of the product: tests (``tests.fixtures_pcsc.private_pcscd``)
and the card benchmark (``bench/card.py``) use it to stop and restart a pcscd without
disturbing the machine's. It builds on :mod:`reader.pcscd`, which starts the machine's
own pcscd for the demo.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from reader.errors import NoReaderError
from reader.pcscd import (
    SOCKET,
    VPCD_DRIVERS,
    die_with_parent,
    pcscd_binary,
    pcscd_running,
    terminate,
    vpcd_installed,
)


def _below_ephemeral() -> int:
    """The first port the kernel may give an outgoing connection (32768 by default)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _free_port_pair() -> int:
    """A port P such that P and P + 1 are free (vpcd's two slots listen on both).

    Below the kernel's ephemeral range: a port found free there cannot be taken by
    some test's outgoing connection between this probe and vpcd's bind (a port above
    it was, once: pcscd logged "Address already in use" and every card test failed)."""
    top = max(_below_ephemeral(), 12002)
    for _ in range(200):
        port = random.randrange(10000, top - 1, 2)
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
        if pcscd_binary() is None:
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
        binary = pcscd_binary()
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
                preexec_fn=die_with_parent,
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
            terminate(self.process)
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
