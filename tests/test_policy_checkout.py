"""The discount engine in the terminal and at the union: baskets journaled, hashed,
uploaded and stored; quotas counted from the journal; an auditor's recomputation;
the till API; policies authored and signed centrally."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from central import policies
from central.errors import InputError
from central.keys import create_keys
from central.service import Union
from pact.basket import Basket, Line, RuleUsage, parse_basket
from pact.cards import PanTokenizer
from pact.chain import GENESIS, entry_hash
from pact.discount import quote
from pact.errors import WireFormatError
from pact.policy import Policy, quota_periods, verify_policy
from pact.sale import Sale
from pact.timefmt import iso
from pact.wire import decode_sales, encode_sales
from reader.identity import identity_from_pan
from terminal.checkout import checkout
from terminal.errors import JournalError, PendingError
from terminal.journal import MIGRATIONS, Journal
from terminal.service import TerminalService
from terminal.state import TerminalState
from terminal.syncrecord import keep_sync
from terminal.web import create_app
from tests.helpers import (
    MEMBER_PAN,
    OTHER_PAN,
    TEST_SIGNER,
    bundle,
    enrol_signing_terminal,
    policy_bytes,
    roster_bytes,
    signed,
    snapshot_bytes,
    till_client,
    trusted,
)

ROOT = Path(__file__).resolve().parents[1]
MONDAY = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)  # 14:00 in Shanghai
TOKEN_KEY = bytes(range(32))


def terms(name: str) -> dict:
    return json.loads((ROOT / "config" / "policies" / f"{name}.json").read_text())


ISSUED = MONDAY - timedelta(days=40)
LIFETIME = timedelta(days=400)


def make_shop(folder: Path, shop_terms: dict) -> TerminalState:
    """A real enrolled terminal holding a signed roster (one member, tier 1) and a
    signed policy with ``shop_terms``, all issued 40 days before MONDAY."""
    keys = create_keys(folder / "keys", now=ISSUED)
    roster = roster_bytes(keys, [MEMBER_PAN], ISSUED, lifetime=LIFETIME)
    policy = policy_bytes(keys, ISSUED, terms=shop_terms, lifetime=LIFETIME)
    state = TerminalState(folder / "terminal")
    state.enrol(bundle(keys))
    state.install(
        snapshot_bytes(keys, ISSUED, roster, policy, lifetime=LIFETIME), ISSUED, roster, policy
    )
    keep_sync(state.dir, last_success_at=iso(MONDAY))  # in service: it synced this morning
    return state


def card(state: TerminalState, pan: str = MEMBER_PAN):
    return identity_from_pan(
        "unionpay", b"\xa0", pan, "2030-12", PanTokenizer(state.enrolment.token_key)
    )


FILM = Line("FILM", "film", 1, 4500)
POPCORN = Line("POP", "snack", 1, 2000)


def test_cinema_quota_is_counted_from_the_journal(tmp_path) -> None:
    shop = make_shop(tmp_path, terms("cinema"))
    journal = Journal(tmp_path / "journal.db", TEST_SIGNER)
    basket = Basket((FILM, POPCORN))
    first = checkout(
        shop.current, shop.enrolment, journal, card(shop), basket, MONDAY - timedelta(days=10)
    )
    assert (first.quote.discount, first.quote.applied) == (4700, ("free-film", "snacks-10"))
    # 2026-11-30 15:59:59 UTC is 23:59:59 on the 30th in Shanghai: still November
    second = checkout(
        shop.current,
        shop.enrolment,
        journal,
        card(shop),
        basket,
        datetime(2026, 11, 30, 15, 59, 59, tzinfo=UTC),
    )
    assert (second.quote.discount, second.quote.applied) == (200, ("snacks-10",))
    assert "One free film a month: quota used: 1/1 this month" in [
        str(r) for r in second.quote.reasons
    ]
    # 2026-12-01 00:00 in Shanghai is 2026-11-30 16:00 UTC: a new month for the shop
    december = datetime(2026, 11, 30, 16, 0, tzinfo=UTC)
    third = checkout(shop.current, shop.enrolment, journal, card(shop), basket, december)
    assert third.quote.applied == ("free-film", "snacks-10")
    # another card has its own quota; a non-member has none
    stranger = checkout(
        shop.current, shop.enrolment, journal, card(shop, OTHER_PAN), basket, december
    )
    assert stranger.quote.discount == 0 and not stranger.member
    token = card(shop).token.hex()
    assert journal.usage(token, "free-film", december) == RuleUsage(1, 4500)
    assert journal.usage(token, "free-film", december - timedelta(days=30)) == RuleUsage(2, 9000)
    assert journal.usage(token, "snacks-10", MONDAY - timedelta(days=10)) == RuleUsage(3, 600)
    assert journal.usage(card(shop, OTHER_PAN).token.hex(), "snacks-10", MONDAY) == RuleUsage(0, 0)
    assert journal.verify() == 4


def test_amount_quota_holds_across_sales(tmp_path) -> None:
    shop = make_shop(
        tmp_path,
        {
            "rules": [
                {
                    "id": "otc-8",
                    "kind": "percent_off",
                    "basis_points": 800,
                    "quota": {"per": "week", "amount": 3000},
                }
            ]
        },
    )
    journal = Journal(tmp_path / "journal.db", TEST_SIGNER)
    given = []
    for day in range(5):
        sale = checkout(
            shop.current, shop.enrolment, journal, card(shop), 15000, MONDAY + timedelta(days=day)
        )
        given.append(sale.quote.discount)
    assert given == [1200, 1200, 600, 0, 0]
    assert sum(given) == 3000


def test_the_basket_is_journaled_hashed_and_uploaded(tmp_path) -> None:
    shop = make_shop(tmp_path, terms("supermarket"))
    journal = Journal(tmp_path / "journal.db", TEST_SIGNER)
    basket = parse_basket(
        [
            {"sku": "RICE", "category": "grocery", "qty": 2, "unit_price": "45.50"},
            {"sku": "CIG", "category": "tobacco", "qty": 1, "unit_price": "25.00"},
        ]
    )
    result = checkout(shop.current, shop.enrolment, journal, card(shop), basket, MONDAY)
    body = result.as_json()
    assert (body["gross"], body["discount"], body["net"]) == ("116.00", "4.55", "111.45")
    assert [(x["sku"], x["discount"], x["net"]) for x in body["lines"]] == [
        ("RICE", "4.55", "86.45"),
        ("CIG", "0.00", "25.00"),
    ]
    assert body["not_applied"] == []
    [sale] = journal.sales()
    assert sale == result.sale
    assert sale.basket == {
        "lines": [
            {
                "sku": "RICE",
                "category": "grocery",
                "qty": 2,
                "unit_price": 4550,
                "discount": 455,
                "by_rule": {"member-5": 455},
            },
            {
                "sku": "CIG",
                "category": "tobacco",
                "qty": 1,
                "unit_price": 2500,
                "discount": 0,
                "by_rule": {},
            },
        ],
        "tier": 1,
        "discounts": {"member-5": 455},
    }
    assert MEMBER_PAN not in json.dumps(sale.as_json())
    upload = encode_sales("T1", journal.pending())
    _, decoded = decode_sales(json.loads(json.dumps(upload)))
    assert decoded[0].basket == sale.basket
    assert entry_hash(GENESIS, decoded[0]) == sale.hash
    assert decoded == [sale]
    # the hash covers the basket: move the discount to the tobacco line and it breaks
    tampered = json.loads(journal.db.execute("SELECT basket FROM sales").fetchone()[0])
    tampered["lines"][0]["discount"], tampered["lines"][1]["discount"] = 0, 455
    journal.db.execute("UPDATE sales SET basket = ?", [json.dumps(tampered)])
    with pytest.raises(JournalError, match="sale 1 has been altered"):
        journal.verify()


def usage_before(earlier: list[Sale], sale: Sale, policy: Policy, at: datetime) -> dict:
    """A member's use of each quota rule, counted from the journaled sales before ``sale``."""
    usage = {}
    for rule_id, since in quota_periods(policy, at):
        mine = [
            s.basket["discounts"]
            for s in earlier
            if s.basket is not None and s.token == sale.token and s.at >= iso(since)
        ]
        usage[rule_id] = RuleUsage(
            sum(1 for d in mine if rule_id in d), sum(d.get(rule_id, 0) for d in mine)
        )
    return usage


