"""Refunds: a supervisor takes back some units of some lines of a sale, within the
policy's refund window; each rule's discount comes back in proportion, rounded down
until the last unit; the journal keeps the refund signed; quotas and the settlement
net it."""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pact.basket import Basket, Line
from pact.errors import ReversalError
from pact.reversal import REFUND, refund_draft, void_draft
from pact.sale import DRAFT_FIELDS, Sale, SaleDraft
from pact.wire import decode_sales, encode_sales
from terminal.devicekey import load_public_key
from terminal.errors import UnknownSaleError
from terminal.journal import Journal
from terminal.service import TerminalService
from terminal.supervisor import set_pin
from terminal.web import create_app
from tests.helpers import TEST_SIGNER, browser_sign_in, enrol_signing_terminal, till_client
from tests.test_policy_checkout import MONDAY, card, make_shop
from unioncard.cli import cli

PIN = "2468"
FILM = Line("FILM", "film", 1, 4500)
POP = Line("POP", "snack", 3, 2000)
WATER = Line("WATER", "drink", 7, 333)
BASKET = Basket((FILM, POP, WATER))
TERMS = {
    "timezone": "Asia/Shanghai",
    "combine": "sequence",
    "refund_days": 7,
    "rules": [
        {
            "id": "free-film",
            "title": "One free film a month",
            "kind": "free_item",
            "items": 1,
            "pick": "cheapest",
            "eligible": {"categories": ["film"]},
            "quota": {"per": "month", "uses": 1},
        },
        {
            "id": "snacks-10",
            "kind": "percent_off",
            "basis_points": 1000,
            "eligible": {"categories": ["snack"]},
        },
        {
            "id": "member-3",
            "kind": "percent_off",
            "basis_points": 300,
            "quota": {"per": "month", "amount": 5000},
        },
    ],
}


@pytest.fixture
def shop(tmp_path: Path):
    """A cinema terminal with three rules applied in sequence, a supervisor PIN, and its
    clock (a list holding now)."""
    state = make_shop(tmp_path, TERMS)
    set_pin(state.dir, PIN)
    member = card(state)
    now = [MONDAY]
    service = TerminalService(
        state.dir, lambda *, timeout, tokenize: member, lambda: now[0], card_timeout=1
    )
    yield service, now
    service.close()


def split_of(entry: Sale) -> dict[tuple[int, str], int]:
    """(line index in the sale, rule) -> fen, for a sale's or a refund's lines."""
    out: dict[tuple[int, str], int] = {}
    assert entry.basket is not None
    for i, line in enumerate(entry.basket["lines"]):
        for rule, amount in line["by_rule"].items():
            out[line.get("of", i), rule] = amount
    return out


def test_the_sale_records_how_each_lines_discount_splits_over_the_rules(shop) -> None:
    service, _ = shop
    sale = service.checkout(BASKET, confirm=True).sale
    assert sale.basket is not None
    lines = sale.basket["lines"]
    assert lines[0]["by_rule"] == {"free-film": 4500}
    assert set(lines[1]["by_rule"]) == {"snacks-10", "member-3"}
    assert lines[1]["by_rule"]["snacks-10"] == 600  # 10% of 60.00, before member-3
    for line in lines:
        assert sum(line["by_rule"].values()) == line["discount"]
    per_rule = Counter[str]()
    for (_, rule), amount in split_of(sale).items():
        per_rule[rule] += amount
    assert dict(per_rule) == dict(sale.basket["discounts"])


def test_refunds_in_pieces_give_back_exactly_the_sales_discount(shop) -> None:
    service, now = shop
    sale = service.checkout(BASKET, confirm=True).sale
    film = service.checkout(Basket((FILM,)), confirm=True).sale
    assert film.rules == ("member-3",)  # the free film is used this month
    owed = split_of(sale)
    quantities = [line["qty"] for line in sale.basket["lines"]]  # type: ignore[index]
    given: Counter[tuple[int, str]] = Counter()
    units: Counter[int] = Counter()
    refunds = []
    for items in ([(1, 1)], [(1, 1), (2, 3)], [(2, 4)], [(0, 1), (1, 1)]):
        now[0] += timedelta(hours=1)
        refund = service.refund(sale.seq, items, "customer returned it", PIN)
        refunds.append(refund)
        assert (refund.kind, refund.ref_seq, refund.note) == (REFUND, 1, "customer returned it")
        for index, qty in items:
            units[index] += qty
        for (index, rule), amount in split_of(refund).items():
            given[index, rule] += amount
        for index, rule in given:
            # together, the refunds of a line never give back more than their share
            assert given[index, rule] * quantities[index] <= owed[index, rule] * units[index]
    assert dict(given) == {key: amount for key, amount in owed.items() if amount}
    assert sum(r.gross for r in refunds) == sale.gross
    assert sum(r.discount for r in refunds) == sale.discount
    assert sum(r.net for r in refunds) == sale.net
    # the free film came back with the film's refund, the member-3 amount quota too
    since = MONDAY - timedelta(days=1)
    used = service.journal.usage(sale.token or "", "member-3", since)
    assert (used.uses, used.amount) == (1, film.discount)  # only the film sale's is left
    again = service.checkout(Basket((FILM,)), confirm=True).sale
    assert again.basket is not None and again.basket["discounts"]["free-film"] == 4500
    assert service.journal.verify(load_public_key(service.state.dir)) == 7


