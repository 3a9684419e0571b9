"""Messages for people are message ids with parameters, and the Chinese catalogue has them all.

Simplified Chinese is the default on the cashier page and the till API, English the
switch (issue 12): the discount engine's reasons and every error a cashier or a till
can meet are ``N_``-marked message ids with parameters (pact.text), and
terminal/translations/zh holds a translation of every id the code and the templates
have (``make translations`` updates it). Pure and in-process: Babel's extraction runs
as a library.
"""

from __future__ import annotations

import ast
import builtins
import gettext
import importlib
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

from pact.basket import Basket, Line, parse_basket
from pact.discount import Quote, quote, quote_json
from pact.errors import BasketError, UnioncardError
from pact.policy import Policy, load_policy_file
from pact.roster import Membership
from pact.text import Msg

ROOT = Path(__file__).resolve().parents[1]
CATALOGUE = ROOT / "terminal" / "translations"
PO = CATALOGUE / "zh" / "LC_MESSAGES" / "messages.po"
MO = CATALOGUE / "zh" / "LC_MESSAGES" / "messages.mo"

# The modules whose messages reach a cashier or a till: the discount engine, the money
# and basket rules, voids and refunds, receipts, and the terminal's use cases.
MODULES = [
    "pact.basket",
    "pact.discount",
    "pact.money",
    "pact.policy",
    "pact.receipt",
    "pact.reversal",
    "pact.sale",
    "terminal.checkout",
    "terminal.journal",
    "terminal.printing",
    "terminal.service",
    "terminal.state",
    "terminal.supervisor",
]
# Bad arguments from code, not from people, stay plain ValueError / TypeError in English
# (docs/architecture.md, "Errors"): (module, function) -> how many such raises it has.
PROGRAMMER_ERRORS = {
    ("pact.discount", "_gate"): 2,  # not a Basket; a naive datetime (quote, discount_owed)
    ("pact.sale", "_make_layout"): 1,  # a Sale field of a type the codecs do not know
    ("terminal.journal", "pending_json_sql"): 1,  # ... or the journal's JSON does not know
    ("pact.receipt", "normal_code"): 1,  # `unioncard audit receipt CODE`: a usage error
    ("pact.policy", "listed"): 1,  # an empty list to put in words
}
PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]|\{(\w+)\}")


# ---------------------------------------------------------------------------- raise sites
def _raises(module_name: str) -> list[tuple[str, ast.Call]]:
    """(enclosing function, call) of each ``raise X(...)`` in the module."""
    module = importlib.import_module(module_name)
    tree = ast.parse(Path(module.__file__ or "").read_text())
    found: list[tuple[str, ast.Call]] = []

    def walk(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = (
                child.name
                if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
                else function
            )
            if isinstance(child, ast.Raise) and isinstance(child.exc, ast.Call):
                found.append((name, child.exc))
            walk(child, name)

    walk(tree, "<module>")
    return found


def _is_marked(node: ast.expr) -> bool:
    """``N_("literal")``: a message id the catalogue extraction finds."""
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "N_"
        and len(node.args) == 1
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    )


@pytest.mark.parametrize("module_name", MODULES)
def test_every_error_for_people_is_a_marked_message_id(module_name: str) -> None:
    module = importlib.import_module(module_name)
    wrong, plain = [], {}
    for function, call in _raises(module_name):
        where = f"{module_name}.{function} line {call.lineno}"
        name = call.func.id if isinstance(call.func, ast.Name) else ""
        cls = getattr(module, name, None) or getattr(builtins, name, None)
        if not isinstance(cls, type):
            wrong.append(f"{where}: cannot tell what {ast.unparse(call.func)} raises")
        elif issubclass(cls, UnioncardError):
            if not call.args or not _is_marked(call.args[0]):
                wrong.append(f"{where}: {ast.unparse(call)[:80]}")
        else:
            plain[(module_name, function)] = plain.get((module_name, function), 0) + 1
    expected = {k: n for k, n in PROGRAMMER_ERRORS.items() if k[0] == module_name}
    assert not wrong, 'raise with N_("...") and parameters, not a sentence:\n' + "\n".join(wrong)
    assert plain == expected, "a builtin exception is for bad arguments from code only"


