"""TLS between the terminal and the central service (issue 13, item 2): the enrolment
carries the union's CA certificate and the sync trusts that CA alone; plain http only
to this machine's own address. The real central service under gunicorn with a
certificate from a test CA: a sync succeeds; with a certificate from another CA it
fails at once with one line, uploads nothing and leaves the journal's entries pending."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from urllib3.exceptions import SSLError
from urllib3.util.ssl_match_hostname import CertificateError

from central.errors import InputError
from central.keys import create_keys
from central.service import CentralPaths, Union
from central.store import Store
from pact.cards import PanTokenizer
from reader.identity import identity_from_pan
from sync.client import CentralClient, RetryPolicy, central_url_problem, certificate_refused
from sync.errors import CentralAddressError, CentralUntrustedError
from terminal.checkout import checkout
from terminal.errors import ConfigError
from terminal.journal import Journal
from terminal.state import TerminalState
from terminal.syncing import sync_terminal
from terminal.syncrecord import last_sync
from tests.conftest import missing
from tests.helpers import MEMBER_PAN, bundle
from tests.test_commands import one_line_error, run
from tests.test_reader_recovery import free_port


def wall_clock() -> datetime:
    """gunicorn's central service reads the wall clock; the terminal here does too."""
    return datetime.now(UTC)


