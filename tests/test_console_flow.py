"""The admins' forms of the union's console (issue 14): members imported from a CSV
upload, merchants added, admitted and suspended or exited, one-time enrolment codes made
for new terminals; and the issue's "Done when" flow in headless Chromium, against the
real central service on loopback, with a real terminal enrolled by code: admin A
imports members, adds and admits a merchant and drafts a policy, admin B approves it, A
makes an enrolment code, the terminal enrols, syncs, sells to a member and syncs again,
and the statement shows the sale and the dashboard draws its charts. Screenshots go to
$UNIONCARD_SCREENSHOTS (docs/ with `make screenshots`)."""

from __future__ import annotations

import io
import os
import re
import shlex
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from central import create_app
from central.keys import create_keys
from central.serve import ThreadedServer
from central.service import CentralPaths, Union
from central.statement import UNION_TIMEZONE
from central.store import enrol_codes
from pact.cards import PanTokenizer
from pact.enrolcode import code_digest, normal_code
from reader.identity import identity_from_pan
from terminal.checkout import checkout
from terminal.journal import Journal
from terminal.state import TerminalState
from tests.conftest import Clock, Site, wall_clock
from tests.helpers import MEMBER_PAN, OTHER_PAN, with_luhn
from tests.test_commands import run
from tests.test_console import PASSWORD, _csrf, console, sign_in  # noqa: F401 - the fixture

THIRD_PAN = with_luhn("625900000033303")
MEMBERS_CSV = (
    "member_id,pan,status,tier,valid_until,district,workplace\n"
    f"U1,{MEMBER_PAN},active,1,,Huangpu,Shanghai Port No. 3 Dock\n"
    f"U2,{OTHER_PAN},active,0,,Xuhui,Xuhui Textile Mill\n"
    f"U3,{THIRD_PAN},active,0,,Huangpu,Nanjing Road Department Store\n"
)
ZONE = ZoneInfo(UNION_TIMEZONE)


def _upload(browser, content: str | bytes | None, **fields: str):
    """POST a members file (None: none chosen) with the page's form fields."""
    page = browser.get("/console/members").get_data(as_text=True)
    data: dict[str, object] = {"csrf_token": _csrf(page), "publish": "on", **fields}
    if content is not None:
        raw = content.encode("utf-8") if isinstance(content, str) else content
        data["file"] = (io.BytesIO(raw), "members.csv")
    return browser.post("/console/members", data=data, content_type="multipart/form-data")


def test_importing_members_from_the_console(console, site: Site) -> None:  # noqa: F811
    """A good file: the import's result line and a new roster; a bad one: its line and
    what is wrong, no traceback, nothing imported; --full marks the missing as left."""
    ada, _ = sign_in(console, "ada")
    before = site.union.store.latest_version("roster")
    answer = _upload(ada, MEMBERS_CSV)
    text = answer.get_data(as_text=True)
    assert answer.status_code == 200, text
    assert "读取 3 名会员：新增 2 名，变更 1 名，离会 0 名。" in text  # U1 gained a district
    after = site.union.store.latest_version("roster")
    assert before is not None and after is not None and after[0] == before[0] + 1
    assert f"名册 v{after[0]} 已签名：3 名会员。" in text
    assert site.union.store.member("U3")["district"] == "Huangpu"  # type: ignore[index]
    # a bad line rejects the whole file: named, nothing written
    bad = MEMBERS_CSV.replace("U1,", "U9,") + "U4,4111111111111112,active,0,,Minhang,x\n"
    answer = _upload(ada, bad)
    text = answer.get_data(as_text=True)
    assert answer.status_code == 400 and "Traceback" not in text
    assert "文件被拒绝，未导入任何会员：成员文件第 5 行：成员" in text and "的卡号无效" in text
    assert site.union.store.member("U9") is None
    assert site.union.store.latest_version("roster") == after
    not_utf8 = _upload(ada, b"member_id,pan\n\xff\xfe,1\n")
    assert not_utf8.status_code == 400 and "UTF-8" in not_utf8.get_data(as_text=True)
    assert _upload(ada, None).status_code == 400  # no file chosen
    too_big = ada.post(  # refused before it is read (raw bytes: no temporary file)
        "/console/members",
        data=b"x" * (4 * 1024 * 1024 + 1),
        content_type="multipart/form-data; boundary=x",
    )
    assert too_big.status_code == 413 and "文件太大" in too_big.get_data(as_text=True)
    # --full: the members missing from the file have left, without a new roster
    answer = _upload(ada, MEMBERS_CSV.rsplit("U3,", 1)[0], full="on", publish="")
    text = answer.get_data(as_text=True)
    assert "离会 1 名" in text and "签发新的名册后" in text
    assert site.union.store.member("U3")["status"] == "left"  # type: ignore[index]
    assert site.union.store.latest_version("roster") == after
    aud, _ = sign_in(console, "aud")
    page = aud.get("/console/members").get_data(as_text=True)
    assert 'id="import"' not in page  # an auditor reads, changes nothing
    assert _upload(aud, MEMBERS_CSV).status_code == 403


