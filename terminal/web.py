"""The cashier page and the till's JSON API (Flask app factory).

Every error becomes one JSON line ``{"error": "..."}`` with a fitting status;
a cashier never sees a traceback.
"""

from __future__ import annotations

import logging
from typing import Any

import segno
from flask import Blueprint, Flask, current_app, jsonify, render_template, request
from markupsafe import Markup

from pact.basket import Basket, parse_basket
from pact.errors import ReversalError
from pact.money import fen, parse_yuan
from reader.errors import CardError, NoCardError, NoReaderError
from terminal.errors import (
    BusyError,
    PendingError,
    PrinterError,
    SupervisorError,
    TerminalError,
    UnknownSaleError,
)
from terminal.service import TerminalService

log = logging.getLogger(__name__)
bp = Blueprint("cashier", __name__)


def _service() -> TerminalService:
    service: TerminalService = current_app.extensions["unioncard_terminal"]
    return service


@bp.get("/")
def page() -> str:
    return render_template("cashier.html")


@bp.get("/api/v1/status")
def status() -> Any:
    return jsonify(_service().status())


@bp.get("/api/v1/sales")
def recent() -> Any:
    return jsonify(sales=_service().recent_sales(limit=10))


@bp.get("/api/v1/reader")
def reader_state() -> Any:
    """The card reader: its name, whether a card is in it, whether it is ready for a
    new card, the last error. A reader that cannot tell (a plain function) says so."""
    report = getattr(_service().read_card, "status", None)
    if report is None:
        return jsonify(
            reader=None,
            card_present=None,
            ready_for_new_card=None,
            waiting_for_card=None,
            message="the card reader does not report its state",
            last_error=None,
        )
    return jsonify(report())


@bp.post("/api/v1/checkout")
def checkout() -> Any:
    """``{"amount": "128.50"}`` or ``{"basket": [{"sku", "category", "qty", "unit_price"}]}``,
    optionally ``"timeout"`` (s) and ``"confirm": true``.

    Waits for the card and answers the priced sale: ``state`` "pending" with a
    ``pending_id`` to confirm or cancel, or, with ``"confirm": true``, "confirmed"
    (journaled) with its ``seq``.
    """
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or ("amount" in body) == ("basket" in body):
        return jsonify(
            error='send {"amount": "128.50"} (yuan, as a string) or {"basket": [lines]}'
        ), 400
    try:
        if "basket" in body:
            basket = parse_basket(body["basket"])
        else:
            basket = Basket.of_amount(parse_yuan(str(body["amount"])))
    except ValueError as exc:
        return jsonify(error=str(exc)), 400
    timeout = body.get("timeout")
    if timeout is not None and (not isinstance(timeout, int) or not 1 <= timeout <= 120):
        return jsonify(error="timeout must be whole seconds, 1 to 120"), 400
    confirm = body.get("confirm", False)
    if not isinstance(confirm, bool):
        return jsonify(error="confirm must be true or false"), 400
    if confirm:
        return jsonify(_service().checkout(basket, timeout=timeout, confirm=True).as_json())
    return jsonify(_service().checkout(basket, timeout=timeout).as_json())


@bp.post("/api/v1/checkout/<pending_id>/confirm")
def confirm(pending_id: str) -> Any:
    """Journal the waiting sale (the point of no return); answer it with its ``seq``."""
    return jsonify(_service().confirm(pending_id).as_json())


@bp.post("/api/v1/checkout/<pending_id>/cancel")
def cancel(pending_id: str) -> Any:
    """Drop the waiting sale: nothing is journaled, no quota is used."""
    dropped = _service().cancel(pending_id)
    return jsonify(state="cancelled", pending_id=dropped.id)


@bp.post("/api/v1/sales/<int:seq>/void")
def void(seq: int) -> Any:
    """``{"reason": "...", "pin": "1234"}``: void sale ``seq`` of today (supervisor: the
    PIN, or the till's supervisor token as ``Authorization: Bearer ...``)."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("reason"), str):
        return jsonify(error='send {"reason": "why", "pin": "supervisor PIN"}'), 400
    entry = _service().void(seq, body["reason"], body.get("pin"), _bearer())
    return jsonify(state="voided", seq=entry.seq, ref_seq=entry.ref_seq, net=fen(entry.net))


def _bearer() -> str | None:
    """The till's supervisor token (``Authorization: Bearer ...``), if it sent one."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


