"""The systemd units: locked down, valid, and their commands start as their user.

systemd cannot run as PID 1 here, so each service's ``ExecStart`` is started the way
systemd would: as its ``User=``/``Group=`` (setpriv, no capabilities), with only its
``Environment=`` (and the test's folders in place of /var/lib and /etc), and the test
checks it becomes ready: the central service and the terminal answer HTTP, the
roster publication and the sync finish with exit 0.
"""

from __future__ import annotations

import configparser
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from central.keys import create_keys
from central.service import CentralPaths, Union
from terminal.access import new_api_token
from terminal.journal import Journal
from terminal.state import TerminalState
from tests.conftest import missing
from tests.helpers import MEMBER_PAN
from tests.test_daemon import Listener
from tests.test_reader_recovery import free_port

ROOT = Path(__file__).resolve().parents[1]
UNITS = ROOT / "systemd"
VENV = Path(sys.executable).parent.parent  # the virtual environment running the tests
INSTALLED_VENV = "/opt/unioncard/.venv"  # where the units expect it (docs/operations.md)
USER = "unioncard"
MAX_EXPOSURE = 2.0
SETPRIV = ("setpriv",)
# as the units run: no capabilities at all (CapabilityBoundingSet= empty), no new privileges
NO_CAPS = ("--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--")
CENTRAL_URL = "http://127.0.0.1:8000"  # the central unit's --bind

pytestmark = pytest.mark.slow


def unit(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / name)
    return parser


