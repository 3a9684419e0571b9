"""The till API's OpenAPI document (``/api/v1/openapi.json``, terminal.openapi): valid
OpenAPI 3.1, and kept by the API. schemathesis sends what the document allows (and,
in its negative mode, what it does not) to a real enrolled terminal whose cards are
read in-process, and fails on any 5xx, an undocumented status or content type, or a
response outside its schema. Every endpoint but health refuses a request without the
till token (401, ``kind`` "unauthorized")."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    ignored_auth,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.config import SchemathesisConfig

from central.keys import create_keys
from pact.basket import Basket, Line
from pact.timefmt import iso
from reader.errors import CardRemovedError, NoCardError
from reader.identity import CardIdentity, Tokenize, identity_from_pan
from terminal import web, webauth
from terminal.access import new_api_token, new_supervisor_token
from terminal.openapi import KINDS, document
from terminal.service import TerminalService
from terminal.state import TerminalState
from terminal.supervisor import set_pin
from terminal.syncrecord import keep_sync
from terminal.web import create_app
from tests.helpers import (
    MEMBER_PAN,
    OTHER_PAN,
    bundle,
    policy_bytes,
    roster_bytes,
    snapshot_bytes,
)

ROOT = Path(__file__).resolve().parents[1]
START = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)  # 14:00 in Shanghai, a Monday
ISSUED = START - timedelta(days=40)
LIFETIME = timedelta(days=400)
PIN = "2468"
DOC = "/api/v1/openapi.json"


class TickingClock:
    """Ten seconds pass at every reading (so a waiting sale times out)."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=10)
        return self.now


class Cards:
    """The card reader, in-process: a member's card, a stranger's, a member's, none in
    time, a stranger's, one taken out too soon; in turn, from the first call."""

    TURNS: tuple[str | Exception, ...] = (
        MEMBER_PAN,
        OTHER_PAN,
        MEMBER_PAN,
        NoCardError("no card presented within 1 s"),
        OTHER_PAN,
        CardRemovedError("the card was removed during the read"),
    )

    def __init__(self) -> None:
        self.reads = 0

    def __call__(self, *, timeout: float, tokenize: Tokenize) -> CardIdentity:
        turn = self.TURNS[self.reads % len(self.TURNS)]
        self.reads += 1
        if isinstance(turn, Exception):
            raise turn
        return identity_from_pan("unionpay", b"\xa0", turn, "2030-12", tokenize, atc=self.reads)


@dataclass
class Terminal:
    service: TerminalService
    app: Flask
    till: str  # the till token
    supervisor: str  # the supervisor token

    def headers(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.till}"}


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Terminal]:
    """A real enrolled terminal with a signed roster (one member) and the pharmacy's
    policy, a receipt printer that is a file, a supervisor PIN and token, and a few
    sales in its journal (lines to refund, sales to void)."""
    keys = create_keys(tmp_path / "keys", now=ISSUED)
    terms = json.loads((ROOT / "config" / "policies" / "pharmacy.json").read_text())
    roster = roster_bytes(keys, [MEMBER_PAN], ISSUED, lifetime=LIFETIME)
    policy = policy_bytes(keys, ISSUED, terms=terms, lifetime=LIFETIME)
    state = TerminalState(tmp_path / "terminal")
    state.enrol(bundle(keys))
    state.install(
        snapshot_bytes(keys, ISSUED, roster, policy, lifetime=LIFETIME), ISSUED, roster, policy
    )
    keep_sync(state.dir, last_success_at=iso(START))  # in service: it synced this morning
    service = TerminalService(
        state.dir,
        Cards(),
        TickingClock(START),
        card_timeout=1,
        pending_timeout=timedelta(seconds=5),  # dropped by the next call: few checkouts busy
        printer=f"file:{tmp_path / 'printer.bin'}",
    )
    service.journal.db.execute("PRAGMA synchronous=OFF")  # speed: durability is not tested here
    basket = Basket(
        (
            Line("COLD", "otc", 3, 1500),
            Line("RX1", "prescription", 1, 8800),
            Line("SOAP", "general", 2, 450),
        )
    )
    for _ in range(6):  # four sales: a member's and a stranger's, with lines and without
        try:
            service.checkout(basket if service.journal.counts()[0] % 2 else 4550, confirm=True)
        except (NoCardError, CardRemovedError):
            pass
    assert service.journal.counts()[0] == 4
    set_pin(state.dir, PIN)
    till, supervisor = new_api_token(state.dir), new_supervisor_token(state.dir)
    # "sync now" runs a sync that does nothing here (the sync itself: test_till_access)
    yield Terminal(service, create_app(service, sync=lambda: None), till, supervisor)
    service.close()


# ------------------------------------------------------------------ the document


def test_the_document_is_valid_openapi_3_1(terminal: Terminal) -> None:
    served = terminal.app.test_client().get(DOC, headers=terminal.headers())
    assert served.status_code == 200 and served.get_json() == document()
    schema = schemathesis.openapi.from_dict(document())
    schema.validate()  # against the OpenAPI 3.1 schema
    for name, component in document()["components"]["schemas"].items():
        try:
            jsonschema.Draft202012Validator.check_schema(component)
        except jsonschema.SchemaError as exc:  # pragma: no cover - the message says which
            pytest.fail(f"components.schemas.{name}: {exc.message}")
    try:
        from openapi_spec_validator import validate
    except ImportError:
        return  # schemathesis' validation above is the check
    validate(document())  # pragma: no cover - when the package is installed


