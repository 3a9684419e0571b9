"""The terminals' API (JSON and signed files). docs/protocol.md documents each call.

A POST body may be gzip-compressed (``Content-Encoding: gzip``; another encoding: 415).
It is refused with 413 when larger than ``MAX_CONTENT_LENGTH`` as sent (declared by
Content-Length or sent in chunks), or than ``MAX_DECODED_LENGTH`` once decompressed (a
small body that inflates enormously, a "gzip bomb", is stopped there without being
inflated further).
"""

from __future__ import annotations

import json
import zlib
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge, UnsupportedMediaType

from central.errors import InputError, NotFoundError
from central.openapi import document
from central.partners import partners_json
from central.service import Union
from pact.errors import WireFormatError
from pact.wire import MAX_VERSION, PIPELINED_HEADER, ack, decode_device_key, decode_sales

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def _union() -> Union:
    union: Union = current_app.extensions["unioncard"]
    return union


def _int_arg(name: str, default: int | None = None) -> int:
    raw = request.args.get(name)
    if raw is None and default is not None:
        return default
    try:
        value = int(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = -1
    if not 0 <= value <= MAX_VERSION:
        raise InputError(f"'{name}' must be a version number (0 to {MAX_VERSION})")
    return value


def _json_body() -> Any:
    """The request's JSON body, decompressed when gzip; None when it is not JSON (as
    Flask's ``get_json(silent=True)``)."""
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in ("", "identity", "gzip"):
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding!r} is not supported: send the body as it is or gzip"
        )
    sent_limit = current_app.config["MAX_CONTENT_LENGTH"]
    too_large = RequestEntityTooLarge(
        f"the request body is larger than {sent_limit} bytes: send smaller batches"
    )
    try:
        data = request.get_data(cache=False)
    except RequestEntityTooLarge:
        raise too_large from None
    if request.content_length is None and len(data) >= sent_limit and _more_sent():
        raise too_large  # sent in chunks: Werkzeug stops reading at the cap, silently
    if encoding == "gzip":
        limit = current_app.config["MAX_DECODED_LENGTH"]
        inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip's header and trailer
        try:
            data = inflate.decompress(data, limit + 1)  # at most one byte over the limit
        except zlib.error as exc:
            raise InputError(f"the request body is not valid gzip ({exc})") from None
        if len(data) > limit:
            raise RequestEntityTooLarge(
                f"the request body is larger than {limit} bytes once decompressed: "
                "send smaller batches"
            )
        if not inflate.eof or inflate.unused_data:
            raise InputError("the request body is not valid gzip (cut short, or more after it)")
    if not request.is_json:
        return None
    try:
        return json.loads(data)
    except (ValueError, RecursionError):  # also not UTF-8, or nested too deep
        return None


def _more_sent() -> bool:
    """Whether a body of no declared length (chunked) goes on past what was read: one
    byte more from the server's stream, which ends where the body does. (Werkzeug reads
    such a body up to ``MAX_CONTENT_LENGTH`` and returns it cut there, so without this
    an oversized upload was refused as malformed JSON, 400, instead of 413.)"""
    return bool(request.environ["wsgi.input"].read(1))


def _file(data: bytes | None, mimetype: str, **headers: str) -> Response:
    if data is None:
        raise NotFoundError("no such version")
    return Response(data, mimetype=mimetype, headers=headers)


@bp.get("/health")
def health() -> Any:
    return jsonify(status="ok")


@bp.get("/openapi.json")
def openapi() -> Any:
    """This API's OpenAPI 3.1 document (central.openapi)."""
    return jsonify(document())


@bp.get("/partners")
def partners() -> Any:
    """Where the card gives discounts today, each offer in plain words (public)."""
    return jsonify(partners_json(_union()))


@bp.get("/root/<int:version>")
def root(version: int) -> Response:
    """Root metadata version N; terminals walk N+1, N+2, ... until 404."""
    union = _union()
    union.authenticate(request.headers.get("Authorization"))
    if version > MAX_VERSION:
        raise NotFoundError("no such version")
    return _file(union.root_version(version), "application/json")


@bp.get("/snapshot")
def snapshot() -> Response:
    """The newest snapshot for the terminal's merchant, or 204 when ``have`` is current."""
    union = _union()
    terminal = union.authenticate(request.headers.get("Authorization"))
    data = union.snapshot_for(terminal["merchant_id"])
    if data is None or json.loads(data)["signed"]["version"] <= _int_arg("have", 0):
        return Response(status=204)
    return Response(data, mimetype="application/json")