def test_adding_admitting_and_changing_a_merchants_status(
    console,  # noqa: F811
    site: Site,
    clock,
) -> None:
    ada, _ = sign_in(console, "ada")
    page = ada.get("/console/merchants").get_data(as_text=True)
    assert 'data-merchant="M0001"' in page and 'data-merchant="M0002"' in page
    fields = {
        "merchant_id": "M0007",
        "name": "Huangpu Pharmacy",
        "discount": "7.5",
        "category": "pharmacy",
        "district": "Huangpu",
        "address": "1 Nanjing Rd",
        "contact": "Ms Li 021-5555",
        "csrf_token": _csrf(page),
    }
    added = ada.post("/console/merchants", data=fields)
    assert added.status_code == 302 and added.headers["Location"].endswith("/merchants/M0007")
    row = site.union.store.merchant("M0007")
    assert (row["basis_points"], row["category"], row["contact"]) == (
        750,
        "pharmacy",
        "Ms Li 021-5555",
    )
    page = ada.get("/console/merchants/M0007").get_data(as_text=True)
    assert "已添加商户 M0007；已签发政策 v1。" in page and "1 Nanjing Rd" in page
    for bad, words in (
        ({"merchant_id": "M 7"}, "商户编号"),
        ({"discount": "101"}, "0 到 100"),
        ({"discount": "5.555"}, "0 到 100"),
        ({"discount": "1e999999999"}, "0 到 100"),  # past Decimal's range: was a 500
        ({"name": "  "}, "名称"),
        ({}, "商户 M0007 已存在"),
    ):
        again = ada.post("/console/merchants", data={**fields, **bad})
        assert again.status_code == 400 and words in again.get_data(as_text=True), bad
        assert 'value="Huangpu Pharmacy"' in again.get_data(as_text=True) or "name" in bad
    # the admission: the standards, one a line
    standards = "no discount on prescription medicine\n\n  members served like everyone \n"
    admitted = ada.post(
        "/console/merchants/M0007/admit", data={"standards": standards, "csrf_token": _csrf(page)}
    )
    assert admitted.status_code == 302
    page = ada.get("/console/merchants/M0007").get_data(as_text=True)
    assert "☑ members served like everyone" in page and "由 ada 准入" in page
    empty = ada.post(
        "/console/merchants/M0007/admit", data={"standards": " ", "csrf_token": _csrf(page)}
    )
    assert empty.status_code == 400 and "请填写商户同意遵守的标准" in empty.get_data(as_text=True)
    # a suspension from a time in the union's time zone (8 hours ahead of UTC)
    later = clock().astimezone(ZONE).replace(second=0, microsecond=0, tzinfo=None)
    later = later.replace(hour=23, minute=30)
    change = {
        "status": "suspended",
        "reason": "hygiene inspection failed",
        "csrf_token": _csrf(page),
    }
    suspended = ada.post(
        "/console/merchants/M0007/status", data={**change, "effective": later.isoformat()}
    )
    assert suspended.status_code == 302, suspended.get_data(as_text=True)
    page = ada.get("/console/merchants/M0007").get_data(as_text=True)
    utc = later.replace(tzinfo=ZONE).astimezone(ZoneInfo("UTC"))
    assert f'<td>{utc:%Y-%m-%dT%H:%M}:00Z</td><td class="status">暂停</td>' in page
    assert f"自 {later:%Y-%m-%d %H:%M} (Asia/Shanghai) 起为暂停" in page
    for bad, words, status in (
        ({"reason": " "}, "原因", 400),
        ({"effective": "tomorrow"}, "YYYY-MM-DD HH:MM", 400),
        ({"effective": "2020-01-01T00:00"}, "已过：变更只能现在或以后生效", 400),
        ({"status": "exited"}, "退出是最终的", 400),  # not confirmed
    ):
        refused = ada.post("/console/merchants/M0007/status", data={**change, **bad})
        assert refused.status_code == status and words in refused.get_data(as_text=True), bad
    exited = ada.post(
        "/console/merchants/M0007/status", data={**change, "status": "exited", "final": "on"}
    )
    assert exited.status_code == 302
    final = ada.post("/console/merchants/M0007/status", data={**change, "status": "active"})
    assert final.status_code == 409 and "退出是最终的" in final.get_data(as_text=True)
    assert (
        ada.post(
            "/console/merchants/M404/admit", data={"standards": "x", "csrf_token": _csrf(page)}
        ).status_code
        == 404
    )
    # an auditor sees the list and the page, without the forms
    aud, _ = sign_in(console, "aud")
    page = aud.get("/console/merchants/M0007").get_data(as_text=True)
    assert 'id="set-status"' not in page and 'id="admit"' not in page
    assert 'id="add-merchant"' not in aud.get("/console/merchants").get_data(as_text=True)


