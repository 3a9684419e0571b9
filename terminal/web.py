"""The cashier page and the till's JSON API (Flask app factory).

Every error becomes one JSON line ``{"error": "...", "kind": "..."}``: the line for
people in the reader's language (Simplified Chinese unless the page chose English or a
till asked for it), and a stable ``kind`` code for programs. A cashier never sees a
traceback. Who may call what: ``terminal.webauth``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import unicodedata
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import segno
from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    stream_with_context,
    url_for,
)
from flask.json.provider import DefaultJSONProvider
from flask_babel import Babel, gettext
from flask_babel import gettext as _
from flask_login import current_user
from markupsafe import Markup
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from pact.basket import Basket, parse_basket
from pact.errors import BasketError, ReversalError, UnioncardError
from pact.money import fen, parse_yuan
from pact.paths import local_path
from pact.report import day_bounds, day_report
from pact.sale import Sale
from pact.text import N_, Msg
from pact.timefmt import iso, parse_iso
from reader.errors import (
    CardBlockedError,
    CardError,
    CardRemovedError,
    NoCardError,
    NoReaderError,
    StaleCardError,
    UnsupportedCardError,
)
from terminal.errors import (
    BusyError,
    ConfigError,
    DiskFullError,
    InputError,
    JournalDamagedError,
    JournalError,
    NotEnrolledError,
    PendingError,
    PrinterError,
    SupervisorError,
    UnknownSaleError,
)
from terminal.journal import Once
from terminal.live import Changes, stream, watch_reader
from terminal.openapi import document as openapi_document
from terminal.service import PendingSale, TerminalService
from terminal.syncing import BackgroundSync
from terminal.syncrecord import last_sync
from terminal.webauth import _current_fingerprint, init_auth, supervisor_token

log = logging.getLogger(__name__)
bp = Blueprint("cashier", __name__)


def _service() -> TerminalService:
    service: TerminalService = current_app.extensions["unioncard_terminal"]
    return service


def _bad(line: str) -> Any:
    return problem("bad_request", 400, line)


def _localized(body: dict[str, Any]) -> dict[str, Any]:
    """``reasons`` and ``warnings`` in the reader's language, from their message ids."""
    for text_key, ids_key in (("reasons", "reason_ids"), ("warnings", "warning_ids")):
        if isinstance(body.get(ids_key), list):
            body[text_key] = [say(Msg.from_json(m)) for m in body[ids_key]]
    return body


@bp.get("/api/v1/health")
def health() -> Any:
    """Open to all (no token): whether the journal answers. 200 or 503."""
    trouble = _service().journal_problem()
    return jsonify(ok=trouble is None, problem=trouble), (200 if trouble is None else 503)


@bp.get("/api/v1/openapi.json")
def openapi() -> Any:
    """The till API's OpenAPI 3.1 document."""
    return jsonify(openapi_document())


@bp.get("/lang/<lang>")
def language_switch(lang: str) -> Any:
    """The page's language switch: remembered in the browser's session."""
    if lang in LANGUAGES:
        session["lang"] = lang
    return redirect(local_path(request.args.get("next")) or url_for("cashier.page"))


@bp.get("/")
def page() -> str:
    return render_template("cashier.html")


def _zone() -> ZoneInfo:
    """The shop's time zone (TerminalService.zone)."""
    return _service().zone()


def _local(at: str | None) -> str | None:
    """A UTC timestamp of ours in the shop's local time, ``YYYY-MM-DD HH:MM:SS``."""
    if at is None:
        return None
    return parse_iso(at).astimezone(_zone()).strftime("%Y-%m-%d %H:%M:%S")


# the line for a sync's error the reader's language has no words for (its English
# detail goes under it)
SYNC_FAILED = N_("the details, in English, are below")