def test_an_auditor_recomputes_every_discount_from_the_journal(tmp_path) -> None:
    """Replay each journaled sale with the same policy: basket, tier, time, and the
    member's earlier quota use counted from the sales before it."""
    shop = make_shop(tmp_path, terms("cinema"))
    journal = Journal(tmp_path / "journal.db", TEST_SIGNER)
    moments = [MONDAY + timedelta(days=d, hours=h) for d in (0, 3, 9, 15, 31) for h in (0, 5)]
    for n, at in enumerate(moments):
        lines = [FILM] if n % 3 else [FILM, Line("F2", "film", 2, 3800), POPCORN]
        pan = OTHER_PAN if n == 4 else MEMBER_PAN
        checkout(shop.current, shop.enrolment, journal, card(shop, pan), Basket(tuple(lines)), at)
    sales = journal.sales()
    for i, sale in enumerate(sales):
        at = datetime.fromisoformat(sale.at.replace("Z", "+00:00"))
        assert sale.basket is not None
        basket = Basket(
            tuple(
                Line(x["sku"], x["category"], x["qty"], x["unit_price"])
                for x in sale.basket["lines"]
            )
        )
        member = shop.current.roster.lookup(card(shop).token) if sale.member else None
        q = quote(
            basket,
            member,
            shop.current.policy,
            at,
            usage_before(sales[:i], sale, shop.current.policy, at),
        )
        assert (q.discount, q.applied) == (sale.discount, sale.rules)
        assert dict(q.by_rule) == sale.basket["discounts"]
        assert [lq.discount for lq in q.lines] == [x["discount"] for x in sale.basket["lines"]]
    assert sum(1 for s in sales if "free-film" in s.rules) == 2  # November, December