def test_an_enrolment_code_on_the_terminals_page(console, site: Site, clock) -> None:  # noqa: F811
    ada, _ = sign_in(console, "ada")
    page = ada.get("/console/terminals").get_data(as_text=True)
    answer = ada.post(
        "/console/terminals/code",
        data={"merchant": "M0002", "terminal": "T0042", "csrf_token": _csrf(page)},
    )
    text = answer.get_data(as_text=True)
    assert answer.status_code == 200 and answer.headers["Cache-Control"] == "no-store"
    code = re.search(r'<code id="enrol-code"[^>]*>([A-Z0-9-]+)</code>', text)
    assert code, text
    command = re.search(r'<pre id="enrol-command" class="command">([^<]+)</pre>', text)
    assert command and command.group(1) == (
        f"unioncard terminal enrol --central http://localhost --code {code.group(1)}"
    )
    expires = (clock() + timedelta(hours=24)).astimezone(ZONE)
    assert f"{expires:%Y-%m-%d %H:%M} (Asia/Shanghai)" in text and "T0042" in text
    # the code is the union's: it enrols T0042 for M0002 once
    with site.union.store.engine.connect() as conn:
        held = conn.execute(sa.select(enrol_codes)).mappings().all()
    assert [(r["terminal_id"], r["merchant_id"]) for r in held] == [("T0042", "M0002")]
    assert held[0]["code_sha256"] == code_digest(normal_code(code.group(1)))  # type: ignore[arg-type]
    for terminal, merchant, words in (
        ("T1", "M0001", "终端 T1 已经登记"),
        ("T 1", "M0001", "终端编号"),
        ("T0043", "M404", "M404"),
    ):
        refused = ada.post(
            "/console/terminals/code",
            data={"merchant": merchant, "terminal": terminal, "csrf_token": _csrf(page)},
        )
        assert refused.status_code in (400, 404) and words in refused.get_data(as_text=True)
        assert 'id="enrol-code"' not in refused.get_data(as_text=True)
    aud, _ = sign_in(console, "aud")
    page = aud.get("/console/terminals").get_data(as_text=True)
    assert 'id="make-code"' not in page
    assert (
        aud.post(
            "/console/terminals/code",
            data={"merchant": "M0001", "terminal": "T0044", "csrf_token": _csrf(page)},
        ).status_code
        == 403
    )


# ----------------------------------------------------------------- the Done-when flow
@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Union, str, Clock]]:
    """A new union (keys, two admins, nothing else) served on loopback; its clock is the
    wall clock's now, as the terminal's commands read the wall clock."""
    clock = wall_clock()
    paths = CentralPaths(tmp_path / "central")
    create_keys(paths.keys, now=clock())
    union = Union.open(paths, None, clock)
    union.add_user("ada", "admin", None, PASSWORD)
    union.add_user("ben", "admin", None, PASSWORD)
    app = create_app({"DATA_DIR": str(paths.data_dir), "CLOCK": clock})
    with ThreadedServer(app) as server:
        yield union, server.url, clock
    app.extensions["unioncard"].close()
    union.close()