@bp.get("/roster")
def roster() -> Response:
    """Roster version ``want``: a delta when the terminal holds ``want - 1``, else full."""
    union = _union()
    union.authenticate(request.headers.get("Authorization"))
    found = union.roster_file(_int_arg("have", 0), _int_arg("want"))
    if found is None:
        raise NotFoundError("no such roster version")
    kind, data = found
    return _file(data, "application/octet-stream", **{"X-Roster-Kind": kind})


@bp.get("/policy")
def policy() -> Response:
    """Policy ``version`` of the terminal's merchant."""
    union = _union()
    terminal = union.authenticate(request.headers.get("Authorization"))
    return _file(
        union.store.signed(f"policy:{terminal['merchant_id']}", _int_arg("version")),
        "application/json",
    )


@bp.post("/enrol")
def enrol() -> Any:
    """Enrol a terminal with a one-time code (no terminal credentials yet): body
    ``{"code", "device_key", "signature", "central_url", "has_ca"}``; answer the
    enrolment bundle (docs/protocol.md, "Enrolment by code")."""
    body = _json_body()
    fields = ("code", "device_key", "signature", "central_url")
    if not isinstance(body, dict) or not all(isinstance(body.get(f), str) for f in fields):
        raise InputError(
            "send JSON with code, device_key, signature and central_url (text) and has_ca"
        )
    if not isinstance(body.get("has_ca", False), bool):
        raise InputError("has_ca must be true or false")
    bundle = _union().enrol_by_code(
        body["code"][:100],
        body["device_key"][:100],
        body["signature"][:200],
        body["central_url"][:500],
        bool(body.get("has_ca", False)),
        request.remote_addr or "unknown",
    )
    return jsonify(bundle)


@bp.post("/report")
def report() -> Any:
    """What the terminal holds at the end of its sync, for the fleet view."""
    union = _union()
    terminal = union.authenticate(request.headers.get("Authorization"))
    union.record_report(terminal, _json_body())
    return jsonify(status="ok")


@bp.get("/usage")
def usage() -> Response:
    """The usage file for the terminal (pact.usage): its merchant's other terminals'
    quota use in the current periods, signed with the snapshot key."""
    union = _union()
    terminal = union.authenticate(request.headers.get("Authorization"))
    return Response(union.usage_for(terminal), mimetype="application/json")


@bp.post("/device-key")
def register_device_key() -> Any:
    """The terminal's device public key: recorded once, then the same key is fine."""
    union = _union()
    terminal = union.authenticate(request.headers.get("Authorization"))
    try:
        terminal_id, key = decode_device_key(_json_body())
    except WireFormatError as exc:
        raise InputError(str(exc)) from None
    if terminal_id != terminal["terminal_id"]:
        raise InputError("the registration names another terminal")
    union.register_device_key(terminal, key)
    return jsonify(terminal_id=terminal_id, device_key=key)


@bp.post("/decommission")
def decommission() -> Any:
    """The terminal is taken out of service by its shop: body ``{"terminal_id",
    "last_seq"}``, the last entry of its journal. The union revokes it when it holds
    every entry up to ``last_seq`` (409 otherwise: sync first)."""
    union = _union()
    terminal = union.authenticate(request.headers.get("Authorization"))
    body = _json_body()
    if (
        not isinstance(body, dict)
        or body.get("terminal_id") != terminal["terminal_id"]
        or not isinstance(body.get("last_seq"), int)
        or isinstance(body.get("last_seq"), bool)
        or not 0 <= body["last_seq"] <= 2**63 - 1
    ):
        raise InputError("send JSON with this terminal's terminal_id and last_seq (a whole number)")
    revoked_at = union.decommission_terminal(terminal, body["last_seq"])
    return jsonify(
        terminal_id=terminal["terminal_id"], last_seq=body["last_seq"], revoked_at=revoked_at
    )


def _pipelined() -> bool:
    """Whether the terminal sent this upload while its request before it may still be on
    its way (``Unioncard-Pipelined: 1``; docs/protocol.md, "Upload body")."""
    return request.headers.get(PIPELINED_HEADER, "").strip() == "1"


@bp.post("/sales")
def upload_sales() -> Any:
    union = _union()
    terminal = union.authenticate(request.headers.get("Authorization"))
    try:
        terminal_id, batch = decode_sales(_json_body())
    except WireFormatError as exc:
        raise InputError(str(exc)) from None
    if terminal_id != terminal["terminal_id"]:
        raise InputError("the upload names another terminal")
    try:
        result = union.ingest(terminal, batch, pipelined=_pipelined())
    except UnicodeEncodeError:  # a lone surrogate ("\ud800") cannot be hashed: was a 500
        raise InputError(
            "an entry holds text that is not valid Unicode (a lone surrogate): it cannot be "
            "the journal's"
        ) from None
    return jsonify(ack(result.acked_through, result.accepted, result.duplicates))