# The hash the release before baskets gave the old sale below (computed with it).
OLD_HASH = "ec7d021974d811a559fff668473983543a6cc48862800d41dfb4bddc4ecab62b"


def test_journal_migrates_an_old_journal_and_keeps_its_chain(tmp_path) -> None:
    path = tmp_path / "journal.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE migrations (id INTEGER PRIMARY KEY)")
    conn.executescript(MIGRATIONS[0])
    conn.execute("INSERT INTO migrations (id) VALUES (1)")
    old = Sale(
        seq=1,
        sale_id="old-1",
        at="2026-11-01T10:00:00Z",
        terminal_id="T1",
        merchant_id="M0001",
        token="ab" * 16,
        pan_last4="1234",
        member=True,
        gross=1000,
        discount=50,
        net=950,
        rules=("member",),
        roster_version=1,
        policy_version=1,
        basket=None,
        atc=None,
        kind=None,
        ref_seq=None,
        note=None,
        prev_hash=GENESIS,
        hash=OLD_HASH,  # as the release before baskets hashed it
    )
    assert entry_hash(GENESIS, old) == OLD_HASH
    conn.execute(
        "INSERT INTO sales (seq, sale_id, at, terminal_id, merchant_id, token, pan_last4, member,"
        " gross, discount, net, rules, roster_version, policy_version, prev_hash, hash)"
        " VALUES (1, 'old-1', ?, 'T1', 'M0001', ?, '1234', 1, 1000, 50, 950, '[\"member\"]', 1,"
        " 1, ?, ?)",
        [old.at, old.token, GENESIS, old.hash],
    )
    conn.commit()
    conn.close()
    journal = Journal(path, TEST_SIGNER)
    assert journal.db.execute("SELECT max(id) FROM migrations").fetchone()[0] == len(MIGRATIONS)
    shop = make_shop(tmp_path, terms("supermarket"))
    checkout(shop.current, shop.enrolment, journal, card(shop), 2000, MONDAY)
    assert journal.verify() == 2
    first, second = journal.sales()
    assert first == old
    assert first.basket is None and second.basket is not None
    assert second.basket["lines"][0]["category"] == "general"
    assert journal.usage("ab" * 16, "member", datetime(2026, 1, 1, tzinfo=UTC)) == RuleUsage(0, 0)
    _, decoded = decode_sales(encode_sales("T1", journal.pending()))
    assert "basket" not in encode_sales("T1", journal.pending())["sales"][0]
    assert [entry_hash(s.prev_hash, s) == s.hash for s in decoded] == [True, True]
    assert decoded == [first, second]


