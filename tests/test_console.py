"""The union's console (issue 14, items 2, 9 in part, 11): people with roles sign in
(argon2id, a lock after five wrong passwords, CSRF on every form), see in Chinese unless
they switch, and see only what their role allows; terminals keep their own keys. An
authorisation matrix covers every page and the terminals' API against every caller."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from central import create_app
from central.errors import InputError
from tests.conftest import Site
from tests.helpers import MEMBER_PAN
from tests.test_commands import one_line_error, run

PASSWORD = "correct horse battery"


@pytest.fixture
def console(site: Site, clock, tmp_path: Path) -> Iterator:
    """The central app (console and API) on the site's union, with people: an admin,
    an auditor, a user of M0001 and one of M0002 (which has a terminal too)."""
    union = site.union
    union.add_merchant("M0002", "Salon", 1000)
    union.enrol_terminal("T2", "M0002", site.url)
    for name, role, merchant in (
        ("ada", "admin", None),
        ("aud", "auditor", None),
        ("shop1", "merchant", "M0001"),
        ("salon", "merchant", "M0002"),
    ):
        union.add_user(name, role, merchant, PASSWORD)
    site.sync(clock)
    site.sell(MEMBER_PAN, 10000, clock)
    site.sync(clock)
    app = create_app({"DATA_DIR": str(tmp_path / "central"), "CLOCK": clock})
    yield app
    app.extensions["unioncard"].close()


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page) or re.search(
        r'name="csrf-token" content="([^"]+)"', page
    )
    assert found, page[:500]
    return found.group(1)


def sign_in(app, name: str, password: str = PASSWORD):
    browser = app.test_client()
    page = browser.get("/console/login").get_data(as_text=True)
    answer = browser.post(
        "/console/login", data={"name": name, "password": password, "csrf_token": _csrf(page)}
    )
    return browser, answer


def test_signing_in_in_chinese_then_english(console) -> None:
    page = console.test_client().get("/console/login").get_data(as_text=True)
    assert "登录" in page and "工会管理平台" in page and 'lang="zh-CN"' in page
    browser, answer = sign_in(console, "ada")
    assert answer.status_code == 302 and answer.headers["Location"].endswith("/console/")
    home = browser.get("/console/").get_data(as_text=True)
    assert "欢迎，ada" in home and "工会管理员" in home
    browser.get("/console/lang/en")
    home = browser.get("/console/").get_data(as_text=True)
    assert "Welcome, ada" in home and "union admin" in home
    # signing out needs the page's CSRF token
    assert browser.post("/console/logout").status_code == 400
    out = browser.post("/console/logout", data={"csrf_token": _csrf(home)})
    assert out.status_code == 302
    assert browser.get("/console/").status_code == 302  # to the sign-in page


def test_signing_out_ends_the_session_a_copied_cookie_held(console, clock) -> None:
    """Flask keeps the session in its signed cookie: a copy of it, taken before signing
    out, still signed in. Signing out now ends that person's sessions everywhere."""
    browser, _ = sign_in(console, "shop1")
    other, _ = sign_in(console, "shop1")  # another browser of the same person
    home = browser.get("/console/").get_data(as_text=True)
    assert "欢迎，shop1" in home
    cookie = browser.get_cookie("session")
    assert cookie is not None
    out = browser.post("/console/logout", data={"csrf_token": _csrf(home)})
    assert out.status_code == 302
    thief = console.test_client()
    thief.set_cookie("session", cookie.value, domain=cookie.domain)
    assert thief.get("/console/terminals").status_code == 302  # to the sign-in page
    assert other.get("/console/").status_code == 302
    again, _ = sign_in(console, "shop1")  # and signing in again works
    assert again.get("/console/").status_code == 200


