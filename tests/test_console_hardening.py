"""The union's console, hardened (a reviewer's findings, each reproduced first):

1. four eyes saw rule ids only: the second admin reads the draft's whole terms in
   plain words and what they change against the policy in force, before approving
   (the console and `unioncard central drafts`);
2. an approval signed before it claimed the decision: a draft rejected meanwhile was
   signed, two approvals signed twice, and a failed signing left its terms stored;
3. tries of a password that arrived together were all checked (the failures read,
   the password checked, the lock decided from the count read);
4. a locked account answered in other words than an unknown name;
5. the session cookie over HTTPS lacked Secure, and no Strict-Transport-Security;
6. a merchant's user saw the drafts of its merchant;
7. a member's page lost the member's use after a new card;
8. the partners list ignored a rule's dates and holidays;
9. the console's errors were the API's JSON, and some named command-line flags;
10. a complaint's card was English inside a translated finding.

Each runs on SQLite and on PostgreSQL where the database decides it.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import central.service as service_module
from central import create_app
from central.errors import AuthError, ConflictError
from central.keys import create_keys
from central.partners import terms_changes
from central.service import LOCK_AFTER, CentralPaths, Union
from central.store import signed_files
from pact.cards import luhn_complete
from pact.chain import GENESIS, seal
from pact.policy import parse_terms
from pact.sale import SaleDraft
from pact.text import Msg
from pact.timefmt import iso
from tests.conftest import Clock
from tests.helpers import MEMBER_PAN
from tests.test_commands import run

PASSWORD = "correct horse battery"
PEOPLE = (
    ("ada", "admin", None),
    ("bob", "admin", None),
    ("cyd", "admin", None),
    ("aud", "auditor", None),
    ("shop1", "merchant", "M0001"),
)


def _union(tmp_path: Path, clock: Clock, url: str | None) -> tuple[CentralPaths, Union]:
    paths = CentralPaths(tmp_path / "central")
    create_keys(paths.keys, now=clock())
    union = Union.open(paths, url, clock)
    union.import_members(f"member_id,pan\nU1,{MEMBER_PAN}\n")
    union.add_merchant("M0001", "Shop", 500)
    union.add_merchant("M0002", "Salon", 1000)
    for name, role, merchant in PEOPLE:
        union.add_user(name, role, merchant, PASSWORD)
    return paths, union


@pytest.fixture
def union(tmp_path: Path, clock: Clock, database_url: str | None) -> Iterator[Union]:
    _, made = _union(tmp_path, clock, database_url)
    yield made
    made.close()


@pytest.fixture
def app(tmp_path: Path, clock: Clock, union: Union, database_url: str | None) -> Iterator[Any]:
    app = create_app(
        {"DATA_DIR": str(tmp_path / "central"), "DATABASE_URL": database_url, "CLOCK": clock}
    )
    yield app
    app.extensions["unioncard"].close()


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page) or re.search(
        r'name="csrf-token" content="([^"]+)"', page
    )
    assert found, page[:500]
    return found.group(1)


def sign_in(app: Any, name: str, password: str = PASSWORD, **headers: Any) -> tuple[Any, Any]:
    browser = app.test_client()
    page = browser.get("/console/login", **headers).get_data(as_text=True)
    answer = browser.post(
        "/console/login",
        data={"name": name, "password": password, "csrf_token": _csrf(page)},
        **headers,
    )
    return browser, answer


def _token(browser: Any) -> str:
    return _csrf(browser.get("/console/").get_data(as_text=True))


def _error(answer: Any) -> str:
    found = re.search(r'id="error"[^>]*>(.*?)</p>', answer.get_data(as_text=True), re.S)
    assert found, answer.get_data(as_text=True)[:800]
    return found.group(1)


# ------------------------------------------------------- 1. four eyes: what the approver reads
BLIND = {"rules": [{"id": "member-discount", "kind": "percent_off", "basis_points": 10000,
                   "funded_by": "union"}]}  # fmt: skip


def test_the_second_admin_reads_the_terms_and_what_they_change_before_approving(
    app: Any, union: Union
) -> None:
    """A draft that keeps the rule id member-discount but gives 100 % off, paid by the
    union, and drops the standard exclusions, was approved by an admin who saw
    "member-discount" only. The page now says it all, before the Approve button."""
    ada, _ = sign_in(app, "ada")
    drafted = ada.post(
        "/console/policies",
        data={"csrf_token": _token(ada), "merchant": "M0001", "terms": json.dumps(BLIND)},
    )
    assert drafted.status_code == 302
    [draft] = union.store.drafts()
    bob, _ = sign_in(app, "bob")
    bob.get("/console/lang/en")
    page = bob.get("/console/policies").get_data(as_text=True)
    approve = page.index(f'id="approve-{draft["id"]}"')
    terms = page[page.index(f'id="terms-{draft["id"]}"') : approve]
    assert "rule member-discount: 100% off, on every item, paid by the union" in terms
    assert "never discounted: nothing" in terms and "refunds: within 30 days" in terms
    changes = page[page.index(f'id="changes-{draft["id"]}"') : approve]
    assert "against policy v1 in force" in page[:approve]
    for line in (
        "rule member-discount, offer: 5% off → 100% off",
        "rule member-discount, who pays: paid by the merchant → paid by the union",
        "never discounted: gift_card, lottery, prescription, tobacco → nothing",
    ):
        assert line in changes, changes
    assert "cap:" not in changes and "quota:" not in changes  # what did not change: not said


def test_every_change_of_a_draft_is_named(clock: Clock) -> None:
    """Rules added, removed, changed (kind and amount, cap, who pays, quota, when,
    eligibility), the exclusions, the refund days, the offline limits."""
    before = parse_terms(
        {
            "exclude": {"categories": ["tobacco"]},
            "rules": [
                {"id": "a", "kind": "percent_off", "basis_points": 500},
                {"id": "gone", "kind": "amount_off", "amount": 300},
            ],
        }
    )
    after = parse_terms(
        {
            "holidays": ["2026-12-25"],
            "refund_days": 7,
            "offline_warn_hours": 12,
            "rules": [
                {
                    "id": "a", "kind": "amount_off", "amount": 1000, "per": "item", "cap": 5000,
                    "funded_by": "union", "quota": {"per": "week", "uses": 2},
                    "when": {"dates": [{"from": "2026-12-01", "to": "2026-12-31"}],
                             "holidays": "exclude"},
                    "eligible": {"categories": ["snack"]}, "tiers": [2],
                },
                {"id": "new", "kind": "member_price", "price": 990, "eligible": {"skus": ["A1"]}},
            ],
        }
    )  # fmt: skip
    said = [str(line) for line in terms_changes(before, after)]
    assert said == [
        "rule gone removed: it gave 3.00 off, on every item, paid by the merchant",
        "rule a, offer: 5% off → 10.00 off each item",
        "rule a, items: on every item → on snack",
        "rule a, cap: no cap → at most 50.00 off a purchase",
        "rule a, who pays: paid by the merchant → paid by the union",
        "rule a, quota: no quota → 2 time(s) a week",
        "rule a, when: any time → only 2026-12-01 to 2026-12-31, not on the holidays 2026-12-25",
        "rule a, member tiers: every tier → member tiers 2 only",
        "rule new added: member price 9.90 each, on SKU A1, paid by the merchant",
        "never discounted: tobacco → nothing",
        "holidays: none → 2026-12-25",
        "refunds: within 30 days of the sale → within 7 days of the sale",
        "offline limits: a warning 24 h after the last sync; no discounts after 72 h, or with "
        "5000 entries not uploaded → a warning 12 h after the last sync; no discounts after "
        "72 h, or with 5000 entries not uploaded",
    ]
    assert [str(x) for x in terms_changes(after, after)] == [
        "no change: these are the terms in force"
    ]


def test_central_drafts_says_the_same(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, clock: Clock
) -> None:
    paths, union = _union(tmp_path, clock, None)
    union.draft_policy("M0001", BLIND, "ada")
    union.close()
    code, out, err = run(capsys, "central", "drafts", "--data", str(paths.data_dir))
    assert code == 0, err
    assert "    rule member-discount: 100% off, on every item, paid by the union\n" in out
    assert "  changes against policy v1 in force:\n" in out
    assert "    rule member-discount, who pays: paid by the merchant → paid by the union\n" in out


# ------------------------------------------------------------- 2. four eyes: one decision
def _during_signing(union: Union, monkeypatch: pytest.MonkeyPatch, meanwhile: Any) -> list[Any]:
    """Run ``meanwhile`` while the approval signs (as another admin's request would
    arrive then); what it raised, or returned, is kept."""
    seen: list[Any] = []
    started: list[bool] = []
    real = union.publish_policy

    def signing(merchant_id: str, terms: Any = None) -> int:
        if not started:  # the first signing only: the other request's own goes on as it is
            started.append(True)
            try:
                seen.append(meanwhile())
            except ConflictError as exc:
                seen.append(exc)
        return real(merchant_id) if terms is None else real(merchant_id, terms)

    monkeypatch.setattr(union, "publish_policy", signing)
    return seen


def test_a_draft_rejected_while_it_is_approved_is_not_signed(
    union: Union, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The approval claims the decision first: the rejection that comes while it signs
    finds the draft decided (before, the rejection was kept and the draft signed)."""
    draft = union.draft_policy("M0001", BLIND, "ada")
    seen = _during_signing(union, monkeypatch, lambda: union.reject_policy(draft, "cyd"))
    version = union.approve_policy(draft, "bob")
    [refused] = seen
    assert isinstance(refused, ConflictError), refused
    row = union.store.draft(draft)
    assert row is not None and (row["decision"], row["decided_by"]) == ("approved", "bob")
    assert row["version"] == version == 2


