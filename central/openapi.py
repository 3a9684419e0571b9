"""The central service's terminal API as an OpenAPI 3.1 document (served at
``/api/v1/openapi.json``).

Written by hand from ``central.api``; ``tests/test_central_openapi.py`` runs
schemathesis against a real central service with it, so an answer outside the
document (a 5xx, an undocumented status, a body outside its schema) fails the build.
Every JSON object an answer carries is closed (``additionalProperties: false``).
"""

from __future__ import annotations

import copy
from typing import Any

STRING: dict[str, Any] = {"type": "string"}
INT: dict[str, Any] = {"type": "integer"}
VERSION: dict[str, Any] = {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}
OCTETS = "application/octet-stream"
HEX64: dict[str, Any] = {"type": "string", "pattern": "^[0-9a-f]{64}$"}

# Each error status the API answers, and what it means (the body is always Error).
ERRORS: dict[str, str] = {
    "400": "the request or its body is malformed; the line names what",
    "401": "no terminal credentials, unknown terminal or wrong secret, a revoked terminal; "
    "for an enrolment, a wrong, used or expired code",
    "404": "no such version, or no such endpoint",
    "405": "the endpoint does not take that method",
    "409": "the request contradicts what the union holds (an altered entry, another device key)",
    "413": "the body is larger than the service takes",
    "415": "a Content-Encoding other than gzip",
    "422": "an upload whose device signature does not verify (recorded)",
    "429": "too many wrong enrolment codes: wait",
    "503": "the database cannot be reached",
}


def _obj(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "required": list(required),
        "properties": {**required, **(optional or {})},
        "additionalProperties": False,
    }


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: str) -> dict[str, Any]:
    return {s: {"$ref": f"#/components/responses/E{s}"} for s in statuses}


SIGNED = {"$ref": "#/components/schemas/Signed"}
AUTH = ("400", "401", "405", "503")  # any authenticated call


def _op(
    summary: str,
    ok: dict[str, Any],
    errors: tuple[str, ...],
    *,
    params: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    security: list[Any] | None = None,
    extra_ok: dict[str, Any] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {"200": ok, **(extra_ok or {}), **_errors(*errors)},
    }
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if security is not None:
        op["security"] = security
    return op


def _query(name: str, required: bool = True) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": VERSION}


SALE = {
    "type": "object",
    "description": "A journal entry (docs/protocol.md, 'Upload body'); the service checks it.",
}

NULLABLE_STRING: dict[str, Any] = {"type": ["string", "null"]}
PARTNER = _obj(
    {
        "merchant_id": STRING,
        "name": STRING,
        "category": NULLABLE_STRING,
        "district": NULLABLE_STRING,
        "address": NULLABLE_STRING,
        "offers": {
            "type": "array",
            "items": _obj({"rule_id": STRING, "title": STRING, "zh": STRING, "en": STRING}),
        },
    }
)

_DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "unioncard central service: the terminals' API",
        "version": "1",
        "description": (
            "What a terminal's sync calls (docs/protocol.md, 'HTTP API of the central "
            "service'). Terminals authenticate with Authorization: Bearer "
            "<terminal_id>.<api_secret>; the enrolment by code and the health check with "
            'nothing. Errors are {"error": one line}.'
        ),
    },
    "components": {
        "securitySchemes": {"terminal": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": _obj({"error": STRING}),
            "Signed": {
                "type": "object",
                "required": ["signed", "signatures"],
                "properties": {
                    "signed": {"type": "object"},
                    "signatures": {"type": "array", "items": {"type": "object"}},
                },
                "description": "A signed envelope (docs/protocol.md, 'Signed files').",
            },
            "Bundle": _obj(
                {
                    "format": {"const": "unioncard.enrolment.v1"},
                    "terminal_id": STRING,
                    "merchant_id": STRING,
                    "central_url": STRING,
                    "api_secret": STRING,
                    "token_key": STRING,
                    "root": STRING,
                }
            ),
        },
        "responses": {
            f"E{status}": _json({"$ref": "#/components/schemas/Error"}, text)
            for status, text in ERRORS.items()
        },
    },
    "security": [{"terminal": []}],
    "paths": {
        "/api/v1/health": {
            "get": _op(
                "The service answers.",
                _json(_obj({"status": {"const": "ok"}}), "up"),
                ("405",),
                security=[],
            )
        },
        "/api/v1/openapi.json": {
            "get": _op(
                "This document.", _json({"type": "object"}, "OpenAPI 3.1"), ("405",), security=[]
            )
        },
        "/api/v1/root/{version}": {
            "get": _op(
                "Root metadata version N (walked one at a time until 404).",
                _json(SIGNED, "the signed root metadata"),
                (*AUTH, "404"),
                params=[{"name": "version", "in": "path", "required": True, "schema": VERSION}],
            )
        },
        "/api/v1/snapshot": {
            "get": _op(
                "The newest snapshot for the terminal's merchant, if newer than have.",
                _json(SIGNED, "the signed snapshot"),
                AUTH,
                params=[_query("have", required=False)],
                extra_ok={"204": {"description": "have is the newest"}},
            )
        },
        "/api/v1/roster": {
            "get": _op(
                "Roster version want: a delta from have when there is one, else full.",
                {
                    "description": "the roster file (UCR1; X-Roster-Kind: delta or full)",
                    "content": {
                        "application/octet-stream": {
                            "schema": {
                                "type": "string",
                                "contentMediaType": "application/octet-stream",
                            }
                        }
                    },
                },
                (*AUTH, "404"),
                params=[_query("have", required=False), _query("want")],
            )
        },
        "/api/v1/policy": {
            "get": _op(
                "Policy version P of the terminal's merchant.",
                _json(SIGNED, "the signed policy"),
                (*AUTH, "404"),
                params=[_query("version")],
            )
        },
        "/api/v1/usage": {
            "get": _op(
                "The usage file: the merchant's other terminals' quota use.",
                _json(SIGNED, "the signed usage file"),
                AUTH,
            )
        },
        "/api/v1/device-key": {
            "post": _op(
                "Register the terminal's device key (once; the same key again is fine).",
                _json(_obj({"terminal_id": STRING, "device_key": HEX64}), "registered"),
                (*AUTH, "409", "413", "415"),
                body=_obj(
                    {
                        "format": {"const": "unioncard.device-key.v1"},
                        "terminal_id": STRING,
                        "public_key": HEX64,
                    }
                ),
            )
        },
        "/api/v1/sales": {
            "post": _op(
                "Upload a batch of journal entries (idempotent by terminal and seq).",
                _json(
                    _obj(
                        {
                            "acked_through": {"type": "integer", "minimum": 0},
                            "accepted": {"type": "integer", "minimum": 0},
                            "duplicates": {"type": "integer", "minimum": 0},
                        }
                    ),
                    "acknowledged up to acked_through",
                ),
                (*AUTH, "409", "413", "415", "422"),
                params=[
                    {
                        "name": "Unioncard-Pipelined",
                        "in": "header",
                        "required": False,
                        "description": "1: sent while the terminal's request before it may "
                        "still be on its way; the service waits up to 2 s for the entries "
                        "before the batch (docs/protocol.md)",
                        "schema": {"type": "string"},
                    }
                ],
                body={
                    "type": "object",
                    "required": ["format", "terminal_id", "sales"],
                    "properties": {
                        "format": {"const": "unioncard.sales.v1"},
                        "terminal_id": STRING,
                        "sales": {"type": "array", "items": SALE, "maxItems": 1000},
                    },
                },
            )
        },
        "/api/v1/report": {
            "post": _op(
                "What the terminal holds at the end of its sync (the fleet view).",
                _json(_obj({"status": {"const": "ok"}}), "kept"),
                (*AUTH, "413", "415"),
                body={
                    "type": "object",
                    "required": ["pending"],
                    "properties": {
                        "format": {"const": "unioncard.terminal-report.v1"},
                        "root_version": {"type": ["integer", "null"], "minimum": 0},
                        "snapshot_version": {"type": ["integer", "null"], "minimum": 0},
                        "roster_version": {"type": ["integer", "null"], "minimum": 0},
                        "policy_version": {"type": ["integer", "null"], "minimum": 0},
                        "pending": {"type": "integer", "minimum": 0},
                        "warnings": {"type": "array", "items": STRING},
                        "software": STRING,
                    },
                },
            )
        },
        "/api/v1/partners": {
            "get": _op(
                "Where the card gives discounts today, each offer in plain words (public).",
                _json(
                    _obj(
                        {
                            "format": {"const": "unioncard.partners.v1"},
                            "as_of": STRING,
                            "partners": {"type": "array", "items": PARTNER},
                        }
                    ),
                    "the partners list",
                ),
                ("405", "503"),
                security=[],
            )
        },
        "/api/v1/decommission": {
            "post": _op(
                "The shop takes the terminal out of service: the union revokes it when it "
                "holds every entry up to last_seq.",
                _json(
                    _obj({"terminal_id": STRING, "last_seq": INT, "revoked_at": STRING}),
                    "revoked",
                ),
                (*AUTH, "409", "413", "415"),
                body=_obj({"terminal_id": STRING, "last_seq": {"type": "integer", "minimum": 0}}),
            )
        },
        "/api/v1/enrol": {
            "post": _op(
                "Enrol with a one-time code (no credentials): the enrolment bundle.",
                _json({"$ref": "#/components/schemas/Bundle"}, "the bundle"),
                ("400", "401", "405", "409", "413", "415", "429", "503"),
                body={
                    "type": "object",
                    "required": ["code", "device_key", "signature", "central_url"],
                    "properties": {
                        "code": STRING,
                        "device_key": HEX64,
                        "signature": {"type": "string", "pattern": "^[0-9a-f]{128}$"},
                        "central_url": STRING,
                        "has_ca": {"type": "boolean"},
                    },
                },
                security=[],
            )
        },
    },
}


def document() -> dict[str, Any]:
    """The document (a copy: callers may change theirs)."""
    return copy.deepcopy(_DOCUMENT)