def test_wrong_passwords_lock_the_account(console, clock) -> None:
    for _ in range(5):
        _, answer = sign_in(console, "shop1", "wrong password!")
        assert answer.status_code == 401
        assert "用户名或密码错误" in answer.get_data(as_text=True)
    _, answer = sign_in(console, "shop1")  # the right one, but locked: the same words
    assert answer.status_code == 401 and "用户名或密码错误" in answer.get_data(as_text=True)
    _, unknown = sign_in(console, "nobody")
    assert "用户名或密码错误" in unknown.get_data(as_text=True)  # no hint who exists
    clock.advance(timedelta(minutes=15))
    _, answer = sign_in(console, "shop1")
    assert answer.status_code == 302
    # an admin lifts a lock at once
    for _ in range(5):
        sign_in(console, "shop1", "wrong password!")
    assert sign_in(console, "shop1")[1].status_code == 401
    console.extensions["unioncard"].unlock_user("shop1")
    assert sign_in(console, "shop1")[1].status_code == 302
    # the form without its CSRF token is refused
    bare = console.test_client().post("/console/login", data={"name": "ada", "password": PASSWORD})
    assert bare.status_code == 400


def test_a_name_one_character_longer_is_not_the_account(console, clock) -> None:
    """Names were cut to 64 characters to look the account up, and its failures kept
    under the uncut name: "name" + "X" signed in as "name", and its wrong passwords
    never locked anything."""
    union = console.extensions["unioncard"]
    long = "a" * 64
    union.add_user(long, "admin", None, PASSWORD)
    _, answer = sign_in(console, long + "X")
    assert answer.status_code == 401  # the right password, the wrong name
    for _ in range(5):
        assert sign_in(console, long, "wrong password!")[1].status_code == 401
    _, answer = sign_in(console, long)  # the right one, but locked now
    assert answer.status_code == 401


def test_a_merchant_user_sees_only_its_own(console, clock) -> None:
    browser, _ = sign_in(console, "shop1")
    fleet = browser.get("/console/terminals").get_data(as_text=True)
    assert 'data-terminal="T1"' in fleet and 'data-terminal="T2"' not in fleet
    day = clock().date().isoformat()
    own = browser.get(f"/console/statement?merchant=M0001&from={day}&to={day}")
    assert own.status_code == 200 and "结算单" in own.get_data(as_text=True)
    assert "100.00" in own.get_data(as_text=True)
    other = browser.get(f"/console/statement?merchant=M0002&from={day}&to={day}")
    assert other.status_code == 403
    csv_answer = browser.get(f"/console/statement?merchant=M0001&from={day}&to={day}&format=csv")
    assert csv_answer.mimetype == "text/csv"
    assert "attachment" in csv_answer.headers["Content-Disposition"]
    assert "95.00" in csv_answer.get_data(as_text=True)
    admin, _ = sign_in(console, "ada")
    fleet = admin.get("/console/terminals").get_data(as_text=True)
    assert 'data-terminal="T1"' in fleet and 'data-terminal="T2"' in fleet
    assert "从未联系过工会" in fleet and "has never called" not in fleet  # T2: in Chinese


