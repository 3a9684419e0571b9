"""The till API's OpenAPI 3.1 document, as Python data (served at ``/api/v1/openapi.json``).

Written by hand from the route functions of ``terminal.web`` and the shapes the service
gives (``TerminalService.status``, ``recent_sales``, ``entry_json``, ``PendingSale`` and
``SaleResult.as_json``); ``tests/test_openapi.py`` runs schemathesis against a real
terminal with it, so a response that leaves the document fails the build. Every object
a response carries is closed (``additionalProperties: false``): a new field must be
added here.

:data:`KINDS` is the table of the stable ``kind`` codes of error answers (also in
docs/protocol.md, "Till API"); the test checks it against the codes the code gives.
"""

from __future__ import annotations

import copy
from typing import Any

from terminal.checkout import VERDICTS

# Every ``kind`` an error answer can carry: its HTTP status and what it means.
KINDS: dict[str, tuple[int, str]] = {
    "bad_request": (400, "the body or a value is malformed; the line names the field"),
    "csrf": (400, "a signed-in page's POST without its CSRF token (the page, not a till)"),
    "unauthorized": (401, "no till token, or not this terminal's: send Authorization: Bearer"),
    "forbidden": (403, "the supervisor token was sent to an endpoint other than void or refund"),
    "supervisor": (403, "the supervisor's PIN is wrong, locked or unset, or the token is wrong"),
    "not_found": (404, "no such endpoint (or a sale number out of range)"),
    "no_such_sale": (404, "the journal has no entry with that number (or it has no receipt)"),
    "no_pending_sale": (404, "no sale waits under that id: confirmed, cancelled or timed out"),
    "method_not_allowed": (405, "the endpoint does not take that method"),
    "no_card": (408, "no card was presented in time"),
    "stale_card": (408, "only a card already read (or in since start-up) is in the reader"),
    "busy": (409, "another checkout (or a sync) is under way: finish or cancel it first"),
    "reversal_refused": (409, "the sale may not be voided or refunded so; the line says why"),
    "idempotency_key_reused": (
        409,
        "the void's or refund's Idempotency-Key came with another request: use a new key",
    ),
    "refused": (409, "another refusal of the terminal; the line says why"),
    "too_large": (413, "the request body is larger than 1 MiB (any request)"),
    "card_unsupported": (422, "the card has no payment application the terminal accepts"),
    "card_blocked": (422, "the card is blocked"),
    "card_removed": (422, "the card was taken out during the read"),
    "card": (422, "the card could not be read"),
    "internal": (500, "an unexpected error (logged); nothing was recorded"),
    "no_reader": (503, "the card reader or pcscd is not ready"),
    "printer": (503, "no receipt printer is set, or it did not take the receipt"),
    "not_enrolled": (503, "the terminal is not enrolled"),
    "not_ready": (503, "the terminal's settings or files are missing or invalid"),
    "journal": (503, "the journal cannot be written or its chain is broken"),
    "journal_damaged": (503, "the journal is damaged: no sale, no discount; its files are kept"),
    "disk_full": (503, "the disk of the terminal's data folder is full: nothing was recorded"),
    "no_sync": (503, "this process cannot sync (a test app): use `unioncard sync`"),
}

