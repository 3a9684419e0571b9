"""Secrets at rest and in logs.

- Every file holding a secret is made 0600 (the terminal's enrolment, device key,
  token digests, PIN hash and cookie key; the union's private keys and token key).
- The terminal and the central service refuse to start when one is readable by
  anyone else: one line naming the file and the ``chmod 600`` to run.
- The suite's own logs are scanned for card numbers and secrets (tests.secretscan);
  here, that the scanner finds a planted one and fails the run.

(Rate limits: the supervisor PIN's lockout is tested in tests/test_void.py, the
enrolment code's in tests/test_enrol_code.py.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from central import create_app as central_app
from central.errors import CentralError
from central.keys import create_keys, load_keys
from central.service import CentralPaths
from terminal.access import new_api_token, new_supervisor_token
from terminal.errors import ConfigError
from terminal.service import TerminalService
from terminal.state import SECRET_FILES
from terminal.supervisor import set_pin
from terminal.web import create_app
from tests.conftest import Site
from tests.helpers import MEMBER_PAN, invoke
from tests.secretscan import Scanner, made_secrets, static_secrets

ROOT = Path(__file__).resolve().parent.parent


def no_card(**_: object) -> None:
    raise AssertionError("no card is read here")


@pytest.fixture
def secrets_made(site: Site, clock) -> Path:
    """A terminal with every secret file it can have."""
    data = site.state.dir
    new_api_token(data)
    new_supervisor_token(data)
    set_pin(data, "2468")
    service = TerminalService(data, no_card, clock)  # type: ignore[arg-type]
    create_app(service)  # the page's cookie key
    service.close()
    return data


def test_every_terminal_secret_is_made_0600(secrets_made: Path) -> None:
    for name, _ in SECRET_FILES:
        mode = (secrets_made / name).stat().st_mode & 0o777
        assert mode == 0o600, (name, oct(mode))


@pytest.mark.parametrize("name", [name for name, _ in SECRET_FILES])
def test_the_terminal_refuses_a_secret_readable_by_others(
    secrets_made: Path, clock, name: str
) -> None:
    path = secrets_made / name
    path.chmod(0o644)
    with pytest.raises(ConfigError) as refused:
        TerminalService(secrets_made, no_card, clock)  # type: ignore[arg-type]
    assert str(path) in str(refused.value) and f"chmod 600 {path}" in str(refused.value)
    ran = invoke("terminal", "status", "--data", str(secrets_made))
    lines = ran.stderr.strip().splitlines()
    assert ran.returncode == 1 and len(lines) == 1 and f"chmod 600 {path}" in lines[0]
    path.chmod(0o600)
    TerminalService(secrets_made, no_card, clock).close()  # type: ignore[arg-type]


def test_the_union_keys_are_0600_and_refused_when_readable(tmp_path: Path, clock) -> None:
    paths = CentralPaths(tmp_path / "central")
    create_keys(paths.keys, now=clock())
    assert paths.keys.stat().st_mode & 0o777 == 0o700
    private = sorted(paths.keys.glob("*.pem")) + [paths.keys / "token.key"]
    assert len(private) >= 5
    for path in private:
        assert path.stat().st_mode & 0o777 == 0o600, path
    load_keys(paths.keys)
    for path in (paths.keys / "token.key", paths.keys / "snapshot.pem", paths.keys / "root.pem"):
        path.chmod(0o640)
        with pytest.raises(CentralError, match=f"run `chmod 600 {path}`"):
            load_keys(paths.keys)
        with pytest.raises(CentralError, match="readable by others"):  # the service's start
            central_app({"DATA_DIR": str(paths.data_dir), "CLOCK": clock})
        path.chmod(0o600)
    load_keys(paths.keys)


def test_the_scanner_finds_a_planted_secret(site: Site) -> None:
    scanner = Scanner()
    scanner.see("a log record of terminal.service", "sale #1 journaled: card •••• 1234")
    secrets = {**static_secrets(), **made_secrets(site.state.dir.parent)}
    assert not scanner.scan(secrets)
    assert site.state.enrolment.token_key.hex() in secrets  # the terminal's and the union's
    api_secret = site.state.enrolment.api_secret
    assert secrets[api_secret] == "api_secret of a terminal"
    scanner.see("a log record of werkzeug", f"GET /api/v1/x?pan={MEMBER_PAN} 200")
    scanner.see("captured stderr of t", f"error: bad secret {api_secret}")
    assert scanner.scan(secrets) == {
        "test PAN MEMBER_PAN appears in a log record of werkzeug",
        "api_secret of a terminal appears in captured stderr of t",
    }


PLANTED = """
import logging
from tests.helpers import MEMBER_PAN

def test_logs_a_pan():
    logging.getLogger("terminal.service").info("sale for card %s", {pan})
"""


@pytest.mark.slow
@pytest.mark.parametrize("pan, fails", [("MEMBER_PAN", True), ("MEMBER_PAN[-4:]", False)])
def test_the_scan_fails_a_run_that_logs_a_pan(tmp_path: Path, pan: str, fails: bool) -> None:
    test = tmp_path / "test_planted.py"
    test.write_text(PLANTED.format(pan=pan))
    ran = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.secretscan", "-p", "no:randomly"]
        + ["-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(test)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "1 passed" in ran.stdout, ran.stdout + ran.stderr  # the test itself passes
    if fails:
        assert ran.returncode == 1, ran.stdout
        assert "test PAN MEMBER_PAN appears in a log record of terminal.service" in ran.stdout
        assert MEMBER_PAN not in ran.stdout  # named, never shown
    else:
        assert ran.returncode == 0, ran.stdout
