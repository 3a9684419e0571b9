"""Bad requests to every HTTP endpoint (issue 16, item 3), beyond the two OpenAPI
documents (which schemathesis covers, tests/test_openapi.py and
tests/test_central_openapi.py: every documented operation, POST bodies that keep to the
document and bodies that do not, no 5xx and every answer in its schema).

- Every request body has a cap: a body declared larger (``Content-Length``) is refused
  with 413 on every POST route of both apps (the till's, 1 MiB; the central service's
  console and terminals' API, 4 MiB), also on routes that do not read a body, before
  anything else is done; a larger body sent in chunks (no length) to a route that reads
  it is refused with 413 too, never a 5xx. The till API documents its 413.
- A body of deeply nested JSON (the parser gives up with a RecursionError) is a 400.
- The pages no OpenAPI document describes (the cashier page, its sign-in, receipts and
  the day's report; the union's console, dashboard and partners list) get any path
  values, query and form fields hypothesis makes, signed in, and never answer 5xx.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jsonschema
import pytest
import sqlalchemy as sa
from flask import Flask
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from central.serve import ThreadedServer
from pact.device import public_key_hex
from pact.wire import encode_sales
from sync.client import CentralClient, RetryPolicy
from sync.errors import SyncError
from terminal.openapi import document as till_document
from terminal.web import MAX_BODY
from tests.helpers import TEST_SIGNER
from tests.test_central import make_sales
from tests.test_central_openapi import central  # noqa: F401 - a fixture
from tests.test_console import PASSWORD, _csrf, sign_in
from tests.test_openapi import Terminal, terminal  # noqa: F401 - a fixture

ROOT = Path(__file__).resolve().parents[1]
CENTRAL_CAP = 4 * 1024 * 1024  # central.create_app's MAX_CONTENT_LENGTH
DEEP = b"[" * 100_000  # deeper than the JSON parser goes

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# a plausible value for each path parameter (the routes' own names)
PATH_VALUES = {
    "seq": 1,
    "pending_id": "0" * 32,
    "merchant_id": "M0001",
    "draft_id": 1,
    "decision": "approve",
    "lang": "en",
    "filename": "x.css",
}


def _url(rule: Any, values: dict[str, Any] | None = None) -> str:
    """The rule's path with ``values`` (by default PATH_VALUES), quoted."""
    values = {**PATH_VALUES, **(values or {})}

    def fill(match: re.Match[str]) -> str:
        return quote(str(values[match.group(1)]), safe="")

    return re.sub(r"<(?:[a-z]+(?:\([^)]*\))?:)?([a-z_]+)>", fill, rule.rule)


def _post_rules(app: Flask) -> list[Any]:
    return sorted(
        (r for r in app.url_map.iter_rules() if "POST" in (r.methods or ())), key=lambda r: r.rule
    )


def _journal_count(terminal: Terminal) -> int:  # noqa: F811
    return terminal.service.journal.counts()[0]


# ------------------------------------------------------------------ the caps


def test_every_post_of_the_till_refuses_a_body_over_its_cap(terminal: Terminal) -> None:  # noqa: F811
    client = terminal.app.test_client()
    rules = _post_rules(terminal.app)
    assert {r.rule for r in rules} >= {"/api/v1/checkout", "/login", "/logout"}
    before = _journal_count(terminal)
    error = till_document()["components"]["schemas"]["Error"]
    for rule in rules:
        answer = client.post(
            _url(rule),
            data=b"{" + b" " * MAX_BODY + b"}",
            content_type="application/json",
            headers=terminal.headers(),
        )
        assert answer.status_code == 413, (rule.rule, answer.status_code)
        body = answer.get_json()
        jsonschema.validate(body, error)
        assert body["kind"] == "too_large" and "\n" not in body["error"], body
    assert _journal_count(terminal) == before
    # at the cap, a body is read (and refused for what it says, not its size)
    answer = client.post(
        "/api/v1/checkout",
        data=b'{"amount": "x"}' + b" " * (MAX_BODY - 15),
        content_type="application/json",
        headers=terminal.headers(),
    )
    assert answer.status_code == 400, answer.get_json()


def test_the_till_api_documents_the_413_of_every_post() -> None:
    doc = till_document()
    for path, item in doc["paths"].items():
        if "post" in item:
            assert item["post"]["responses"]["413"] == {
                "$ref": "#/components/responses/TooLarge"
            }, path


def test_every_post_of_the_central_service_refuses_a_body_over_its_cap(central) -> None:  # noqa: F811
    app, headers = central
    client = app.test_client()
    rules = _post_rules(app)
    assert {r.rule for r in rules} >= {"/api/v1/sales", "/console/members", "/console/login"}
    for rule in rules:
        answer = client.post(
            _url(rule),
            data=b"x" * (CENTRAL_CAP + 1),
            content_type="application/json",
            headers=headers,
        )
        assert answer.status_code == 413, (rule.rule, answer.status_code)
    with app.extensions["unioncard"].store.engine.connect() as db:
        assert db.execute(sa.text("SELECT count(*) FROM sales")).scalar() == 0