MAX_SEQ = 2**63 - 1  # the journal's seq is an SQLite INTEGER
YUAN = r"^-?[0-9]+\.[0-9]{2}$"  # pact.money.fen
TIME = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$"  # pact.timefmt.iso
LOCAL = r"^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}$"  # web._local
HEX = r"^[0-9a-f]+$"
# yuan typed by a till: more than 0 and at most 1000000.00 (a sale's limit), at most two
# decimals (pact.money.parse_yuan also takes "1,280" or " 12 ": not documented)
PRICE = r"^([1-9][0-9]{0,5}(\.[0-9]{1,2})?|1000000(\.0{1,2})?|0\.([1-9][0-9]?|0[1-9]))$"


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(
    required: dict[str, Any], optional: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    """A closed object: these properties (``required`` always present), no others."""
    return {
        "type": "object",
        "required": list(required),
        "properties": {**required, **(optional or {})},
        "additionalProperties": False,
        **extra,
    }


def _or_null(schema: dict[str, Any]) -> dict[str, Any]:
    return {"oneOf": [schema, {"type": "null"}]}


def _list(items: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "array", "items": items, **extra}


STRING: dict[str, Any] = {"type": "string"}
INT: dict[str, Any] = {"type": "integer"}
FEN: dict[str, Any] = {"type": "integer", "description": "fen (1/100 yuan)"}
BOOL: dict[str, Any] = {"type": "boolean"}
SEQ: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": MAX_SEQ}
RULES: dict[str, Any] = _list({"type": "string"}, description="rule ids, in the order applied")


MONEY = {
    "type": "string",
    "pattern": "^-?[0-9]+\\.[0-9]{2}$",
    "description": "yuan, may be negative",
}


def _schemas() -> dict[str, Any]:
    yuan = _ref("Yuan")
    time = _ref("Time")
    local = _ref("LocalTime")
    messages = _list(_ref("Message"))
    line_quote = _obj(
        {
            "sku": STRING,
            "category": STRING,
            "qty": INT,
            "unit_price": yuan,
            "gross": yuan,
            "discount": yuan,
            "net": yuan,
            "unit_price_fen": FEN,
            "gross_fen": FEN,
            "discount_fen": FEN,
            "net_fen": FEN,
            "rules": RULES,
        }
    )
    quote = {
        "at": time,
        "pan_last4": {"type": "string", "pattern": "^[0-9]{4}$"},
        "member": BOOL,
        "verdict": {
            "type": "string",
            "enum": list(VERDICTS),
            "description": "the card's state for the cashier, in one word",
        },
        "gross": yuan,
        "discount": yuan,
        "net": yuan,
        "gross_fen": FEN,
        "discount_fen": FEN,
        "net_fen": FEN,
        "rules": RULES,
        "reasons": _list(
            STRING, description="why a discount was not, or not fully, given (reader's language)"
        ),
        "reason_ids": {**messages, "description": "`reasons` as messages, in the same order"},
        "lines": _list(line_quote, minItems=1),
        "by_rule": _list(_obj({"rule": STRING, "discount": yuan, "discount_fen": FEN})),
        "not_applied": _list(
            _obj(
                {
                    "rule": STRING,
                    "reason": {"type": "string", "description": "in English"},
                    "reason_id": _ref("Message"),
                }
            )
        ),
    }
    journal_line = _obj(
        {
            "sku": STRING,
            "category": STRING,
            "qty": {"type": "integer", "minimum": 1},
            "unit_price": FEN,
            "discount": FEN,
        },
        {
            "by_rule": {
                "type": "object",
                "additionalProperties": FEN,
                "description": "the line's discount by rule (absent on sales before refunds)",
            },
            "of": {
                "type": "integer",
                "minimum": 0,
                "description": "a refund's line: the index of the sale's line it takes back",
            },
        },
    )
    return {
        "Error": _obj(
            {
                "error": {"type": "string", "description": "one line for people"},
                "kind": {
                    "type": "string",
                    "enum": list(KINDS),
                    "description": "a stable code for programs (docs/protocol.md, Till API)",
                },
            },
            description="Every error answer (but health's 503).",
        ),
        "Message": _obj(
            {"id": {"type": "string", "description": "the English message id (gettext)"}},
            {
                "params": {
                    "type": "object",
                    "additionalProperties": {
                        "oneOf": [{"type": "string"}, {"type": "integer"}, _ref("Message")]
                    },
                }
            },
            description="A message for people as its id and parameters (pact.text.Msg).",
        ),
        "Yuan": {
            "type": "string",
            "pattern": YUAN,
            "description": "yuan with two decimals",
            "examples": ["128.50"],
        },
        "Time": {"type": "string", "format": "date-time", "pattern": TIME},
        "LocalTime": {
            "type": "string",
            "pattern": LOCAL,
            "description": "the shop's local time (its policy's time zone)",
        },
        "Health": _obj(
            {
                "ok": BOOL,
                "problem": _or_null({"type": "string", "description": "why the journal fails"}),
            }
        ),
        "Status": _obj(
            {
                "terminal_id": STRING,
                "merchant_id": STRING,
                "merchant_name": _or_null(STRING),
                "merchant_status": _or_null(
                    {"type": "string", "enum": ["active", "suspended", "exited"]}
                ),
                "roster_version": _or_null(INT),
                "roster_members": _or_null(INT),
                "roster_expires_at": _or_null(time),
                "policy_version": _or_null(INT),
                "sales": _or_null(
                    {"type": "integer", "minimum": 0, "description": "journal entries"}
                ),
                "pending_upload": _or_null({"type": "integer", "minimum": 0}),
                "journal_damaged": _or_null(
                    {
                        "type": "string",
                        "description": "why the journal is not used (then no sales, counts null)",
                    }
                ),
                "offline": _ref("OfflineLimits"),
                "warnings": _list(STRING, description="in the reader's language"),
                "warning_ids": {**messages, "description": "`warnings` as messages"},
                "timezone": {"type": "string", "description": "the shop's (IANA name)"},
                "now_local": local,
                "roster_expires_local": _or_null(local),
                "sync": _ref("SyncState"),
                "pending_sale": _or_null(_ref("WaitingSale")),
                "waiting_for_card": {
                    "type": "boolean",
                    "description": "a checkout waits for a card now (`POST "
                    "/api/v1/checkout/stop` stops it)",
                },
            }
        ),
        "WaitingSale": _obj(
            {
                "pending_id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
                "expires_at": time,
                "expires_local": _or_null(local),
                "pan_last4": {"type": "string", "pattern": "^[0-9]{4}$"},
                "member": BOOL,
                "verdict": {"type": "string", "enum": list(VERDICTS)},
                "gross": yuan,
                "discount": yuan,
                "net": yuan,
                "gross_fen": FEN,
                "discount_fen": FEN,
                "net_fen": FEN,
                "reasons": _list(STRING, description="in the reader's language"),
            },
            description=(
                "The priced sale waiting to be confirmed or cancelled (at most one): "
                "confirm or cancel it by `pending_id` (a page reloaded, or whose answer "
                "was lost, finds it here). The card's last four digits only."
            ),
        ),
        "OfflineLimits": _obj(
            {
                "since": _or_null(time),
                "warn_at": _or_null(time),
                "stop_at": _or_null(time),
                "pending_cap": {"type": "integer", "minimum": 1},
                "reached": _list({"enum": ["warn", "stop", "cap"]}),
                "discounts": {
                    "type": "boolean",
                    "description": "false: an offline limit stops member discounts",
                },
            },
            description=(
                "The offline limits, counted from the last successful sync (`since`; "
                "before the first, the union's snapshot's issue time): a warning at "
                "`warn_at`, no member discounts from `stop_at` or with `pending_cap` "
                "entries waiting for upload, until a sync succeeds."
            ),
        ),
        "DayReport": _obj(
            {
                "date": {"type": "string", "format": "date"},
                "timezone": STRING,
                "starts_at": time,
                "ends_at": time,
                "sales": {"type": "integer", "description": "sales not voided"},
                "member_sales": INT,
                "voids": {"type": "integer", "minimum": 0},
                "refunds": {"type": "integer", "minimum": 0},
                "gross": MONEY,
                "discount": MONEY,
                "net": MONEY,
                "gross_fen": INT,
                "discount_fen": INT,
                "net_fen": INT,
                "first_seq": _or_null(SEQ),
                "last_seq": _or_null(SEQ),
                "by_rule": _list(
                    _obj(
                        {
                            "rule": STRING,
                            "label": STRING,
                            "sales": INT,
                            "discount": MONEY,
                            "discount_fen": INT,
                        }
                    )
                ),
                "terminal_id": STRING,
                "merchant_id": STRING,
                "merchant_name": _or_null(STRING),
                "printed_local": _or_null(local),
            },
            description=(
                "One business day (the shop's local day): sales − voids − refunds, by rule "
                "(pact.report)."
            ),
        ),
        "SyncState": _obj(
            {
                "last_attempt_at": _or_null(time),
                "last_attempt_local": _or_null(local),
                "last_success_at": _or_null(time),
                "last_success_local": _or_null(local),
                "last_summary": _or_null(STRING),
                "last_error": _or_null({"type": "string", "description": "in English"}),
                "last_error_text": _or_null(
                    {
                        "type": "string",
                        "description": "the last error for people, in the reader's language",
                    }
                ),
                "last_error_detail": _or_null(
                    {
                        "type": "string",
                        "description": "the error's English words, when `last_error_text` "
                        "is a general line in another language (shown under it)",
                    }
                ),
                "running": {"type": "boolean", "description": "a sync runs now"},
                "available": {"type": "boolean", "description": "this process can sync now"},
            },
            description="The link to the union: the last sync tried and the last that worked.",
        ),
        "RecentSale": _obj(
            {
                "seq": SEQ,
                "at": time,
                "at_local": local,
                "kind": {"type": "string", "enum": ["sale", "void", "refund"]},
                "ref_seq": _or_null(SEQ),
                "voided_by": _or_null(SEQ),
                "refunded_by": _list(SEQ),
                "refundable": BOOL,
                "pan_last4": STRING,
                "member": BOOL,
                "gross": yuan,
                "discount": yuan,
                "net": yuan,
                "uploaded": BOOL,
            }
        ),
        "Reader": _obj(
            {
                "state": _or_null(
                    {
                        "type": "string",
                        "enum": [
                            "ready",
                            "new_card",
                            "stale_card",
                            "no_reader",
                            "no_pcscd",
                            "monitor_stopped",
                        ],
                    }
                ),
                "reader": _or_null({"type": "string", "description": "the first reader's name"}),
                "card_present": _or_null(BOOL),
                "ready_for_new_card": _or_null(BOOL),
                "waiting_for_card": _or_null(BOOL),
                "message": {"type": "string", "description": "one line for the cashier"},
                "last_error": _or_null(STRING),
            },
            {
                "readers": _list(
                    _obj(
                        {
                            "name": STRING,
                            "card_present": BOOL,
                            "card": _or_null(
                                {
                                    "type": "string",
                                    "enum": [
                                        "new",
                                        "read for the last sale",
                                        "already in the reader at start-up",
                                    ],
                                }
                            ),
                        }
                    )
                ),
                "pcscd_connected": BOOL,
            },
            description=(
                "The card reader; `state` is a stable code, `message` the line for the "
                "cashier. A reader that cannot report (a plain function) answers nulls and "
                "its message, and neither `readers` nor `pcscd_connected`."
            ),
        ),
        "BasketLine": _obj(
            {
                "sku": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": r"\S"},
                "category": {
                    "type": "string",
                    "pattern": "^[a-z0-9][a-z0-9_.-]{0,39}$",
                    "description": "compared in lower case",
                },
                "unit_price": {
                    "type": "string",
                    "pattern": PRICE,
                    "description": "yuan, more than 0, at most two decimals",
                },
            },
            {"qty": {"type": "integer", "minimum": 1, "maximum": 9999, "default": 1}},
        ),
        "AmountCheckout": _obj(
            {
                "amount": {
                    "type": "string",
                    "pattern": PRICE,
                    "description": "yuan, two decimals at most",
                    "examples": ["128.50"],
                }
            },
            {"timeout": _ref("CardTimeout"), "confirm": _ref("Confirm")},
            description="A sale rung up as a plain amount (one line of category general).",
        ),
        "BasketCheckout": _obj(
            {"basket": _list(_ref("BasketLine"), minItems=1, maxItems=500)},
            {"timeout": _ref("CardTimeout"), "confirm": _ref("Confirm")},
        ),
        "CardTimeout": {
            "type": "integer",
            "minimum": 1,
            "maximum": 120,
            "description": "seconds to wait for the card (default: the settings' card_timeout)",
        },
        "Confirm": {
            "type": "boolean",
            "default": False,
            "description": "journal the sale at once (one call) instead of waiting for confirm",
        },
        "PendingSale": _obj(
            {
                "state": {"const": "pending"},
                "pending_id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
                "expires_at": time,
                **quote,
            },
            description="Priced, nothing journaled: confirm or cancel it before `expires_at`.",
        ),
        "ConfirmedSale": _obj(
            {
                "state": {"const": "confirmed"},
                "seq": SEQ,
                "sale_id": {"type": "string", "format": "uuid"},
                **quote,
            },
            description="Journaled (the point of no return) as entry `seq`.",
        ),
        "Cancelled": _obj(
            {"state": {"const": "cancelled"}, "pending_id": {"type": "string"}},
        ),
        "Entry": _obj(
            {
                "seq": SEQ,
                "sale_id": {"type": "string", "format": "uuid"},
                "at": time,
                "terminal_id": STRING,
                "merchant_id": STRING,
                "pan_last4": {"type": "string", "pattern": "^([0-9]{4})?$"},
                "member": BOOL,
                "gross": FEN,
                "discount": FEN,
                "net": FEN,
                "rules": RULES,
                "roster_version": INT,
                "policy_version": INT,
                "prev_hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                "hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                "voided_by": _or_null(SEQ),
                "refunds": _list(SEQ),
            },
            {
                "basket": _obj(
                    {
                        "lines": _list(journal_line),
                        "tier": _or_null({"type": "integer", "minimum": 0, "maximum": 255}),
                        "discounts": {"type": "object", "additionalProperties": FEN},
                    }
                ),
                "atc": {"type": "integer", "minimum": 0, "maximum": 65535},
                "kind": {"type": "string", "enum": ["void", "refund", "event"]},
                "ref_seq": SEQ,
                "note": {"type": "string", "description": "a void's or refund's reason; an event"},
                "sig": {"type": "string", "pattern": HEX},
                "refundable": _list(
                    {"type": "integer", "minimum": 0},
                    description="a sale with lines: units left to refund, by line",
                ),
            },
            description=(
                "A journal entry as the journal keeps it (money in fen; docs/protocol.md, "
                "Journal), without the card token. Fields that are null are left out; "
                "`kind` absent is a sale."
            ),
        ),
        "VoidRequest": _obj(
            {"reason": {"type": "string", "minLength": 1, "maxLength": 200}},
            {"pin": _ref("Pin")},
        ),
        "RefundRequest": _obj(
            {
                "lines": _list(
                    _obj(
                        {
                            "index": {"type": "integer", "minimum": 0},
                            "qty": {"type": "integer", "minimum": 1},
                        }
                    ),
                    minItems=1,
                ),
                "reason": {"type": "string", "minLength": 1, "maxLength": 200},
            },
            {"pin": _ref("Pin")},
        ),
        "Pin": {
            "type": "string",
            "pattern": "^[0-9]{4,8}$",
            "description": "the supervisor's PIN; not needed with the supervisor token",
        },
        "Voided": _obj(
            {"state": {"const": "voided"}, "seq": SEQ, "ref_seq": SEQ, "net": yuan},
            description="`seq` is the void's entry, `ref_seq` the sale voided.",
        ),
        "Refunded": _obj(
            {
                "state": {"const": "refunded"},
                "seq": SEQ,
                "ref_seq": SEQ,
                "gross": yuan,
                "discount": yuan,
                "net": yuan,
            },
            description="`seq` is the refund's entry; `net` is what the customer gets back.",
        ),
        "Printed": _obj(
            {
                "printed": SEQ,
                "code": _or_null(
                    {"type": "string", "pattern": "^[0-9A-HJKMNP-TV-Z]{5}-[0-9A-HJKMNP-TV-Z]{5}$"}
                ),
            },
            description="`code` is the receipt's verification code (null: an unsigned entry).",
        ),
    }


# The error answers each status gives, and which kinds they carry.
_ERRORS: dict[str, tuple[str, str]] = {
    "400": (
        "BadRequest",
        "The body or a value is malformed (`bad_request`); a signed-in page's POST "
        "without its CSRF token (`csrf`).",
    ),
    "401": ("Unauthorized", "No till token, or a wrong one (`unauthorized`)."),
    "403": (
        "Forbidden",
        "The supervisor token outside void and refund (`forbidden`); for void and refund, "
        "a wrong, locked or unset PIN or supervisor token (`supervisor`).",
    ),
    "404": (
        "NotFound",
        "No such entry (`no_such_sale`), no such waiting sale (`no_pending_sale`), or no such "
        "endpoint (`not_found`).",
    ),
    "408": ("Timeout", "No card in time (`no_card`, `stale_card`)."),
    "409": (
        "Conflict",
        "Refused: another checkout is waiting (`busy`), the reversal may not be made "
        "(`reversal_refused`), a void's or refund's Idempotency-Key came with another "
        "request (`idempotency_key_reused`), or another refusal (`refused`).",
    ),
    "422": (
        "CardProblem",
        "The card could not be used (`card_unsupported`, `card_blocked`, `card_removed`, `card`).",
    ),
    "413": ("TooLarge", "The request body is larger than 1 MiB (`too_large`)."),
    "500": ("Internal", "An unexpected error, logged; nothing was recorded (`internal`)."),
    "503": (
        "Unavailable",
        "The terminal cannot serve it now (`no_reader`, `printer`, `not_enrolled`, "
        "`not_ready`, `journal`, `journal_damaged`, `disk_full`, `no_sync`).",
    ),
}


def _responses() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, text in _ERRORS.values():
        out[name] = {
            "description": text,
            "content": {"application/json": {"schema": _ref("Error")}},
        }
    out["Unauthorized"]["headers"] = {
        "WWW-Authenticate": {
            "description": 'Bearer realm="unioncard till"',
            "schema": {"type": "string"},
        }
    }
    return out


def _ok(schema: dict[str, Any], text: str, **extra: Any) -> dict[str, Any]:
    return {"description": text, "content": {"application/json": {"schema": schema}}, **extra}


def _errors(*statuses: int) -> dict[str, Any]:
    """The error answers of an operation: these statuses, and always 401, 413 (any
    request with a body over the cap, terminal.web.MAX_BODY) and 500."""
    codes = sorted({401, 413, 500, *statuses})
    return {
        str(code): {"$ref": f"#/components/responses/{_ERRORS[str(code)][0]}"} for code in codes
    }


def _operation(
    op_id: str,
    summary: str,
    ok: dict[str, Any],
    errors: dict[str, Any],
    *,
    body: str | None = None,
    example: Any = None,
    parameters: list[dict[str, Any]] | None = None,
    security: list[dict[str, list[str]]] | None = None,
    description: str | None = None,
    links: dict[str, Any] | None = None,
    ok_status: str = "200",
) -> dict[str, Any]:
    if links:
        ok = {**ok, "links": links}
    op: dict[str, Any] = {
        "operationId": op_id,
        "summary": summary,
        "parameters": [{"$ref": "#/components/parameters/AcceptLanguage"}, *(parameters or [])],
        "responses": {ok_status: ok, **errors},
    }
    if description:
        op["description"] = description
    if body is not None:
        media: dict[str, Any] = {"schema": _ref(body)}
        if example is not None:
            media["example"] = example
        op["requestBody"] = {"required": True, "content": {"application/json": media}}
    if security is not None:
        op["security"] = security
    return op


SEQ_PARAM = {"$ref": "#/components/parameters/Seq"}
IDEMPOTENCY_PARAM = {"$ref": "#/components/parameters/IdempotencyKey"}
IDEMPOTENCY = (
    "With an `Idempotency-Key` (a new one for each void or refund), a request sent again "
    "with the same key and body (its answer lost) is answered the first answer "
    "(`Idempotent-Replayed: true`) and journals nothing; the same key with another "
    "request is refused (409, `idempotency_key_reused`). The terminal keeps each key of "
    "what it journaled for 24 hours, in its journal with the entry (across a restart too)."
)
REPLAYED = {
    "Idempotent-Replayed": {
        "description": "`true`: the answer of an earlier request with this Idempotency-Key",
        "schema": {"type": "string", "enum": ["true"]},
    }
}
PENDING_PARAM = {"$ref": "#/components/parameters/PendingId"}
# void and refund: the till token (with the supervisor's PIN), or the supervisor token
SUPERVISOR: list[dict[str, list[str]]] = [{"till": []}, {"supervisor": []}]
FROM_SALE = {"seq": "$response.body#/seq"}


def _paths() -> dict[str, Any]:
    return {
        "/api/v1/health": {
            "get": {
                "operationId": "health",
                "summary": "Whether the journal answers (open: no token)",
                "security": [],
                "responses": {
                    "200": _ok(_ref("Health"), "The journal answers: `ok` true, `problem` null."),
                    "503": _ok(_ref("Health"), "It does not: `ok` false and the `problem`."),
                    "500": {"$ref": "#/components/responses/Internal"},
                },
            }
        },
        "/api/v1/openapi.json": {
            "get": _operation(
                "openapi",
                "This document",
                _ok({"type": "object"}, "The till API's OpenAPI 3.1 document."),
                _errors(403),
            )
        },
        "/api/v1/status": {
            "get": _operation(
                "status",
                "The terminal, its merchant, roster and policy, sales, warnings and sync",
                _ok(_ref("Status"), "The terminal's state."),
                _errors(403, 503),
            )
        },
        "/api/v1/sales": {
            "get": _operation(
                "recentSales",
                "Today's newest sales, voids and refunds (at most 50, newest first)",
                _ok(_obj({"sales": _list(_ref("RecentSale"), maxItems=50)}), "The entries."),
                _errors(403, 503),
            )
        },
        "/api/v1/report": {
            "get": _operation(
                "dayReport",
                "The end-of-day report: sales, voids, refunds, gross, discount, net, by rule",
                _ok(_ref("DayReport"), "The day's report."),
                _errors(400, 403, 503),
                parameters=[
                    {
                        "name": "date",
                        "in": "query",
                        "required": False,
                        "description": "the shop's local date (default: today)",
                        "schema": {"type": "string", "format": "date"},
                    }
                ],
            )
        },
        "/api/v1/sync": {
            "post": _operation(
                "syncNow",
                "Start a sync in the background (the daemon's)",
                _ok(
                    _obj(
                        {
                            "state": {"type": "string", "enum": ["started"]},
                            "sync": _ref("SyncState"),
                        }
                    ),
                    "The sync started; the status's `sync` follows it.",
                ),
                _errors(403, 409, 503),
                ok_status="202",
            )
        },
        "/api/v1/events": {
            "get": {
                **_operation(
                    "events",
                    "Server-sent events: the page's picture (reader, status, today's sales)",
                    {
                        "description": (
                            "An event stream: `retry: 1000`, then an `update` event whose "
                            "data is `{reader, status, sales}` at once and on every change, "
                            "and a `: keepalive` comment every 15 s; it ends after 5 minutes "
                            "(EventSource reconnects). When the till token the caller "
                            "signed in with is replaced, a `signed_out` event ends it (sign "
                            "in again). A damaged journal: `sales` is empty, the status's "
                            "warnings say why."
                        ),
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    _errors(403),
                ),
            }
        },
        "/api/v1/reader": {
            "get": _operation(
                "readerState",
                "The card reader: its name, whether a card is in, whether it is ready",
                _ok(_ref("Reader"), "The reader's state."),
                _errors(403),
            )
        },
        "/api/v1/checkout": {
            "post": _operation(
                "checkout",
                "Wait for the card and price the sale",
                _ok(
                    {
                        "oneOf": [_ref("PendingSale"), _ref("ConfirmedSale")],
                        "discriminator": {
                            "propertyName": "state",
                            "mapping": {
                                "pending": "#/components/schemas/PendingSale",
                                "confirmed": "#/components/schemas/ConfirmedSale",
                            },
                        },
                    },
                    "The priced sale: `pending` (nothing journaled), or with `confirm` "
                    "`confirmed` (journaled as `seq`).",
                ),
                _errors(400, 403, 408, 409, 422, 503),
                body="CheckoutRequest",
                example={
                    "basket": [
                        {"sku": "COLD", "category": "otc", "qty": 2, "unit_price": "150.00"},
                        {"sku": "RX1", "category": "prescription", "unit_price": "88.00"},
                    ],
                    "timeout": 30,
                },
                description=(
                    "One checkout at a time; one sale waits for its confirmation at a time "
                    "(409 `busy` meanwhile, until it is confirmed, cancelled or has waited "
                    "2 minutes). A basket has 1 to 500 lines."
                ),
                links={
                    "confirm": {
                        "operationId": "confirmCheckout",
                        "parameters": {"pending_id": "$response.body#/pending_id"},
                    },
                    "cancel": {
                        "operationId": "cancelCheckout",
                        "parameters": {"pending_id": "$response.body#/pending_id"},
                    },
                },
            )
        },
        "/api/v1/checkout/stop": {
            "post": _operation(
                "stopWaiting",
                "Stop the checkout waiting for a card",
                _ok(
                    _obj(
                        {
                            "stopped": {
                                "type": "boolean",
                                "description": "false: no checkout was waiting for a card",
                            }
                        }
                    ),
                    "Stopped (or nothing to stop).",
                ),
                _errors(400, 403),
                description=(
                    "The checkout waiting for a card answers 409 (`refused`) at once and "
                    "records nothing. The reader's wait goes on until a card comes or its "
                    "time is up: the next checkout takes that card. A card already read "
                    "waits as a priced sale (the status's `pending_sale`): cancel it."
                ),
            )
        },
        "/api/v1/checkout/{pending_id}/confirm": {
            "post": _operation(
                "confirmCheckout",
                "Journal the waiting sale (the point of no return)",
                _ok(_ref("ConfirmedSale"), "The sale, journaled as `seq`."),
                _errors(403, 404, 503),
                parameters=[PENDING_PARAM],
                links={
                    "entry": {"operationId": "saleEntry", "parameters": FROM_SALE},
                    "void": {"operationId": "voidSale", "parameters": FROM_SALE},
                    "refund": {"operationId": "refundSale", "parameters": FROM_SALE},
                    "print": {"operationId": "printReceipt", "parameters": FROM_SALE},
                },
            )
        },
        "/api/v1/checkout/{pending_id}/cancel": {
            "post": _operation(
                "cancelCheckout",
                "Drop the waiting sale: nothing is journaled, no quota is used",
                _ok(_ref("Cancelled"), "Dropped."),
                _errors(403, 404),
                parameters=[PENDING_PARAM],
            )
        },
        "/api/v1/sales/{seq}": {
            "get": _operation(
                "saleEntry",
                "Journal entry `seq`, its void or refunds and the units left to refund",
                _ok(_ref("Entry"), "The entry."),
                _errors(403, 404, 503),
                parameters=[SEQ_PARAM],
            )
        },
        "/api/v1/sales/{seq}/void": {
            "post": _operation(
                "voidSale",
                "Void sale `seq` of today (supervisor)",
                _ok(_ref("Voided"), "Voided: the void's entry.", headers=REPLAYED),
                _errors(400, 403, 404, 409, 503),
                body="VoidRequest",
                example={"reason": "charged twice"},
                parameters=[SEQ_PARAM, IDEMPOTENCY_PARAM],
                security=SUPERVISOR,
                description=(
                    "The supervisor token as the bearer token, or the till token and the "
                    "supervisor's `pin` (five wrong tries lock it). " + IDEMPOTENCY
                ),
            )
        },
        "/api/v1/sales/{seq}/refund": {
            "post": _operation(
                "refundSale",
                "Refund units of lines of sale `seq` (supervisor)",
                _ok(_ref("Refunded"), "Refunded: the refund's entry.", headers=REPLAYED),
                _errors(400, 403, 404, 409, 503),
                body="RefundRequest",
                example={"lines": [{"index": 0, "qty": 1}], "reason": "returned unopened"},
                parameters=[SEQ_PARAM, IDEMPOTENCY_PARAM],
                security=SUPERVISOR,
                description=(
                    "The supervisor token as the bearer token, or the till token and the "
                    "supervisor's `pin`. `index` is the line's place in the sale (from 0). "
                    + IDEMPOTENCY
                ),
            )
        },
        "/api/v1/sales/{seq}/print": {
            "post": _operation(
                "printReceipt",
                "Print the receipt of entry `seq` on the terminal's ESC/POS printer",
                _ok(_ref("Printed"), "Printed."),
                _errors(403, 404, 503),
                parameters=[SEQ_PARAM],
            )
        },
    }


def _with_body_cap(paths: dict[str, Any]) -> dict[str, Any]:
    """Every request may answer 413 (each request body has a cap, terminal.web.MAX_BODY,
    checked on every route), and every POST 400 (a signed-in page's POST without its
    CSRF token)."""
    for item in paths.values():
        for method, op in item.items():
            answers = {**op["responses"], "413": {"$ref": _ERROR_REF + "TooLarge"}}
            if method == "post":
                answers.setdefault("400", {"$ref": _ERROR_REF + "BadRequest"})
            op["responses"] = dict(sorted(answers.items()))
    return paths


_ERROR_REF = "#/components/responses/"


def document() -> dict[str, Any]:
    """The till API's OpenAPI 3.1 document (a new dict each call)."""
    schemas = _schemas()
    schemas["CheckoutRequest"] = {
        "oneOf": [_ref("AmountCheckout"), _ref("BasketCheckout")],
        "description": 'An amount ({"amount": "128.50"}) or a basket, not both.',
    }
    kinds = "\n".join(
        f"| `{kind}` | {status} | {meaning} |" for kind, (status, meaning) in KINDS.items()
    )
    doc = {
        "openapi": "3.1.0",
        "info": {
            "title": "unioncard till API",
            "version": "1",
            "description": (
                "The JSON API of a shop's unioncard terminal, for its till (the cashier "
                "page uses it too). Every endpoint but health needs the till token as "
                "`Authorization: Bearer ...` (made at enrolment; `unioncard terminal "
                "api-token` makes a new one). The supervisor token (`unioncard terminal "
                "supervisor-token`) opens void and refund only.\n\n"
                'Money is yuan as strings with two decimals (`"128.50"`), with the '
                "same in fen as integers (`*_fen`); a journal entry keeps fen. Lines for "
                "people (`error`, `reasons`, `warnings`) are in the language of "
                "`Accept-Language` (`zh`, the default, or `en`).\n\n"
                'Every error answer is `{"error": "one line for people", "kind": '
                '"a stable code"}`:\n\n| kind | status | meaning |\n| --- | --- | --- |\n' + kinds
            ),
        },
        "security": [{"till": []}],
        "paths": _with_body_cap(_paths()),
        "components": {
            "securitySchemes": {
                "till": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The till token (`unioncard terminal api-token`).",
                },
                "supervisor": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": (
                        "The supervisor token (`unioncard terminal supervisor-token`): "
                        "void and refund only."
                    ),
                },
            },
            "parameters": {
                "AcceptLanguage": {
                    "name": "Accept-Language",
                    "in": "header",
                    "required": False,
                    "description": "The language of the lines for people (default zh).",
                    "schema": {"type": "string", "enum": ["zh", "en", "zh-CN", "en-US"]},
                },
                "Seq": {
                    "name": "seq",
                    "in": "path",
                    "required": True,
                    "description": "The journal entry's number (1, 2, ...).",
                    "schema": SEQ,
                    "example": 1,
                },
                "IdempotencyKey": {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "description": (
                        "A key of the caller's, new for each void or refund (the page sends "
                        "32 random hex digits): sent again with the same request, the first "
                        "answer comes back and nothing is journaled twice."
                    ),
                    "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,255}$"},
                },
                "PendingId": {
                    "name": "pending_id",
                    "in": "path",
                    "required": True,
                    "description": "The waiting sale's id, from the checkout's answer.",
                    "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
                },
            },
            "schemas": schemas,
            "responses": _responses(),
        },
    }
    return copy.deepcopy(doc)  # the parts shared by reference (STRING, SEQ, ...) too
