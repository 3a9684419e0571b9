"""The statistics dashboard (issue 14, item 8): running totals kept by ingest and the
members' import (equal to a recomputation from the sales and the member history, on
SQLite and PostgreSQL; a batch sent again counts once; an upgraded database is filled
from what it held), and the console's page: charts as SVG with a table and a CSV each,
the union's for its staff, a merchant's own only for its user."""

from __future__ import annotations

import csv
import io
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from central import migrate
from central.service import Union
from central.statement import UNION_TIMEZONE
from central.store import (
    Store,
    make_engine,
    member_history,
    member_monthly,
    sales,
    sales_daily,
    sales_monthly,
)
from pact.cards import luhn_complete
from pact.chain import GENESIS, seal
from pact.sale import Sale, SaleDraft
from pact.tally import SALE_FIGURES
from tests.conftest import pg_schema
from tests.test_console import PASSWORD, console, sign_in  # noqa: F401 - the console fixture
from tests.test_migrations import _upgrade

ZONE = ZoneInfo(UNION_TIMEZONE)
STAMP = "2026-01-01T00:00:00Z"


def entries(terminal_id: str, merchant_id: str, specs: list[tuple], start: int = 1) -> list[Sale]:
    """A chain of entries: (at, kind, member, gross, discount, ref_seq) each."""
    out, prev = [], GENESIS
    for seq, (at, kind, member, gross, discount, ref) in enumerate(specs, start):
        draft = SaleDraft(
            terminal_id=terminal_id,
            merchant_id=merchant_id,
            token="ab" * 16 if member else None,
            pan_last4="5010",
            member=member,
            gross=gross,
            discount=discount,
            net=gross - discount,
            rules=("member-5",) if discount else (),
            roster_version=1,
            policy_version=1,
            kind=kind,
            ref_seq=ref,
            note="wrong basket" if kind else None,
        )
        sale = seal(draft, seq=seq, sale_id=f"{terminal_id}-{seq}", at=at, prev_hash=prev)
        out.append(sale)
        prev = sale.hash
    return out


# Around midnight in Shanghai (16:00 UTC), across a month's end, with voids, refunds,
# an event, sales without a member or a discount.
T1_SPECS = [
    ("2026-10-31T15:59:59Z", None, True, 10000, 500, None),  # the 31st in Shanghai
    ("2026-10-31T16:00:00Z", None, True, 20000, 1000, None),  # 1 November in Shanghai
    ("2026-10-31T16:05:00Z", "void", True, 20000, 1000, 2),
    ("2026-11-02T03:00:00Z", None, False, 5000, 0, None),
    ("2026-11-02T04:00:00Z", "event", False, 0, 0, None),
    ("2026-11-03T04:00:00Z", None, True, 8000, 400, None),
    ("2026-11-04T04:00:00Z", "refund", True, 2000, 100, 6),
]
T2_SPECS = [
    ("2026-11-01T02:00:00Z", None, True, 3000, 300, None),
    ("2026-11-01T02:30:00Z", None, True, 4000, 400, None),
    ("2026-11-20T02:00:00Z", "refund", True, 1000, 100, 1),
]


def recomputed(store: Store) -> dict[tuple[date, str], Counter]:
    """The daily figures straight from the sales table (the test's own arithmetic)."""
    out: dict[tuple[date, str], Counter] = defaultdict(Counter)
    with store.engine.connect() as conn:
        for r in conn.execute(sa.select(sales)).mappings():
            if r["kind"] not in (None, "void", "refund"):
                continue
            day = datetime.fromisoformat(r["at"].replace("Z", "+00:00")).astimezone(ZONE).date()
            c = out[(day, r["merchant_id"])]
            counted = {None: 1, "void": -1, "refund": 0}[r["kind"]]
            money = 1 if r["kind"] is None else -1
            c["sales"] += counted
            c["member_sales"] += counted if r["member"] else 0
            c["discounted"] += counted if r["discount"] > 0 else 0
            for name in ("gross", "discount", "net"):
                c[name] += money * r[name]
            c["voids"] += r["kind"] == "void"
            c["refunds"] += r["kind"] == "refund"
    return out


def held(store: Store, table: sa.Table, keys: tuple[str, ...]) -> dict[tuple, Counter]:
    with store.engine.connect() as conn:
        return {
            tuple(r[k] for k in keys): Counter({f: r[f] for f in SALE_FIGURES})
            for r in conn.execute(sa.select(table)).mappings()
        }


