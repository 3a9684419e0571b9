"""The union's refusals reach its staff in Chinese (the console's default), English
on the switch: every error the union's service, its store, its policies and its
statements raise for people is an ``N_``-marked message id with parameters (so the
console's catalogue holds it: tests/test_console.py checks the catalogue), and the
console's pages say a refusal in the reader's language. The command line keeps the
English (``str()`` of the same message)."""

from __future__ import annotations

import ast
import builtins
import importlib
import io

import pytest

from central.errors import InputError
from pact.errors import UnioncardError
from tests.test_console import _csrf, console, sign_in  # noqa: F401  (the fixture)
from tests.test_messages import _is_marked, _raises

# The modules whose refusals the console shows (central.console: the service's
# methods, and the store, policies and statements under them).
MODULES = ["central.service", "central.store", "central.policies", "central.statement"]
# Bad arguments from code, not from people, stay plain TypeError / ValueError.
PROGRAMMER_ERRORS = {
    ("central.store", "sale_column"): 2,  # a Sale field the store has no column for
    # the drivers' own integrity errors, as SQLAlchemy's (the store's callers catch them)
    ("central.store", "insert_rows"): 1,
    ("central.store", "insert_sales"): 2,
    ("central.store", "_ingest_once"): 1,  # _Overtaken: a signal to the ingest's retry
}


def _reraises_a_message(call: ast.Call) -> bool:
    """``InputError(exc.msg)``: another refusal's message, marked where it was raised."""
    first = call.args[0] if call.args else None
    return isinstance(first, ast.Attribute) and first.attr == "msg"


def _named(module: object, node: ast.expr) -> object:
    """What ``X`` or ``a.b.X`` names in the module."""
    if isinstance(node, ast.Name):
        return getattr(module, node.id, None) or getattr(builtins, node.id, None)
    if isinstance(node, ast.Attribute):
        return getattr(_named(module, node.value), node.attr, None)
    return None


@pytest.mark.parametrize("module_name", MODULES)
def test_every_refusal_for_people_is_a_marked_message_id(module_name: str) -> None:
    module = importlib.import_module(module_name)
    wrong, plain = [], {}
    for function, call in _raises(module_name):
        cls = _named(module, call.func)
        where = f"{module_name}.{function} line {call.lineno}"
        if not isinstance(cls, type):
            wrong.append(f"{where}: cannot tell what it raises")
        elif issubclass(cls, UnioncardError):
            if not call.args or not (_is_marked(call.args[0]) or _reraises_a_message(call)):
                wrong.append(where)
        else:
            plain[(module_name, function)] = plain.get((module_name, function), 0) + 1
    assert not wrong, 'raise with N_("...") and parameters, not a sentence:\n' + "\n".join(wrong)
    expected = {k: n for k, n in PROGRAMMER_ERRORS.items() if k[0] == module_name}
    assert plain == expected


def test_the_command_line_keeps_the_english(console) -> None:  # noqa: F811
    """``str()`` of a refusal is its message id filled in: the English the command line
    printed before, word for word."""
    union = console.extensions["unioncard"]
    with pytest.raises(InputError) as refused:
        union.add_merchant("M 1", "A shop", 500)
    assert (
        str(refused.value)
        == "'M 1' is not a merchant id: 1 to 32 letters, digits, - or _, such as M0001"
    )
    assert refused.value.msg.params == (("merchant_id", "'M 1'"),)


def test_a_refusal_on_a_console_page_is_in_the_readers_language(console) -> None:  # noqa: F811
    admin, _ = sign_in(console, "ada")
    page = admin.get("/console/merchants").get_data(as_text=True)
    form = {"merchant_id": "M0002", "name": "Another salon", "discount": "5",
            "csrf_token": _csrf(page)}  # fmt: skip
    chinese = admin.post("/console/merchants", data=form)
    assert chinese.status_code == 400
    text = chinese.get_data(as_text=True)
    assert "商户 M0002 已存在" in text and "already exists" not in text
    admin.get("/console/lang/en")
    page = admin.get("/console/merchants").get_data(as_text=True)
    english = admin.post("/console/merchants", data={**form, "csrf_token": _csrf(page)})
    assert "merchant M0002 already exists" in english.get_data(as_text=True)


def test_a_refused_members_file_says_why_in_chinese(console) -> None:  # noqa: F811
    admin, _ = sign_in(console, "ada")
    page = admin.get("/console/members").get_data(as_text=True)
    upload = io.BytesIO(b"member_id,pan\nU9,1234\n")  # no valid card number on line 2
    answer = admin.post(
        "/console/members",
        data={"file": (upload, "members.csv"), "csrf_token": _csrf(page)},
        content_type="multipart/form-data",
    )
    text = answer.get_data(as_text=True)
    assert answer.status_code == 400
    assert "成员文件第 2 行" in text and "is not valid" not in text


def test_refused_policy_terms_say_why_in_chinese(console) -> None:  # noqa: F811
    """The core's words on the terms (pact.policy, as `policy check` says them in
    English) inside the service's refusal, both in the reader's language."""
    admin, _ = sign_in(console, "ada")
    page = admin.get("/console/policies").get_data(as_text=True)
    terms = '{"rules": [{"id": "member-8", "kind": "half_off"}]}'
    form = {"merchant": "M0001", "terms": terms, "csrf_token": _csrf(page)}
    text = admin.post("/console/policies", data=form).get_data(as_text=True)
    assert "rules[0].kind 是 &#39;half_off&#39;；必须是以下之一" in text, text[-2000:]
    assert "it must be one of" not in text
    admin.get("/console/lang/en")
    page = admin.get("/console/policies").get_data(as_text=True)
    text = admin.post("/console/policies", data={**form, "csrf_token": _csrf(page)}).get_data(
        as_text=True
    )
    assert "rules[0].kind is &#39;half_off&#39;; it must be one of" in text
