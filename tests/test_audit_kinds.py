"""The audit's remaining kinds of finding (issue 15, Done when: every kind, built
through the real terminal, journal, sync and central service): a fork in a terminal's
chain and an unreadable basket, both only possible by editing the union's own store
after the upload; a discount under a policy version the union never signed, and a
discount while the merchant was suspended, both forged on the terminal with its own
device key (so the union took them)."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

from central.store import sales
from pact.chain import entry_hash
from pact.device import sign_entry
from pact.sale import Sale
from terminal.journal import Journal
from tests.conftest import Site
from tests.helpers import MEMBER_PAN
from tests.test_audit import _audit
from tests.test_evidence import forge


def _rewrite(site: Site, seq: int, **changes: object) -> None:
    """The shop's owner, root on the Pi, rewrites journal entry ``seq`` (and re-chains
    and re-signs it and every entry after it with the device key)."""
    site.journal.close()
    entries = Journal(site.state.journal_path).sales()
    signer = site.state.signer()
    db = sqlite3.connect(site.state.journal_path)
    prev = entries[seq - 2].hash if seq > 1 else "0" * 64
    for entry in entries[seq - 1 :]:
        if entry.seq == seq:
            entry = dataclasses.replace(entry, **changes)  # type: ignore[arg-type]
        entry = dataclasses.replace(entry, prev_hash=prev)
        entry = sign_entry(signer, dataclasses.replace(entry, hash=entry_hash(prev, entry)))
        row = entry.as_row()
        db.execute(
            "UPDATE sales SET policy_version = ?, prev_hash = ?, hash = ?, sig = ? WHERE seq = ?",
            [row["policy_version"], row["prev_hash"], row["hash"], row["sig"], entry.seq],
        )
        prev = entry.hash
    db.commit()
    db.close()
    site.journal = Journal(site.state.journal_path, signer)


def _kinds(lines: list[str]) -> list[str]:
    return [line.split(" detail=")[0] for line in lines]


def test_a_fork_in_the_stored_chain_is_found(site: Site, clock, capsys, tmp_path: Path) -> None:
    site.sync(clock)
    for gross in (1000, 2000, 3000):
        site.sell(MEMBER_PAN, gross, clock)
    site.sync(clock)
    # entry 2 rewritten in the union's store to follow nothing: its hash is made
    # consistent with its new content, so only the chain gives it away
    stored = site.union.store.sales_for("T1")
    second = dataclasses.replace(stored[1], prev_hash="ab" * 32)
    second = dataclasses.replace(second, hash=entry_hash(second.prev_hash, second))
    with site.union.store.engine.begin() as conn:
        conn.execute(
            sa.update(sales)
            .where(sales.c.terminal_id == "T1", sales.c.seq == 2)
            .values(prev_hash=second.prev_hash, hash=second.hash)
        )
    code, lines = _audit(site, clock, capsys, tmp_path)
    assert code == 1
    assert _kinds(lines) == [
        "terminal=T1 seq=1,2 finding=fork",  # 2 does not follow 1
        "terminal=T1 seq=2 finding=bad_signature",  # the device signed the old hash
        "terminal=T1 seq=2,3 finding=fork",  # 3 follows the old 2
    ]


def test_an_unreadable_basket_is_found(site: Site, clock, capsys, tmp_path: Path) -> None:
    site.sync(clock)
    site.sell(MEMBER_PAN, 10000, clock)
    site.sync(clock)
    [entry] = site.union.store.sales_for("T1")
    assert entry.basket is not None
    broken = {**entry.basket, "lines": [{"sku": "amount", "qty": "a lot"}]}
    with site.union.store.engine.begin() as conn:
        conn.execute(sa.update(sales).values(basket=json.dumps(broken)))
    code, lines = _audit(site, clock, capsys, tmp_path)
    assert code == 1
    assert _kinds(lines) == [
        "terminal=T1 seq=1 finding=bad_basket",
        "terminal=T1 seq=1 finding=edited",
    ]


def test_a_discount_under_a_policy_never_signed_is_found(
    site: Site, clock, capsys, tmp_path: Path
) -> None:
    site.sync(clock)
    site.sell(MEMBER_PAN, 10000, clock)
    site.sell(MEMBER_PAN, 10000, clock)
    _rewrite(site, 2, policy_version=99)
    assert site.sync(clock).uploaded == 2  # chain and signature fine: the union took it
    code, lines = _audit(site, clock, capsys, tmp_path)
    assert code == 1
    assert lines == [
        "terminal=T1 seq=2 finding=unknown_policy detail=a discount under policy v99, "
        "which the union never signed for this merchant"
    ]


def test_a_discount_while_the_merchant_was_suspended_is_found(
    site: Site, clock, capsys, tmp_path: Path
) -> None:
    site.sync(clock)
    site.union.set_merchant_status("M0001", "suspended", "inspection failed")
    clock.advance(timedelta(minutes=5))
    site.sync(clock)  # the terminal holds policy v2: suspended
    sold = site.sell(MEMBER_PAN, 10000, clock)
    assert (sold["discount_fen"], sold["verdict"]) == (0, "merchant_suspended")
    site.journal.close()
    forge(site.state.journal_path, seq=1, extra=800, signer=site.state.signer())
    site.journal = Journal(site.state.journal_path, site.state.signer())
    entry: Sale = site.journal.sales()[0]
    assert (entry.discount, entry.policy_version) == (800, 2)
    assert site.sync(clock).uploaded == 1
    code, lines = _audit(site, clock, capsys, tmp_path)
    assert code == 1
    assert lines == [
        "terminal=T1 seq=1 finding=merchant_not_active detail=a discount of 8.00 while "
        "the merchant was suspended"
    ]


def test_a_discount_naming_a_policy_older_than_the_suspension_is_found(
    site: Site, clock, capsys, tmp_path: Path
) -> None:
    """The terminal holds policy v1 (it has not synced since the union suspended the
    shop in v2) and gives a member discount: the sale names v1, which says active, so
    only the union's newer signed word shows the shop was suspended. The store's audit
    and the bundle's agree. (Judged by the named policy alone, it passed unseen, and a
    terminal that chose to name its older policy was never caught.)"""
    from tests.test_audit_bundle import _export, _root_pub
    from tests.test_commands import run

    site.sync(clock)  # policy v1: active
    site.sell(MEMBER_PAN, 10000, clock)  # before the suspension: no finding
    clock.advance(timedelta(minutes=5))
    site.union.set_merchant_status("M0001", "suspended", "inspection failed")  # v2
    clock.advance(timedelta(minutes=5))
    sold = site.sell(MEMBER_PAN, 10000, clock)  # offline: still v1
    assert sold["discount_fen"] > 0
    assert site.sync(clock).uploaded == 2
    code, lines = _audit(site, clock, capsys, tmp_path)
    assert code == 1
    assert len(lines) == 1 and lines[0].startswith(
        "terminal=T1 seq=2 finding=merchant_not_active detail=a discount of "
    )
    assert "while the merchant was suspended (policy v2, signed " in lines[0]
    assert lines[0].endswith("the sale names v1, signed before it")
    bundle = _export(site, clock, capsys, tmp_path)
    code, out, _ = run(capsys, "audit", "verify", str(bundle), "--trust", str(_root_pub(tmp_path)))
    assert (code, out.splitlines()) == (1, lines)


def _void_keeps_the_discount(site: Site, seq: int) -> None:
    """The shop's owner, root on the Pi, rewrites void ``seq`` to take back the sale's
    gross but not its discount (so the union goes on paying it), and re-chains and
    re-signs it and every entry after it with the device key."""
    site.journal.close()
    entries = Journal(site.state.journal_path).sales()
    signer = site.state.signer()
    db = sqlite3.connect(site.state.journal_path)
    prev = entries[seq - 2].hash
    for entry in entries[seq - 1 :]:
        if entry.seq == seq:
            assert entry.kind == "void" and entry.basket is not None
            lines = [
                {k: v for k, v in line.items() if k != "by_rule"} | {"discount": 0}
                for line in entry.basket["lines"]
            ]
            basket = {**entry.basket, "lines": lines, "discounts": {}}
            entry = dataclasses.replace(entry, discount=0, net=entry.gross, rules=(), basket=basket)
        entry = dataclasses.replace(entry, prev_hash=prev)
        entry = sign_entry(signer, dataclasses.replace(entry, hash=entry_hash(prev, entry)))
        row = entry.as_row()
        columns = ("discount", "net", "rules", "basket", "prev_hash", "hash", "sig")
        db.execute(
            f"UPDATE sales SET {', '.join(f'{c} = ?' for c in columns)} WHERE seq = ?",
            [*(row[c] for c in columns), entry.seq],
        )
        prev = entry.hash
    db.commit()
    db.close()
    site.journal = Journal(site.state.journal_path, signer)


def test_a_void_that_keeps_the_sales_discount_is_found(
    site: Site, clock, capsys, tmp_path: Path
) -> None:
    """Neither the union's ingest nor the audit compared a void or refund with the sale
    it names: a void taking back the gross but not the discount had the union pay a
    cancelled sale's discount, unseen. The honest refund beside it gives no finding."""
    from terminal.service import TerminalService
    from terminal.supervisor import set_pin

    site.sync(clock)
    set_pin(site.state.dir, "2468")
    site.sell(MEMBER_PAN, 10000, clock)  # 1
    site.sell(MEMBER_PAN, 5000, clock)  # 2
    service = TerminalService(site.state.dir, lambda **_: None, clock)  # type: ignore[arg-type,return-value]
    try:
        assert service.void(1, "wrong amount", "2468").seq == 3
        assert service.refund(2, [(0, 1)], "returned", "2468").seq == 4
    finally:
        service.close()
    _void_keeps_the_discount(site, 3)
    assert site.sync(clock).uploaded == 4  # chain and signatures fine: the union took it
    code, lines = _audit(site, clock, capsys, tmp_path)
    assert code == 1
    assert lines == [
        "terminal=T1 seq=1,3 finding=bad_reversal detail=a void of entry 1 that the terminal "
        "would not make: it does not take back what the sale gave (discount, net, rules, "
        "basket differ)"
    ]
