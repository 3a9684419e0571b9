"""The device-signed journal: a sale proves itself to anyone holding the device's
public key, and a journal edited without the key is refused, on the terminal and
by the central service.

The scenario of the evidence issue, done as a new user would: a pending sale's
discount is raised by 20.00 in journal.db and every hash after it recomputed.
Before device signatures, `journal --verify` called that journal intact and the
central service settled the extra discount.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)

from pact.chain import entry_hash
from pact.device import KeySigner, check_signatures, public_key_hex, sign_entry
from pact.errors import DeviceSignatureError
from pact.sale import Sale
from pact.wire import encode_device_key, encode_sales
from sync.errors import CentralRefusedError
from terminal.devicekey import KEY_FILE, PUBLIC_FILE, load_public_key
from terminal.errors import ConfigError, JournalError
from terminal.journal import Journal
from terminal.service import TerminalService
from terminal.state import TerminalState
from tests.conftest import FAST, Site
from tests.helpers import MEMBER_PAN, Ran, invoke

FORGED_EXTRA = 2000  # +20.00 yuan of discount


def forge(journal_path: Path, seq: int, extra: int = FORGED_EXTRA, signer=None) -> None:
    """Raise sale ``seq``'s discount by ``extra`` fen, as its lines and rules would
    show it, and recompute its hash and every hash after it; keep the signatures
    (the forger has no device key) unless ``signer`` signs the forged entries."""
    journal = Journal(journal_path)
    sales = journal.sales()
    journal.close()
    db = sqlite3.connect(journal_path)
    prev = sales[seq - 2].hash if seq > 1 else "0" * 64
    for sale in sales[seq - 1 :]:
        if sale.seq == seq:
            basket = dict(sale.basket or {})
            lines = [dict(line) for line in basket["lines"]]
            lines[0]["discount"] += extra
            rule = sale.rules[0] if sale.rules else "member"
            split = lines[0].get("by_rule", {})
            lines[0]["by_rule"] = {**split, rule: split.get(rule, 0) + extra}
            discounts = {**basket["discounts"], rule: basket["discounts"].get(rule, 0) + extra}
            basket.update(lines=lines, discounts=discounts)
            sale = dataclasses.replace(
                sale,
                discount=sale.discount + extra,
                net=sale.net - extra,
                rules=sale.rules or (rule,),
                basket=basket,
            )
        sale = dataclasses.replace(sale, prev_hash=prev)
        sale = dataclasses.replace(sale, hash=entry_hash(prev, sale))
        if signer is not None:
            sale = sign_entry(signer, sale)
        row = sale.as_row()
        db.execute(
            "UPDATE sales SET discount = ?, net = ?, rules = ?, basket = ?, prev_hash = ?,"
            " hash = ?, sig = ? WHERE seq = ?",
            [
                row["discount"],
                row["net"],
                row["rules"],
                row["basket"],
                row["prev_hash"],
                row["hash"],
                row["sig"],
                sale.seq,
            ],
        )
        prev = sale.hash
    db.commit()
    db.close()


def verify_cli(data: Path) -> Ran:
    return invoke("terminal", "journal", "--verify", "--data", str(data))


def central_discount(site: Site) -> int:
    return sum(s.discount for s in site.union.store.sales_for("T1"))


def test_enrolment_makes_a_private_device_key(site: Site) -> None:
    data = site.state.dir
    assert (data / KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert (data / PUBLIC_FILE).stat().st_mode & 0o077 == 0o044  # the public half is public
    public = public_key_hex(site.state.signer().public_key())
    assert (data / PUBLIC_FILE).read_text().strip() == public == site.state.device_public_key()
    # enrolling again (a new bundle) keeps the key the union already knows
    bundle = site.union.enrol_terminal("T2", "M0001", site.url)
    TerminalState(data).enrol(bundle)
    assert site.state.device_public_key() == public


def test_the_daemon_refuses_a_key_readable_by_others(site: Site, clock) -> None:
    (site.state.dir / KEY_FILE).chmod(0o640)
    with pytest.raises(ConfigError, match="readable by others"):
        TerminalService(site.state.dir, lambda **_: None, clock)  # type: ignore[arg-type,return-value]
    status = invoke("terminal", "status", "--data", str(site.state.dir))
    assert status.returncode == 1 and "chmod 600" in status.stderr
    assert len(status.stderr.strip().splitlines()) == 1


def test_every_sale_is_signed_and_central_records_the_key(site: Site, clock) -> None:
    site.sync(clock)  # registers the device key, installs roster and policy
    for gross in (12800, 4550, 999):
        site.sell(MEMBER_PAN, gross, clock)
    sales = site.journal.sales()
    key = load_public_key(site.state.dir)
    assert check_signatures(key, sales) == 3 and all(s.sig and len(s.sig) == 128 for s in sales)
    assert site.sync(clock).uploaded == 3
    stored = site.union.store.sales_for("T1")
    assert [s.sig for s in stored] == [s.sig for s in sales]  # kept for the audit
    assert check_signatures(key, stored) == 3
    row = site.union.store.terminal("T1")
    assert row is not None and row["device_key"] == site.state.device_public_key()
    done = verify_cli(site.state.dir)
    assert done.returncode == 0, done.stderr
    assert (
        "3 entries (sales, voids, refunds and events), every device signature verified"
        in done.stdout
    )


def test_the_forged_sale_is_refused_end_to_end(site: Site, clock) -> None:
    """A sale edited in journal.db with its hashes recomputed, without the key."""
    site.sync(clock)
    site.sell(MEMBER_PAN, 12800, clock)
    assert site.sync(clock).uploaded == 1
    honest = central_discount(site)
    site.sell(MEMBER_PAN, 10000, clock)  # sale 2, pending upload
    forge(site.state.journal_path, seq=2)

    forged = Journal(site.state.journal_path).sales()[1]
    assert forged.discount == 500 + FORGED_EXTRA
    assert entry_hash(forged.prev_hash, forged) == forged.hash  # the chain alone is fine

    done = verify_cli(site.state.dir)
    assert done.returncode == 1
    assert done.stderr.startswith("error: journal signature refused: sale 2")
    assert len(done.stderr.strip().splitlines()) == 1

    with pytest.raises(CentralRefusedError, match=r"422.*sale 2.*device signature"):
        site.sync(clock)
    assert central_discount(site) == honest  # the settlement did not move
    assert [s.seq for s in site.union.store.sales_for("T1")] == [1]
    refusals = site.union.store.refusals("T1")
    assert [(r["first_seq"], r["last_seq"]) for r in refusals] == [(2, 2)]
    assert "device signature does not verify" in refusals[0]["reason"]
    assert site.journal.counts() == (2, 1)  # nothing is lost: the evidence stays


def test_a_forged_entry_cannot_hide_behind_a_resent_genuine_one(site: Site, clock) -> None:
    """The union checks the newest *new* entry's signature, and a batch must be in
    order: a forged entry sent before a genuine copy of an earlier one is refused."""
    site.sync(clock)
    site.sell(MEMBER_PAN, 1000, clock)
    site.sync(clock)  # sale 1 is held by the union
    site.sell(MEMBER_PAN, 10000, clock)
    forge(site.state.journal_path, seq=2)  # no key: sale 2's signature no longer fits
    entries = Journal(site.state.journal_path).sales()
    reordered = encode_sales("T1", [entries[1], entries[0]])
    with pytest.raises(CentralRefusedError, match="400.*send them in order"):
        site.client.upload_sales(reordered)
    genuine_last = encode_sales("T1", [entries[0], entries[1]])  # in order: 2 is new
    with pytest.raises(CentralRefusedError, match=r"422.*sale 2"):
        site.client.upload_sales(genuine_last)
    assert [s.seq for s in site.union.store.sales_for("T1")] == [1]


def test_every_new_entry_must_carry_a_signature(site: Site, clock) -> None:
    site.sync(clock)
    for gross in (1000, 2000):
        site.sell(MEMBER_PAN, gross, clock)
    first, second = Journal(site.state.journal_path).sales()
    unsigned = dataclasses.replace(first, sig=None)
    with pytest.raises(CentralRefusedError, match=r"422.*sale 1 has no device signature"):
        site.client.upload_sales(encode_sales("T1", [unsigned, second]))
    assert site.union.store.sales_for("T1") == []


def test_a_forgery_signed_with_another_key_is_refused_by_the_union(site: Site, clock) -> None:
    """Whoever replaces the key files on the terminal can make `journal --verify` pass
    locally, but not the union, which holds the key registered at the first sync."""
    site.sync(clock)
    site.sell(MEMBER_PAN, 10000, clock)
    thief = KeySigner(Ed25519PrivateKey.generate())
    forge(site.state.journal_path, seq=1, signer=thief)
    pem = thief.key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    (site.state.dir / KEY_FILE).write_bytes(pem)  # both key files replaced
    (site.state.dir / PUBLIC_FILE).write_text(public_key_hex(thief.public_key()) + "\n")
    assert verify_cli(site.state.dir).returncode == 0  # the local check is fooled
    with pytest.raises(CentralRefusedError, match="409.*another device key"):
        site.sync(clock)  # its registration of the thief's key is refused, and recorded
    batch = encode_sales("T1", Journal(site.state.journal_path).pending())
    with pytest.raises(CentralRefusedError, match=r"422.*sale 1"):
        site.client.upload_sales(batch)  # and so is the upload itself
    assert site.union.store.sales_for("T1") == []
    reasons = [r["reason"] for r in site.union.store.refusals("T1")]
    # each try of the registration (a 409 is retried) is refused and recorded
    assert ["another device key" in r for r in reasons] == [True] * FAST.attempts + [False]
    assert "sale 1" in reasons[-1]


def test_the_union_keeps_the_first_device_key(site: Site, clock) -> None:
    site.sync(clock)
    other = public_key_hex(Ed25519PrivateKey.generate().public_key())
    with pytest.raises(CentralRefusedError, match="409.*another device key"):
        site.client.register_device_key(encode_device_key("T1", other))
    site.client.register_device_key(encode_device_key("T1", site.state.device_public_key()))


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE sales SET sig = NULL WHERE seq = 2",
        "UPDATE sales SET sig = (SELECT sig FROM sales WHERE seq = 1) WHERE seq = 2",
    ],
)
def test_verify_checks_every_signature_and_names_the_sale(site: Site, clock, sql: str) -> None:
    site.sync(clock)
    for _ in range(3):
        site.sell(MEMBER_PAN, 1000, clock)
    db = sqlite3.connect(site.state.journal_path)
    db.execute(sql)
    db.commit()
    db.close()
    with pytest.raises(JournalError, match="sale 2"):
        site.journal.verify(load_public_key(site.state.dir))
    site.journal.verify()  # the chain alone cannot see it: the hashes are untouched


def test_a_signature_covers_its_own_entry_only_by_the_hash() -> None:
    signer = KeySigner(Ed25519PrivateKey.generate())
    sale = Sale.from_json(
        {
            "seq": 1,
            "sale_id": "s1",
            "at": "2026-11-28T10:00:00Z",
            "terminal_id": "T1",
            "merchant_id": "M0001",
            "token": None,
            "pan_last4": "0000",
            "member": False,
            "gross": 100,
            "discount": 0,
            "net": 100,
            "rules": [],
            "roster_version": 1,
            "policy_version": 1,
            "prev_hash": "0" * 64,
            "hash": "ab" * 32,
        }
    )
    good = sign_entry(signer, sale)
    check_signatures(signer.public_key(), [good])
    with pytest.raises(DeviceSignatureError, match="sale 1"):
        check_signatures(signer.public_key(), [dataclasses.replace(good, hash="cd" * 32)])