def test_the_authorisation_matrix(console, site: Site, clock) -> None:
    """Every page and the terminals' API, against every caller: the expected status."""
    union = site.union
    union.enrol_terminal("T9", "M0001", site.url)
    union.revoke_terminal("T9", "lost")
    terminal_header = {"Authorization": f"Bearer T1.{site.state.enrolment.api_secret}"}
    day = clock().date().isoformat()
    a_statement = f"/console/statement?merchant=M0001&from={day}&to={day}"
    b_statement = f"/console/statement?merchant=M0002&from={day}&to={day}"
    pages = ["/console/", "/console/terminals", "/console/statement", a_statement, b_statement]
    # the dashboard: the caller's own, A's, B's, and B's merchants table as CSV
    b_csv = "/console/dashboard?merchant=M0002&table=merchants&format=csv"
    pages += ["/console/dashboard", "/console/dashboard?merchant=M0001"]
    pages += ["/console/dashboard?merchant=M0002", b_csv]
    pages += ["/console/merchants"]  # the merchants list: union staff only
    api = ["/api/v1/snapshot?have=0", "/api/v1/usage", "/api/v1/root/1"]
    people = {name: sign_in(console, name)[0] for name in ("ada", "aud", "shop1", "salon")}
    anonymous = console.test_client()
    expected = {
        # caller: (statuses of pages, statuses of the API)
        "anonymous": ([302] * 10, [401] * 3),
        "ada": ([200] * 10, [401] * 3),
        "aud": ([200] * 10, [401] * 3),
        "shop1": ([200, 200, 200, 200, 403, 200, 200, 403, 403, 403], [401] * 3),
        "salon": ([200, 200, 200, 403, 200, 200, 403, 200, 200, 403], [401] * 3),
        "terminal T1": ([302] * 10, [200, 200, 200]),
        "revoked T9": ([302] * 10, [401] * 3),
    }
    seen = {}
    for caller, client in [("anonymous", anonymous), *people.items()]:
        seen[caller] = (
            [client.get(p).status_code for p in pages],
            [client.get(p).status_code for p in api],
        )
    terminal = console.test_client()
    seen["terminal T1"] = (
        [terminal.get(p, headers=terminal_header).status_code for p in pages],
        [terminal.get(p, headers=terminal_header).status_code for p in api],
    )
    revoked = {"Authorization": "Bearer T9.whatever"}
    seen["revoked T9"] = (
        [terminal.get(p, headers=revoked).status_code for p in pages],
        [terminal.get(p, headers=revoked).status_code for p in api],
    )
    assert seen == expected
    # the admins' forms, each POSTed with the caller's own CSRF token: an admin's empty
    # form is refused for what it lacks (400), anyone else's for who they are
    forms = ["/console/members", "/console/merchants", "/console/merchants/M0001/admit"]
    forms += ["/console/merchants/M0001/status", "/console/terminals/code"]
    posted = {}
    for caller, client in [("anonymous", anonymous), *people.items()]:
        page = client.get("/console/login" if caller == "anonymous" else "/console/")
        token = _csrf(page.get_data(as_text=True))
        posted[caller] = [client.post(f, data={"csrf_token": token}).status_code for f in forms]
    posted["terminal T1"] = [terminal.post(f, headers=terminal_header).status_code for f in forms]
    assert posted == {
        "anonymous": [302] * 5,  # to the sign-in page
        "ada": [400] * 5,
        "aud": [403] * 5,
        "shop1": [403] * 5,
        "salon": [403] * 5,
        "terminal T1": [400] * 5,  # no session, no CSRF token: refused before anything
    }
    assert site.union.store.merchant("M0001")["admitted_at"] is None  # nothing changed


def test_add_user_on_the_command_line(site: Site, tmp_path: Path, capsys, monkeypatch) -> None:
    data = ["--data", str(tmp_path / "central")]
    code, out, err = run(capsys, "central", "add-user", "ada", "--role", "admin", *data)
    assert (code, err) == (0, "")
    added, password_line = out.splitlines()
    assert added == "added admin ada" and password_line.startswith("password (shown once): ")
    password = password_line.split(": ", 1)[1]
    assert site.union.check_login("ada", password)["role"] == "admin"
    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough password\n"))
    code, out, _ = run(
        capsys, "central", "add-user", "shop1", "--role", "merchant", "--merchant", "M0001",
        "--password-stdin", *data,
    )  # fmt: skip
    assert (code, out.strip()) == (0, "added merchant shop1 of merchant M0001")
    assert site.union.check_login("shop1", "a long enough password")["merchant_id"] == "M0001"
    stored = site.union.store.user("shop1")
    assert stored is not None and stored["password_hash"].startswith("$argon2id$")
    assert "a long enough password" not in stored["password_hash"]
    for argv, words in (
        (("add-user", "ada", "--role", "admin"), "there is a user ada already"),
        (("add-user", "mm", "--role", "merchant"), "needs --merchant"),
        (("add-user", "x1", "--role", "auditor", "--merchant", "M0001"), "needs --merchant"),
        (("add-user", "x2", "--role", "merchant", "--merchant", "M404"), "M404"),
    ):
        code, _, err = run(capsys, "central", *argv, *data)
        assert code != 0
        one_line_error(err, words)
    with pytest.raises(InputError, match="too short"):
        site.union.add_user("bob", "auditor", None, "short")