def _shot(driver, tmp_path: Path, name: str) -> None:
    """A screenshot into $UNIONCARD_SCREENSHOTS (docs/ with `make screenshots`), else
    the test's own folder; the page's full height."""
    folder = Path(os.environ.get("UNIONCARD_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, max(700, min(int(height) + 160, 2400)))
    driver.save_screenshot(str(folder / name))


@pytest.mark.browser
def test_the_done_when_flow_in_chromium(served, tmp_path: Path, capsys) -> None:
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from tests.test_web import chromium_driver

    union, url, clock = served
    members = tmp_path / "members.csv"
    members.write_text(MEMBERS_CSV, encoding="utf-8")
    driver = chromium_driver()
    wait = WebDriverWait(driver, 30, ignored_exceptions=(WebDriverException,))

    def sign_in_as(name: str) -> None:
        driver.get(url + "/console/login")
        wait.until(ec.visibility_of_element_located((By.ID, "name"))).send_keys(name)
        driver.find_element(By.ID, "password").send_keys(PASSWORD)
        driver.find_element(By.ID, "sign-in").click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "who"), name))

    def go(path: str, ready: str) -> None:
        driver.get(url + path)
        wait.until(ec.presence_of_element_located((By.ID, ready)))

    def submit(button: str) -> None:
        clicked = driver.find_element(By.ID, button)
        clicked.click()
        wait.until(ec.staleness_of(clicked))

    def text_of(element_id: str) -> str:
        element = wait.until(ec.visibility_of_element_located((By.ID, element_id)))
        return str(element.text)

    try:
        # admin A: members from a CSV file, in Chinese
        sign_in_as("ada")
        go("/console/members", "import")
        assert "导入会员" in driver.page_source
        driver.find_element(By.ID, "file").send_keys(str(members))
        submit("import-button")
        assert "读取 3 名会员：新增 3 名" in text_of("imported")
        assert "名册 v1 已签名：3 名会员。" in text_of("imported")
        _shot(driver, tmp_path, "console-members.png")
        # a merchant with its registry entry, then its admission
        driver.find_element(By.ID, "nav-merchants").click()
        wait.until(ec.presence_of_element_located((By.ID, "add-merchant")))
        for field, value in (
            ("merchant_id", "M0001"),
            ("name", "黄浦大药房"),
            ("discount", "5"),
            ("category", "pharmacy"),
            ("district", "黄浦区"),
            ("address", "南京东路 1 号"),
            ("contact", "李女士 021-5555-0101"),
        ):
            driver.find_element(By.ID, field).send_keys(value)
        submit("add")
        assert "已添加商户 M0001；已签发政策 v1。" in driver.page_source
        driver.find_element(By.ID, "standards-text").send_keys(
            "会员与其他顾客同等服务\n处方药不打折\n明码标价，折扣在收据上列出"
        )
        submit("admit-button")
        assert [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#standards li")] == [
            "☑ 会员与其他顾客同等服务",
            "☑ 处方药不打折",
            "☑ 明码标价，折扣在收据上列出",
        ]
        assert "由 ada 准入" in driver.page_source
        _shot(driver, tmp_path, "console-merchant.png")
        # a policy draft: 8% off for members
        driver.find_element(By.ID, "nav-policies").click()
        terms = '{"rules": [{"id": "member-8", "kind": "percent_off", "basis_points": 800}]}'
        wait.until(ec.visibility_of_element_located((By.ID, "terms"))).send_keys(terms)
        submit("draft")
        [draft] = union.store.drafts()
        assert driver.find_element(By.CSS_SELECTOR, f'tr[data-draft="{draft["id"]}"]')
        assert not driver.find_elements(By.ID, f"approve-{draft['id']}")  # four eyes
        submit("logout")
        # admin B approves it: policy v2 is signed
        sign_in_as("ben")
        go("/console/policies", "drafts")
        submit(f"approve-{draft['id']}")
        assert not driver.find_elements(By.CSS_SELECTOR, f'tr[data-draft="{draft["id"]}"]')
        latest = union.store.latest_version("policy:M0001")
        assert latest is not None and latest[0] == 2
        submit("logout")
        # admin A makes a one-time code for a new terminal
        sign_in_as("ada")
        go("/console/terminals", "make-code")
        Select(driver.find_element(By.ID, "code-merchant")).select_by_value("M0001")
        driver.find_element(By.ID, "code-terminal").send_keys("T0001")
        submit("make-code-button")
        code = text_of("enrol-code")
        argv = shlex.split(text_of("enrol-command"))
        assert argv == ["unioncard", "terminal", "enrol", "--central", url, "--code", code]
        _shot(driver, tmp_path, "console-enrol-code.png")
        # the real terminal enrols with it (its first sync included), as the page says
        folder = tmp_path / "terminal"
        exit_code, out, err = run(capsys, *argv[1:], "--data", str(folder))
        assert (exit_code, err) == (0, ""), err
        assert "installed roster v1, installed policy v2" in out
        assert run(capsys, "sync", "--data", str(folder))[0] == 0
        # a member's sale (a card read without a reader), synced
        state = TerminalState.open(folder)
        state.load()
        journal = Journal(state.journal_path, state.signer())
        try:
            tokens = PanTokenizer(state.enrolment.token_key)
            identity = identity_from_pan("unionpay", b"\xa0", MEMBER_PAN, "2030-12", tokens)
            sale = checkout(state.current, state.enrolment, journal, identity, 12800, clock())
        finally:
            journal.close()
        assert (sale.member, sale.sale.discount, sale.sale.net) == (True, 1024, 11776)
        exit_code, out, err = run(capsys, "sync", "--data", str(folder))
        assert exit_code == 0 and out.startswith("sync: uploaded 1"), (out, err)
        # the fleet shows it; the statement shows the sale
        go("/console/terminals", "fleet")
        assert driver.find_element(By.CSS_SELECTOR, '#fleet tr[data-terminal="T0001"]')
        driver.find_element(By.ID, "nav-statement").click()
        at = datetime.fromisoformat(sale.sale.at.replace("Z", "+00:00")).astimezone(ZONE)
        day = at.date().strftime("%m%d%Y")  # Chromium's date input, en-US
        wait.until(ec.visibility_of_element_located((By.ID, "from"))).send_keys(day)
        driver.find_element(By.ID, "to").send_keys(day)
        submit("show")
        wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "h1"), "结算单"))
        page = driver.page_source
        assert "黄浦大药房" in page and "128.00" in page and "10.24" in page and "117.76" in page
        assert "member-8" in page and "Traceback" not in page
        _shot(driver, tmp_path, "console-statement.png")
        # the dashboard's charts are drawn
        go("/console/dashboard", "table-silent")
        sections = driver.find_elements(By.CSS_SELECTOR, "section.dash")
        assert sections
        for section in sections:
            svg = section.find_element(By.CSS_SELECTOR, ".dash-chart svg")
            assert svg.size["width"] > 100 and svg.size["height"] > 20
        bar = driver.find_element(By.CSS_SELECTOR, "#chart-merchants rect.bar")
        assert float(bar.get_attribute("width")) > 0  # the sale at M0001
        assert "统计看板" in driver.find_element(By.TAG_NAME, "h1").text
        driver.save_screenshot(str(tmp_path / "dashboard.png"))  # docs/ has the fuller one
    finally:
        driver.quit()