def _sync_error(record: dict[str, Any]) -> tuple[str | None, str | None]:
    """The last sync error for people: (the line in the reader's language, the English
    detail to show under it or None). ``sync.json`` keeps the error as English text
    (``last_error``) and, when it has one, its message (``last_error_id``, pact.text):
    a message the catalogue has is said in the reader's language; any other error is a
    translated line with the English as its detail."""
    error = record.get("last_error")
    if not isinstance(error, str) or not error:
        return None, None
    kept = record.get("last_error_id")
    message = None
    if isinstance(kept, dict) and isinstance(kept.get("id"), str):
        try:
            message = Msg.from_json(kept)
        except (KeyError, TypeError, ValueError):
            message = None
    if language() == "en":
        return (say(message) if message is not None else error), None
    if message is not None and gettext(message.id) != message.id:
        return say(message), None
    return gettext(SYNC_FAILED), error


def _sync_state(record: dict[str, Any] | None = None) -> dict[str, Any]:
    """The link to the union: the last sync tried and the last that succeeded (shop's
    local time too), what it did, the last error (in English, and for people:
    :func:`_sync_error`), and whether one runs now; from ``record``
    (terminal.syncrecord) when the caller read it."""
    if record is None:
        record = last_sync(_service().state.dir)
    syncer: BackgroundSync | None = current_app.extensions.get("unioncard_sync")
    text, detail = _sync_error(record)
    return {
        **{k: v for k, v in record.items() if k != "last_error_id"},
        "last_success_local": _local(record["last_success_at"]),
        "last_attempt_local": _local(record["last_attempt_at"]),
        "last_error_text": text,
        "last_error_detail": detail,
        "running": syncer is not None and syncer.running,
        "available": syncer is not None,
    }


def _pending_sale(pending: PendingSale | None) -> dict[str, Any] | None:
    """The sale waiting to be confirmed, for the page (after a reload, a language switch
    or a lost answer it shows Confirm and Cancel for it): its id, amounts, verdict and
    expiry; the card's last four digits only."""
    if pending is None:
        return None
    quote = pending.as_json()
    shown = ("pending_id", "expires_at", "pan_last4", "member", "verdict", "gross", "discount",
             "net", "gross_fen", "discount_fen", "net_fen")  # fmt: skip
    return {
        **{name: quote[name] for name in shown},
        "expires_local": _local(quote["expires_at"]),
        "reasons": [say(Msg.from_json(m)) for m in quote["reason_ids"]],
    }


def _status() -> dict[str, Any]:
    service = _service()
    body = _localized(service.status())
    body["timezone"] = str(_zone())
    body["now_local"] = _local(iso(service.clock()))
    body["roster_expires_local"] = _local(body.get("roster_expires_at"))
    body["sync"] = _sync_state(body["sync"])  # the record the status counted from
    body["pending_sale"] = _pending_sale(service.pending())
    body["waiting_for_card"] = service.waiting_for_card()
    return body


TODAY_ROWS = 50  # the page's list of today's entries shows at most this many


def _recent() -> list[dict[str, Any]]:
    """Today's newest journal entries (the shop's local day), times local too."""
    today = _local(iso(_service().clock()))
    rows = _service().recent_sales(limit=TODAY_ROWS)
    for row in rows:
        row["at_local"] = _local(row["at"])
    return [row for row in rows if today is None or row["at_local"][:10] == today[:10]]


def _reader() -> dict[str, Any]:
    report = getattr(_service().read_card, "status", None)
    if report is None:
        return {
            "state": None,
            "reader": None,
            "card_present": None,
            "ready_for_new_card": None,
            "waiting_for_card": None,
            "message": _("the card reader does not report its state"),
            "last_error": None,
        }
    body: dict[str, Any] = report()
    line = READER_STATES.get(body.get("state") or "")
    if line is not None:  # the cashier's words (the reader's own line stays in last_error)
        body["message"] = gettext(line)
    return body


@bp.get("/api/v1/status")
def status() -> Any:
    """The terminal: versions, sales and pending uploads, warnings, the sync state."""
    return jsonify(_status())


@bp.get("/api/v1/sales")
def recent() -> Any:
    """Today's newest journal entries, at most 50 (times in UTC and in the shop's
    local time)."""
    return jsonify(sales=_recent())


class SignedOut(Exception):
    """The till token a stream was opened with was replaced: the stream ends."""


def _token_mark() -> str | None:
    """The mark of the till token the caller signed in with (terminal.webauth): a page
    session's or a till's; None for another caller."""
    role, _sep, mark = str(getattr(current_user, "id", "") or "").partition(":")
    return mark if role in ("page", "till") and mark else None