def _sale_with(basket: dict | None, **fields) -> dict:
    """A sale as it arrives on the wire (JSON), with its hash."""
    sale = {
        "seq": 1,
        "sale_id": "s1",
        "at": "2026-11-30T06:00:00Z",
        "terminal_id": "T1",
        "merchant_id": "M0001",
        "token": None,
        "pan_last4": "0000",
        "member": True,
        "gross": 2000,
        "discount": 100,
        "net": 1900,
        "rules": ["r"],
        "roster_version": 1,
        "policy_version": 1,
        "basket": basket,
        "prev_hash": GENESIS,
        **fields,
    }
    sale["hash"] = entry_hash(sale["prev_hash"], Sale.from_json(dict(sale, hash="")))
    return sale


GOOD_BASKET = {
    "lines": [{"sku": "A", "category": "grocery", "qty": 2, "unit_price": 1000, "discount": 100}],
    "tier": 1,
    "discounts": {"r": 100},
}


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda b: b["lines"][0].update(qty=3), "do not add up to the sale's gross"),
        (lambda b: b["lines"][0].update(discount=2500), "at most the line's gross"),
        (lambda b: b["lines"][0].update(discount=-1), "at most the line's gross"),
        (lambda b: b["lines"][0].pop("sku"), "must have sku, category"),
        (lambda b: b.update(discounts={"other": 100}), "do not match the sale's rules"),
        (lambda b: b.update(discounts={"r": 99}), "do not match the sale's rules/discount"),
        (lambda b: b.update(discounts={"r": 99.5}), "must map rule ids to whole fen"),
        (lambda b: b.update(tier="gold"), "tier must be a whole number"),
        (lambda b: b.pop("tier"), "exactly lines, tier and discounts"),
        (lambda b: b.update(lines=[]), "non-empty list"),
    ],
)
def test_upload_checks_the_basket(change, message) -> None:
    basket = json.loads(json.dumps(GOOD_BASKET))
    assert decode_sales(
        {"format": "unioncard.sales.v1", "terminal_id": "T1", "sales": [_sale_with(basket)]}
    )
    change(basket)
    with pytest.raises(WireFormatError, match=message):
        decode_sales(
            {"format": "unioncard.sales.v1", "terminal_id": "T1", "sales": [_sale_with(basket)]}
        )


def test_central_stores_the_basket(union: Union) -> None:
    union.add_merchant("M0001", "Shop", 500)
    terminal = enrol_signing_terminal(union)
    old = signed(Sale.from_json(_sale_with(None)))
    new = signed(Sale.from_json(_sale_with(GOOD_BASKET, seq=2, sale_id="s2", prev_hash=old.hash)))
    result = union.ingest(terminal, [old, new])
    assert (result.acked_through, result.accepted) == (2, 2)
    stored = union.store.sales_for("T1")
    assert [s.basket for s in stored] == [None, GOOD_BASKET]
    assert all(entry_hash(s.prev_hash, s) == s.hash for s in stored)
    assert stored == [old, new]
    assert union.ingest(terminal, [old, new]).duplicates == 2


def test_add_merchant_signs_a_percent_policy_with_the_standard_exclusions(union: Union) -> None:
    union.add_merchant("M0007", "Huangpu Pharmacy", 800)
    data = union.store.latest_signed("policy:M0007")[1]
    policy = verify_policy(data, trusted(union.keys), merchant_id="M0007")
    assert [(r.id, r.kind, r.basis_points) for r in policy.rules] == [
        ("member-discount", "percent_off", 800)
    ]
    assert policy.exclude.categories == {"tobacco", "prescription", "gift_card", "lottery"}
    assert policy.status_since is not None


def test_set_policy_publishes_a_new_signed_version(union: Union, clock) -> None:
    union.add_merchant("M0002", "Cinema", 500)
    assert union.publish_policy("M0002", terms("cinema")) == 2
    policy = verify_policy(
        union.store.latest_signed("policy:M0002")[1],
        trusted(union.keys),
        merchant_id="M0002",
        installed_version=1,
    )
    assert [r.id for r in policy.rules] == ["free-film", "snacks-10"]
    assert policy.combine == "sequence"
    union.set_merchant_status("M0002", "suspended")  # keeps the terms, changes the status
    policy = verify_policy(
        union.store.latest_signed("policy:M0002")[1], trusted(union.keys), merchant_id="M0002"
    )
    assert (policy.version, policy.status, len(policy.rules)) == (3, "suspended", 2)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"{", "is not valid JSON"),
        (b'{"rules": [{"id": "x", "kind": "percent_off"}]}', "rules[0].basis_points is missing"),
        (b'{"signed": {}, "signatures": []}', "is a signed policy; give the terms only"),
    ],
)
def test_set_policy_refuses_bad_terms_in_one_line(data: bytes, message: str) -> None:
    with pytest.raises(InputError) as err:
        policies.parse_terms_file(data, "offer.json")
    assert message in str(err.value) and str(err.value).startswith("offer.json")