@pytest.mark.browser
def test_the_console_in_chromium(console, clock) -> None:
    """A merchant's user signs in in Chinese, sees its terminals, switches to English,
    prints a statement and signs out, in headless Chromium."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from central.serve import ThreadedServer
    from tests.test_web import chromium_driver

    driver = chromium_driver()
    try:
        with ThreadedServer(console) as web:
            # a page being replaced can answer "node does not belong to the document" for
            # an element of the one before: ask again until the new one is there
            wait = WebDriverWait(driver, 30, ignored_exceptions=(WebDriverException,))
            driver.get(web.url + "/console/terminals")  # to the sign-in page first
            wait.until(ec.visibility_of_element_located((By.ID, "name")))
            assert "登录" in driver.page_source
            driver.find_element(By.ID, "name").send_keys("shop1")
            driver.find_element(By.ID, "password").send_keys("wrong password")
            driver.find_element(By.ID, "sign-in").click()
            wait.until(ec.text_to_be_present_in_element((By.ID, "error"), "用户名或密码错误"))
            wait.until(ec.visibility_of_element_located((By.ID, "password"))).send_keys(PASSWORD)
            driver.find_element(By.ID, "sign-in").click()
            wait.until(ec.presence_of_element_located((By.ID, "fleet")))  # where it was going
            rows = driver.find_elements(By.CSS_SELECTOR, "#fleet tr[data-terminal]")
            assert [r.get_attribute("data-terminal") for r in rows] == ["T1"]
            assert "终端" in driver.find_element(By.TAG_NAME, "h1").text
            driver.find_element(By.ID, "lang-en").click()
            wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Terminals"))
            driver.find_element(By.ID, "nav-statement").click()
            day = clock().date().strftime("%m%d%Y")  # Chromium's date input, en-US
            wait.until(ec.visibility_of_element_located((By.ID, "from"))).send_keys(day)
            driver.find_element(By.ID, "to").send_keys(day)
            driver.find_element(By.ID, "show").click()
            wait.until(
                ec.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Settlement statement")
            )
            # the form's page has that heading too: wait for the statement itself (under
            # load the page was read before the answer to the form had come)
            wait.until(lambda d: "95.00" in d.page_source)
            assert "Traceback" not in driver.page_source
            driver.back()
            wait.until(ec.element_to_be_clickable((By.ID, "logout"))).click()
            wait.until(ec.visibility_of_element_located((By.ID, "name")))
    finally:
        driver.quit()


def test_a_member_page_for_union_staff(console, site: Site) -> None:
    """The card's last four digits only, the history, the use at each merchant; not for
    a merchant's user."""
    admin, _ = sign_in(console, "aud")
    page = admin.get("/console/members?id=U1")
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and f"•••• {MEMBER_PAN[-4:]}" in text
    assert MEMBER_PAN not in text  # never the card number
    assert 'data-merchant="M0001"' in text and "5.00" in text  # the sale's discount
    assert "变更记录" in text
    assert admin.get("/console/members?id=U404").status_code == 404
    shop, _ = sign_in(console, "shop1")
    assert shop.get("/console/members?id=U1").status_code == 403