def assert_totals_match(store: Store) -> None:
    expected = recomputed(store)
    assert held(store, sales_daily, ("day", "merchant_id")) == {
        k: Counter({f: v[f] for f in SALE_FIGURES}) for k, v in expected.items()
    }
    monthly: dict[tuple, Counter] = defaultdict(Counter)
    for (day, merchant), c in expected.items():
        monthly[(f"{day:%Y-%m}", merchant)].update(c)
    assert held(store, sales_monthly, ("month", "merchant_id")) == {
        k: Counter({f: v[f] for f in SALE_FIGURES}) for k, v in monthly.items()
    }


def _merchants(store: Store) -> None:
    store.add_merchant("M0001", "Huangpu Market", 500, STAMP)
    store.add_merchant("M0002", "Jing'an Salon", 1000, STAMP)
    store.set_registry("M0001", category="supermarket")
    store.set_registry("M0002", category="salon")


def test_totals_after_ingest_equal_the_sales_recounted(store: Store) -> None:
    _merchants(store)
    t1 = entries("T1", "M0001", T1_SPECS)
    t2 = entries("T2", "M0002", T2_SPECS)
    assert store.ingest("T1", "M0001", t1[:3], STAMP).accepted == 3
    assert store.ingest("T2", "M0002", t2, STAMP).accepted == 3
    # the first batch again with the rest (a retry after a lost answer): counted once
    again = store.ingest("T1", "M0001", t1, STAMP)
    assert (again.accepted, again.duplicates) == (4, 3)
    assert store.ingest("T1", "M0001", t1, STAMP).accepted == 0  # and again: nothing new
    assert_totals_match(store)
    daily = held(store, sales_daily, ("day", "merchant_id"))
    # the local days: 23:59:59 on 31 October, then 1 November with its void
    assert daily[(date(2026, 10, 31), "M0001")]["sales"] == 1
    nov1 = daily[(date(2026, 11, 1), "M0001")]
    assert (nov1["sales"], nov1["gross"], nov1["voids"]) == (0, 0, 1)
    # the same totals as the settlement's own SQL over the sales
    by_merchant = {r["merchant_id"]: r for r in store.use_by_merchant("2026-01", "2026-12")}
    for row in store.settlement():
        mine = by_merchant[row.merchant_id]
        assert (mine["sales"], mine["member_sales"], mine["gross"]) == (
            row.sales,
            row.member_sales,
            row.gross,
        )
        assert (mine["discount"], mine["net"], mine["voids"], mine["refunds"]) == (
            row.discount,
            row.net,
            row.voids,
            row.refunds,
        )
    assert by_merchant["M0001"]["category"] == "supermarket"
    months = store.use_by_month("2026-10", "2026-11", "M0001")
    assert [(m["month"], m["sales"]) for m in months] == [("2026-10", 1), ("2026-11", 2)]


