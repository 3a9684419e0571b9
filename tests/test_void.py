"""Voids: a supervisor reverses a sale of today whole, with a reason; the journal
keeps both entries, signed; the settlement nets them; the quota use comes back."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from pact.basket import Basket
from pact.errors import ReversalError, WireFormatError
from pact.reversal import void_draft
from pact.wire import decode_sales, encode_sales
from terminal.devicekey import load_public_key
from terminal.errors import JournalError, SupervisorError, UnknownSaleError
from terminal.service import TerminalService
from terminal.supervisor import MAX_TRIES, Supervisor, set_pin
from terminal.web import create_app
from tests.conftest import Site
from tests.helpers import MEMBER_PAN, till_client
from tests.test_policy_checkout import FILM, MONDAY, card, make_shop, terms
from unioncard.cli import cli

PIN = "2468"


@pytest.fixture
def cinema(tmp_path: Path):
    """A cinema terminal (one free film a month) with a supervisor PIN, and its clock."""
    shop = make_shop(tmp_path, terms("cinema"))
    set_pin(shop.dir, PIN)
    member = card(shop)
    now = [MONDAY]
    service = TerminalService(
        shop.dir, lambda *, timeout, tokenize: member, lambda: now[0], card_timeout=1
    )
    yield service, now
    service.close()


def test_a_void_reverses_the_sale_whole_and_gives_the_quota_back(cinema) -> None:
    service, _ = cinema
    sale = service.checkout(Basket((FILM,)), confirm=True).sale
    assert sale.discount == FILM.unit_price and sale.rules == ("free-film",)
    assert service.checkout(Basket((FILM,)), confirm=True).sale.discount == 0  # used up
    void = service.void(sale.seq, "customer left before the film", PIN)
    assert (void.kind, void.ref_seq, void.note) == ("void", 1, "customer left before the film")
    assert (void.gross, void.discount, void.net, void.rules) == (
        sale.gross,
        sale.discount,
        sale.net,
        sale.rules,
    )
    assert void.basket == sale.basket and void.token == sale.token and void.atc is None
    again = service.checkout(Basket((FILM,)), confirm=True).sale
    assert again.discount == FILM.unit_price  # the free film came back with the void
    assert service.journal.verify(load_public_key(service.state.dir)) == 4  # signed, chained
    recent = service.recent_sales()
    assert [(r["seq"], r["kind"], r["voided_by"]) for r in recent] == [
        (4, "sale", None),
        (3, "void", None),
        (2, "sale", None),
        (1, "sale", 3),
    ]


@pytest.mark.parametrize(
    ("target", "reason", "message"),
    [
        (1, "", "a reason is required"),
        (1, "x" * 201, "longer than 200"),
        (3, "twice", "already voided"),
        (2, "a void", "is a void, not a sale"),
        (9, "nothing", "no sale 9"),  # (UnknownSaleError: 404 no_such_sale on the API)
    ],
)
def test_what_cannot_be_voided(cinema, target: int, reason: str, message: str) -> None:
    service, _ = cinema
    service.checkout(Basket((FILM,)), confirm=True)
    service.void(1, "first", PIN)  # entry 2 voids sale 1
    service.checkout(Basket((FILM,)), confirm=True)  # sale 3
    service.void(3, "second", PIN)
    refused = UnknownSaleError if target == 9 else ReversalError
    with pytest.raises(refused, match=message):
        service.void(target, reason, PIN)
    assert service.journal.counts()[0] == 4  # nothing more was journaled


def test_only_todays_sales_are_voided(cinema) -> None:
    service, now = cinema
    service.checkout(Basket((FILM,)), confirm=True)
    now[0] += timedelta(days=1)
    with pytest.raises(ReversalError, match="not of today's business day"):
        service.void(1, "too late", PIN)


def test_the_business_day_is_the_shops(cinema) -> None:
    """23:30 in Shanghai and 00:30 the next morning are two business days, though both
    are the same UTC day."""
    service, now = cinema
    now[0] = MONDAY.replace(hour=15, minute=30)  # 23:30 in Shanghai
    sale = service.checkout(Basket((FILM,)), confirm=True).sale
    policy = service.state.current.policy
    assert void_draft(sale, [], "same evening", policy, now[0] + timedelta(minutes=20))
    with pytest.raises(ReversalError, match="business day"):
        void_draft(sale, [], "after midnight", policy, now[0] + timedelta(minutes=40))


def test_the_supervisor_pin_is_checked_and_locked_after_five_wrong_tries(cinema) -> None:
    service, now = cinema
    service.checkout(Basket((FILM,)), confirm=True)
    for tries_left in range(MAX_TRIES - 1, 0, -1):
        with pytest.raises(SupervisorError, match=f"{tries_left} tries left"):
            service.void(1, "wrong pin", "0000")
    with pytest.raises(SupervisorError, match="locked for 5 minutes"):
        service.void(1, "wrong pin", "0000")
    with pytest.raises(SupervisorError, match="locked"):
        service.void(1, "right pin, too soon", PIN)
    now[0] += timedelta(minutes=5)
    assert service.void(1, "right pin", PIN).kind == "void"


def test_the_till_api_voids_with_the_pin(cinema) -> None:
    service, _ = cinema
    client = till_client(create_app(service))
    service.checkout(Basket((FILM,)), confirm=True)
    wrong = client.post("/api/v1/sales/1/void", json={"reason": "r", "pin": "1111"})
    assert wrong.status_code == 403 and wrong.get_json()["kind"] == "supervisor"
    done = client.post("/api/v1/sales/1/void", json={"reason": "refused", "pin": PIN})
    assert done.get_json() == {"state": "voided", "seq": 2, "ref_seq": 1, "net": "0.00"}
    twice = client.post("/api/v1/sales/1/void", json={"reason": "again", "pin": PIN})
    assert twice.status_code == 409 and "already voided" in twice.get_json()["error"]
    assert client.post("/api/v1/sales/1/void", json={"pin": PIN}).status_code == 400


def test_a_pin_sent_as_a_number_is_a_bad_request_not_a_wrong_try(cinema) -> None:
    """{"pin": 2468} (a JSON number) counted as a wrong PIN: 5 of them locked voids and
    refunds though the PIN was right."""
    service, _ = cinema
    client = till_client(create_app(service))
    service.checkout(Basket((FILM,)), confirm=True)
    number = int(PIN)
    refund = {"lines": [{"index": 0, "qty": 1}], "reason": "r", "pin": number}
    for _ in range(MAX_TRIES + 1):
        for url, body in (
            ("/api/v1/sales/1/void", {"reason": "r", "pin": number}),
            ("/api/v1/sales/1/refund", refund),
        ):
            answer = client.post(url, json=body)
            assert answer.status_code == 400, answer.get_json()
            assert answer.get_json()["kind"] == "bad_request"
            assert "in quotes" in answer.get_json()["error"]
    done = client.post("/api/v1/sales/1/void", json={"reason": "refused", "pin": PIN})
    assert done.status_code == 200, done.get_json()  # no try was used up


def test_wrong_tries_survive_a_restart_and_each_lock_lasts_longer(cinema) -> None:
    service, now = cinema
    shop_dir = service.state.dir
    for _ in range(MAX_TRIES - 1):
        with pytest.raises(SupervisorError):
            service.void(1, "guess", "0000")
    other = Supervisor(shop_dir, lambda: now[0])  # a restarted daemon, or the CLI
    with pytest.raises(SupervisorError, match="locked for 5 minutes"):
        other.check("0000")
    now[0] += timedelta(minutes=5)
    for _ in range(MAX_TRIES - 1):
        with pytest.raises(SupervisorError, match="tries left"):
            other.check("0000")
    with pytest.raises(SupervisorError, match="locked for 10 minutes"):
        Supervisor(shop_dir, lambda: now[0]).check("0000")
    now[0] += timedelta(minutes=9)
    with pytest.raises(SupervisorError, match="locked"):
        service.supervisor.check(PIN)
    now[0] += timedelta(minutes=1)
    service.supervisor.check(PIN)  # right at last: the count starts again
    assert json.loads((shop_dir / "supervisor.tries").read_text())["locks"] == 0


def test_a_second_void_is_refused_by_the_journal_itself(cinema) -> None:
    """Two processes that both passed the check: the journal's unique index refuses
    the second void, and the quota never gives back more than the sale took."""
    service, now = cinema
    sale = service.checkout(Basket((FILM,)), confirm=True).sale
    draft = void_draft(sale, [], "first", service.state.current.policy, now[0])
    service.journal.append(draft, at=now[0])
    with pytest.raises(JournalError, match="UNIQUE"):
        service.journal.append(draft, at=now[0])
    token = sale.token
    assert token is not None
    usage = service.journal.usage(token, "free-film", now[0] - timedelta(days=1))
    assert (usage.uses, usage.amount) == (0, 0)


def test_set_pin_and_void_from_the_command_line(tmp_path: Path, clock) -> None:
    shop = make_shop(tmp_path, terms("cinema"))
    runner = CliRunner()
    data = ["--data", str(shop.dir)]
    bad = runner.invoke(cli, ["terminal", "set-pin", *data], input="12\n12\n", obj=clock)
    assert bad.exit_code != 0 and "4 to 8 digits" in str(bad.exception)
    done = runner.invoke(cli, ["terminal", "set-pin", *data], input="1357\n1357\n", obj=clock)
    assert done.exit_code == 0 and "supervisor PIN set" in done.output
    assert (shop.dir / "supervisor.pin").stat().st_mode & 0o077 == 0
    assert "1357" not in (shop.dir / "supervisor.pin").read_text()
    # piped in, as a script does: no getpass warning about the terminal that is not there
    unioncard = str(Path(sys.executable).parent / "unioncard")
    piped = subprocess.run(
        [unioncard, "terminal", "set-pin", *data], input="2468\n2468\n", text=True,
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert (piped.returncode, piped.stderr) == (0, ""), piped.stderr
    differ = subprocess.run(
        [unioncard, "terminal", "set-pin", *data], input="2468\n1357\n", text=True,
        capture_output=True, timeout=60,
    )  # fmt: skip
    [line] = differ.stderr.strip().splitlines()
    assert differ.returncode == 2 and line.startswith("error: the two PINs differ"), line


def test_a_void_is_uploaded_and_the_settlement_nets_it(site: Site, clock) -> None:
    site.sync(clock)
    set_pin(site.state.dir, PIN)
    member = site.sell  # a sale through the site's checkout, then a void through the daemon
    member(MEMBER_PAN, 12800, clock)
    member(MEMBER_PAN, 5000, clock)
    service = TerminalService(site.state.dir, lambda **_: None, clock)  # type: ignore[arg-type,return-value]
    service.void(1, "wrong amount", PIN)
    service.close()
    assert site.sync(clock).uploaded == 3
    [row] = [r for r in site.union.settlement() if r.merchant_id == "M0001"]
    assert (row.sales, row.voids, row.member_sales) == (1, 1, 1)  # the sales left standing
    assert (row.gross, row.discount, row.net) == (5000, 250, 4750)  # only sale 2 remains
    stored = site.union.store.sales_for("T1")
    assert [(s.seq, s.kind, s.ref_seq) for s in stored] == [
        (1, None, None),
        (2, None, None),
        (3, "void", 1),
    ]
    body = encode_sales("T1", stored)
    assert decode_sales(body)[1] == stored  # a void on the wire and back


def test_a_void_of_a_sale_past_65535_travels(site: Site, clock) -> None:
    """ref_seq is any earlier seq (only a card's counter stops at 65535)."""
    site.sync(clock)
    site.sell(MEMBER_PAN, 1000, clock)
    site.sell(MEMBER_PAN, 1000, clock)
    body = encode_sales("T1", site.journal.sales())
    body["sales"][0]["seq"], body["sales"][1]["seq"] = 70_000, 70_001
    body["sales"][1].update(kind="void", ref_seq=70_000, note="far")
    assert decode_sales(body)[1][1].ref_seq == 70_000
    body["sales"][1]["atc"] = 70_000
    with pytest.raises(WireFormatError, match="atc must be the card's counter"):
        decode_sales(body)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "refund-all"}, "kind must be one of"),
        ({"kind": "void"}, "ref_seq must name an earlier entry"),
        ({"kind": "void", "ref_seq": 5}, "ref_seq must name an earlier entry"),
        ({"ref_seq": 1}, "ref_seq belongs to a void"),
        ({"kind": "void", "ref_seq": 1, "note": "x" * 201}, "longer than 200"),
    ],
)
def test_the_wire_refuses_a_malformed_void(site: Site, clock, change, message) -> None:
    site.sync(clock)
    site.sell(MEMBER_PAN, 1000, clock)
    site.sell(MEMBER_PAN, 1000, clock)
    body = encode_sales("T1", site.journal.sales())
    body["sales"][1].update(change)
    with pytest.raises(WireFormatError, match=message):
        decode_sales(body)