def _chunked(client: Any, url: str, body: bytes, headers: dict[str, str]) -> Any:
    """POST ``body`` with no Content-Length, as a chunked request reaches the app."""
    return client.post(
        url,
        input_stream=io.BytesIO(body),
        content_type="application/json",
        headers={**headers, "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )


def test_a_chunked_body_over_the_cap_is_refused_where_it_is_read(
    terminal: Terminal,  # noqa: F811
    central,  # noqa: F811
) -> None:
    """Werkzeug reads a body of no declared length up to the cap and no further. On the
    till what is read is not whole JSON (400; waitress, the till's server, answers 413
    itself); the central service, under gunicorn, which passes chunks on, looks for more
    and answers 413 (it answered 400, "not in the format", before)."""
    till = terminal.app.test_client()
    before = _journal_count(terminal)
    for rule in _post_rules(terminal.app):
        answer = _chunked(till, _url(rule), b"{" + b" " * MAX_BODY + b"}", terminal.headers())
        reads = rule.rule.endswith(("/checkout", "/void", "/refund"))
        assert answer.status_code in (400, 413) if reads else answer.status_code < 500, (
            rule.rule,
            answer.status_code,
        )
    assert _journal_count(terminal) == before
    app, headers = central
    client = app.test_client()
    for rule in _post_rules(app):
        answer = _chunked(client, _url(rule), b"{" + b" " * CENTRAL_CAP + b"}", headers)
        if rule.rule.startswith("/api/"):
            assert answer.status_code == 413, (rule.rule, answer.status_code)
            assert "larger than" in answer.get_json()["error"]
        else:
            assert answer.status_code < 500, (rule.rule, answer.status_code)
    # a chunked body within the cap is read whole, as one with a length
    body = encode_sales("T1", [])
    within = _chunked(client, "/api/v1/sales", json.dumps(body).encode(), headers)
    assert within.status_code == 200, within.get_json()
    # and one at the cap exactly (JSON padded with spaces) is not taken for more
    exact = json.dumps(body).encode()
    exact = exact[:-1] + b" " * (CENTRAL_CAP - len(exact)) + b"}"
    assert len(exact) == CENTRAL_CAP
    answer = _chunked(client, "/api/v1/sales", exact, headers)
    assert answer.status_code == 200, answer.get_json()


def test_deeply_nested_json_is_a_400_everywhere(terminal: Terminal, central) -> None:  # noqa: F811
    """A RecursionError in the JSON parser was a 500 on every JSON endpoint."""
    till = terminal.app.test_client()
    for rule in _post_rules(terminal.app):
        if rule.rule.endswith(("/checkout", "/void", "/refund")):
            answer = till.post(
                _url(rule), data=DEEP, content_type="application/json", headers=terminal.headers()
            )
            assert answer.status_code == 400, (rule.rule, answer.status_code)
            assert answer.get_json()["kind"] == "bad_request"
    app, headers = central
    client = app.test_client()
    for rule in _post_rules(app):
        if rule.rule.startswith("/api/"):
            answer = client.post(
                _url(rule), data=DEEP, content_type="application/json", headers=headers
            )
            assert answer.status_code == 400, (rule.rule, answer.status_code)


# ------------------------------------------------------------------ the pages


def _fields(*modules: str) -> list[str]:
    """The query and form fields the web modules read (so that new ones get fuzzed)."""
    names: set[str] = set()
    for module in modules:
        source = (ROOT / module).read_text()
        names |= set(re.findall(r'(?:args|form)\.get\(\s*"([a-z_]+)"', source))
        names |= set(re.findall(r'_month_arg\(\s*"([a-z_]+)"', source))
    return sorted(names | {"csrf_token", "password", "token"})


TEXT = st.text(max_size=24) | st.sampled_from(
    ["", "M0001", "T1", "2026-11-30", "2026-13-45", "2026-11", "csv", "9" * 30, "../x", "%00",
     "en", "zh", "approve", "reject", "active", "exited", "on", "0", "-1", "//evil.example"]
)  # fmt: skip
VALUES = st.one_of(TEXT, st.integers(0, 2**70))


def _requests(app: Flask, skip: tuple[str, ...]) -> st.SearchStrategy[tuple[Any, ...]]:
    rules = sorted(
        (r for r in app.url_map.iter_rules() if not r.rule.startswith(skip)), key=lambda r: r.rule
    )
    methods = st.sampled_from(["GET", "POST"])
    fields = _fields(
        "central/console.py", "central/dashboard.py", "central/partners.py", "terminal/web.py",
        "terminal/webauth.py",
    )  # fmt: skip
    query = st.dictionaries(st.sampled_from(fields) | st.text(max_size=6), TEXT, max_size=4)
    return st.tuples(
        st.sampled_from(rules),
        methods,
        st.dictionaries(st.sampled_from(sorted(PATH_VALUES)), VALUES, max_size=3),
        query,
        query,
    )


def _send(client: Any, request: tuple[Any, ...], headers: dict[str, str]) -> Any:
    rule, method, path_values, query, form = request
    if method not in (rule.methods or ()):
        method = "GET" if "GET" in (rule.methods or ()) else "POST"
    url = _url(rule, path_values)
    answer = client.open(url, method=method, query_string=query, data=form, headers=headers)
    assert answer.status_code < 500, (method, url, query, form, answer.status_code)
    assert b"Traceback" not in answer.get_data()
    event(f"{answer.status_code} {method} {rule.rule}")
    return answer


@FUZZ
@given(data=st.data())
def test_the_cashier_pages_never_answer_5xx(terminal: Terminal, data: st.DataObject) -> None:  # noqa: F811
    """The pages and forms (signed in with the till token); the till API itself is
    schemathesis' (the event stream never ends, left out)."""
    request = data.draw(_requests(terminal.app, skip=("/api/",)))
    _send(terminal.app.test_client(), request, terminal.headers())


@pytest.fixture
def console(central) -> Any:  # noqa: F811
    """The central app with an admin signed in, and the CSRF token of the session (each
    form is sent with it, unless the fuzz sends one of its own: then it is refused)."""
    app, headers = central
    app.extensions["unioncard"].add_user("ada", "admin", None, PASSWORD)
    browser, answer = sign_in(app, "ada")
    assert answer.status_code == 302, answer.get_data(as_text=True)[:300]
    token = _csrf(browser.get("/console/members").get_data(as_text=True))
    return app, browser, token


@FUZZ
@given(data=st.data())
def test_the_console_and_the_public_pages_never_answer_5xx(console, data: st.DataObject) -> None:
    app, browser, token = console
    rule, method, path_values, query, form = data.draw(_requests(app, skip=("/api/", "/static")))
    _send(browser, (rule, method, path_values, query, {"csrf_token": token, **form}), {})


def test_a_draft_number_beyond_the_databases_integers_is_a_404(console) -> None:
    app, browser, token = console
    for draft in (2**63, 2**70):
        answer = browser.post(f"/console/policies/{draft}/approve", data={"csrf_token": token})
        assert answer.status_code == 404, answer.status_code


# ------------------------------------------------------------------ a hostile central service


@pytest.mark.parametrize(
    "status, answer",
    [
        (200, DEEP),  # an acknowledgement nested too deeply
        (200, b"[1, 2]"),
        (400, b"[1, 2]"),  # an error that is JSON but not an object
        (409, DEEP),
        (400, b"\xff\xfe"),
    ],
)
def test_the_sync_client_refuses_a_broken_answer_in_one_line(status: int, answer: bytes) -> None:
    """What the terminal's sync makes of the central service's answer to an upload: a
    SyncError (one line), never a RecursionError or an AttributeError."""
    app = Flask("hostile")

    @app.post("/api/v1/sales")
    def _sales() -> Any:
        return answer, status, {"Content-Type": "application/json"}

    retry = RetryPolicy(attempts=1, backoff=0, jitter=0, connect_timeout=5, read_timeout=5)
    with ThreadedServer(app) as server:
        client = CentralClient(server.url, "T1", "s" * 48, retry)
        try:
            with pytest.raises(SyncError) as refused:
                client.upload_sales(encode_sales("T1", []))
        finally:
            client.close()
    assert refused.value.msg and "\n" not in str(refused.value), str(refused.value)


def test_text_no_database_keeps_is_a_400(central) -> None:  # noqa: F811
    """A lone surrogate ("\\ud800", valid JSON) in an uploaded entry's note, or in a
    report's lines, and a NUL in a report (PostgreSQL refuses it): each was a 500."""
    app, headers = central
    union = app.extensions["unioncard"]
    key = public_key_hex(TEST_SIGNER.public_key())
    union.register_device_key(union.store.terminal("T1"), key)
    client = app.test_client()
    body = encode_sales("T1", make_sales("T1", 1))
    body["sales"][0]["note"] = "\ud800"
    data = json.dumps(body).encode()  # the surrogate as JSON escapes it
    answer = client.post(
        "/api/v1/sales", data=data, content_type="application/json", headers=headers
    )
    assert answer.status_code == 400, answer.get_json()
    assert "not valid Unicode" in answer.get_json()["error"]
    for report in (
        {"pending": 0, "warnings": ["\ud800"]},
        {"pending": 0, "software": "\udfff"},
        {"pending": 0, "software": "a\x00b"},
    ):
        answer = client.post(
            "/api/v1/report",
            data=json.dumps(report).encode(),
            content_type="application/json",
            headers=headers,
        )
        assert answer.status_code == 400, (report, answer.get_json())