def _replay_members(store: Store) -> dict[str, dict[str, Counter]]:
    """Per month: active members by district at its end, and joined/left, from the
    member history alone (each member's standing at each month's end)."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(member_history).order_by(member_history.c.member_id, member_history.c.id)
        ).mappings()
        history: dict[str, list] = defaultdict(list)
        for r in rows:
            month = datetime.fromisoformat(r["at"].replace("Z", "+00:00")).astimezone(ZONE)
            history[r["member_id"]].append((f"{month:%Y-%m}", dict(r)))
    months = sorted({m for h in history.values() for m, _ in h})
    out: dict[str, dict[str, Counter]] = {}
    for month in months:
        active, moved = Counter(), Counter()
        for h in history.values():
            before = [r for m, r in h if m < month]
            upto = [r for m, r in h if m <= month]
            if upto and upto[-1]["status"] == "active":
                active[upto[-1]["district"] or ""] += 1
            was = bool(before) and before[-1]["status"] != "left"
            now = bool(upto) and upto[-1]["status"] != "left"
            moved["joined"] += now and not was
            moved["left"] += was and not now
        out[month] = {"active": active, "moved": moved}
    return out


def _from_totals(store: Store) -> dict[str, dict[str, Counter]]:
    running: Counter = Counter()
    out: dict[str, dict[str, Counter]] = {}
    for r in store.members_by_month():
        running[r["place"]] += r["active"]
        entry = out.setdefault(r["month"], {"active": Counter(), "moved": Counter()})
        entry["moved"]["joined"] += r["joined"]
        entry["moved"]["left"] += r["left"]
        entry["active"] = Counter({k: v for k, v in running.items() if v})
    return out


def members_csv(rows: list[tuple[str, int, str, str, str]]) -> str:
    lines = ["member_id,pan,status,district,workplace"]
    for member_id, n, status, district, workplace in rows:
        lines.append(
            f"{member_id},{luhn_complete(f'62148300{n:07d}')},{status},{district},{workplace}"
        )
    return "\n".join(lines) + "\n"


def _imports(union: Union, clock) -> None:
    clock.now = datetime(2026, 1, 10, 2, 0, tzinfo=UTC)
    union.import_members(
        members_csv(
            [
                ("U1", 1, "active", "Huangpu", "Steelworks"),
                ("U2", 2, "active", "Huangpu", "Docks"),
                ("U3", 3, "active", "Minhang", "Textiles"),
                ("U4", 4, "suspended", "Minhang", "Textiles"),
            ]
        )
    )
    clock.now = datetime(2026, 3, 31, 17, 0, tzinfo=UTC)  # 1 April in Shanghai
    union.import_members(
        members_csv(
            [
                ("U1", 1, "active", "Minhang", "Textiles"),  # moved
                ("U2", 2, "suspended", "Huangpu", "Docks"),
                ("U4", 4, "active", "Minhang", "Textiles"),
                ("U5", 5, "active", "", ""),  # no place given
            ]
        )
    )
    clock.now = datetime(2026, 5, 5, 2, 0, tzinfo=UTC)
    union.import_members(  # U2 and U3 missing from a full file: left
        members_csv(
            [
                ("U1", 1, "active", "Minhang", "Textiles"),
                ("U4", 4, "active", "Minhang", "Textiles"),
                ("U5", 5, "active", "", ""),
            ]
        ),
        full=True,
    )
    clock.now = datetime(2026, 6, 5, 2, 0, tzinfo=UTC)
    union.import_members(members_csv([("U3", 3, "active", "Minhang", "Textiles")]))  # back


def test_member_totals_equal_the_history_replayed(union: Union, clock) -> None:
    _imports(union, clock)
    totals = _from_totals(union.store)
    assert totals == _replay_members(union.store)
    assert totals["2026-01"]["active"] == Counter({"Huangpu": 2, "Minhang": 1})
    assert totals["2026-04"]["active"] == Counter({"Minhang": 3, "": 1})  # U3 stays
    assert totals["2026-05"]["moved"] == Counter({"joined": 0, "left": 2})
    assert totals["2026-06"]["moved"]["joined"] == 1
    workplaces = union.store.members_by_month("Minhang")
    assert {(r["month"], r["place"]) for r in workplaces} >= {("2026-04", "Textiles")}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'central.db'}"
        return
    with pg_schema() as found:
        yield found


def test_the_upgrade_fills_the_totals_from_what_was_held(url: str, union_keys, clock) -> None:
    """A database of the release before (0009) with sales and members: migrated, its
    totals are those ingest and imports would have kept; and they go on from there."""
    engine = make_engine(url)
    _upgrade(engine, "0009")
    with engine.begin() as conn:
        for merchant_id, name, category in (
            ("M0001", "Market", "supermarket"),
            ("M0002", "Salon", None),
        ):
            conn.execute(
                sa.text(
                    "INSERT INTO merchants (merchant_id, name, status, basis_points, "
                    "status_changed_at, category) VALUES (:m, :n, 'active', 500, :at, :c)"
                ),
                {"m": merchant_id, "n": name, "at": STAMP, "c": category},
            )
        for sale in [*entries("T1", "M0001", T1_SPECS), *entries("T2", "M0002", T2_SPECS)]:
            row = dict(sale.as_row(), received_at=STAMP, receipt_code=None)
            conn.execute(sales.insert().values(**{k: v for k, v in row.items() if k in sales.c}))
        for i, (member_id, at, status, district) in enumerate(
            [
                ("U1", "1970-01-01T00:00:00Z", "active", "Huangpu"),
                ("U1", "2026-03-01T00:00:00Z", "active", "Minhang"),
                ("U2", "2026-03-01T00:00:00Z", "active", "Huangpu"),
                ("U2", "2026-04-01T00:00:00Z", "left", "Huangpu"),
            ]
        ):
            conn.execute(
                sa.text(
                    "INSERT INTO member_history (id, member_id, at, status, tier, district, "
                    "workplace) VALUES (:i, :m, :at, :s, 0, :d, NULL)"
                ),
                {"i": i + 1, "m": member_id, "at": at, "s": status, "d": district},
            )
    assert migrate.upgrade(engine)[1] == migrate.head()
    store = Store(engine)
    try:
        assert_totals_match(store)
        assert held(store, sales_daily, ("day", "merchant_id"))  # not empty
        assert _from_totals(store) == _replay_members(store)
        with engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(member_monthly)).scalar()
        # and ingest goes on adding to them
        more = entries(
            "T2", "M0002", [*T2_SPECS, ("2026-11-21T02:00:00Z", None, True, 900, 90, None)]
        )
        assert store.ingest("T2", "M0002", more, STAMP).accepted == 1
        assert_totals_match(store)
    finally:
        store.close()


# --------------------------------------------------------------------- the console
class Tables(HTMLParser):
    """The cells of each <table id="table-KEY">, and the page's <svg> charts by section."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.charts: dict[str, int] = Counter()
        self._table: str | None = None
        self._chart: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs) -> None:
        a = dict(attrs)
        if tag == "table" and (a.get("id") or "").startswith("table-"):
            self._table = a["id"].removeprefix("table-")
            self.tables[self._table] = []
        elif tag == "div" and (a.get("id") or "").startswith("chart-"):
            self._chart = a["id"].removeprefix("chart-")
        elif tag == "svg" and self._chart:
            self.charts[self._chart] += 1
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = []

    def handle_endtag(self, tag) -> None:
        if tag == "table":
            self._table = None
        elif tag == "svg":
            self._chart = None
        elif tag in ("td", "th") and self._cell is not None and self._table:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data) -> None:
        if self._cell is not None:
            self._cell.append(data)