def test_a_partial_refund_rounds_each_rules_share_down_until_the_last_unit(shop) -> None:
    service, _ = shop
    sale = service.checkout(BASKET, confirm=True).sale
    water = sale.basket["lines"][2]  # type: ignore[index]
    member = water["by_rule"]["member-3"]  # 3% of 23.31: 70 fen over 7 units
    assert member == 70
    first = service.refund(sale.seq, [(2, 2)], "two bottles back", PIN)
    assert first.basket["lines"][0]["by_rule"] == {"member-3": 70 * 2 // 7}  # type: ignore[index]
    assert (first.gross, first.discount) == (666, 20)
    second = service.refund(sale.seq, [(2, 5)], "the rest", PIN)
    assert second.discount == 70 - 20  # the last units give back the rest
    assert second.rules == ("member-3",) and second.basket["discounts"] == {"member-3": 50}  # type: ignore[index]


@pytest.mark.parametrize(
    ("first", "items", "reason", "message"),
    [
        ([(1, 2)], [(1, 2)], "again", r"line 1 of sale 1 \(POP\): 1 of its 3 units are left"),
        (None, [(1, 4)], "too many", "3 of its 3 units are left to refund, not 4"),
        (None, [(1, 0)], "none", "not 0"),
        (None, [(5, 1)], "no such line", "there is no line 5"),
        (None, [(1, 1), (1, 1)], "twice", "line 1 of sale 1 is named twice"),
        (None, [], "nothing", "name the lines of sale 1"),
        (None, [(1, 1)], "  ", "a reason is required"),
        (None, [(1, 1)], "x" * 201, "longer than 200"),
    ],
)
def test_what_cannot_be_refunded(shop, first, items, reason, message) -> None:
    service, _ = shop
    service.checkout(BASKET, confirm=True)
    if first:
        service.refund(1, first, "first", PIN)
    before = service.journal.counts()
    with pytest.raises(ReversalError, match=message):
        service.refund(1, items, reason, PIN)
    assert service.journal.counts() == before  # nothing journaled


def test_refunds_keep_to_the_policys_window(shop) -> None:
    service, now = shop
    service.checkout(BASKET, confirm=True)
    now[0] += timedelta(days=7)  # the seventh day after: still in the window
    service.refund(1, [(1, 1)], "in time", PIN)
    now[0] += timedelta(days=1)
    with pytest.raises(ReversalError, match="sale 1 is 8 days old: refunds are taken within 7"):
        service.refund(1, [(1, 1)], "late", PIN)


def test_voids_and_refunds_do_not_mix(shop) -> None:
    service, _ = shop
    service.checkout(BASKET, confirm=True)
    service.checkout(BASKET, confirm=True)
    service.void(1, "wrong card", PIN)  # entry 3
    with pytest.raises(ReversalError, match="sale 1 was voided \\(entry 3\\)"):
        service.refund(1, [(1, 1)], "after the void", PIN)
    with pytest.raises(ReversalError, match="entry 3 is a void, not a sale: it cannot be refunded"):
        service.refund(3, [(0, 1)], "a void", PIN)
    service.refund(2, [(1, 1)], "one back", PIN)  # entry 4
    with pytest.raises(ReversalError, match="entry 4 is a refund, not a sale"):
        service.refund(4, [(0, 1)], "a refund", PIN)
    with pytest.raises(ReversalError, match="sale 2 was partly refunded \\(entry 4\\)"):
        service.void(2, "after a refund", PIN)
    with pytest.raises(UnknownSaleError, match="no sale 9"):  # (404 no_such_sale)
        service.refund(9, [(0, 1)], "nothing", PIN)


def test_a_second_process_cannot_refund_the_same_units(shop) -> None:
    """The check reads the sale's refunds inside the journal's write transaction: a
    second process (another connection to the journal, opened before the first
    refund) refunding the same units is refused, and journals nothing."""
    service, now = shop
    service.checkout(BASKET, confirm=True)
    other = Journal(service.state.journal_path, service.state.signer())
    try:
        assert other.entry(1) is not None
        service.refund(1, [(1, 3)], "all of them", PIN)
        with pytest.raises(ReversalError, match="0 of its 3 units are left"):
            other.append_reversal(
                1, lambda s, later: refund_draft(s, later, [(1, 1)], "again", None, now[0]), now[0]
            )
        assert other.counts()[0] == 2
    finally:
        other.close()


def test_the_till_api_lists_and_refunds(shop) -> None:
    service, _ = shop
    client = till_client(create_app(service))
    service.checkout(BASKET, confirm=True)
    entry = client.get("/api/v1/sales/1").get_json()
    assert entry["refundable"] == [1, 3, 7] and "token" not in entry
    body = {"lines": [{"index": 1, "qty": 2}], "reason": "two back", "pin": PIN}
    answer = client.post("/api/v1/sales/1/refund", json=body)
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["state"] == "refunded" and answer.get_json()["seq"] == 2
    assert client.get("/api/v1/sales/1").get_json()["refundable"] == [1, 1, 7]
    again = client.post("/api/v1/sales/1/refund", json=body)
    assert again.status_code == 409 and again.get_json()["kind"] == "reversal_refused"
    assert "1 of its 3 units are left" in again.get_json()["error"]
    wrong = client.post("/api/v1/sales/1/refund", json={**body, "pin": "0000"})
    assert wrong.status_code == 403
    bad = client.post("/api/v1/sales/1/refund", json={"lines": [{"index": "1"}], "reason": "x"})
    assert bad.status_code == 400 and "lines" in bad.get_json()["error"]
    assert client.get("/api/v1/sales/9").status_code == 404
    recent = client.get("/api/v1/sales").get_json()["sales"]
    assert [(r["seq"], r["kind"], r["refunded_by"]) for r in recent] == [
        (2, "refund", []),
        (1, "sale", [2]),
    ]


def test_refund_from_the_command_line(shop) -> None:
    service, now = shop
    service.checkout(BASKET, confirm=True)
    data = str(service.state.dir)
    runner = CliRunner()
    done = runner.invoke(
        cli,
        [
            "terminal",
            "refund",
            "1",
            "--line",
            "1:1",
            "--line",
            "2",
            "--reason",
            "back",
            "--data",
            data,
        ],
        input=f"{PIN}\n",
        obj=lambda: now[0],
    )
    assert done.exit_code == 0, done.output
    assert "sale 1 refunded by entry #2: 23.33 back" in done.output
    refund = service.journal.entry(2)
    assert refund is not None and [line["qty"] for line in refund.basket["lines"]] == [1, 1]  # type: ignore[index]
    bad = runner.invoke(
        cli,
        ["terminal", "refund", "1", "--line", "x:1", "--reason", "r", "--data", data],
        obj=lambda: now[0],
    )
    assert bad.exit_code == 2 and "INDEX:QTY" in bad.output
    over = runner.invoke(
        cli,
        ["terminal", "refund", "1", "--line", "1:3", "--reason", "r", "--data", data],
        input=f"{PIN}\n",
        obj=lambda: now[0],
    )
    assert over.exit_code == 1
    message = "line 1 of sale 1 (POP): 2 of its 3 units are left to refund, not 3"
    assert str(over.exception) == message


# ------------------------------------------------------------------- pure allocation


@settings(max_examples=300, deadline=None)
@given(
    qty=st.integers(1, 12),
    unit_price=st.integers(1, 5000),
    amounts=st.lists(st.integers(0, 60_000), min_size=1, max_size=3),
    data=st.data(),
)
@example(qty=3, unit_price=1001, amounts=[1502, 1501], data=None)  # 50% off, then free items
def test_any_order_of_refunds_gives_back_exactly_the_discount(
    qty, unit_price, amounts, data
) -> None:
    """Any partition of a line's units into refunds gives back each rule's share
    exactly in all, the line's discount by its cumulative floor on the way, and never
    more than the units refunded cost (a line discounted almost whole by two rules gave
    back a fen more than its unit's price, a refund of net -0.01 that no upload takes)."""
    rules = tuple(f"r{k}" for k in range(len(amounts)))
    cap, capped = qty * unit_price, []  # a sale's discount is at most its gross
    for amount in amounts:
        capped.append(min(amount, cap))
        cap -= capped[-1]
    split = {rule: amount for rule, amount in zip(rules, capped, strict=True) if amount}
    line = {
        "sku": "A",
        "category": "general",
        "qty": qty,
        "unit_price": unit_price,
        "discount": sum(split.values()),
        "by_rule": split,
    }
    sale = Sale(
        seq=1, sale_id="s", at="2026-11-30T06:00:00Z", terminal_id="T1", merchant_id="M1",
        token="ab", pan_last4="1234", member=True, gross=qty * unit_price,
        discount=line["discount"], net=qty * unit_price - line["discount"],
        rules=tuple(split), roster_version=1, policy_version=1,
        basket={"lines": [line], "tier": 1, "discounts": split}, atc=None, kind=None,
        ref_seq=None, note=None, prev_hash="0" * 64, hash="h",
    )  # fmt: skip
    later: list[Sale] = []
    left, given = qty, Counter[str]()
    while left:
        take = data.draw(st.integers(1, left)) if data is not None else 1
        draft = refund_draft(sale, later, [(0, take)], "back", None, MONDAY)
        left -= take
        later.append(
            draft.complete(seq=len(later) + 2, sale_id="r", at=sale.at, prev_hash="", hash="")
        )
        assert draft.basket is not None
        for rule, amount in draft.basket["lines"][0]["by_rule"].items():
            given[rule] += amount
            assert given[rule] <= split[rule]
        assert sum(given.values()) == line["discount"] * (qty - left) // qty
        assert draft.gross - draft.discount == draft.net >= 0
    assert dict(given) == split
    with pytest.raises(ReversalError, match="0 of its"):
        refund_draft(sale, later, [(0, 1)], "more", None, MONDAY)


# ------------------------------------------------------ upload, ingest, settlement


def test_refunds_travel_and_the_settlement_nets_them(union, tmp_path: Path) -> None:
    """On SQLite and PostgreSQL: a refund's money comes off the settlement, the sale
    still counts; a void takes its sale out."""
    union.add_merchant("M0001", "Shop", 500)
    terminal = enrol_signing_terminal(union)
    journal = Journal(tmp_path / "journal.db", TEST_SIGNER)
    try:
        lines = {"lines": [dict(POP.as_json(), discount=300, by_rule={"r": 300})]}
        basket = {**lines, "tier": 1, "discounts": {"r": 300}}
        template = Sale(
            seq=0, sale_id="", at="", terminal_id="T1", merchant_id="M0001", token="ab" * 16,
            pan_last4="1234", member=True, gross=6000, discount=300, net=5700, rules=("r",),
            roster_version=1, policy_version=1, basket=basket, atc=None, kind=None,
            ref_seq=None, note=None, prev_hash="", hash="",
        )  # fmt: skip
        draft = SaleDraft(**{name: getattr(template, name) for name in DRAFT_FIELDS})
        first = journal.append(draft, MONDAY)
        journal.append(draft, MONDAY)
        journal.append_reversal(
            1, lambda s, later: refund_draft(s, later, [(0, 1)], "one", None, MONDAY), MONDAY
        )
        journal.append_reversal(
            2, lambda s, later: void_draft(s, later, "wrong", None, MONDAY), MONDAY
        )
        entries = journal.sales()
    finally:
        journal.close()
    assert first.seq == 1
    body = json.loads(json.dumps(encode_sales("T1", entries)))
    _, decoded = decode_sales(body)
    assert decoded == entries  # a refund on the wire and back
    result = union.ingest(terminal, decoded)
    assert result.accepted == 4
    [row] = [r for r in union.settlement() if r.merchant_id == "M0001"]
    assert (row.sales, row.member_sales, row.voids, row.refunds) == (1, 1, 1, 1)
    assert (row.gross, row.discount, row.net) == (6000 - 2000, 300 - 100, 5700 - 1900)
    assert union.store.sales_for("T1") == entries


@pytest.mark.browser
def test_the_cashier_page_refunds_with_the_pin(shop) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from central.serve import ThreadedServer
    from tests.test_web import chromium_driver

    service, _ = shop
    service.checkout(BASKET, confirm=True)
    driver = chromium_driver()
    try:
        app = create_app(service)
        with ThreadedServer(app) as web:
            browser_sign_in(driver, web.url, app)
            driver.get(web.url + "/")
            wait = WebDriverWait(driver, 15)
            button = (By.CSS_SELECTOR, "button.refund[data-seq='1']")
            wait.until(ec.element_to_be_clickable(button)).click()
            wait.until(ec.visibility_of_element_located((By.ID, "refund-qty-2")))
            assert driver.find_element(By.ID, "refund-qty-1").get_attribute("max") == "3"
            driver.find_element(By.ID, "refund-qty-2").clear()
            driver.find_element(By.ID, "refund-qty-2").send_keys("7")
            driver.find_element(By.ID, "refund-reason").send_keys("warm water")
            driver.find_element(By.ID, "refund-pin").send_keys("0000")
            driver.find_element(By.ID, "refund-confirm").click()
            wait.until(ec.text_to_be_present_in_element((By.ID, "refund-error"), "wrong"))
            assert service.journal.counts()[0] == 1
            driver.find_element(By.ID, "refund-pin").send_keys(PIN)
            driver.find_element(By.ID, "refund-confirm").click()
            verdict = (By.ID, "verdict")
            wait.until(ec.text_to_be_present_in_element(verdict, "Refund of sale #1 (entry #2)"))
            refund = service.journal.entry(2)
            assert refund is not None and refund.kind == "refund" and refund.note == "warm water"
            assert refund.basket is not None and refund.basket["lines"][0]["qty"] == 7
            assert f"pay back ¥{refund.net // 100}." in driver.find_element(*verdict).text
            wait.until(ec.text_to_be_present_in_element((By.ID, "recent"), "Refund of #1"))
            assert "Traceback" not in driver.page_source
    finally:
        driver.quit()


def test_the_till_voids_and_refunds_with_its_supervisor_token(shop) -> None:
    service, now = shop
    client = till_client(create_app(service))
    service.checkout(BASKET, confirm=True)
    service.checkout(BASKET, confirm=True)
    refund = {"lines": [{"index": 1, "qty": 1}], "reason": "one back"}
    # a token the terminal does not know (none made yet) does not even sign the call in
    unset = client.post("/api/v1/sales/1/refund", json=refund, headers=bearer("sup_x"))
    assert unset.status_code == 401 and unset.get_json()["kind"] == "unauthorized"
    data = ["--data", str(service.state.dir)]
    made = CliRunner().invoke(cli, ["terminal", "supervisor-token", *data], obj=lambda: now[0])
    assert made.exit_code == 0, made.output
    token = made.output.strip()
    kept = service.state.dir / "supervisor.token"
    assert kept.stat().st_mode & 0o077 == 0 and token not in kept.read_text()
    wrong = client.post("/api/v1/sales/1/refund", json=refund, headers=bearer(token + "x"))
    assert wrong.status_code == 401 and wrong.get_json()["kind"] == "unauthorized"
    done = client.post("/api/v1/sales/1/refund", json=refund, headers=bearer(token))
    assert done.status_code == 200 and done.get_json()["seq"] == 3
    void = client.post("/api/v1/sales/2/void", json={"reason": "twice"}, headers=bearer(token))
    assert void.status_code == 200 and void.get_json()["ref_seq"] == 2
    # a new token replaces the old one
    CliRunner().invoke(cli, ["terminal", "supervisor-token", *data], obj=lambda: now[0])
    old = client.post("/api/v1/sales/1/refund", json=refund, headers=bearer(token))
    assert old.status_code == 401
    assert service.journal.counts()[0] == 4


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_refund_has_its_receipt(shop) -> None:
    from escpos.printer import Dummy

    from terminal.printing import print_receipt

    service, _ = shop
    service.checkout(BASKET, confirm=True)
    service.refund(1, [(1, 2)], "two back", PIN)
    slip = service.receipt(2)
    assert slip.title == "Refund of sale 1" and slip.note == "two back"
    assert [(line.sku, line.qty) for line in slip.lines] == [("POP", 2)]
    refund = service.journal.entry(2)
    assert (
        refund is not None
        and slip.discount == f"{refund.discount // 100}.{refund.discount % 100:02d}"
    )
    assert slip.code and len(slip.code) >= 10
    page = till_client(create_app(service)).get("/receipt/2").get_data(as_text=True)
    assert "Refund of sale 1" in page and slip.code in page
    # it reads as money paid back, in Chinese first: it read "实收 Net" (money taken)
    assert slip.heading == "交易 1 退货 Refund of sale 1" and slip.net_label == "退还 Paid back"
    assert "交易 1 退货" in page and "退还 Paid back" in page and "实收" not in page
    printer = Dummy()
    print_receipt(printer, slip)
    assert b"Refund of sale 1" in printer.output and slip.code.encode() in printer.output
    printed = printer.output.decode("gb18030", errors="replace")
    assert "退还" in printed and "实收" not in printed
