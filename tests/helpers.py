"""Small builders shared by the tests (no fixtures here)."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from central.keys import UnionKeys
from pact.cards import DEFAULT_SCHEME, TokenScheme, luhn_complete, token_for_pan
from pact.device import KeySigner, public_key_hex, sign_entry
from pact.policy import build_policy
from pact.roster import MemberRecord, build_roster
from pact.sale import Sale
from pact.signing import load_public_key

with_luhn = luhn_complete


MEMBER_PAN = with_luhn("621483000055501")
OTHER_PAN = with_luhn("622588000077702")


def trusted(keys: UnionKeys, role: str = "policy") -> dict[str, Ed25519PublicKey]:
    """The public key(s) of ``role`` (policy, roster, snapshot, root) by key id."""
    return {kid: load_public_key(raw) for kid, raw in keys.trusted_keys_json(role).items()}


def roster_bytes(
    keys: UnionKeys,
    pans: list[str],
    now: datetime,
    version: int = 1,
    lifetime: timedelta = timedelta(hours=72),
    status: str = "active",
    scheme: TokenScheme = DEFAULT_SCHEME,
) -> bytes:
    records = [MemberRecord(token_for_pan(p, keys.token_key, scheme), status, 1) for p in pans]
    return build_roster(
        records,
        version=version,
        issued_at=now,
        expires_at=now + lifetime,
        token_key_id=keys.token_key_id,
        keys=[keys.roster],
        token_scheme=scheme,
    )


def policy_bytes(
    keys: UnionKeys,
    now: datetime,
    *,
    merchant_id: str = "M0001",
    version: int = 1,
    status: str = "active",
    basis_points: int = 500,
    rounding: str = "half-up",
    lifetime: timedelta = timedelta(days=30),
    terms: dict | None = None,
) -> bytes:
    """A signed policy: ``terms`` (an offer), else one rule of ``basis_points`` off."""
    if terms is None:
        rule = {"id": "member", "kind": "percent_off", "basis_points": basis_points}
        terms = {"rounding": rounding, "rules": [rule]}
    return build_policy(
        merchant_id=merchant_id,
        merchant_name="Test Shop",
        status=status,
        version=version,
        issued_at=now,
        expires_at=now + lifetime,
        terms=terms,
        keys=[keys.policy],
    )


def snapshot_bytes(
    keys: UnionKeys,
    now: datetime,
    roster: bytes,
    policy: bytes,
    *,
    version: int = 1,
    merchant_id: str = "M0001",
    lifetime: timedelta = timedelta(hours=72),
    signer: object = None,
) -> bytes:
    """A snapshot naming ``roster`` (full or installed) and ``policy`` files."""
    import json as _json

    from pact.roster import split_roster
    from pact.snapshot import build_snapshot

    signed = split_roster(roster)[0]["signed"]
    return build_snapshot(
        merchant_id=merchant_id,
        version=version,
        issued_at=now,
        expires_at=now + lifetime,
        roster_version=signed["version"],
        roster_body_sha256=signed["body_sha256"],
        policy_file=policy,
        policy_version=_json.loads(policy)["signed"]["version"],
        keys=[signer or keys.snapshot],  # type: ignore[list-item]
    )


def bundle(
    keys: UnionKeys,
    terminal_id: str = "T1",
    merchant_id: str = "M0001",
    url: str = "http://127.0.0.1:9",
) -> bytes:
    """An enrolment bundle as the union issues it."""
    import json as _json

    return _json.dumps(
        {
            "format": "unioncard.enrolment.v1",
            "terminal_id": terminal_id,
            "merchant_id": merchant_id,
            "central_url": url,
            "api_secret": "s" * 48,
            "token_key": keys.token_key.hex(),
            "root": keys.root_data.decode(),
        }
    ).encode()


def CARD_CLOCK() -> datetime:  # noqa: N802 - a constant clock, named like one
    """A fixed terminal clock for card reads (its date is the card's Transaction Date)."""
    return datetime(2026, 11, 28, 9, 30, tzinfo=UTC)


@dataclass(frozen=True)
class Ran:
    """What a command printed and its exit status (like ``subprocess.CompletedProcess``)."""

    returncode: int
    stdout: str
    stderr: str


def invoke(*args: str) -> Ran:
    """Run ``unioncard ARGS`` in this process, through the same ``main()`` as the
    console script (its error handling, the one clock), capturing what it prints."""
    from unioncard.cli import main  # the wiring, imported only by the tests that use it

    out, err = io.StringIO(), io.StringIO()
    code: int | str | None = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code
    return Ran(code if isinstance(code, int) else 1, out.getvalue(), err.getvalue())


# A device key for journals the tests make without a terminal (fixed, so runs repeat).
TEST_SIGNER = KeySigner(Ed25519PrivateKey.from_private_bytes(bytes(range(32))))


def enrol_signing_terminal(union: Any, terminal_id: str = "T1", merchant_id: str = "M0001") -> dict:
    """Enrol a terminal whose device key is TEST_SIGNER's (as its first sync registers
    it); return its row as the central service authenticates it."""
    union.enrol_terminal(terminal_id, merchant_id, "http://127.0.0.1:9")
    key = public_key_hex(TEST_SIGNER.public_key())
    union.register_device_key(union.store.terminal(terminal_id), key)
    row: dict = union.store.terminal(terminal_id)
    return row


def signed(sale: Sale) -> Sale:
    """``sale`` signed with TEST_SIGNER over its hash."""
    return sign_entry(TEST_SIGNER, sale)


def default_sigint() -> None:
    """In a child before exec: Ctrl-C (SIGINT) stops it, even when the test run was
    started in the background by a shell that ignores SIGINT (children inherit that)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def till_client(app: Any, lang: str = "en") -> Any:
    """A Flask test client of the till API, signed in with a new till token (and, by
    default, asking for English, which the tests' expected texts are in)."""
    from terminal.access import new_api_token

    if "TEST_TILL_TOKEN" not in app.config:  # one token per app: a new one ends the old
        app.config["TEST_TILL_TOKEN"] = new_api_token(app.config["UNIONCARD_DATA_DIR"])
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {app.config['TEST_TILL_TOKEN']}"
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = lang
    return client


def browser_sign_in(driver: Any, url: str, app: Any, lang: str | None = "en") -> None:
    """Sign a browser in to the cashier page at ``url`` with a new till token, in
    ``lang`` (None: leave the page's default, Chinese)."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from terminal.access import new_api_token

    token = new_api_token(app.config["UNIONCARD_DATA_DIR"])
    if lang is not None:
        # the language first: a switch sent while the login is still in flight would
        # race its answer's session cookie, and one of the two would be lost
        driver.get(url + f"/lang/{lang}?next=/login")
    else:
        driver.get(url + "/login")
    driver.find_element(By.ID, "token").send_keys(token)
    button = driver.find_element(By.CSS_SELECTOR, "button[type=submit]")
    button.click()
    # a page being replaced can answer "node does not belong to the document" for the
    # old button: ask again (as the console's tests do)
    wait = WebDriverWait(driver, 30, ignored_exceptions=(WebDriverException,))
    wait.until(ec.staleness_of(button))
    wait.until(lambda d: "/login" not in d.current_url)