def test_the_consoles_catalogue_is_complete_and_compiled() -> None:
    """Every message of the console's pages has its Chinese, with the same placeholders,
    and messages.mo is the .po compiled (`make translations`)."""
    from babel.messages.mofile import read_mo
    from babel.messages.pofile import read_po

    folder = Path(__file__).resolve().parents[1] / "central" / "translations" / "zh" / "LC_MESSAGES"
    with open(folder / "messages.po", "rb") as fh:
        po = {m.id: m for m in read_po(fh) if m.id}
    for msgid, message in po.items():
        assert message.string and "fuzzy" not in message.flags, f"no Chinese for {msgid!r}"
        placeholders = sorted(re.findall(r"%\(\w+\)s", str(msgid)))
        assert placeholders == sorted(re.findall(r"%\(\w+\)s", message.string)), msgid
    with open(folder / "messages.mo", "rb") as fh:
        compiled = {m.id: m.string for m in read_mo(fh) if m.id}
    assert compiled == {k: m.string for k, m in po.items()}, "run `make translations`"
    # and every message the console's code and pages give is in it
    from babel.messages.extract import extract_from_dir
    from babel.messages.frontend import parse_mapping_cfg

    root = folder.parents[3]
    with open(root / "babel-central.cfg") as fh:
        method_map, options_map = parse_mapping_cfg(fh)
    given = {
        message[2] if isinstance(message[2], str) else message[2][0]
        for message in extract_from_dir(str(root), method_map, options_map)
    }
    assert given and given <= set(po), f"not in the catalogue: {sorted(given - set(po))}"


def test_four_eyes_on_a_policy(console, site: Site) -> None:
    """An admin drafts terms; the same admin cannot approve them; a second admin does,
    and only then is a new policy version signed. An auditor reads, a merchant's user
    does not even see the drafts."""
    site.union.add_user("ben", "admin", None, PASSWORD)
    before = site.union.store.latest_version("policy:M0001")
    ada, _ = sign_in(console, "ada")
    page = ada.get("/console/policies").get_data(as_text=True)
    terms = '{"rules": [{"id": "member-8", "kind": "percent_off", "basis_points": 800}]}'
    drafted = ada.post(
        "/console/policies", data={"merchant": "M0001", "terms": terms, "csrf_token": _csrf(page)}
    )
    assert drafted.status_code == 302
    [draft] = site.union.store.drafts()
    assert (draft["merchant_id"], draft["drafted_by"]) == ("M0001", "ada")
    page = ada.get("/console/policies").get_data(as_text=True)
    assert f'id="approve-{draft["id"]}"' not in page  # not for the one who drafted it
    own = ada.post(f"/console/policies/{draft['id']}/approve", data={"csrf_token": _csrf(page)})
    assert own.status_code == 401 and "双人复核" in own.get_data(as_text=True)  # four eyes
    assert site.union.store.latest_version("policy:M0001") == before  # nothing signed
    aud, _ = sign_in(console, "aud")
    audit_page = aud.get("/console/policies").get_data(as_text=True)
    assert f'data-draft="{draft["id"]}"' in audit_page and 'id="approve-' not in audit_page
    assert (
        aud.post(
            f"/console/policies/{draft['id']}/approve", data={"csrf_token": _csrf(audit_page)}
        ).status_code
        == 403
    )
    shop, _ = sign_in(console, "shop1")
    assert shop.get("/console/policies").status_code == 403
    ben, _ = sign_in(console, "ben")
    page = ben.get("/console/policies").get_data(as_text=True)
    assert f'id="approve-{draft["id"]}"' in page
    approved = ben.post(
        f"/console/policies/{draft['id']}/approve", data={"csrf_token": _csrf(page)}
    )
    assert approved.status_code == 302
    after = site.union.store.latest_version("policy:M0001")
    assert before is not None and after is not None and after[0] == before[0] + 1
    assert site.union.store.draft(draft["id"])["decision"] == "approved"  # type: ignore[index]
    page = ada.get("/console/policies").get_data(as_text=True)
    bad = ada.post(
        "/console/policies", data={"merchant": "M0001", "terms": "[1]", "csrf_token": _csrf(page)}
    )
    assert bad.status_code == 400 and "不是 JSON 对象" in bad.get_data(as_text=True)
    stale = ada.post("/console/policies", data={"merchant": "M0001", "terms": terms})
    assert stale.status_code == 400 and "表单已过期" in stale.get_data(as_text=True)


