"""Settlement statements (issue 14, item 7): per merchant and period, in the union's time
zone (Asia/Shanghai), by day and by rule, voids and refunds netted, the union's subsidy
where the signed policy says the union funds a rule; CSV and a printable page. On
SQLite and PostgreSQL, from sales made by real terminals and uploaded."""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from central.statement import statement_csv, statement_html
from pact.basket import Basket
from pact.money import fen
from terminal.supervisor import set_pin
from tests.conftest import Site
from tests.helpers import MEMBER_PAN
from tests.test_commands import run
from tests.test_policy_checkout import FILM, POPCORN, terms
from tests.test_shared_quota import PIN, shop  # noqa: F401 - the two tills' fixture


def test_a_statement_by_local_day_and_rule_with_the_unions_subsidy(shop, clock) -> None:  # noqa: F811
    union, till1, till2 = shop
    cinema = terms("cinema")
    for rule in cinema["rules"]:
        if rule["id"] == "free-film":
            rule["funded_by"] = "union"  # the union pays for the free film
    union.publish_policy("M0001", cinema)
    till1.sync(clock)
    till2.sync(clock)
    set_pin(till1.service.state.dir, PIN)
    # 23:30 on the 28th in Shanghai (15:30 UTC)
    clock.now = datetime(2026, 11, 28, 15, 30, tzinfo=UTC)
    first = till1.service.checkout(Basket((FILM, POPCORN)), confirm=True)
    assert first.sale.discount == 4700  # film free (union), snacks 10% (merchant)
    # 00:30 on the 29th in Shanghai (16:30 UTC the 28th): another till, another day
    clock.now = datetime(2026, 11, 28, 16, 30, tzinfo=UTC)
    second = till2.service.checkout(Basket((POPCORN, POPCORN)), confirm=True)
    assert second.sale.discount == 400
    voided = till1.service.checkout(Basket((POPCORN,)), confirm=True)
    till1.service.void(voided.sale.seq, "wrong basket", PIN)
    till1.sync(clock)
    till2.sync(clock)

    statement = union.statement("M0001", date(2026, 11, 28), date(2026, 11, 29))
    day28, day29 = statement.days
    assert (day28.day, day28.sales, day28.gross, day28.discount, day28.net) == (
        date(2026, 11, 28), 1, 6500, 4700, 1800,
    )  # fmt: skip
    assert day28.union_pays == 4500
    # the void took its sale out, in count and money
    assert (day29.sales, day29.voids, day29.gross, day29.discount, day29.union_pays) == (
        1, 1, 4000, 400, 0,
    )  # fmt: skip
    rules = {r.rule_id: r for r in statement.rules}
    assert (rules["free-film"].funded_by, rules["free-film"].uses, rules["free-film"].discount) == (
        "union", 1, 4500,
    )  # fmt: skip
    assert (rules["snacks-10"].uses, rules["snacks-10"].discount) == (2, 600)
    assert statement.total.union_pays == 4500 and statement.total.discount == 5100

    # the union's days also for the settlement: from the 29th local, the film sale is out
    [row] = [r for r in union.settlement(date(2026, 11, 29), None) if r.merchant_id == "M0001"]
    assert (row.sales, row.gross) == (1, 4000)

    rows = list(csv.DictReader(io.StringIO(statement_csv(statement))))
    # made before the 29th ended, the tills may still hold sales of these days: the
    # statement says it is provisional and which terminals it waits for
    assert [r["section"] for r in rows] == [*"day day total rule rule".split(), *["awaiting"] * 2]
    assert [(r["title"], r["day"]) for r in rows[5:]] == [
        ("T1", "2026-11-28"),
        ("T2", "2026-11-28"),
    ]
    # a rule's title is the merchant's text: never a formula in the union's spreadsheet
    titled = replace(statement.rules[0], title='=HYPERLINK("http://evil.example","Total")')
    forged = list(csv.DictReader(io.StringIO(statement_csv(replace(statement, rules=[titled])))))
    assert forged[3]["title"] == "'" + titled.title and forged[2]["net"] == rows[2]["net"]
    assert rows[2]["union_pays"] == "45.00" and rows[2]["discount"] == "51.00"
    assert rows[3]["rule"] == "free-film" and rows[3]["funded_by"] == "union"
    page = statement_html(statement)
    assert "结算单" in page and "工会补贴" in page and "45.00" in page
    assert "暂定结算单" in page and "T1 (2026-11-28T16:30:00Z)" in page
    assert "Settlement statement" in statement_html(statement, "en")
    # after the period's end: till 2 has synced everything, till 1 not yet
    clock.now = datetime(2026, 11, 29, 16, 5, tzinfo=UTC)
    till2.sync(clock)
    assert union.statement("M0001", date(2026, 11, 28), date(2026, 11, 29)).awaiting == [
        ("T1", "2026-11-28T16:30:00Z")
    ]
    till1.sync(clock)
    final = union.statement("M0001", date(2026, 11, 28), date(2026, 11, 29))
    assert final.awaiting == [] and final.total == statement.total
    assert "暂定" not in statement_html(final) and "awaiting" not in statement_csv(final)