def parsed(text: str) -> Tables:
    found = Tables()
    found.feed(text)
    return found


def test_the_union_dashboard_with_a_csv_beside_each_table(console, clock) -> None:  # noqa: F811
    admin, _ = sign_in(console, "aud")
    page = admin.get("/console/dashboard")
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and "统计看板" in text
    found = parsed(text)
    keys = ["merchants", "categories", "months", "districts", "joins", "silent"]
    assert list(found.tables) == keys
    assert all(found.charts[k] == 1 for k in keys)
    # the sale the console's terminal synced: 100.00, 5.00 off, a member's
    [header, *rows] = found.tables["merchants"]
    assert header[0] == "商户" and [r[0] for r in rows] == ["M0001"]
    assert rows[0][3:9] == ["1", "1", "1", "100.00", "5.00", "95.00"]
    assert rows[0][-1] == "100.0%"
    for key in keys:
        answer = admin.get(f"/console/dashboard?table={key}&format=csv")
        assert answer.mimetype == "text/csv"
        assert "attachment" in answer.headers["Content-Disposition"]
        table = list(csv.reader(io.StringIO(answer.get_data().decode("utf-8-sig"))))
        shown = [r for r in found.tables[key] if r != ["没有数据。"]]
        assert table == shown, key
    assert admin.get("/console/dashboard?table=nothing&format=csv").status_code == 404
    assert admin.get("/console/dashboard?from=2026-13").status_code == 400
    # longer than the 60 months a page shows: said, not cut short (it stopped at 2024-12
    # under the heading 2020-01 to 2026-11, this month's sale left out)
    longer = admin.get("/console/dashboard?from=2020-01&to=2026-11")
    assert longer.status_code == 400 and "60" in longer.get_data(as_text=True)
    assert admin.get("/console/dashboard?from=2021-12&to=2026-11").status_code == 200
    admin.get("/console/lang/en")
    english = admin.get("/console/dashboard").get_data(as_text=True)
    assert "Use by merchant" in english and "<svg" in english


def test_a_merchant_user_sees_its_own_figures_only(console, site, clock) -> None:  # noqa: F811
    # the other merchant's terminal sells too
    union = site.union
    t2 = entries("T2", "M0002", [(STAMP.replace("01-01", "11-28"), None, True, 777700, 7700, None)])
    union.store.ingest("T2", "M0002", t2, STAMP)
    shop, _ = sign_in(console, "shop1")
    page = shop.get("/console/dashboard").get_data(as_text=True)
    found = parsed(page)
    assert list(found.tables) == ["merchants", "months", "days", "silent"]
    assert "M0002" not in page and "Salon" not in page and "7777.00" not in page
    assert [r[0] for r in found.tables["merchants"][1:]] == ["M0001"]
    for key in ("categories", "districts", "joins"):
        assert shop.get(f"/console/dashboard?table={key}&format=csv").status_code == 404
    text = shop.get("/console/dashboard?table=merchants&format=csv").get_data(as_text=True)
    assert "M0001" in text and "M0002" not in text
    assert shop.get("/console/dashboard?merchant=M0002").status_code == 403
    assert (
        shop.get("/console/dashboard?merchant=M0002&format=csv&table=merchants").status_code == 403
    )
    # union staff may look at one merchant; the union's view shows both
    admin, _ = sign_in(console, "ada")
    one = parsed(admin.get("/console/dashboard?merchant=M0002").get_data(as_text=True))
    assert [r[0] for r in one.tables["merchants"][1:]] == ["M0002"]
    both = parsed(admin.get("/console/dashboard").get_data(as_text=True))
    assert [r[0] for r in both.tables["merchants"][1:]] == ["M0001", "M0002"]
    assert admin.get("/console/dashboard?merchant=M404").status_code == 404


