"""The terminals' API (JSON and signed files). docs/protocol.md documents each call."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from central.errors import InputError
from central.service import Union
from sync.errors import WireFormatError
from sync.wire import ack, decode_sales

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def _union() -> Union:
    union: Union = current_app.extensions["unioncard"]
    return union


def _have() -> int:
    try:
        return int(request.args.get("have", "0"))
    except ValueError:
        raise InputError("'have' must be a version number") from None


def _signed_file(kind: str, mimetype: str) -> Response:
    latest = _union().store.latest_signed(kind)
    if latest is None or latest[0] <= _have():
        return Response(status=204)
    return Response(latest[1], mimetype=mimetype, headers={"X-Version": str(latest[0])})


@bp.get("/health")
def health() -> Any:
    return jsonify(status="ok")


@bp.get("/roster")
def roster() -> Response:
    _union().authenticate(request.headers.get("Authorization"))
    return _signed_file("roster", "application/octet-stream")


@bp.get("/policy")
def policy() -> Response:
    terminal = _union().authenticate(request.headers.get("Authorization"))
    return _signed_file(f"policy:{terminal['merchant_id']}", "application/json")


@bp.post("/sales")
def upload_sales() -> Any:
    union = _union()
    terminal = union.authenticate(request.headers.get("Authorization"))
    try:
        terminal_id, batch = decode_sales(request.get_json(silent=True))
    except WireFormatError as exc:
        raise InputError(str(exc)) from None
    if terminal_id != terminal["terminal_id"]:
        raise InputError("the upload names another terminal")
    result = union.ingest(terminal, batch)
    return jsonify(ack(result.acked_through, result.accepted, result.duplicates))
