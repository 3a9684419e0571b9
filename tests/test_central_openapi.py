"""The central service's terminal API keeps to its OpenAPI 3.1 document (issue 14, item
9; issue 16, item 3): schemathesis sends what the document allows, and what it does
not, to a real central service holding a merchant, a roster, a policy and an enrolled
terminal that synced, and fails on any 5xx, an undocumented status or content type, or
an answer outside its schema."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.config import SchemathesisConfig

from central import create_app
from central.keys import create_keys
from central.openapi import document
from central.service import CentralPaths, Union
from tests.conftest import Clock
from tests.helpers import MEMBER_PAN

CONFIG = SchemathesisConfig.from_dict(
    {"seed": 20261201, "generation": {"mode": "all", "max-examples": 40, "deterministic": True}}
)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture
def central(tmp_path: Path, clock: Clock) -> Iterator[tuple[Any, dict[str, str]]]:
    paths = CentralPaths(tmp_path / "central")
    create_keys(paths.keys, now=clock())
    union = Union.open(paths, None, clock)
    union.import_members(f"member_id,pan\nU1,{MEMBER_PAN}\n")
    union.add_merchant("M0001", "Shop", 500)
    union.publish_roster()
    import json

    bundle = json.loads(union.enrol_terminal("T1", "M0001", "http://127.0.0.1:9"))
    union.close()
    app = create_app({"DATA_DIR": str(paths.data_dir), "CLOCK": clock})
    yield app, {"Authorization": f"Bearer T1.{bundle['api_secret']}"}
    app.extensions["unioncard"].close()


def test_the_document_is_valid_and_covers_every_route(central) -> None:
    app, headers = central
    served = app.test_client().get("/api/v1/openapi.json")
    assert served.status_code == 200 and served.get_json() == document()
    schemathesis.openapi.from_dict(document()).validate()
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/"):
            path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
            routes |= {
                (m.lower(), path) for m in rule.methods or () if m not in ("HEAD", "OPTIONS")
            }
    documented = {(m, p) for p, item in document()["paths"].items() for m in item}
    assert documented == routes


central_api = schemathesis.openapi.from_dict(document(), config=CONFIG)


@central_api.parametrize()
@settings(
    database=None,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_the_central_api_keeps_to_its_document(case: Any, central) -> None:
    app, headers = central
    case.operation.app = case.operation.schema.app = app
    case.call_and_validate(headers=headers, checks=CHECKS)