def test_the_admins_forms_in_english(console) -> None:  # noqa: F811
    """The English switch: the same forms and answers, in English."""
    ada, _ = sign_in(console, "ada")
    ada.get("/console/lang/en")
    expected = {
        "/console/members": "The file is every member",
        "/console/merchants": "Add the merchant",
        "/console/merchants/M0001": "I understand that an exit is final",
        "/console/terminals": "Make a one-time enrolment code",
    }
    for path, words in expected.items():
        page = ada.get(path).get_data(as_text=True)
        assert words in page and 'lang="en"' in page, path
    answer = _upload(ada, MEMBERS_CSV)
    assert "Read 3 members: 2 new, 1 changed, 0 left the union." in answer.get_data(as_text=True)
    page = ada.get("/console/terminals").get_data(as_text=True)
    made = ada.post(
        "/console/terminals/code",
        data={"merchant": "M0001", "terminal": "T0005", "csrf_token": _csrf(page)},
    )
    assert "One-time enrolment code for terminal T0005 of merchant M0001" in made.get_data(
        as_text=True
    )


def test_the_console_import_says_how_many_may_leave(console, site: Site) -> None:  # noqa: F811
    """The import form's "members who may leave" (--allow-left): a full import marking
    more left than it says is refused whole; a value that is not a count is one line."""
    ada, _ = sign_in(console, "ada")
    assert _upload(ada, MEMBERS_CSV).status_code == 200
    without_u3 = MEMBERS_CSV.rsplit("U3,", 1)[0]
    answer = _upload(ada, without_u3, full="on", allow_left="0")
    text = answer.get_data(as_text=True)
    assert answer.status_code == 400, text
    assert "成员文件会把 1 名成员标记为已离会，超过允许的 0 名" in text
    assert site.union.store.member("U3")["status"] == "active"  # type: ignore[index]
    for odd in ("abc", "-1", "１", "9" * 5000):
        answer = _upload(ada, without_u3, full="on", allow_left=odd)
        assert answer.status_code == 400 and "Traceback" not in answer.get_data(as_text=True)
    answer = _upload(ada, without_u3, full="on", allow_left="1")
    assert answer.status_code == 200 and "离会 1 名" in answer.get_data(as_text=True)