def _routes(app: Flask) -> set[tuple[str, str]]:
    """The till API's routes as (method, OpenAPI path)."""
    out = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/"):
            continue
        path = re.sub(r"<(?:[a-z]+(?:\([^)]*\))?:)?([a-z_]+)>", r"{\1}", rule.rule)
        out |= {(m.lower(), path) for m in rule.methods or () if m not in ("HEAD", "OPTIONS")}
    return out


# Routes being written, not documented yet: each comes off this list with its entry.
NOT_YET_DOCUMENTED: set[tuple[str, str]] = set()


def test_the_document_covers_every_route_of_the_api(terminal: Terminal) -> None:
    documented = {(method, path) for path, item in document()["paths"].items() for method in item}
    routes = _routes(terminal.app)
    assert documented == routes - NOT_YET_DOCUMENTED
    assert NOT_YET_DOCUMENTED <= routes  # documented ones come off the list


def _statuses_in_the_code() -> dict[str, int]:
    """The kinds of web.FAILURES and web.CARD_FAILURES, and their statuses."""
    out = {kind: status for _, kind, status in web.FAILURES}
    out.update((kind, status) for _, kind, status, _ in web.CARD_FAILURES)
    return out


def _kinds_in_the_code() -> set[str]:
    kinds = set(_statuses_in_the_code())
    for module in (web, webauth):
        source = Path(str(module.__file__)).read_text()
        kinds |= set(re.findall(r'kind="([a-z_]+)"', source))
        kinds |= set(re.findall(r'problem\(\s*"([a-z_]+)"', source))
        kinds |= set(re.findall(r'\b[45]\d\d: "([a-z_]+)"', source))  # HTTP errors' kinds
    return kinds


def test_every_kind_the_code_gives_is_documented() -> None:
    """The Error schema's ``kind`` enum is exactly the codes web.py and webauth.py give,
    each with the status they give it."""
    assert set(KINDS) == _kinds_in_the_code()
    statuses = _statuses_in_the_code()
    assert {k: KINDS[k][0] for k in statuses} == statuses
    enum = document()["components"]["schemas"]["Error"]["properties"]["kind"]["enum"]
    assert enum == list(KINDS)


def test_protocol_doc_lists_every_kind() -> None:
    doc = (ROOT / "docs" / "protocol.md").read_text()
    for kind, (status, _) in KINDS.items():
        assert f"| `{kind}` | {status} |" in doc, f"docs/protocol.md lacks the kind {kind}"


def test_every_error_answer_is_the_error_shape() -> None:
    doc = document()
    for path, item in doc["paths"].items():
        for op in item.values():
            for status, answer in op["responses"].items():
                if status.startswith("2") or path == "/api/v1/health" and status == "503":
                    continue
                name = answer["$ref"].rpartition("/")[2]
                schema = doc["components"]["responses"][name]["content"]["application/json"]
                assert schema["schema"] == {"$ref": "#/components/schemas/Error"}, (path, status)


# ------------------------------------------------------------------ the token


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, op)
        for path, item in document()["paths"].items()
        for method, op in item.items()
    ]


@pytest.mark.parametrize(
    "method, path, op", _operations(), ids=[f"{m.upper()} {p}" for m, p, _ in _operations()]
)
def test_every_endpoint_but_health_needs_the_till_token(
    terminal: Terminal, method: str, path: str, op: dict[str, Any]
) -> None:
    url = path.replace("{seq}", "1").replace("{pending_id}", "0" * 32)
    client = terminal.app.test_client()
    body = {"amount": "1.00"} if method == "post" else None
    if op.get("security") == []:
        assert client.open(url, method=method).status_code == 200
        return
    assert "401" in op["responses"]
    for headers in ({}, {"Authorization": "Bearer till_wrong"}, {"Authorization": "Basic eDp5"}):
        answer = client.open(url, method=method, json=body, headers=headers)
        assert answer.status_code == 401, (headers, answer.get_json())
        assert answer.get_json()["kind"] == "unauthorized"
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert terminal.service.journal.counts()[0] == 4  # nothing was done


# ------------------------------------------------------------------ schemathesis

# Seeded and deterministic (the same requests every run, no example database); "all":
# what the document allows and what it does not. About 10 s.
CONFIG = SchemathesisConfig.from_dict(
    {
        "seed": 20261130,
        "generation": {"mode": "all", "max-examples": 50, "deterministic": True},
    }
)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    ignored_auth,
]


# Loaded from the document itself (test_the_document_is_valid_openapi_3_1 checks that the
# app serves the same); the app of each test's own terminal answers. (schemathesis'
# from_fixture does not work under pytest 9.)
till_api = schemathesis.openapi.from_dict(document(), config=CONFIG)


# the event stream does not end (5 minutes): its shape is tested in test_till_access
@till_api.exclude(path="/api/v1/events").parametrize()
@settings(
    database=None,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # one terminal per operation, on purpose
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_the_till_api_keeps_to_its_document(case: Any, terminal: Terminal) -> None:
    """The till token everywhere; on void and refund the supervisor token, unless the
    body has a PIN (then the till token and the PIN, as the cashier page sends them)."""
    token = terminal.till
    if case.operation.path.endswith(("/void", "/refund")):
        has_pin = isinstance(case.body, dict) and "pin" in case.body
        token = terminal.till if has_pin else terminal.supervisor
    case.operation.app = case.operation.schema.app = terminal.app  # this test's terminal
    case.call_and_validate(headers=terminal.headers(token), checks=CHECKS)