def _today_or_none() -> list[dict[str, Any]]:
    """Today's entries for the page's picture; none when the journal cannot be read (a
    damaged journal: the status's warnings say why, and the page shows them)."""
    try:
        return _recent()
    except JournalError as exc:
        log.debug("the page's picture has no sales: %s", exc)
        return []


def _live(
    changes: Changes, picture: Callable[[], dict[str, Any]], ended: set[str]
) -> Iterator[str]:
    """The event stream (terminal.live.stream), and a ``signed_out`` event when it
    ended because the till token it was opened with was replaced (``ended``)."""
    yield from stream(changes, picture)
    if "signed_out" in ended:
        yield "event: signed_out\ndata: {}\n\n"


@bp.get("/api/v1/events")
def events() -> Any:
    """Server-sent events: an ``update`` with the page's picture (reader, status, the
    newest sales) at once and whenever it changes; a ``signed_out`` event, and the end,
    when the till token the caller signed in with is replaced."""
    changes: Changes = current_app.extensions["unioncard_changes"]
    mark = _token_mark()
    ended: set[str] = set()

    def picture() -> dict[str, Any]:
        if mark is not None and mark != _current_fingerprint():
            ended.add("signed_out")  # the stream ends on this failure (terminal.live)
            raise SignedOut("the till token was replaced: the caller must sign in again")
        return {"reader": _reader(), "status": _status(), "sales": _today_or_none()}

    response = Response(
        stream_with_context(_live(changes, picture, ended)), mimetype="text/event-stream"
    )
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"
    return response


@bp.post("/api/v1/sync")
def sync_now() -> Any:
    """Start a sync in the background (202); 409 ``busy`` if one runs already, 503
    ``no_sync`` where this process cannot sync (a test app)."""
    syncer: BackgroundSync | None = current_app.extensions.get("unioncard_sync")
    if syncer is None:
        return problem("no_sync", 503, _("this terminal process cannot sync: use `unioncard sync`"))
    if not syncer.start():
        return problem("busy", 409, _("a sync is already running"))
    return jsonify(state="started", sync=_sync_state()), 202


def _report_day() -> date:
    text = request.args.get("date")
    if text is None:
        return _service().clock().astimezone(_zone()).date()
    try:  # YYYY-MM-DD only (fromisoformat also reads "20261130" and "2026-W48-1")
        day = (
            date.fromisoformat(text) if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text) else None
        )
    except ValueError:
        day = None
    if day is None or not 2000 <= day.year < 3000:  # no business before 2000, or after
        raise InputError(N_("date must be YYYY-MM-DD, the shop's local date"))
    return day


def _day_report() -> dict[str, Any]:
    day = _report_day()
    service = _service()
    policy = service.state.current.policy
    labels = {r.id: r.label for r in policy.rules} if policy is not None else {}
    zone = _zone()
    # the day's entries only (the journal's index on time), not the whole journal
    todays = service.journal.between(*day_bounds(day, zone))
    report = day_report(todays, day, str(zone), labels)
    body = report.as_json()
    body["terminal_id"] = service.state.enrolment.terminal_id
    body["merchant_id"] = service.state.enrolment.merchant_id
    body["merchant_name"] = policy.merchant_name if policy is not None else None
    body["printed_local"] = _local(iso(service.clock()))
    return body


@bp.get("/api/v1/report")
def report_json() -> Any:
    """The end-of-day report of ``?date=YYYY-MM-DD`` (the shop's local date; today by
    default): sales, voids, refunds, gross, discount, net, by rule."""
    return jsonify(_day_report())


@bp.get("/report")
def report_page() -> str:
    """The end-of-day report as a page to print (80 mm or A4)."""
    return render_template("report.html", report=_day_report())