def test_two_approvals_at_once_sign_once(union: Union, monkeypatch: pytest.MonkeyPatch) -> None:
    draft = union.draft_policy("M0001", BLIND, "ada")
    seen = _during_signing(union, monkeypatch, lambda: union.approve_policy(draft, "cyd"))
    assert union.approve_policy(draft, "bob") == 2
    assert isinstance(seen[0], ConflictError), seen
    assert union.store.latest_version("policy:M0001")[0] == 2  # type: ignore[index]


def _signed_terms(union: Union, version: int) -> dict[str, Any]:
    with union.store.engine.connect() as conn:
        data = conn.execute(
            sa.select(signed_files.c.data).where(
                signed_files.c.kind == "policy:M0001", signed_files.c.version == version
            )
        ).scalar_one()
    return dict(json.loads(bytes(data))["signed"])


def test_two_drafts_approved_at_once_each_sign_their_own_terms(
    union: Union, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two admins approve two drafts of one shop in the same instant: each version
    carries its own draft's terms (before, the draft approved first was signed with
    the other's terms: both saved the shop's terms, then each signed what was saved)."""
    first = union.draft_policy("M0001", BLIND, "ada")
    other = {"rules": [{"id": "member-7", "kind": "percent_off", "basis_points": 700}]}
    second = union.draft_policy("M0001", other, "ada")
    seen = _during_signing(union, monkeypatch, lambda: union.approve_policy(second, "cyd"))
    assert union.approve_policy(first, "bob") == 3
    assert seen == [2]  # the other approval signed meanwhile, as version 2
    assert _signed_terms(union, 2)["rules"] == other["rules"]
    assert _signed_terms(union, 3)["rules"] == BLIND["rules"]
    assert [union.store.draft(d)["version"] for d in (second, first)] == [2, 3]  # type: ignore[index]
    # a status change signs the terms in force: the newest version's
    union.set_merchant_status("M0001", "suspended", "checking complaints", by="bob")
    assert _signed_terms(union, 4)["rules"] == BLIND["rules"]


def test_an_approval_never_signed_is_taken_over_after_ten_minutes(
    union: Union, clock: Clock
) -> None:
    """An approval's process died between its claim and the signing: the draft stays
    approved and unsigned. After 10 minutes another admin's approval takes it over."""
    draft = union.draft_policy("M0001", BLIND, "ada")
    assert union.store.decide_draft(draft, "approved", "bob", iso(clock()), None)
    with pytest.raises(ConflictError, match="was approved already"):
        union.approve_policy(draft, "cyd")
    clock.advance(timedelta(minutes=10) - timedelta(seconds=1))
    with pytest.raises(ConflictError, match="was approved already"):
        union.approve_policy(draft, "cyd")
    clock.advance(timedelta(seconds=1))
    assert union.approve_policy(draft, "cyd") == 2
    row = union.store.draft(draft)
    assert row is not None and (row["decided_by"], row["version"]) == ("cyd", 2)
    assert _signed_terms(union, 2)["rules"] == BLIND["rules"]
    with pytest.raises(ConflictError, match="was approved already"):  # signed: final
        clock.advance(timedelta(hours=1))
        union.approve_policy(draft, "bob")