def test_till_api_takes_a_basket_or_an_amount(tmp_path) -> None:
    shop = make_shop(tmp_path, terms("pharmacy"))
    member = card(shop)
    service = TerminalService(
        shop.dir, lambda *, timeout, tokenize: member, lambda: MONDAY, card_timeout=1
    )
    client = till_client(create_app(service))
    body = client.post(
        "/api/v1/checkout",
        json={
            "basket": [
                {"sku": "COLD", "category": "otc", "qty": 2, "unit_price": "150.00"},
                {"sku": "RX1", "category": "prescription", "qty": 1, "unit_price": "88.00"},
            ],
            "confirm": True,
        },
    ).get_json()
    assert (body["gross"], body["discount"], body["net"]) == ("388.00", "20.00", "368.00")
    assert [x["discount"] for x in body["lines"]] == ["20.00", "0.00"]
    assert body["reasons"] == ["8% off over-the-counter medicine: capped at 20.00 per transaction"]
    body = client.post("/api/v1/checkout", json={"amount": "50.00", "confirm": True}).get_json()
    assert body["discount_fen"] == 0 and body["lines"][0]["category"] == "general"
    assert body["not_applied"][0]["rule"] == "otc-8"
    for payload, text in [
        ({"amount": "1", "basket": []}, "send {"),
        (
            {"basket": [{"sku": "A", "category": "otc", "qty": 0, "unit_price": "1"}]},
            "basket[0].qty",
        ),
        ({"basket": "lots"}, "basket must be a list"),
    ]:
        response = client.post("/api/v1/checkout", json=payload)
        assert response.status_code == 400 and text in response.get_json()["error"]
    assert service.journal.counts() == (2, 2)
    service.close()


def test_a_cancelled_or_timed_out_quote_uses_no_quota(tmp_path) -> None:
    """The free film of a quote the cashier cancels (or never confirms) is still there
    for the next sale; the confirmed one uses it up."""
    shop = make_shop(tmp_path, terms("cinema"))
    member = card(shop)
    now = [MONDAY]
    service = TerminalService(
        shop.dir, lambda *, timeout, tokenize: member, lambda: now[0], card_timeout=1
    )
    basket = Basket((FILM,))
    first = service.checkout(basket)
    assert first.priced.quote.applied == ("free-film",)
    service.cancel(first.id)
    second = service.checkout(basket)
    assert second.priced.quote.applied == ("free-film",)  # not used by the cancelled one
    now[0] += service.pending_timeout  # nobody confirmed it
    third = service.checkout(basket)  # the timed-out one is dropped, not recorded
    assert third.priced.quote.applied == ("free-film",)
    assert service.confirm(third.id).quote.applied == ("free-film",)
    fourth = service.checkout(basket, confirm=True)
    assert fourth.quote.applied == () and service.journal.counts() == (2, 2)
    service.close()


def test_a_quote_expires_by_the_time_that_passed_not_by_the_wall_clock(tmp_path) -> None:
    """The wall clock set back half an hour (NTP correcting a clock that ran ahead)
    while a quote waited: it outlived its 2 minutes by as much, and every checkout
    was refused as busy meanwhile. The daemon's monotonic clock times it now."""
    shop = make_shop(tmp_path, terms("cinema"))
    member = card(shop)
    now, tick = [MONDAY + timedelta(hours=1)], [1000.0]
    service = TerminalService(
        shop.dir,
        lambda *, timeout, tokenize: member,
        lambda: now[0],
        card_timeout=1,
        monotonic=lambda: tick[0],
    )
    try:
        waiting = service.checkout(Basket((FILM,)))
        now[0] -= timedelta(minutes=30)  # the wall clock goes back
        tick[0] += service.pending_timeout.total_seconds()  # 2 minutes pass
        assert not service.busy()
        with pytest.raises(PendingError, match="check out again"):
            service.confirm(waiting.id)
        assert service.checkout(Basket((FILM,))).priced.quote.applied == ("free-film",)
        assert service.journal.counts()[0] == 0 or all(
            e.kind == "event" for e in service.journal.sales()
        )  # nothing sold: at most the clock jump's event
    finally:
        service.close()