@bp.get("/api/v1/reader")
def reader_state() -> Any:
    """The card reader: its name, whether a card is in it, whether it is ready for a
    new card, the last error. A reader that cannot tell (a plain function) says so."""
    return jsonify(_reader())


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
        return _bad(_('send {"amount": "128.50"} (yuan, as a string) or {"basket": [lines]}'))
    try:
        if "basket" in body:
            for item in body["basket"] if isinstance(body["basket"], list) else ():
                if isinstance(item, dict) and isinstance(item.get("unit_price"), str):
                    _decimal_digits(item["unit_price"])
            basket = parse_basket(body["basket"])
        else:
            basket = Basket.of_amount(parse_yuan(_decimal_digits(str(body["amount"]))))
    except BasketError as exc:
        return _bad(say(exc.msg))
    except ValueError as exc:
        return _bad(str(exc))
    timeout = body.get("timeout")
    if timeout is not None and (type(timeout) is not int or not 1 <= timeout <= 120):
        return _bad(_("timeout must be whole seconds, 1 to 120"))
    confirm = body.get("confirm", False)
    if not isinstance(confirm, bool):
        return _bad(_("confirm must be true or false"))
    if confirm:
        sale = _service().checkout(basket, timeout=timeout, confirm=True).as_json()
        return jsonify(_localized(sale))
    return jsonify(_localized(_service().checkout(basket, timeout=timeout).as_json()))


def _decimal_digits(text: str) -> str:
    """``text`` when its digits are 0-9 (full-width ones, as typed in Chinese, too);
    BasketError for other digits ("١٢٣" was read as 123)."""
    if any(c.isdigit() and not c.isascii() for c in unicodedata.normalize("NFKC", text)):
        raise BasketError(
            N_("amount %(amount)s is not a number: type it like 128.50"), amount=repr(text)
        )
    return text


@bp.post("/api/v1/checkout/stop")
def stop_waiting() -> Any:
    """Stop the checkout waiting for a card (the cashier's "stop waiting"): it answers
    409 ``refused`` at once and nothing is recorded; ``stopped`` false when none was
    waiting (a card already read waits as a priced sale: cancel it)."""
    return jsonify(stopped=_service().stop_waiting())


@bp.post("/api/v1/checkout/<pending_id>/confirm")
def confirm(pending_id: str) -> Any:
    """Journal the waiting sale (the point of no return); answer it with its ``seq``."""
    return jsonify(_localized(_service().confirm(pending_id).as_json()))


@bp.post("/api/v1/checkout/<pending_id>/cancel")
def cancel(pending_id: str) -> Any:
    """Drop the waiting sale: nothing is journaled, no quota is used."""
    dropped = _service().cancel(pending_id)
    return jsonify(state="cancelled", pending_id=dropped.id)


PIN_AS_TEXT = N_('the PIN is text: send "pin": "1234", in quotes')


def _pin_is_text(body: dict[str, Any]) -> bool:
    """A PIN sent as a JSON number (1234) is a malformed request, not a wrong PIN: it
    used up one of the 5 tries (and 0123 cannot be a number at all)."""
    return body.get("pin") is None or isinstance(body["pin"], str)