def test_the_statement_command_writes_csv_and_a_page(site: Site, clock, tmp_path, capsys) -> None:
    site.sync(clock)
    site.sell(MEMBER_PAN, 10000, clock)
    site.sync(clock)
    day = clock().astimezone(ZoneInfo("Asia/Shanghai")).date().isoformat()
    out_csv, out_html = tmp_path / "s.csv", tmp_path / "s.html"
    code, out, err = run(
        capsys, "central", "statement", "--merchant", "M0001", "--from", day, "--to", day,
        "--csv", str(out_csv), "--html", str(out_html), "--data", str(tmp_path / "central"),
    )  # fmt: skip
    assert code == 0, err
    assert out.splitlines()[0].startswith("statement of M0001 (Shop)")
    # the day has not ended: the terminal may journal more of it
    assert f"warning: provisional: 1 terminal(s) have not synced everything since {day}" in err
    assert out.splitlines()[2].split() == [
        day,
        "1",
        "1",
        "100.00",
        "5.00",
        "95.00",
        "0",
        "0",
        "0.00",
    ]
    rows = list(csv.DictReader(io.StringIO(out_csv.read_text(encoding="utf-8-sig"))))
    assert (rows[0]["day"], rows[0]["net"]) == (day, "95.00")
    assert "结算单" in out_html.read_text()
    code, _, err = run(
        capsys, "central", "statement", "--merchant", "M0001", "--from", day, "--to", "2000-01-01",
        "--data", str(tmp_path / "central"),
    )  # fmt: skip
    assert code == 1 and "before its first" in err
    for command in ("statement", "audit"):  # days past the years kept: an OverflowError
        argv = ["central", command, "--merchant", "M0001", "--from", "9999-12-30", "--to"]
        argv = [*argv, "9999-12-31", "--data", str(tmp_path / "central")]
        if command == "audit":
            argv.insert(2, "run")
        code, _, err = run(capsys, *argv)
        assert code == 1 and err.strip().splitlines() == [
            "error: 9999-12-30 is not a day of the years 2000 to 9998"
        ], (command, err)


def test_each_sale_is_funded_as_its_own_policy_says(shop, clock) -> None:  # noqa: F811
    """A rule the union funded under one policy version and the merchant under the next:
    the union pays for the sales made under the first only, whichever the statement
    reads first (the first sale's funder held for the whole period before)."""
    union, till1, _ = shop
    cinema = terms("cinema")

    def fund_snacks(by: str) -> None:
        for rule in cinema["rules"]:
            if rule["id"] == "snacks-10":
                rule["funded_by"] = by
        union.publish_policy("M0001", cinema)
        till1.sync(clock)

    fund_snacks("merchant")
    merchants = till1.service.checkout(Basket((POPCORN,)), confirm=True).sale  # the 28th
    clock.advance(timedelta(days=1))
    fund_snacks("union")
    unions = till1.service.checkout(Basket((POPCORN,)), confirm=True).sale  # the 29th
    assert merchants.policy_version < unions.policy_version
    snacks = [s.basket["discounts"]["snacks-10"] for s in (merchants, unions)]  # type: ignore[index]
    assert snacks[0] == snacks[1] > 0
    till1.sync(clock)

    statement = union.statement("M0001", date(2026, 11, 28), date(2026, 11, 29))
    assert [(d.day.day, d.union_pays) for d in statement.days] == [(28, 0), (29, snacks[1])]
    assert statement.total.union_pays == snacks[1]
    rows = [(r.funded_by, r.uses, r.discount) for r in statement.rules if r.rule_id == "snacks-10"]
    assert sorted(rows) == [("merchant", 1, snacks[0]), ("union", 1, snacks[1])]
    lines = list(csv.DictReader(io.StringIO(statement_csv(statement))))
    paid = {r["funded_by"]: r["union_pays"] for r in lines if r["rule"] == "snacks-10"}
    assert paid == {"merchant": "", "union": fen(snacks[1])}