def test_no_pin_or_no_pin_at_all_uses_up_no_try(cinema) -> None:
    """A missing PIN, an empty one, "12" or "abcd" guess nothing, yet each used up one of
    the 5 tries; the right PIN typed in full-width digits (a Chinese keyboard) was a
    wrong one. And the lock's end was said in UTC: it is the shop's time."""
    service, now = cinema
    client = till_client(create_app(service))
    service.checkout(Basket((FILM,)), confirm=True)
    for pin in (None, "", "  ", "12", "abcd", "123456789"):
        body = {"reason": "r"} if pin is None else {"reason": "r", "pin": pin}
        answer = client.post("/api/v1/sales/1/void", json=body)
        assert answer.status_code == 403 and "tries left" not in answer.get_json()["error"]
    wide = PIN.translate(str.maketrans("0123456789", "０１２３４５６７８９"))
    for _ in range(MAX_TRIES - 1):
        with pytest.raises(SupervisorError, match="tries left"):
            service.void(1, "guess", "0000")
    with pytest.raises(SupervisorError, match="locked for 5 minutes"):
        service.void(1, "guess", "0000")
    with pytest.raises(SupervisorError) as locked:
        service.void(1, "too soon", wide)
    until = (now[0] + timedelta(minutes=5)).astimezone(service.state.current.policy.zone)
    assert f"until {until:%Y-%m-%d %H:%M:%S}" in str(locked.value), str(locked.value)
    now[0] += timedelta(minutes=5)
    assert service.void(1, "right pin, full-width", wide).kind == "void"