@bp.post("/api/v1/sales/<int(max=9223372036854775807):seq>/void")
def void(seq: int) -> Any:
    """``{"reason": "...", "pin": "1234"}``: void sale ``seq`` of today (supervisor: the
    PIN, or the till's supervisor token as ``Authorization: Bearer ...``)."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("reason"), str):
        return _bad(_('send {"reason": "why", "pin": "supervisor PIN"}'))
    if not _pin_is_text(body):
        return _bad(_(PIN_AS_TEXT))

    def run(once: Once | None) -> Sale:
        return _service().void(seq, body["reason"], body.get("pin"), supervisor_token(), once)

    return _once("void", seq, body, run, _voided)


def _voided(entry: Sale) -> dict[str, Any]:
    return {"state": "voided", "seq": entry.seq, "ref_seq": entry.ref_seq, "net": fen(entry.net)}


@bp.get("/api/v1/sales/<int(max=9223372036854775807):seq>")
def sale_entry(seq: int) -> Any:
    """Entry ``seq``: amounts, lines, its void or refunds, and each line's units left
    to refund (``refundable``)."""
    return jsonify(_service().entry_json(seq))


@bp.post("/api/v1/sales/<int(max=9223372036854775807):seq>/refund")
def refund(seq: int) -> Any:
    """``{"lines": [{"index": 0, "qty": 1}], "reason": "...", "pin": "1234"}``: refund
    units of lines of sale ``seq`` (supervisor)."""
    body = request.get_json(silent=True)
    usage = _('send {"lines": [{"index": 0, "qty": 1}], "reason": "why", "pin": "supervisor PIN"}')
    if not isinstance(body, dict) or not isinstance(body.get("reason"), str):
        return _bad(usage)
    lines = body.get("lines")
    if not isinstance(lines, list) or not all(
        isinstance(item, dict)
        and set(item) == {"index", "qty"}
        and all(type(item[k]) is int for k in ("index", "qty"))
        for item in lines
    ):
        return _bad(usage)
    if not _pin_is_text(body):
        return _bad(_(PIN_AS_TEXT))
    items = [(item["index"], item["qty"]) for item in lines]

    def run(once: Once | None) -> Sale:
        service = _service()
        return service.refund(seq, items, body["reason"], body.get("pin"), supervisor_token(), once)

    return _once("refund", seq, body, run, _refunded)


def _refunded(entry: Sale) -> dict[str, Any]:
    return {
        "state": "refunded",
        "seq": entry.seq,
        "ref_seq": entry.ref_seq,
        "gross": fen(entry.gross),
        "discount": fen(entry.discount),
        "net": fen(entry.net),
    }


# An Idempotency-Key: 1 to 255 visible ASCII characters (the page sends 32 hex digits)
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
REPLAYED_HEADER = "Idempotent-Replayed"


def _once(
    operation: str,
    seq: int,
    body: dict[str, Any],
    journal: Callable[[Once | None], Sale],
    answer: Callable[[Sale], dict[str, Any]],
) -> Any:
    """Answer ``answer(journal(...))`` (a void or refund of sale ``seq``), once per
    Idempotency-Key: a request sent again with its key (its answer lost, or the
    terminal restarted meanwhile) is answered the first answer, kept in the journal
    with the entry (terminal.journal.Once), and journals nothing; the key with another
    request is refused (409 ``idempotency_key_reused``). Only what was journaled is
    kept: a refused request (a wrong PIN) may be sent again with its key. One keyed
    void or refund runs at a time, so a second copy sent while the first runs waits
    for it and is answered the same."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return jsonify(answer(journal(None)))
    if not IDEMPOTENCY_KEY.fullmatch(key):
        return _bad(_("Idempotency-Key must be 1 to 255 visible ASCII characters"))
    asked = {k: v for k, v in body.items() if k != "pin"}  # the PIN is not what was asked
    fingerprint = hashlib.sha256(
        json.dumps([operation, seq, asked], sort_keys=True, ensure_ascii=True).encode()
    ).hexdigest()
    with current_app.extensions["unioncard_keyed"]:
        done = _service().replay(key)
        if done is not None:
            if done.fingerprint != fingerprint:
                return problem(
                    "idempotency_key_reused",
                    409,
                    _(
                        "this Idempotency-Key was sent with another request: "
                        "use a new key for each void or refund"
                    ),
                )
            response = jsonify(done.answer)
            response.headers[REPLAYED_HEADER] = "true"
            return response
        entry = journal(Once(key, fingerprint, answer))  # raises when refused: nothing kept
    return jsonify(answer(entry))


@bp.get("/receipt/<int(max=9223372036854775807):seq>")
def receipt_page(seq: int) -> str:
    """The receipt of entry ``seq``: an 80 mm page the browser prints, with the
    verification code and its QR code."""
    slip = _service().receipt(seq)
    qr = Markup(segno.make(slip.code).svg_inline(scale=4)) if slip.code else ""
    return render_template("receipt.html", slip=slip, qr=qr)


@bp.post("/api/v1/sales/<int(max=9223372036854775807):seq>/print")
def print_slip(seq: int) -> Any:
    """Print the receipt of entry ``seq`` on the terminal's ESC/POS printer."""
    slip = _service().print_receipt(seq)
    return jsonify(printed=seq, code=slip.code)