SERVICES = sorted(p.name for p in UNITS.glob("*.service"))


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        missing("systemd-analyze", "install the Debian package systemd")
    return str(found)


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_unit_is_locked_down(name: str) -> None:
    done = subprocess.run(
        [systemd_analyze(), "security", "--offline=yes", str(UNITS / name)],
        capture_output=True,
        text=True,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert found is not None, done.stdout + done.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE, done.stdout


def test_every_unit_verifies(tmp_path: Path) -> None:
    """``systemd-analyze verify`` on copies whose commands point at this checkout's venv
    (verify checks that each command exists and is executable)."""
    for path in UNITS.iterdir():
        text = path.read_text().replace(INSTALLED_VENV, str(VENV))
        (tmp_path / path.name).write_text(text)
    names = sorted(str(p) for p in tmp_path.iterdir())
    done = subprocess.run(
        [systemd_analyze(), "verify", "--man=no", *names], capture_output=True, text=True
    )
    ours = [line for line in (done.stdout + done.stderr).splitlines() if "unioncard" in line]
    assert done.returncode == 0 and not ours, done.stdout + done.stderr


def test_the_terminal_reaches_pcscd_without_a_group() -> None:
    """Debian 12's pcscd (pcsc-lite 1.9.9, built without polkit) listens on a socket of
    mode 0666: any local user may connect, so the units name no extra group."""
    socket_unit = Path("/lib/systemd/system/pcscd.socket")
    if not socket_unit.exists():
        missing("pcscd.socket", "install the Debian package pcscd")
    assert "SocketMode=0666" in socket_unit.read_text()
    features = subprocess.run(["pcscd", "--version"], capture_output=True, text=True).stdout
    assert "polkit" not in features
    for name in SERVICES:
        assert not unit(name).has_option("Service", "SupplementaryGroups"), name


def test_the_terminal_is_a_notify_service_with_a_watchdog() -> None:
    service = unit("unioncard-terminal.service")
    assert service.get("Service", "Type") == "notify"
    assert service.get("Service", "WatchdogSec") == "30s"
    assert service.get("Service", "NotifyAccess") == "main"


def test_the_sync_is_retried_hourly_and_spread_over_the_night() -> None:
    service, timer = unit("unioncard-sync.service"), unit("unioncard-sync.timer")
    assert service.get("Service", "Restart") == "on-failure"
    assert service.get("Service", "RestartSec") == "1h"
    assert service.get("Unit", "StartLimitIntervalSec") == "0"  # no limit on the retries
    assert timer.get("Timer", "RandomizedDelaySec") == "4h"
    assert timer.get("Timer", "Persistent") == "true"
    publish = unit("unioncard-publish.timer")
    assert publish.get("Timer", "OnCalendar") == "*-*-* 00:15:00"  # daily, before the shops


# ------------------------------------------------------------ ExecStart as the unit's user


def exec_start(name: str) -> list[str]:
    """The unit's command, with this checkout's venv for the installed one."""
    line = unit(name).get("Service", "ExecStart").replace(INSTALLED_VENV, str(VENV))
    return shlex.split(line)


def unit_environment(name: str) -> dict[str, str]:
    """What the unit's ``Environment=`` lines set (the last one of a name wins)."""
    env: dict[str, str] = {}
    for line in (UNITS / name).read_text().splitlines():
        if line.startswith("Environment="):
            key, _, value = line.removeprefix("Environment=").partition("=")
            env[key] = value
    return env


@pytest.fixture(scope="module")
def service_user() -> pwd.struct_passwd:
    """The units' user, made as the install does (docs/operations.md) if it is missing."""
    if os.geteuid() != 0:
        missing("root", "the systemd tests start each command as the units' user")
    if shutil.which("setpriv") is None:
        missing("setpriv", "install the Debian package util-linux")
    try:
        user = pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home"]
            + ["--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", USER],
            check=True,
        )
        user = pwd.getpwnam(USER)
    probe = subprocess.run(
        [*SETPRIV, f"--reuid={USER}", f"--regid={USER}", "--init-groups", *NO_CAPS]
        + ["env", "-i", "PATH=/usr/bin:/bin", str(VENV / "bin" / "unioncard"), "--help"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        missing(
            f"a virtual environment the user {USER} can run",
            f"{VENV} does not run as {USER} ({probe.stderr.strip()[-120:]}): make it with "
            "Debian's /usr/bin/python3, as the Makefile does",
        )
    return user


def as_user(name: str, env: dict[str, str], **popen: object) -> subprocess.Popen[str]:
    """Start unit ``name``'s command as its User= and Group=, with no capabilities and
    only its Environment= and ``env``."""
    service = unit(name)
    user, group = service.get("Service", "User"), service.get("Service", "Group")
    clean = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **unit_environment(name), **env}
    command = [*SETPRIV, f"--reuid={user}", f"--regid={group}", "--init-groups", *NO_CAPS]
    command += ["env", "-i", *(f"{k}={v}" for k, v in clean.items()), *exec_start(name)]
    return subprocess.Popen(
        command, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen
    )  # type: ignore[call-overload]


def chown_tree(path: Path, user: pwd.struct_passwd) -> None:
    for where in [path, *path.rglob("*")]:
        os.chown(where, user.pw_uid, user.pw_gid, follow_symlinks=False)


def ready(url: str, child: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(url, timeout=1).status_code < 500:
                return
        except requests.RequestException:
            pass
        if child.poll() is not None or time.monotonic() > deadline:
            child.kill()
            out, err = child.communicate()
            pytest.fail(f"{url} did not come up: {out} {err}")
        time.sleep(0.2)


def stop(child: subprocess.Popen[str], signal_it: bool = True) -> str:
    """Stop a daemon as systemd does (SIGTERM), or wait for a oneshot to finish; it
    must end with exit 0 and no traceback."""
    if signal_it and child.poll() is None:
        child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert "Traceback" not in out + err
    return out + err


@pytest.fixture
def folders(service_user: pwd.struct_passwd) -> Iterator[Path]:
    """A folder the units' user can reach (pytest's own is private to root)."""
    base = Path(tempfile.mkdtemp(prefix="unioncard-systemd-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.pcsc
def test_each_command_starts_as_its_user_and_becomes_ready(
    folders: Path, service_user: pwd.struct_passwd, pcscd: object
) -> None:
    port_free(8000)
    # The union's data, set up as staff would, then handed to the service user.
    now = datetime.now(UTC)
    paths = CentralPaths(folders / "central")
    create_keys(paths.keys, now=now)
    union = Union.open(paths, None, lambda: now)
    union.import_members(f"member_id,pan\nU1,{MEMBER_PAN}\n")
    union.add_merchant("M0001", "Shop", 500)
    bundle = union.enrol_terminal("T1", "M0001", CENTRAL_URL)
    union.close()
    central_env = {"UNIONCARD_CENTRAL_DATA": str(paths.data_dir)}

    terminal_dir = folders / "terminal"
    TerminalState(terminal_dir).enrol(bundle)
    Journal(terminal_dir / "journal.db").close()  # made at enrolment; check it is there
    port = free_port()
    config = folders / "terminal.toml"
    config.write_text(f'data_dir = "{terminal_dir}"\nlisten_port = {port}\n')
    chown_tree(folders, service_user)
    terminal_env = {"UNIONCARD_CONFIG": str(config)}

    publish = as_user("unioncard-publish.service", central_env)
    assert "signed roster v1 with 1 members" in stop(publish, signal_it=False)
    central = as_user("unioncard-central.service", central_env)
    try:
        ready(CENTRAL_URL + "/api/v1/health", central)
        sync = as_user("unioncard-sync.service", terminal_env)
        out = stop(sync, signal_it=False)
        assert "installed roster v1, installed policy v1" in out
        # Type=notify: the daemon says READY on systemd's socket once it serves
        notify = Listener(folders / "notify.sock")
        (folders / "notify.sock").chmod(0o777)  # the service user may send to it
        terminal = as_user(
            "unioncard-terminal.service", {**terminal_env, "NOTIFY_SOCKET": str(notify.path)}
        )
        assert notify.wait_for("READY")["STATUS"] == f"serving on 127.0.0.1:{port}"
        notify.close()
        ready(f"http://127.0.0.1:{port}/api/v1/health", terminal)
        token = new_api_token(terminal_dir)  # as `unioncard terminal api-token` would
        os.chown(terminal_dir / "api.token", service_user.pw_uid, service_user.pw_gid)
        status = requests.get(
            f"http://127.0.0.1:{port}/api/v1/status",
            headers={"Authorization": f"Bearer {token}"},
            timeout=5,
        ).json()
        assert (status["terminal_id"], status["roster_version"]) == ("T1", 1)
        assert "journaled event #2: startup: unioncard" in stop(terminal)  # #1: the update
    finally:
        stop(central)
    # what the user wrote is its own, and private
    for path in terminal_dir.rglob("*"):
        assert path.stat().st_uid == service_user.pw_uid, path


def port_free(port: int) -> None:
    """Fail at once when the central unit's port is taken."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            pytest.fail(f"port {port} (the central unit's --bind) is in use")