def test_odd_addresses_and_days_are_answered_not_500(console, site: Site) -> None:  # noqa: F811
    """A next= with a newline (Werkzeug refuses it in a Location header) and days out of
    the years the union keeps were 500s."""
    ada, _ = sign_in(console, "ada")
    for where in ("/console/lang/en?next=/console/terminals%0a", "/console/lang/zh?next=//x"):
        answer = ada.get(where)
        assert answer.status_code == 302 and answer.headers["Location"].endswith("/console/")
    browser = console.test_client()
    page = browser.get("/console/login").get_data(as_text=True)
    signed = browser.post(
        "/console/login?next=/console/terminals%0d%0aX-Evil:1",
        data={"name": "ada", "password": PASSWORD, "csrf_token": _csrf(page)},
    )
    assert signed.status_code == 302 and "X-Evil" not in str(signed.headers)
    for path in (
        "/console/statement?merchant=M0001&from=2026-11-01&to=9999-12-31",
        "/console/statement?merchant=M0001&from=0001-01-01&to=0001-01-01&format=csv",
        "/console/audit?merchant=M0001&from=9999-12-30&to=9999-12-31",
    ):
        answer = ada.get(path)
        assert answer.status_code == 400, (path, answer.status_code)
        assert "2000" in answer.get_data(as_text=True), path


def test_a_character_no_database_keeps_is_refused_before_anything_is_written(
    console,  # noqa: F811
    site: Site,
) -> None:
    """A NUL in a console form (PostgreSQL refuses it) was a 500 after the merchant and
    its signed policy were kept and its registry entry not (a lone surrogate is refused
    the same way, central.service.storable)."""
    ada, _ = sign_in(console, "ada")
    page = ada.get("/console/merchants").get_data(as_text=True)
    fields = {"merchant_id": "M0009", "name": "Noodles", "discount": "5", "csrf_token": _csrf(page)}
    for odd in ("No.1\x00Road", "\x00"):
        answer = ada.post("/console/merchants", data={**fields, "address": odd})
        assert answer.status_code == 400 and "无法保存的字符" in answer.get_data(as_text=True)
    assert ada.get("/console/statement?merchant=M0001&from=2026-11-01%00").status_code == 400
    assert "M0009" not in [m["merchant_id"] for m in site.union.store.merchants()]
    pan = with_luhn("622202000000999")
    answer = _upload(ada, MEMBERS_CSV + f"U9,{pan},active,0,,Huang\x00pu,x\n")
    text = answer.get_data(as_text=True)
    assert answer.status_code == 400 and "第 5 行：有无法存储的字符" in text