# ------------------------------------------------------------------- a test CA
class CA:
    """A certificate authority of the test's own (ECDSA P-256), as the union would make
    one with `openssl` (docs/operations.md)."""

    def __init__(self, name: str, days: int = 30) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = wall_clock()
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=max(1, 1 - days)))
            .not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def server(self, folder: Path, ip: str = "127.0.0.1") -> tuple[Path, Path]:
        """A server certificate for ``ip`` (subjectAltName), signed by this CA, and its
        key: (certificate file, key file)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = wall_clock()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ip)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(IPv4Address(ip))]), False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
            .sign(self.key, hashes.SHA256())
        )
        folder.mkdir(parents=True, exist_ok=True)
        cert_file, key_file = folder / "server.pem", folder / "server.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key_file.chmod(0o600)
        return cert_file, key_file


@contextmanager
def gunicorn(data: Path, port: int, cert: tuple[Path, Path]) -> Iterator[None]:
    """The real central service, `gunicorn --certfile --keyfile 'central:create_app()'`."""
    binary = Path(sys.executable).parent / "gunicorn"
    if not binary.exists():
        missing("gunicorn", f"no {binary}: run `make venv`")
    process = subprocess.Popen(
        [
            str(binary),
            "--workers",
            "1",
            "--bind",
            f"127.0.0.1:{port}",
            "--certfile",
            str(cert[0]),
            "--keyfile",
            str(cert[1]),
            "--log-level",
            "warning",
            "central:create_app()",
        ],
        env={**os.environ, "UNIONCARD_CENTRAL_DATA": str(data)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    _, err = process.communicate()
                    pytest.fail(f"gunicorn did not start: {err.decode()[-2000:]}")
                time.sleep(0.05)
        yield
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


# ------------------------------------------------------------------- the sync over TLS
def _sell(state: TerminalState, journal: Journal, gross: int) -> None:
    identity = identity_from_pan(
        "unionpay", b"\xa0", MEMBER_PAN, "2030-12", PanTokenizer(state.enrolment.token_key)
    )
    checkout(state.current, state.enrolment, journal, identity, gross, wall_clock())


def test_the_sync_trusts_the_unions_ca_and_refuses_another(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    paths = CentralPaths(tmp_path / "central")
    create_keys(paths.keys, now=wall_clock())
    union = Union.open(paths, None, wall_clock)
    union.import_members(f"member_id,pan\nU1,{MEMBER_PAN}\n")
    union.add_merchant("M0001", "Shop", 500)
    union.publish_roster()
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    union_ca, rogue_ca = CA("Union test CA"), CA("Another CA")
    good, rogue = union_ca.server(tmp_path / "good"), rogue_ca.server(tmp_path / "rogue")
    (tmp_path / "union-ca.pem").write_text(union_ca.pem)

    # `unioncard central enrol ... --ca-cert` puts the CA in the bundle; the terminal keeps it
    out = tmp_path / "T1.json"
    code, _, err = run(
        capsys,
        *("central", "enrol", "T1", "--merchant", "M0001", "--url", url),
        *("--ca-cert", str(tmp_path / "union-ca.pem"), "--out", str(out)),
        *("--data", str(paths.data_dir)),
    )
    assert code == 0, err
    assert json.loads(out.read_bytes())["ca_cert"] == union_ca.pem
    union.close()
    state = TerminalState(tmp_path / "terminal")
    state.enrol(out.read_bytes())
    assert state.enrolment.ca_cert == state.dir / "ca.pem"
    assert (state.dir / "ca.pem").read_text() == union_ca.pem
    assert (state.dir / "ca.pem").stat().st_mode & 0o777 == 0o644
    assert "ca_cert" not in json.loads(state.enrolment_path.read_bytes())
    journal = Journal(state.journal_path, state.signer())

    with gunicorn(paths.data_dir, port, good):
        report = sync_terminal(state, journal, wall_clock)
        assert (report.roster_version, report.policy_version) == (1, 1)
        _sell(state, journal, 12800)
        assert sync_terminal(state, journal, wall_clock).uploaded == 1
    _sell(state, journal, 4550)
    entries, pending = journal.counts()
    assert pending == 1

    # the same address, a certificate from another CA: refused at once, nothing sent;
    # also when the system's store and requests' environment would trust that CA
    (tmp_path / "rogue-ca.pem").write_text(rogue_ca.pem)
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.setenv(name, str(tmp_path / "rogue-ca.pem"))
    with gunicorn(paths.data_dir, port, rogue):
        health = f"{url}/api/v1/health"
        assert requests.get(health, timeout=5).status_code == 200  # requests' own default
        with urllib.request.urlopen(health, context=ssl.create_default_context()) as answer:
            assert answer.status == 200  # the system's default store
        started = time.monotonic()
        with pytest.raises(CentralUntrustedError) as refused:
            sync_terminal(state, journal, wall_clock)  # the default RetryPolicy: 5 tries
        assert time.monotonic() - started < 3  # not retried (1 + 2 + 4 + 8 s of backoff)
        message = str(refused.value)
        assert "\n" not in message and f"the central service at {url} is not the union's" in message
        assert "unable to get local issuer certificate" in message
        assert last_sync(state.dir)["last_error"] == message
        code, _, err = run(capsys, "sync", "--data", str(state.dir))
        assert code == 8  # the enrolment or ca.pem must change
        one_line_error(err, "its TLS certificate was refused")
    assert journal.counts() == (entries, pending)  # still pending

    with gunicorn(paths.data_dir, port, good):
        assert sync_terminal(state, journal, wall_clock).uploaded == 1
    assert journal.counts()[1] == 0
    store = Store.open(paths.database_url)
    held = store.sales_for("T1")
    store.close()
    assert held == journal.sales()  # each entry once, as journaled
    journal.close()


def test_a_refused_certificate_is_not_retried_but_a_broken_handshake_is() -> None:
    retry = RetryPolicy(attempts=5).retry()
    verify = ssl.SSLCertVerificationError(1, "certificate verify failed")
    for error in (SSLError(verify), SSLError(CertificateError("hostname mismatch"))):
        with pytest.raises(SSLError):
            retry.increment(method="POST", url="/api/v1/sales", error=error)
        assert certificate_refused(error) is not None
    eof = SSLError(ssl.SSLEOFError(8, "EOF occurred in violation of protocol"))
    assert certificate_refused(eof) is None
    assert retry.increment(method="POST", url="/api/v1/sales", error=eof).total == 3


# ------------------------------------------------------------------- the address rule
@pytest.mark.parametrize(
    "url, has_ca, refused",
    [
        ("https://union.example", True, None),
        ("https://union.example:8443/", False, "enrolment has no CA certificate"),
        ("http://union.example", True, "plain http to another machine"),
        ("http://10.0.0.5:8000", False, "plain http to another machine"),
        ("http://127.0.0.1:8000", False, None),
        ("http://127.3.2.1:8000", False, None),
        ("http://localhost:8000", False, None),
        ("http://[::1]:8000", False, None),
        ("http://[::ffff:10.0.0.1]:8000", False, "plain http to another machine"),
        ("ftp://union.example", True, "not an https address"),
        ("union.example", True, "not an https address"),
        ("https://[::1", True, "not an https address"),
    ],
)
def test_the_central_url_rule(url: str, has_ca: bool, refused: str | None, tmp_path) -> None:
    problem = central_url_problem(url, has_ca)
    assert (problem is None) == (refused is None)
    ca = tmp_path / "ca.pem"
    ca.write_text(CA("x").pem)
    if refused is not None:
        assert refused in str(problem)
        with pytest.raises(CentralAddressError, match=refused):
            CentralClient(url, "T1", "s", ca_cert=ca if has_ca else None)
    else:
        CentralClient(url, "T1", "s", ca_cert=ca if has_ca else None).close()


def test_the_client_needs_the_ca_file(tmp_path) -> None:
    with pytest.raises(CentralAddressError, match="CA certificate .*ca.pem is missing"):
        CentralClient("https://union.example", "T1", "s", ca_cert=tmp_path / "ca.pem")


def test_the_union_refuses_to_enrol_what_a_terminal_could_not_use(tmp_path) -> None:
    paths = CentralPaths(tmp_path / "central")
    create_keys(paths.keys, now=wall_clock())
    union = Union.open(paths, None, wall_clock)
    union.add_merchant("M0001", "Shop", 500)
    ca = CA("Union CA")
    cert_file, key_file = ca.server(tmp_path / "srv")
    expired = CA("Old CA", days=-2)
    refusals = [
        ("http://union.example", None, "plain http to another machine"),
        ("https://union.example", None, "give the union's CA certificate with --ca-cert"),
        ("https://union.example", "junk", "not a PEM certificate"),
        ("https://union.example", ca.pem + key_file.read_text(), "holds a private key"),
        ("https://union.example", cert_file.read_text(), "is not a CA certificate"),
        ("https://union.example", expired.pem, "expired at"),
        ("union.example", ca.pem, "not an https URL"),
    ]
    for url, pem, refused in refusals:
        with pytest.raises(InputError, match=refused):
            union.enrol_terminal("T1", "M0001", url, pem)
    assert union.store.terminal("T1") is None  # nothing registered
    two = ca.pem + CA("Next union CA").pem  # the CA being replaced: both trusted
    bundle_data = json.loads(union.enrol_terminal("T1", "M0001", "https://union.example", two))
    assert bundle_data["ca_cert"] == two
    plain = json.loads(union.enrol_terminal("T2", "M0001", "http://127.0.0.1:8000"))
    assert "ca_cert" not in plain
    union.close()


def test_the_terminal_refuses_a_bundle_it_could_not_sync_with(union_keys, tmp_path) -> None:
    state = TerminalState(tmp_path / "terminal")
    state.dir.mkdir()
    for data, refused in [
        (bundle(union_keys, url="http://union.example"), "plain http to another machine"),
        (bundle(union_keys, url="https://union.example"), "has no CA certificate"),
        (_with_ca(bundle(union_keys, url="https://union.example"), "junk"), "not valid"),
    ]:
        with pytest.raises(ConfigError, match=refused):
            state.enrol(data)
        assert list(state.dir.iterdir()) == []  # nothing written
    ca = CA("Union CA").pem
    state.enrol(_with_ca(bundle(union_keys, url="https://union.example"), ca))
    assert state.enrolment.ca_cert is not None and state.enrolment.ca_cert.read_text() == ca
    assert TerminalState(state.dir).enrolment.ca_cert == state.dir / "ca.pem"
    state.enrol(bundle(union_keys, url="http://127.0.0.1:8000"))  # re-enrolled without a CA
    assert state.enrolment.ca_cert is None and not (state.dir / "ca.pem").exists()


def _with_ca(data: bytes, pem: str) -> bytes:
    return json.dumps({**json.loads(data), "ca_cert": pem}).encode()


def test_a_terminal_enrolled_before_ca_cert_is_told_and_takes_a_ca_pem(union_keys, tmp_path):
    """A bundle of an earlier release (https, no CA): each sync refuses with one line,
    recorded for the page; the union's CA copied to ca.pem in the data folder mends it."""
    state = TerminalState(tmp_path / "terminal")
    state.dir.mkdir()
    state.enrol(bundle(union_keys, url="http://127.0.0.1:9"))
    kept = json.loads(state.enrolment_path.read_bytes())
    state.enrolment_path.write_text(json.dumps({**kept, "central_url": "https://union.example"}))
    state = TerminalState(state.dir)
    journal = Journal(state.journal_path, state.signer())
    with pytest.raises(CentralAddressError, match="has no CA certificate") as refused:
        sync_terminal(state, journal, wall_clock)
    assert last_sync(state.dir)["last_error"] == str(refused.value)
    journal.close()
    (state.dir / "ca.pem").write_text(CA("Union CA").pem)
    enrolment = TerminalState(state.dir).enrolment
    assert enrolment.ca_cert == state.dir / "ca.pem"
    CentralClient(enrolment.central_url, "T1", "s", ca_cert=enrolment.ca_cert).close()