def test_the_check_sees_an_unmarked_message() -> None:
    bad = [
        'raise BasketError(f"line {n}: qty")',
        'raise BasketError("line %s" % n)',
        'raise BasketError(N_("line ") + str(n))',
        'raise BasketError("line {}".format(n))',
        'raise BasketError("a plain sentence")',
        "raise BasketError(message)",
    ]
    for source in bad:
        call = ast.parse(source).body[0].exc  # type: ignore[attr-defined]
        assert not _is_marked(call.args[0]), source
    good = ast.parse('raise BasketError(N_("line %(line)s: qty"), line=n)').body[0]
    assert _is_marked(good.exc.args[0])  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------- the catalogue
def _key(msgid: str | tuple[str, ...]) -> str:
    """A message's id: for a plural (ngettext), its singular form."""
    return msgid if isinstance(msgid, str) else msgid[0]


def _texts(string: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """A translation's forms (one, or one per plural form)."""
    return (string,) if isinstance(string, str) else tuple(string)


def _extracted() -> dict[str, list[str]]:
    """Every message id in the code and templates (as `make translations` extracts it),
    with the files that have it."""
    with open(ROOT / "babel.cfg", encoding="utf-8") as fh:
        method_map, options_map = parse_mapping_cfg(fh)
    ids: dict[str, list[str]] = {}
    for filename, _lineno, message, _comments, _context in extract_from_dir(
        str(ROOT), method_map, options_map
    ):
        if _key(message):
            ids.setdefault(_key(message), []).append(filename)
    return ids


def _placeholders(text: str) -> set[str]:
    return {a or b for a, b in PLACEHOLDER.findall(text)}


def _po() -> dict[str, tuple[str, tuple[str, ...], bool]]:
    """Each id (a plural's singular) -> (the id, plural included; the translation's forms;
    fuzzy)."""
    with open(PO, "rb") as fh:
        catalog = read_po(fh)
    return {
        _key(m.id): (" ".join(_texts(m.id)), _texts(m.string), m.fuzzy) for m in catalog if m.id
    }


def test_every_message_id_has_a_chinese_translation() -> None:
    extracted, po = _extracted(), _po()
    assert "minimum spend %(min)s not reached (eligible items %(eligible)s)" in extracted
    missing = sorted(
        f"{i!r} ({', '.join(sorted(set(f)))})" for i, f in extracted.items() if i not in po
    )
    untranslated = sorted(i for i in extracted if i in po and (not all(po[i][1]) or po[i][2]))
    assert not missing, "not in messages.po: run `make translations`:\n" + "\n".join(missing)
    assert not untranslated, "untranslated or fuzzy in messages.po:\n" + "\n".join(untranslated)


def test_translations_keep_the_placeholders() -> None:
    wrong = [
        f"{msgid!r} -> {text!r}"
        for msgid, texts, _ in _po().values()
        for text in texts
        if text and _placeholders(msgid) != _placeholders(text)
    ]
    assert not wrong, "a translation must keep every %(name)s / {name}:\n" + "\n".join(wrong)


def test_the_compiled_catalogue_is_the_po_file_compiled() -> None:
    with open(MO, "rb") as fh:
        compiled = {_key(m.id): _texts(m.string) for m in read_mo(fh) if m.id}
    wanted = {key: texts for key, (_, texts, fuzzy) in _po().items() if all(texts) and not fuzzy}
    assert compiled == wanted, "messages.mo is stale: run `make translations`"


# ---------------------------------------------------------------------------- rendering
@pytest.fixture(scope="module")
def chinese() -> gettext.NullTranslations:
    return gettext.translation("messages", str(CATALOGUE), languages=["zh"])


NOW = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)  # Monday 10:00 in Shanghai
MEMBER = Membership("active", 1, None)


