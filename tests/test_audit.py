"""The compliance audit (issue 15, item 1, in part): a sale forged on the terminal with
its own device key (the chain and the signature are fine, so the union took it) is
found by recomputing its discount; so are a discount to a card the union had
suspended, an entry edited in the union's own store, and a card counter that repeats.
An honest period has no findings."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

from central.store import sales
from pact.cards import PanTokenizer
from pact.money import fen
from reader.identity import identity_from_pan
from terminal.checkout import checkout
from tests.conftest import Site
from tests.helpers import MEMBER_PAN
from tests.test_commands import run
from tests.test_evidence import FORGED_EXTRA, forge


def _audit(site: Site, clock, capsys, tmp_path: Path) -> tuple[int, list[str]]:
    day = clock().date().isoformat()
    code, out, _ = run(
        capsys, "central", "audit", "run", "--merchant", "M0001", "--from", day, "--to", day,
        "--data", str(tmp_path / "central"),
    )  # fmt: skip
    return code, out.splitlines()


def test_an_honest_period_has_no_findings(site: Site, clock, capsys, tmp_path) -> None:
    site.sync(clock)
    site.sell(MEMBER_PAN, 12800, clock)
    site.sell(MEMBER_PAN, 4550, clock)
    site.sync(clock)
    assert _audit(site, clock, capsys, tmp_path) == (0, [])


def test_a_sale_forged_with_the_device_key_is_found(site: Site, clock, capsys, tmp_path) -> None:
    site.sync(clock)
    site.sell(MEMBER_PAN, 12800, clock)
    site.sell(MEMBER_PAN, 10000, clock)
    # the shop's owner, root on the Pi, forges sale 2 and signs it with the device key
    forge(site.state.journal_path, seq=2, signer=site.state.signer())
    site.journal.close()
    from terminal.journal import Journal

    site.journal = Journal(site.state.journal_path, site.state.signer())
    assert site.sync(clock).uploaded == 2  # the union took it: chain and signature fine
    code, lines = _audit(site, clock, capsys, tmp_path)
    assert code == 1
    assert lines == [
        f"terminal=T1 seq=2 finding=over_discount detail=a discount of "
        f"{fen(500 + FORGED_EXTRA)} where the policy gives 5.00"
    ]


def test_a_discount_to_a_suspended_member_is_found(site: Site, clock, capsys, tmp_path) -> None:
    site.sync(clock)  # the terminal's roster: U1 active
    clock.advance(timedelta(hours=1))
    site.union.import_members(f"member_id,pan,status\nU1,{MEMBER_PAN},suspended\n")
    clock.advance(timedelta(hours=1))
    sold = site.sell(MEMBER_PAN, 10000, clock)  # its roster is not yet the new one
    assert sold["discount"] == "5.00"
    site.sync(clock)
    code, lines = _audit(site, clock, capsys, tmp_path)
    assert code == 1 and len(lines) == 1
    assert lines[0].startswith("terminal=T1 seq=1 finding=not_a_member detail=a discount of 5.00")


def test_an_entry_edited_in_the_unions_store_is_found(site: Site, clock, capsys, tmp_path) -> None:
    site.sync(clock)
    site.sell(MEMBER_PAN, 10000, clock)
    site.sync(clock)
    with site.union.store.engine.begin() as conn:
        conn.execute(sa.update(sales).values(discount=300, net=9700))
    code, lines = _audit(site, clock, capsys, tmp_path)
    assert code == 1
    assert [line.split(" detail=")[0] for line in lines] == [
        "terminal=T1 seq=1 finding=edited",
        "terminal=T1 seq=1 finding=under_discount",
    ]


def test_a_repeated_card_counter_is_found(site: Site, clock, capsys, tmp_path) -> None:
    site.sync(clock)
    tokenize = PanTokenizer(site.state.enrolment.token_key)
    for atc in (7, 8, 8):  # the third tap shows the second's counter: a copied card
        card = identity_from_pan("unionpay", b"\xa0", MEMBER_PAN, "2030-12", tokenize, atc=atc)
        checkout(site.state.current, site.state.enrolment, site.journal, card, 1000, clock())
        clock.advance(timedelta(minutes=1))
    site.sync(clock)
    code, lines = _audit(site, clock, capsys, tmp_path)
    assert code == 1
    assert [line.split(" detail=")[0] for line in lines] == [
        "terminal=T1 seq=3 finding=atc_repeated"
    ]


def test_a_complaint_stands_among_the_findings(site: Site, clock, capsys, tmp_path) -> None:
    data = ["--data", str(tmp_path / "central")]
    day = clock().date().isoformat()
    code, out, err = run(
        capsys, "central", "complaint", "add", "--merchant", "M0001", "--date", day,
        "--what", "refused  the discount,\\n said the card was fake", "--last4", "5010",
        "--by", "ada", *data,
    )  # fmt: skip
    assert (code, out.strip(), err) == (0, "complaint #1 against M0001 recorded", "")
    code, lines = _audit(site, clock, capsys, tmp_path)
    assert code == 1
    assert lines == [
        f"terminal=- seq= finding=complaint detail=a member's complaint of {day} "
        "(card •••• 5010): refused the discount,\\n said the card was fake"
    ]
    code, _, err = run(
        capsys, "central", "complaint", "add", "--merchant", "M0001", "--date", day,
        "--what", "x", "--last4", "6222020000005010", *data,
    )  # fmt: skip
    assert code == 1 and "last four digits, nothing more" in err