def test_a_merchants_registry_admission_and_history(
    console, site: Site, tmp_path: Path, capsys
) -> None:
    data = ["--data", str(tmp_path / "central")]
    code, out, err = run(
        capsys, "central", "add-merchant", "M0007", "--name", "Huangpu Pharmacy", "--discount",
        "8", "--category", "pharmacy", "--district", "Huangpu", "--address", "1 Nanjing Rd",
        "--contact", "Ms Li 021-5555", *data,
    )  # fmt: skip
    assert code == 0, err
    code, out, err = run(
        capsys, "central", "admit-merchant", "M0007", "--by", "ada",
        "--standard", "no discount on prescription medicine",
        "--standard", "members served like everyone", *data,
    )  # fmt: skip
    assert (code, out.strip()) == (0, "merchant M0007 admitted by ada: 2 standards"), err
    code, _, err = run(
        capsys, "central", "admit-merchant", "M0007", "--by", "aud", "--standard", "x", *data
    )
    assert code == 1 and "'aud' is not a union admin" in err
    suspend = ("set-status", "M0007", "suspended", "--reason", "hygiene inspection failed")
    assert run(capsys, "central", *suspend, "--by", "ada", *data)[0] == 0
    ada, _ = sign_in(console, "ada")
    page = ada.get("/console/merchants/M0007").get_data(as_text=True)
    assert "Huangpu Pharmacy" in page and "1 Nanjing Rd" in page and "pharmacy" in page
    assert "☑ no discount on prescription medicine" in page and "由 ada 准入" in page
    statuses = re.findall(r'<td class="status">(\w+)</td><td>([^<]+)</td>', page)
    assert statuses == [("正常", "-"), ("暂停", "hygiene inspection failed")]  # in Chinese
    assert page.count("<td>v") == 2  # the policy at admission, and at the suspension
    shop, _ = sign_in(console, "shop1")
    assert shop.get("/console/merchants/M0007").status_code == 403
    assert shop.get("/console/merchants/M0001").status_code == 200
    assert ada.get("/console/merchants/M404").status_code == 404


def test_the_audit_page_in_chinese(console, site: Site, clock) -> None:
    """The auditor runs the audit of a merchant on the console: its findings explained
    in Chinese (here a complaint), filtered by kind; not for a merchant's user."""
    day = clock().date()
    site.union.add_complaint("M0001", day, "refused the discount", "5010", "ada")
    aud, _ = sign_in(console, "aud")
    page = aud.get(f"/console/audit?merchant=M0001&from={day}&to={day}")
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and 'data-kind="complaint"' in text
    row = re.search(r"<tr data-kind=\"complaint\"[^>]*>(.*?)</tr>", text, re.S)
    assert row and "<td>投诉</td>" in row.group(1), text[text.find("findings") :][:1500]
    assert f"会员 {day} 的投诉（卡 •••• 5010）：refused the discount" in text
    only = aud.get(f"/console/audit?merchant=M0001&from={day}&to={day}&kind=over_discount")
    assert "没有发现问题" in only.get_data(as_text=True)
    bad = aud.get("/console/audit?merchant=M0001&from=yesterday&to=today")
    assert bad.status_code == 400
    month = aud.get(f"/console/audit?merchant=M0001&from={day - timedelta(days=30)}&to={day}")
    assert month.status_code == 200  # 31 days: a look runs while the page waits
    year = aud.get(f"/console/audit?merchant=M0001&from={day - timedelta(days=31)}&to={day}")
    text = year.get_data(as_text=True)
    assert year.status_code == 400 and 'id="findings"' not in text
    assert "不保存结果的查看最多覆盖 31 天" in text  # and says to run the audit instead
    shop, _ = sign_in(console, "shop1")
    assert shop.get("/console/audit").status_code == 403