def test_an_approval_that_fails_to_sign_leaves_the_draft_waiting(
    union: Union, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Signing failed: the draft waits for a decision again, and the merchant's terms
    are those in force (before, the draft's terms stayed stored: the next status change
    signed them, approved by no one)."""
    draft = union.draft_policy("M0001", BLIND, "ada")
    before = union.store.terms("M0001")

    def fails(merchant_id: str, terms: Any = None) -> int:
        raise ConflictError("policy v2 of M0001 was just signed elsewhere: retry")

    monkeypatch.setattr(union, "publish_policy", fails)
    with pytest.raises(ConflictError, match="was not signed .*it waits for a decision again"):
        union.approve_policy(draft, "bob")
    row = union.store.draft(draft)
    assert row is not None and row["decision"] is None and row["decided_by"] is None
    assert union.store.terms("M0001") == before
    monkeypatch.undo()
    assert union.store.latest_version("policy:M0001")[0] == 1  # type: ignore[index]
    union.set_merchant_status("M0001", "suspended", "inspection", None, "ada")
    signed = union.latest_policy("M0001")
    assert signed is not None
    assert [(r.id, r.basis_points, r.funded_by) for r in signed.rules] == [
        ("member-discount", 500, "merchant")
    ]
    assert union.approve_policy(draft, "bob") == 3  # and it can be approved again


# ------------------------------------------------------------------- 3. and 4. the lockout
class CountingPasswords:
    """The password hasher, its checks counted and slowed (the tries overlap)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.checked = 0
        self.lock = threading.Lock()

    def verify(self, hashed: str, password: str) -> bool:
        with self.lock:
            self.checked += 1
        time.sleep(0.05)
        return bool(self.real.verify(hashed, password))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_tries_that_arrive_together_check_no_more_than_five_passwords(
    union: Union, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forty wrong passwords at once (gunicorn's workers and threads): all forty were
    checked. The try is counted in the database before its password is checked."""
    counting = CountingPasswords(service_module.PASSWORDS)
    monkeypatch.setattr(service_module, "PASSWORDS", counting)
    start = threading.Barrier(40)
    refused: list[str] = []

    def guess(n: int) -> None:
        start.wait()
        try:
            union.check_login("ada", f"guess number {n:04d}")
        except AuthError as exc:
            refused.append(str(exc))

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(refused) == 40 and set(refused) == {"wrong user name or password"}
    assert counting.checked == LOCK_AFTER
    locked = union.store.user("ada")
    assert locked is not None and locked["locked_until"] is not None
    with pytest.raises(AuthError):  # the right one: not even checked
        union.check_login("ada", PASSWORD)
    assert counting.checked == LOCK_AFTER


def test_a_locked_account_answers_as_an_unknown_name(app: Any, clock: Clock) -> None:
    for _ in range(LOCK_AFTER):
        assert sign_in(app, "aud", "wrong password!")[1].status_code == 401
    _, locked = sign_in(app, "aud")  # the right password, locked
    _, unknown = sign_in(app, "ghost", "wrong password!")
    assert locked.status_code == unknown.status_code == 401
    assert _error(locked) == _error(unknown) == "用户名或密码错误。"
    page = locked.get_data(as_text=True)
    assert page.replace("aud", "ghost") == unknown.get_data(as_text=True).replace(
        _csrf(unknown.get_data(as_text=True)), _csrf(page)
    )
    clock.advance(timedelta(minutes=15))
    assert sign_in(app, "aud")[1].status_code == 302


# -------------------------------------------------------------- 5. the cookie over HTTPS
def test_over_https_the_cookie_is_secure_and_hsts_is_sent(
    tmp_path: Path, clock: Clock, union: Union, database_url: str | None
) -> None:
    config = {"DATA_DIR": str(tmp_path / "central"), "DATABASE_URL": database_url}
    app = create_app({**config, "CLOCK": clock, "PROXIES": "1"})
    try:
        https: dict[str, Any] = {
            "headers": {"X-Forwarded-Proto": "https", "Referer": "https://localhost/"}
        }
        browser, answer = sign_in(app, "bob", **https)
        assert answer.status_code == 302
        cookie = answer.headers["Set-Cookie"]
        assert "; Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert answer.headers["Strict-Transport-Security"] == "max-age=31536000"
        home = browser.get("/console/", **https)
        assert home.status_code == 200 and "Strict-Transport-Security" in home.headers
        # plain HTTP on the loopback (the demo, the tests): as it was
        plain, answer = sign_in(app, "bob")
        assert answer.status_code == 302 and "Secure" not in answer.headers["Set-Cookie"]
        assert "Strict-Transport-Security" not in answer.headers
        assert plain.get("/console/").status_code == 200
    finally:
        app.extensions["unioncard"].close()


# ------------------------------------------------------- 6. drafts: not for merchants' users
def test_a_merchant_user_sees_no_drafts_of_its_merchant(app: Any, union: Union) -> None:
    draft = union.draft_policy("M0001", BLIND, "ada")
    shop, _ = sign_in(app, "shop1")
    own = shop.get("/console/merchants/M0001")
    assert own.status_code == 200 and f"#{draft} " not in own.get_data(as_text=True)
    assert "草案" not in own.get_data(as_text=True)
    aud, _ = sign_in(app, "aud")
    assert f"#{draft} " in aud.get("/console/merchants/M0001").get_data(as_text=True)


# ------------------------------------------------------------ 7. a member's use, new card
def _sales_with(union: Union, token: str, times: list[str], first_seq: int = 1) -> None:
    entries, prev = [], GENESIS
    if first_seq > 1:
        prev = union.store.sales_for("T1")[-1].hash
    for seq, at in enumerate(times, first_seq):
        draft = SaleDraft(terminal_id="T1", merchant_id="M0001", token=token,
                          pan_last4=MEMBER_PAN[-4:], member=True, gross=10000, discount=500,
                          net=9500, rules=("member-discount",), roster_version=1,
                          policy_version=1)  # fmt: skip
        sale = seal(draft, seq=seq, sale_id=f"T1-{seq}", at=at, prev_hash=prev)
        entries.append(sale)
        prev = sale.hash
    union.store.ingest("T1", "M0001", entries, times[-1])


def test_a_members_use_stays_on_their_page_after_a_new_card(
    app: Any, union: Union, clock: Clock
) -> None:
    """The page looked up the member's current card only: after a new card its use
    was gone. The earlier card counts until the import that replaced it."""
    union.enrol_terminal("T1", "M0001", "http://127.0.0.1:8000")
    old = union.keys.tokenize(MEMBER_PAN).hex()
    _sales_with(union, old, ["2026-11-10T02:00:00Z", "2026-11-11T02:00:00Z"])
    union.import_members(f"member_id,pan\nU1,{luhn_complete('622202100000007')}\n")
    # the old card used after it was replaced: not the member's any more
    _sales_with(union, old, ["2026-11-28T09:40:00Z"], first_seq=3)
    aud, _ = sign_in(app, "aud")
    page = aud.get("/console/members?id=U1").get_data(as_text=True)
    assert re.search(r'<tr data-merchant="M0001"><td>M0001</td><td>2</td><td>10.00</td>', page)
    [use] = union.store.member_use(union.store.member("U1")["token"], "U1")  # type: ignore[index]
    assert (use["merchant_id"], use["sales"], use["discount"]) == ("M0001", 2, 1000)


# ----------------------------------------------------------- 8. the partners list: dates
def test_the_partners_list_says_a_rules_dates_and_holidays(
    app: Any, union: Union, clock: Clock
) -> None:
    """Rules for Christmas, for past summer days and for holidays only were all listed
    as today's plain offers. Now each says its dates, and one that can never apply
    again is left out (clock: 2026-11-28)."""
    terms: dict[str, Any] = {
        "holidays": ["2026-10-01", "2027-01-01"],
        "rules": [
            {"id": "xmas", "kind": "percent_off", "basis_points": 2000,
             "when": {"dates": [{"from": "2026-12-24", "to": "2026-12-26"}]}},
            {"id": "summer", "kind": "percent_off", "basis_points": 1500,
             "when": {"dates": [{"from": "2026-07-01", "to": "2026-08-31"}]}},
            {"id": "holidays", "kind": "percent_off", "basis_points": 3000,
             "when": {"holidays": "only"}},
            {"id": "national-day", "kind": "percent_off", "basis_points": 3000,
             "when": {"holidays": "only", "dates": [{"from": "2026-10-01", "to": "2026-10-07"}]}},
        ],
    }  # fmt: skip
    union.publish_policy("M0001", terms)
    listed = app.test_client().get("/api/v1/partners").get_json()["partners"]
    offers = {o["rule_id"]: o["en"] for o in listed[0]["offers"]}
    assert offers == {
        "xmas": "20% off, only 2026-12-24 to 2026-12-26",
        "holidays": "30% off, only on the holidays 2027-01-01",
    }
    page = app.test_client().get("/partners?lang=en").get_data(as_text=True)
    assert "20% off, only 2026-12-24 to 2026-12-26" in page and "15% off" not in page
    # a merchant none of whose rules can apply again is not listed at all
    union.publish_policy("M0001", {"rules": terms["rules"][1:2]})
    listed = app.test_client().get("/api/v1/partners").get_json()["partners"]
    assert [p["merchant_id"] for p in listed] == ["M0002"]


# --------------------------------------------------------- 9. the console's error pages
def test_the_consoles_errors_are_pages_the_apis_json(app: Any, union: Union) -> None:
    ada, _ = sign_in(app, "ada")
    shop, _ = sign_in(app, "shop1")
    for browser, path, code in (
        (shop, "/console/members", 403),
        (ada, "/console/merchants/NOPE", 404),
        (ada, "/console/no-such-page", 404),
        (ada, "/console/dashboard?from=2026-13", 400),
        (ada, "/console/members?id=a%00", 400),
    ):
        answer = browser.get(path)
        assert (answer.status_code, answer.mimetype) == (code, "text/html"), path
        page = answer.get_data(as_text=True)
        assert 'lang="zh-CN"' in page and 'id="error"' in page, path
        assert "You don't have the permission" not in page and "requested URL" not in page
    assert "请按 YYYY-MM 格式填写月份" in _error(ada.get("/console/dashboard?from=2026-13"))
    api = app.test_client()
    for path, code in (("/api/v1/no-such-thing", 404), ("/api/v1/partners?x=a%00", 400)):
        answer = api.get(path)
        assert (answer.status_code, answer.mimetype) == (code, "application/json"), path
    # the service's words that name the command line's flags: the console's own
    ada.get("/console/lang/en")
    days = ada.get("/console/statement?merchant=M0001&from=2026-01-05&to=2026-01-02")
    assert days.status_code == 400 and _error(days) == "The last day is before the first."
    audit = ada.get("/console/audit?merchant=M0001&from=2026-01-05&to=2026-01-02")
    assert audit.status_code == 400 and _error(audit) == "The last day is before the first."
    nope = ada.get("/console/statement?merchant=NOPE&from=2026-01-01&to=2026-01-02")
    assert nope.status_code == 404 and _error(nope) == "There is no merchant NOPE."
    missing = ada.post("/console/policies/99/approve", data={"csrf_token": _token(ada)})
    assert missing.status_code == 404 and _error(missing) == "There is no policy draft #99."
    forbidden = shop.get("/console/members")
    assert "--from" not in forbidden.get_data(as_text=True)


# --------------------------------------------------------- 10. a complaint's card, translated
def test_a_complaints_card_is_part_of_the_translated_message(union: Union, clock: Clock) -> None:
    day = clock().date()
    union.add_complaint("M0001", day, "收银员态度差", "1234", "ada")
    complaint = "a member's complaint of %(day)s%(card)s: %(what)s"
    zh = {  # the catalogue's words for the complaint, and for its card
        complaint: "会员 %(day)s 的投诉%(card)s：%(what)s",
        " (card •••• %(last4)s)": "（卡尾号 %(last4)s）",
    }
    [found] = [f for f in union.audit("M0001", day, day) if f.kind == "complaint"]
    assert str(found.detail) == f"a member's complaint of {day} (card •••• 1234): 收银员态度差"
    assert (
        found.detail.render(lambda m: zh.get(m, m))
        == f"会员 {day} 的投诉（卡尾号 1234）：收银员态度差"
    )
    run_id, _ = union.run_audit("M0001", day, day, "aud")  # as kept, and read back
    [kept] = [f for f in union.store.audit_findings(run_id=run_id) if f["kind"] == "complaint"]
    again = Msg.from_json(kept["message"])
    assert again.render(lambda m: zh.get(m, m)) == f"会员 {day} 的投诉（卡尾号 1234）：收银员态度差"