@bp.get("/api/v1/sales/<int:seq>")
def sale_entry(seq: int) -> Any:
    """Entry ``seq``: amounts, lines, its void or refunds, and each line's units left
    to refund (``refundable``)."""
    return jsonify(_service().entry_json(seq))


@bp.post("/api/v1/sales/<int:seq>/refund")
def refund(seq: int) -> Any:
    """``{"lines": [{"index": 0, "qty": 1}], "reason": "...", "pin": "1234"}``: refund
    units of lines of sale ``seq`` (supervisor)."""
    body = request.get_json(silent=True)
    usage = 'send {"lines": [{"index": 0, "qty": 1}], "reason": "why", "pin": "supervisor PIN"}'
    if not isinstance(body, dict) or not isinstance(body.get("reason"), str):
        return jsonify(error=usage), 400
    lines = body.get("lines")
    if not isinstance(lines, list) or not all(
        isinstance(item, dict)
        and set(item) == {"index", "qty"}
        and all(type(item[k]) is int for k in ("index", "qty"))
        for item in lines
    ):
        return jsonify(error=usage), 400
    items = [(item["index"], item["qty"]) for item in lines]
    entry = _service().refund(seq, items, body["reason"], body.get("pin"), _bearer())
    return jsonify(
        state="refunded",
        seq=entry.seq,
        ref_seq=entry.ref_seq,
        gross=fen(entry.gross),
        discount=fen(entry.discount),
        net=fen(entry.net),
    )


@bp.get("/receipt/<int:seq>")
def receipt_page(seq: int) -> str:
    """The receipt of entry ``seq``: an 80 mm page the browser prints, with the
    verification code and its QR code."""
    slip = _service().receipt(seq)
    qr = Markup(segno.make(slip.code).svg_inline(scale=4)) if slip.code else ""
    return render_template("receipt.html", slip=slip, qr=qr)


@bp.post("/api/v1/sales/<int:seq>/print")
def print_slip(seq: int) -> Any:
    """Print the receipt of entry ``seq`` on the terminal's ESC/POS printer."""
    slip = _service().print_receipt(seq)
    return jsonify(printed=seq, code=slip.code)


def create_app(service: TerminalService) -> Flask:
    app = Flask(__name__)
    app.extensions["unioncard_terminal"] = service
    app.register_blueprint(bp)

    @app.errorhandler(BusyError)
    def _busy(exc: BusyError) -> Any:
        return jsonify(error=str(exc), kind="busy"), 409

    @app.errorhandler(SupervisorError)
    def _supervisor(exc: SupervisorError) -> Any:
        return jsonify(error=str(exc), kind="supervisor"), 403

    @app.errorhandler(ReversalError)
    def _reversal(exc: ReversalError) -> Any:
        return jsonify(error=str(exc), kind="reversal_refused"), 409

    @app.errorhandler(PrinterError)
    def _printer(exc: PrinterError) -> Any:
        return jsonify(error=str(exc), kind="printer"), 503

    @app.errorhandler(UnknownSaleError)
    def _unknown(exc: UnknownSaleError) -> Any:
        return jsonify(error=str(exc), kind="no_such_sale"), 404

    @app.errorhandler(PendingError)
    def _pending(exc: PendingError) -> Any:
        return jsonify(error=str(exc), kind="no_pending_sale"), 404

    @app.errorhandler(NoCardError)
    def _no_card(exc: NoCardError) -> Any:
        return jsonify(error=str(exc), kind="no_card"), 408

    @app.errorhandler(NoReaderError)
    def _no_reader(exc: NoReaderError) -> Any:
        return jsonify(error=str(exc), kind="no_reader"), 503

    @app.errorhandler(CardError)
    def _card(exc: CardError) -> Any:
        return jsonify(error=str(exc), kind="card"), 422

    @app.errorhandler(TerminalError)
    def _terminal(exc: TerminalError) -> Any:
        return jsonify(error=str(exc)), 500

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Any:
        from werkzeug.exceptions import HTTPException

        if isinstance(exc, HTTPException):
            return jsonify(error=exc.description), exc.code
        log.exception("unexpected error in the cashier API")
        return jsonify(error="unexpected error: the sale was not recorded; call support"), 500

    return app