def test_terminals_silent_past_their_limit(console, site, clock) -> None:  # noqa: F811
    """T1 synced at the start; T2 never called. After 30 hours both are past the
    warning (24 hours), after 80 past the stop (72)."""
    admin, _ = sign_in(console, "ada")
    rows = parsed(admin.get("/console/dashboard").get_data(as_text=True)).tables["silent"]
    assert rows[1:] == [["没有数据。"]]
    clock.advance(timedelta(hours=30))
    rows = parsed(admin.get("/console/dashboard").get_data(as_text=True)).tables["silent"][1:]
    assert sorted(r[0] for r in rows) == ["T1", "T2"]
    assert all(r[5] == "超过警告时限" and r[4] == "24 / 72" for r in rows)
    clock.advance(timedelta(hours=50))
    rows = parsed(admin.get("/console/dashboard").get_data(as_text=True)).tables["silent"][1:]
    assert all(r[5] == "超过停止时限：不再优惠" for r in rows)
    shop, _ = sign_in(console, "shop1")
    own = parsed(shop.get("/console/dashboard").get_data(as_text=True)).tables["silent"][1:]
    assert [r[0] for r in own] == ["T1"]
    site.union.revoke_terminal("T2", "lost")  # a revoked terminal is no longer watched
    rows = parsed(admin.get("/console/dashboard").get_data(as_text=True)).tables["silent"][1:]
    assert [r[0] for r in rows] == ["T1"]


@pytest.mark.browser
def test_the_dashboard_in_chromium(console, clock) -> None:  # noqa: F811
    """An auditor opens the dashboard in headless Chromium: every section has its chart
    drawn (an SVG with bars or lines) and its table, in Chinese, then in English."""
    import os

    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from central.serve import ThreadedServer
    from tests.test_web import chromium_driver

    driver = chromium_driver()
    try:
        with ThreadedServer(console) as web:
            wait = WebDriverWait(driver, 30, ignored_exceptions=(WebDriverException,))
            driver.get(web.url + "/console/dashboard")
            wait.until(ec.visibility_of_element_located((By.ID, "name"))).send_keys("aud")
            driver.find_element(By.ID, "password").send_keys(PASSWORD)
            driver.find_element(By.ID, "sign-in").click()
            wait.until(ec.presence_of_element_located((By.ID, "table-silent")))
            assert "统计看板" in driver.find_element(By.TAG_NAME, "h1").text
            sections = driver.find_elements(By.CSS_SELECTOR, "section.dash")
            assert len(sections) == 6
            for section in sections:
                svg = section.find_element(By.CSS_SELECTOR, ".dash-chart svg")
                assert svg.size["width"] > 100 and svg.size["height"] > 20  # laid out
                assert section.find_element(By.TAG_NAME, "table").is_displayed()
                assert section.find_element(By.CSS_SELECTOR, "a.csv").get_attribute("href")
            bar = driver.find_element(By.CSS_SELECTOR, "#chart-merchants rect.bar")
            assert float(bar.get_attribute("width")) > 0  # the one merchant's use
            assert driver.find_elements(By.CSS_SELECTOR, "#chart-months polyline.line")
            if os.environ.get("UNIONCARD_SCREENSHOTS"):
                driver.set_window_size(1280, 2400)
                driver.save_screenshot(
                    os.path.join(os.environ["UNIONCARD_SCREENSHOTS"], "dashboard.png")
                )
            driver.find_element(By.ID, "lang-en").click()
            wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Dashboard"))
            assert "Use by merchant" in driver.page_source
            assert "Traceback" not in driver.page_source
    finally:
        driver.quit()