LANGUAGES = {"zh": "zh-CN", "en": "en"}
# the reader's states (reader.fresh), in the cashier's words
READER_STATES = {
    "ready": N_("Ready: insert or tap the card"),
    "new_card": N_("A new card is in the reader"),
    "stale_card": N_("The card in the reader is not a new one: take it out"),
    "no_reader": N_("No card reader: check that it is plugged in"),
    "no_pcscd": N_("The card service (pcscd) is not running: restart the terminal"),
    "monitor_stopped": N_("The card monitor has stopped: restart the terminal"),
}  # the page's languages and their HTML tags
TRANSLATIONS = Path(__file__).parent / "translations"

# Reader failures (the reader library knows nothing of catalogues): a stable kind, a
# status and a line for the cashier, by class (the most specific first).
CARD_FAILURES: tuple[tuple[type[CardError], str, int, str], ...] = (
    (
        StaleCardError,
        "stale_card",
        408,
        N_("The card in the reader was already read: take it out and insert the customer's card"),
    ),
    (NoCardError, "no_card", 408, N_("No card was presented in time: insert or tap the card")),
    (
        NoReaderError,
        "no_reader",
        503,
        N_("The card reader is not ready: check that it is plugged in"),
    ),
    (
        UnsupportedCardError,
        "card_unsupported",
        422,
        N_("This card has no payment application we accept: use the union member card"),
    ),
    (CardBlockedError, "card_blocked", 422, N_("This card is blocked")),
    (CardRemovedError, "card_removed", 422, N_("The card was taken out too soon: insert it again")),
    (CardError, "card", 422, N_("The card could not be read: insert it again")),
)

# The terminal's own failures: a stable kind and a status, by class (most specific first).
FAILURES: tuple[tuple[type[Exception], str, int], ...] = (
    (BusyError, "busy", 409),
    (SupervisorError, "supervisor", 403),
    (ReversalError, "reversal_refused", 409),
    (PrinterError, "printer", 503),
    (UnknownSaleError, "no_such_sale", 404),
    (PendingError, "no_pending_sale", 404),
    (InputError, "bad_request", 400),
    (BasketError, "bad_request", 400),
    (NotEnrolledError, "not_enrolled", 503),
    (ConfigError, "not_ready", 503),
    (JournalDamagedError, "journal_damaged", 503),
    (JournalError, "journal", 503),
    (DiskFullError, "disk_full", 503),
    (UnioncardError, "refused", 409),
)


def language() -> str:
    """The reader's language: the page's choice (its session), else for a till the
    best of its Accept-Language (:func:`negotiate`), else Simplified Chinese."""
    chosen = session.get("lang")
    if chosen in LANGUAGES:
        return str(chosen)
    if request.authorization is not None:
        return negotiate(list(request.accept_languages))
    return "zh"


def negotiate(accepted: list[tuple[str, float]]) -> str:
    """The language of ours an Accept-Language asks for most: by quality (the first of
    equal ones), each tag by its primary subtag ("en-US" is "en"); "*" or none of ours,
    Simplified Chinese. (Werkzeug's best_match took an exact "zh;q=0.1" over "en-US".)"""
    ranked = sorted(enumerate(accepted), key=lambda item: (-item[1][1], item[0]))
    for _index, (tag, quality) in ranked:
        if quality <= 0:
            break
        primary = tag.replace("_", "-").split("-", 1)[0].lower()
        if primary in LANGUAGES:
            return primary
        if primary == "*":
            return "zh"
    return "zh"


# a time of ours in a message's parameters (pact.timefmt.iso): said in the shop's time
UTC_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")


def _shop_times(message: Msg) -> Msg:
    """``message`` with each UTC time among its parameters in the shop's local time, as
    the page shows every other time (the core says times in UTC: it knows no zone)."""
    params: dict[str, Any] = {}
    for name, value in message.params:
        if isinstance(value, Msg):
            value = _shop_times(value)
        elif isinstance(value, str) and UTC_TIME.fullmatch(value):
            try:
                value = _local(value) or value
            except (ValueError, UnioncardError):  # no zone to say it in: as it is
                pass
        params[name] = value
    return Msg.of(message.id, **params)


def say(message: Msg) -> str:
    """A message in the reader's language, its times in the shop's."""
    return _shop_times(message).render(gettext)