def _travel() -> Policy:
    policy, _ = load_policy_file((ROOT / "config" / "policies" / "travel.json").read_bytes())
    return policy


def _tour(price: int) -> Basket:
    return Basket((Line("TOUR", "tour", 1, price),))


def _both(q: Quote, chinese: gettext.NullTranslations) -> tuple[list[str], list[str]]:
    """The quote's reasons as the till gets them (``reason_ids``), in Chinese and English."""
    ids = [Msg.from_json(r) for r in quote_json(q)["reason_ids"]]
    return [m.render(chinese.gettext) for m in ids], [str(m) for m in ids]


def test_a_minimum_spend_not_reached_in_chinese_and_english(chinese) -> None:
    q = quote(_tour(299999), MEMBER, _travel(), NOW)
    assert q.discount == 0
    zh, en = _both(q, chinese)
    assert (
        en
        == quote_json(q)["reasons"]
        == [
            "300.00 off a tour of 3000.00 or more: minimum spend 3000.00 not reached "
            "(eligible items 2999.99)"
        ]
    )
    # the rule's label is the merchant's own text: a parameter, not translated
    assert zh == [
        "300.00 off a tour of 3000.00 or more：未满最低消费 ¥3000.00（可优惠商品 ¥2999.99）"
    ]
    not_applied = quote_json(q)["not_applied"][0]
    assert Msg.from_json(not_applied["reason_id"]).render(chinese.gettext) == (
        "未满最低消费 ¥3000.00（可优惠商品 ¥2999.99）"
    )


@pytest.mark.parametrize(
    "member, change, english, chinese_text",
    [
        (None, {}, "not a member", "非会员"),
        (Membership("suspended", 1, None), {}, "membership suspended", "会员资格已暂停"),
        (
            MEMBER,
            {"status": "suspended"},
            "merchant suspended: no member discounts",
            "商户已暂停：无会员优惠",
        ),
        (
            MEMBER,
            {"expires_at": NOW - timedelta(hours=1)},
            "discount policy expired at 2026-11-30T01:00:00Z",
            "优惠规则已于 2026-11-30T01:00:00Z 过期",
        ),
    ],
)
def test_no_discount_says_why_in_chinese_and_english(
    chinese, member, change, english, chinese_text
) -> None:
    q = quote(_tour(400000), member, replace(_travel(), **change), NOW)
    assert q.discount == 0
    assert _both(q, chinese) == ([chinese_text], [english])


def test_a_time_window_names_the_days_in_chinese(chinese) -> None:
    policy, _ = load_policy_file((ROOT / "config" / "policies" / "billiards.json").read_bytes())
    saturday = datetime(2026, 12, 5, 7, 0, tzinfo=UTC)  # 15:00 in Shanghai
    q = quote(Basket((Line("T", "table", 1, 3000),)), MEMBER, policy, saturday)
    zh, en = _both(q, chinese)
    assert en[0] == "Half price on weekday afternoons: only on Mon-Fri, not Sat"
    assert zh[0] == "Half price on weekday afternoons：仅限周一至周五，周六不适用"
    assert en[1] == "20% off late tables, Sunday to Thursday nights: outside hours 22:00-02:00"


def test_an_error_carries_its_message_id(chinese) -> None:
    with pytest.raises(BasketError) as caught:
        parse_basket([{"sku": "A", "category": "grocery", "unit_price": "1.234"}])
    exc = caught.value
    assert isinstance(exc, ValueError)  # callers that take a bad value as ValueError still do
    assert str(exc) == "basket[0].unit_price: amount '1.234' has more than two decimals (fen)"
    assert (
        exc.msg.render(chinese.gettext) == "basket[0].unit_price：金额 '1.234' 超过两位小数（分）"
    )
    assert Msg.from_json(exc.msg.as_json()) == exc.msg