def problem(kind: str, status: int, line: str, **extra: Any) -> Any:
    """The one shape of an error: ``{"error": line for people, "kind": stable code}``;
    a page asked for (the report, a receipt: a GET, not of the API) is answered a page
    with the line."""
    if request.method in ("GET", "HEAD") and not request.path.startswith("/api/"):
        page = render_template("error.html", line=line, status=status)
        return Response(page, status=status, mimetype="text/html")
    response = jsonify(error=line, kind=kind, **extra)
    response.status_code = status
    return response


# A request's body at the most (413 beyond): a basket of MAX_LINES lines is far less.
MAX_BODY = 1024 * 1024


def _refuse_large_bodies() -> None:
    """413 for a body declared larger than the cap, on every route, also those that do
    not read a body (Flask checks ``MAX_CONTENT_LENGTH`` only when one is read)."""
    if (request.content_length or 0) > MAX_BODY:
        raise RequestEntityTooLarge(_("the request body is too large"))


class _JSON(DefaultJSONProvider):
    """Flask's JSON, where a body nested too deeply to parse is not JSON (a ValueError,
    so ``get_json(silent=True)`` gives None: 400), not a RecursionError (500)."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError("the JSON is nested too deeply") from None


def yuan(amount: str) -> str:
    """A yuan string of ours ("-2.54") as the page shows money: "−¥2.54", "¥2.54"."""
    return f"−¥{amount[1:]}" if amount.startswith("-") else f"¥{amount}"


def less(amount: str) -> str:
    """A deduction (a discount) as the page shows it: "−¥2.54"; one given back (a
    refund's, below zero) "+¥2.54"."""
    return f"+¥{amount[1:]}" if amount.startswith("-") else f"−¥{amount}"


def create_app(service: TerminalService, sync: Callable[[], object] | None = None) -> Flask:
    """The cashier page and the till API of ``service``; ``sync`` runs one sync, for
    "sync now" (the daemon's, in the background; without it the page cannot sync)."""
    app = Flask(__name__)
    app.json = _JSON(app)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.before_request(_refuse_large_bodies)
    app.extensions["unioncard_terminal"] = service
    changes = Changes()
    app.extensions["unioncard_changes"] = changes
    app.extensions["unioncard_keyed"] = threading.Lock()  # one keyed void or refund at a time
    if sync is not None:
        app.extensions["unioncard_sync"] = BackgroundSync(sync, changes.bump)
    monitor = getattr(service.read_card, "monitor", None)
    if monitor is not None and hasattr(monitor, "wait_changed"):
        watch_reader(monitor, changes)
    Babel(
        app,
        locale_selector=language,
        default_translation_directories=str(TRANSLATIONS),
    )
    init_auth(app, service.state.dir)
    app.register_blueprint(bp)
    app.jinja_env.filters.update(yuan=yuan, less=less)

    @app.after_request
    def _bump(response: Any) -> Any:
        if request.method == "POST" and request.path.startswith("/api/"):
            changes.bump()  # a sale, a void, a refund, a sync: the page's picture moved
        return response

    @app.context_processor
    def _language() -> dict[str, Any]:
        lang = language()
        return {"lang": lang, "lang_tag": LANGUAGES[lang]}

    @app.errorhandler(CardError)
    def _card(exc: CardError) -> Any:
        for cls, kind, status, line in CARD_FAILURES:
            if isinstance(exc, cls):
                text = str(exc) if language() == "en" else gettext(line)
                return problem(kind, status, text)
        raise exc  # unreachable: CardError is last

    @app.errorhandler(UnioncardError)
    def _failure(exc: UnioncardError) -> Any:
        for cls, kind, status in FAILURES:
            if isinstance(exc, cls):
                return problem(kind, status, say(exc.msg))
        raise exc  # unreachable: UnioncardError is last

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Any:
        if isinstance(exc, HTTPException):
            kinds = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}
            line = {
                404: _("no such page or endpoint"),
                405: _("this endpoint does not take that method"),
            }.get(exc.code or 500, exc.description or exc.name)
            return problem(kinds.get(exc.code or 500, "bad_request"), exc.code or 500, line)
        log.exception("unexpected error in the cashier API")
        return problem(
            "internal", 500, _("unexpected error: the sale was not recorded; call support")
        )

    return app
