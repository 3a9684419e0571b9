"""The union's console (``/console``, an adapter): people sign in with a role and see
what the role allows, in Simplified Chinese unless they switch to English.

- ``admin``: everything; ``auditor``: reads everything; ``merchant``: its own
  merchant's terminals and statements only (another's is 403, never shown).
- Flask-Login sessions (a cookie signed with ``console.secret`` in the data folder,
  HttpOnly, SameSite=Strict), every form and POST with its CSRF token (Flask-WTF);
  passwords are argon2id hashes, and five wrong ones lock an account for 15 minutes
  (``central.service.Union.check_login``).
- Terminals keep their own authentication (the API's bearer secret); a terminal's
  credentials open nothing here, and a person's session opens nothing there.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shlex
import threading
from collections.abc import Callable
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import Babel
from flask_babel import gettext as _
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from flask_wtf import FlaskForm
from flask_wtf.csrf import CSRFError, CSRFProtect
from wtforms import PasswordField, StringField
from wtforms.validators import InputRequired

from central.dashboard import page as dashboard_page
from central.errors import AuthError, CentralError, NotFoundError
from central.partners import draft_review
from central.service import ALIVE_EVERY, MERCHANT_ID, Union
from central.statement import statement_csv, statement_html
from pact.audit import SEVERITIES
from pact.audit import kinds as audit_kinds
from pact.files import atomic_write
from pact.money import fen
from pact.paths import local_path
from pact.text import N_, Msg
from pact.timefmt import parse_iso, parse_moment

SECRET_FILE = "console.secret"
LANGUAGES = {"zh": "zh-CN", "en": "en"}
TRANSLATIONS = Path(__file__).parent / "translations"

bp = Blueprint("console", __name__, url_prefix="/console")
log = logging.getLogger(__name__)
login_manager = LoginManager()
csrf = CSRFProtect()


class Person(UserMixin):  # type: ignore[misc]
    def __init__(self, row: dict[str, Any]) -> None:
        self.name: str = row["name"]
        # what the session cookie names: the user and the number of their sessions
        # (a name has no ":"; signing out moves the number on, ending the cookie)
        self.id = f"{row['name']}:{row['sessions']}"
        self.role: str = row["role"]
        self.merchant_id: str | None = row["merchant_id"]

    def may_see(self, merchant_id: str) -> bool:
        return self.role in ("admin", "auditor") or self.merchant_id == merchant_id


def _union() -> Union:
    union: Union = current_app.extensions["unioncard"]
    return union


@login_manager.user_loader  # type: ignore[untyped-decorator]
def _load(session_id: str) -> Person | None:
    name, _, sessions = session_id.rpartition(":")
    row = _union().store.user(name) if name else None
    if row is None or str(row["sessions"]) != sessions:
        return None  # signed out since (or a cookie of before sessions had numbers)
    return Person(row)


def language() -> str:
    chosen = session.get("lang")
    return chosen if chosen in LANGUAGES else "zh"


class LoginForm(FlaskForm):  # type: ignore[misc]
    name = StringField("name", validators=[InputRequired()])
    password = PasswordField("password", validators=[InputRequired()])


OPEN = {"console.login", "console.language_switch"}


@bp.before_request
def _guard() -> Any:
    """Every page but sign-in and the language switch needs a person signed in; every
    POST its CSRF token."""
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        csrf.protect()
    if request.endpoint not in OPEN and not current_user.is_authenticated:
        return redirect(url_for("console.login", next=request.full_path.rstrip("?")))
    return None


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    form = LoginForm()
    error = None
    if form.validate_on_submit():
        try:
            row = _union().check_login(form.name.data.strip(), form.password.data)
        except AuthError:
            # the same words for a wrong password, an unknown name and a locked account:
            # they tell no one which accounts exist (Union.check_login)
            error = _("Wrong user name or password.")
        else:
            session.permanent = False
            login_user(Person(row))
            target = local_path(request.args.get("next"), "/console")
            return redirect(target or url_for("console.index"))
    elif request.method == "POST":
        error = _("The form has expired: please sign in again.")
    return render_template("console/login.html", form=form, error=error), (
        200 if error is None else 401
    )


@bp.post("/logout")
def logout() -> Any:
    """Sign out: this person's sessions end on every browser (a copy of the cookie
    signed in still, before)."""
    if current_user.is_authenticated:
        _union().store.end_sessions(current_user.name)
    logout_user()
    return redirect(url_for("console.login"))


@bp.get("/lang/<lang>")
def language_switch(lang: str) -> Any:
    if lang in LANGUAGES:
        session["lang"] = lang
    return redirect(local_path(request.args.get("next"), "/console") or url_for("console.index"))


@bp.get("/")
def index() -> Any:
    return render_template("console/index.html")


@bp.get("/terminals")
def terminals() -> Any:
    return _terminals_page()


def _terminals_page(**shown: Any) -> Any:
    """The fleet the caller may see; an admin's page has the enrolment code form (and,
    just after making one, ``code``, ``expires``, ``command``: shown once)."""
    rows = [r for r in _union().fleet() if current_user.may_see(r.merchant_id)]
    merchants = _merchants() if current_user.role == "admin" else []
    return render_template("console/terminals.html", rows=rows, merchants=merchants, **shown)


@bp.post("/terminals/code")
def enrol_code() -> Any:
    """An admin makes a one-time enrolment code for a merchant's new terminal
    (``Union.create_enrol_code``: once, for 24 hours; only its digest is kept, so the
    page shows it this once, with the command to run on the terminal)."""
    _admin_only()
    terminal_id = request.form.get("terminal", "").strip()
    merchant_id = request.form.get("merchant", "").strip()
    if not ID.fullmatch(terminal_id):
        message = _("A terminal id is 1 to 32 letters, digits, - or _, such as T0001.")
        return _terminals_page(error=message, terminal_id=terminal_id[:32]), 400
    try:
        code, expires = _union().create_enrol_code(terminal_id, merchant_id)
    except CentralError as exc:
        error = _said(exc, merchant_id)
        return _terminals_page(error=error, terminal_id=terminal_id), exc.http_status
    central_url = request.host_url.rstrip("/")
    command = shlex.join(["unioncard", "terminal", "enrol", "--central", central_url])
    answer = Response(
        _terminals_page(
            code=code,
            code_terminal=terminal_id,
            code_merchant=merchant_id,
            expires=_local(expires),
            command=f"{command} --code {code}",
            https=central_url.startswith("https:"),
        )
    )
    answer.headers["Cache-Control"] = "no-store"  # the code: not kept in any cache
    return answer


@bp.get("/statement")
def statement() -> Any:
    merchant_id = request.args.get("merchant", "") or (current_user.merchant_id or "")
    if not merchant_id or not (request.args.get("from") or request.args.get("to")):
        return render_template(
            "console/statement_form.html", merchants=_merchants(), merchant_id=merchant_id
        )
    if not current_user.may_see(merchant_id):
        abort(403)
    error = None
    try:
        first = date.fromisoformat(request.args.get("from", ""))
        last = date.fromisoformat(request.args.get("to", ""))
    except ValueError:
        error = _("Give the first and the last day as YYYY-MM-DD.")
    else:
        if last < first:  # (the service's own words name the command line's flags)
            error = _("The last day is before the first.")
    if error is not None:
        return render_template(
            "console/statement_form.html",
            merchants=_merchants(),
            merchant_id=merchant_id,
            error=error,
        ), 400
    try:
        made = _union().statement(merchant_id, first, last)
    except CentralError as exc:
        return render_template(
            "console/statement_form.html", merchants=_merchants(), error=_said(exc, merchant_id)
        ), exc.http_status
    if request.args.get("format") == "csv":
        name = f"statement-{merchant_id}-{first}-{last}.csv"
        return Response(
            statement_csv(made).encode("utf-8-sig"),
            mimetype="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    return Response(statement_html(made, language()), mimetype="text/html")


@bp.get("/dashboard")
def dashboard() -> Any:
    """The statistics dashboard (central.dashboard): the union's for its staff, a
    merchant's own for its user."""
    return dashboard_page()


@bp.get("/members")
def member() -> Any:
    """A member, by member id, for union staff: the card's last four digits only, the
    history of status, tier and place, the use at every merchant."""
    if current_user.role not in ("admin", "auditor"):
        abort(403)
    member_id = request.args.get("id", "").strip()[:64]
    if not member_id:
        return render_template("console/member.html", member=None, member_id="")
    store = _union().store
    found = store.member(member_id)
    if found is None:
        return render_template("console/member.html", member=None, member_id=member_id), 404
    return render_template(
        "console/member.html",
        member=found,
        member_id=member_id,
        history=store.member_history(member_id),
        use=store.member_use(found["token"], member_id),  # and the member's earlier cards
    )


@bp.get("/merchants/<merchant_id>")
def merchant(merchant_id: str) -> Any:
    """A merchant: its registry, its admission (the standards it agreed to, when, by
    whom), its status history, its signed policy versions, the drafts waiting (for union
    staff: a merchant's user sees no drafts, as on the policies page) and its
    complaints. A merchant's user sees its own only."""
    if not current_user.may_see(merchant_id):
        abort(403)
    return _merchant_page(merchant_id)


def _merchant_page(merchant_id: str, error: str | None = None, status: int = 200) -> Any:
    store = _union().store
    try:
        row = store.merchant(merchant_id)
    except CentralError:
        abort(404)
    standards = json.loads(row["standards"]) if row["standards"] else []
    return render_template(
        "console/merchant.html",
        error=error,
        form=request.form if error else {},
        m=row,
        standards=standards,
        statuses=store.status_history(merchant_id),
        versions=store.signed_versions(f"policy:{merchant_id}"),
        drafts=[d for d in store.drafts() if d["merchant_id"] == merchant_id]
        if current_user.role in ("admin", "auditor")
        else [],
        complaints=store.complaints_between(merchant_id, date(2000, 1, 1), date(2999, 12, 31)),
    ), status


# -- the admins' forms: members, merchants, enrolment codes (auditors read, change nothing)
ID = MERCHANT_ID  # a merchant's or a terminal's id
REGISTRY = {"category": 32, "district": 64, "address": 200, "contact": 100}  # field: length


def _said(exc: CentralError, merchant_id: str) -> str:
    """A service's refusal as the console says it, in the reader's language: an unknown
    merchant in the console's words (the service's name a command)."""
    if isinstance(exc, NotFoundError) and str(exc).startswith(f"no merchant {merchant_id}:"):
        return str(_("There is no merchant %(id)s.", id=merchant_id))
    return say(exc.msg)


def _admin_only() -> None:
    if current_user.role != "admin":
        abort(403)


def _one_line(text: str | None, length: int) -> str:
    return " ".join((text or "").split())[:length]


def _local(moment: Any) -> str:
    """A moment in the union's time zone, as people there read it."""
    zone = _union().timezone
    return f"{moment.astimezone(ZoneInfo(zone)):%Y-%m-%d %H:%M} ({zone})"


@bp.post("/members")
def member_import() -> Any:
    """An admin imports MEMBERS.csv, as `unioncard central import-members` (``full``:
    the members missing from the file have left), in one transaction: a bad line
    rejects the whole file, named with its line number. ``publish`` then signs the
    next roster, which the terminals fetch at their next sync."""
    _admin_only()
    union = _union()
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        return _members_page(_("Choose the members file (CSV) to upload."), 400)
    lines = io.TextIOWrapper(upload.stream, encoding="utf-8-sig", newline="")
    allowed = (request.form.get("allow_left") or "").strip()
    if allowed and not (allowed.isascii() and allowed.isdigit() and len(allowed) <= 9):
        return _members_page(_("Members who may leave: a whole number, or leave it empty."), 400)
    try:
        result = union.import_members(
            lines,
            full=request.form.get("full") == "on",
            allow_left=int(allowed) if allowed else None,
        )
    except (UnicodeDecodeError, csv.Error):
        return _members_page(
            _("The file is not CSV in UTF-8: save it as CSV UTF-8. Nothing was imported."), 400
        )
    except CentralError as exc:
        message = _("The file was refused and nothing was imported: %(why)s", why=say(exc.msg))
        return _members_page(message, exc.http_status)
    done = [
        _(
            "Read %(read)s members: %(added)s new, %(changed)s changed, %(left)s left the union.",
            read=result.read,
            added=result.added,
            changed=result.changed,
            left=result.left,
        )
    ]
    if request.form.get("publish") == "on":
        version, count = union.publish_roster()
        done.append(
            _("Roster v%(version)s signed: %(count)s members.", version=version, count=count)
        )
    else:
        done.append(_("The terminals see the change once a new roster is signed."))
    return _members_page(None, 200, " ".join(str(d) for d in done))


def _members_page(error: str | None, status: int, result: str | None = None) -> Any:
    return render_template(
        "console/member.html", member=None, member_id="", import_error=error, imported=result
    ), status


@bp.route("/merchants", methods=["GET", "POST"])
def merchants() -> Any:
    """The merchants, for union staff (each linked to its page); an admin adds one here
    with its registry entry and starting discount, which signs its first policy."""
    if current_user.role not in ("admin", "auditor"):
        abort(403)
    error, status = None, 200
    if request.method == "POST":
        _admin_only()
        form = request.form
        merchant_id = form.get("merchant_id", "").strip()
        name = _one_line(form.get("name"), 128)
        basis_points = _basis_points(form.get("discount", ""))
        if not ID.fullmatch(merchant_id):
            error = _("A merchant id is 1 to 32 letters, digits, - or _, such as M0001.")
        elif not name:
            error = _("Give the merchant's name.")
        elif basis_points is None:
            error = _("The discount is a percentage from 0 to 100, such as 5 or 7.5.")
        else:
            union = _union()
            try:
                version = union.add_merchant(merchant_id, name, basis_points)
                given = {k: _one_line(form.get(k), n) for k, n in REGISTRY.items()}
                if any(given.values()):
                    union.store.set_registry(merchant_id, **{k: v for k, v in given.items() if v})
            except CentralError as exc:
                error, status = say(exc.msg), exc.http_status
            else:
                flash(
                    _(
                        "Merchant %(id)s added; policy v%(version)s signed.",
                        id=merchant_id,
                        version=version,
                    )
                )
                return redirect(url_for("console.merchant", merchant_id=merchant_id))
        status = 400 if error and status == 200 else status
    return render_template(
        "console/merchants.html",
        merchants=_union().store.merchants(),
        error=error,
        form=request.form if error else {},
    ), status


def _basis_points(text: str) -> int | None:
    """A percentage typed by a person (5, 7.5, 12.25) in basis points; None if it is not
    one from 0 to 100 with at most two decimals. Decimal, never float."""
    try:
        points = Decimal(text.strip().rstrip("%")) * 100
    except ArithmeticError:  # not a number (InvalidOperation), or past Decimal's (Overflow)
        return None
    if not points.is_finite() or points != points.to_integral_value() or not 0 <= points <= 10000:
        return None
    return int(points)


@bp.post("/merchants/<merchant_id>/admit")
def merchant_admit(merchant_id: str) -> Any:
    """An admin records the merchant's admission: the standards it agreed to, one a
    line, kept with today's date and the admin's name."""
    _admin_only()
    standards = request.form.get("standards", "").splitlines()
    try:
        _union().admit_merchant(merchant_id, standards, current_user.name)
    except CentralError as exc:
        return _merchant_page(merchant_id, say(exc.msg), exc.http_status)
    flash(_("Merchant %(id)s admitted.", id=merchant_id))
    return redirect(url_for("console.merchant", merchant_id=merchant_id))


@bp.post("/merchants/<merchant_id>/status")
def merchant_status(merchant_id: str) -> Any:
    """An admin suspends, reinstates or exits a merchant, now or from a time in the
    union's time zone, with the reason; a new policy is signed with the change. An exit
    is final, so it must be confirmed."""
    _admin_only()
    union = _union()
    form = request.form
    status = form.get("status", "")
    reason = _one_line(form.get("reason"), 500)
    when_text = form.get("effective", "").strip()
    try:
        when = parse_moment(when_text, ZoneInfo(union.timezone)) if when_text else None
    except ValueError:
        when, error = (
            None,
            _("Give the time it takes effect as YYYY-MM-DD HH:MM, or leave it empty."),
        )
    else:
        error = None
    if not reason:
        error = _("Give the reason: it is kept in the merchant's status history.")
    elif status == "exited" and form.get("final") != "on":
        error = _("An exit is final: tick the box to confirm it.")
    if error is not None:
        return _merchant_page(merchant_id, str(error), 400)
    try:
        version = union.set_merchant_status(merchant_id, status, reason, when, current_user.name)
    except CentralError as exc:
        return _merchant_page(merchant_id, say(exc.msg), exc.http_status)
    at = _local(when) if when is not None else _("now")
    flash(
        _(
            "Merchant %(id)s is %(status)s from %(at)s; policy v%(version)s signed.",
            id=merchant_id,
            status=status_name(status),
            at=at,
            version=version,
        )
    )
    return redirect(url_for("console.merchant", merchant_id=merchant_id))


# The words the console shows for what the store keeps as codes: a merchant's or a
# member's status, a finding's severity and kind (pact.audit). Unknown codes as they are.
WORDS = {
    "active": N_("active"), "suspended": N_("suspended"), "exited": N_("exited"),
    "left": N_("left"), "high": N_("high"), "medium": N_("medium"), "low": N_("low"),
    "edited": N_("entry edited"), "gap": N_("entries missing"), "fork": N_("chain forked"),
    "time_backwards": N_("time going back"), "clock_jump": N_("clock jump"),
    "bad_signature": N_("signature fails"), "atc_repeated": N_("card counter repeated"),
    "atc_backwards": N_("card counter going back"),
    "dated_after_receipt": N_("dated after its receipt"),
    "missing_chain": N_("a terminal's entries missing"), "unknown_policy": N_("unknown policy"),
    "not_a_member": N_("not a member"), "merchant_not_active": N_("merchant not active"),
    "bad_basket": N_("basket does not add up"), "over_discount": N_("too much discount"),
    "under_discount": N_("too little discount"), "bad_reversal": N_("void or refund wrong"),
    "silent": N_("terminal silent"),
    "reversal_share": N_("many voids and refunds"), "card_uses": N_("card used often"),
    "turned_away": N_("members turned away"), "complaint": N_("complaint"),
}  # fmt: skip


def status_name(status: str) -> str:
    """A status, severity or finding kind (:data:`WORDS`), in the reader's language."""
    return str(_(WORDS[status])) if status in WORDS else status


def say(message: Msg) -> str:
    """A message (pact.text) in the reader's language."""
    return message.render(lambda msgid: str(_(msgid)))


# The console's own words for an error page (central.create_app's handlers: a page in
# the reader's language for the console's paths, JSON elsewhere).
PAGE_ERRORS = {
    400: N_("The request was not understood: go back and try again."),
    403: N_("This page is not open to your role."),
    404: N_("There is no such page."),
    405: N_("This page is not used that way."),
    500: N_("Something went wrong in the service: its log says what."),
}
UNSTORABLE = N_(
    "A field holds a character that cannot be stored (a NUL, or half of a surrogate "
    "pair): type it again."
)


def for_people() -> bool:
    """Whether the request is the console's: a person's, whose errors are pages."""
    prefix = bp.url_prefix or "/console"
    return request.path == prefix or request.path.startswith(prefix + "/")


def error_page(code: int, message: str | None = None) -> Any:
    """The console's page for an error, never JSON: ``message`` (a message id of the
    catalogue, or words given already: the service's, a translated one), else the
    words of its code, in the reader's language."""
    known = PAGE_ERRORS.get(code) or PAGE_ERRORS[500 if code >= 500 else 400]
    try:
        text = str(_(message or known))
        return render_template("console/message.html", message=text), code
    except Exception:  # the page itself failed (its database, say): its words alone
        log.exception("the console's error page for %s", code)
        return Response(message or known, status=code, mimetype="text/plain")


@bp.errorhandler(413)
def _too_big(exc: Any) -> Any:
    message = _(
        "The file is too big for the console (4 MiB at most): import it with "
        "`unioncard central import-members`."
    )
    return render_template("console/message.html", message=message), 413


class _Refused(Exception):
    """A request the console refuses in its own words (the reader's language)."""


# a running run that has not said it is alive for this long has stopped (its process)
UNFINISHED_AFTER = timedelta(seconds=3 * ALIVE_EVERY)
LOOK_DAYS = 31  # a look (not kept) runs in the request: a month of a busy shop fits


def _in_background(name: str, work: Callable[..., object], *args: object) -> None:
    """Work a request starts and does not wait for: a thread of this process (the store
    keeps its state, so any of the service's processes shows how it went)."""
    threading.Thread(target=work, args=args, name=name, daemon=True).start()


def _run_shown(run: dict[str, Any]) -> dict[str, Any]:
    """An audit run as its page shows it: a run "running" that has not said it is alive
    for :data:`UNFINISHED_AFTER` did not finish (its process stopped), and says so."""
    if run["state"] == "running":
        alive = run["alive_at"] or run["run_at"]
        if _union().clock() - parse_iso(alive) > UNFINISHED_AFTER:
            return {**run, "state": "unfinished"}
    return run


@bp.route("/audit", methods=["GET", "POST"])
def audit() -> Any:
    """The audit (pact.audit), for union staff, in the reader's language. POST runs it
    for a merchant and days and stores the run (who, when); GET lists the stored
    findings, filtered by merchant, run, kind, severity and terminal, and the runs.
    A GET with ``from`` and ``to`` runs it without storing (a look before a run)."""
    if current_user.role not in ("admin", "auditor"):
        abort(403)
    union = _union()
    args = request.form if request.method == "POST" else request.args
    merchant_id = args.get("merchant", "").strip()[:32]
    kind = request.args.get("kind", "").strip()[:32]
    severity = request.args.get("severity", "").strip()[:8]
    terminal_id = request.args.get("terminal", "").strip()[:32]
    run_id = request.args.get("run", "").strip()
    findings: list[dict[str, Any]] | None = None
    error = None

    def shown(f: dict[str, Any]) -> dict[str, Any]:
        text = Msg.from_json(f["detail_id"]).render(lambda msgid: str(_(msgid)))
        return {**f, "text": text}

    if merchant_id and (request.method == "POST" or "from" in args or "to" in args):
        try:
            first = date.fromisoformat(args.get("from", ""))
            last = date.fromisoformat(args.get("to", ""))
            if last < first:  # (the service's words name the command line's flags)
                raise _Refused(_("The last day is before the first."))
            if request.method == "POST":
                number = union.start_audit(merchant_id, first, last, current_user.name)
                _in_background(f"audit-run-{number}", union.finish_audit, number, merchant_id,
                               first, last)  # fmt: skip
                return redirect(url_for("console.audit", merchant=merchant_id, run=number))
            if (last - first).days < LOOK_DAYS:
                found = union.audit(merchant_id, first, last)
                findings = [shown(f.as_json()) for f in found if not kind or f.kind == kind]
            else:
                error = str(
                    _(
                        "A look at the findings without keeping them covers %(days)s days at "
                        "most (it runs while the page waits): run the audit for longer "
                        "periods; it goes on in the background and keeps its findings.",
                        days=LOOK_DAYS,
                    )
                )
        except _Refused as refused:
            error = str(refused)
        except CentralError as exc:  # (an InputError is a ValueError too: first)
            error = _said(exc, merchant_id)
        except ValueError:
            error = str(_("Give the first and the last day as YYYY-MM-DD."))
    elif merchant_id or run_id:
        stored = union.store.audit_findings(
            merchant_id=merchant_id or None,
            run_id=int(run_id)
            if run_id.isascii() and run_id.isdigit() and len(run_id) < 10
            else None,
            kind=kind or None,
            severity=severity or None,
            terminal_id=terminal_id or None,
        )
        findings = [shown({**f, "detail_id": f["message"]}) for f in stored]
    runs = [_run_shown(r) for r in union.store.audit_runs(merchant_id or None)[:50]]
    chosen = next((r for r in runs if str(r["id"]) == run_id), None)
    return render_template(
        "console/audit.html",
        chosen=chosen,
        merchants=_merchants(),
        merchant_id=merchant_id,
        kind=kind,
        kinds=audit_kinds(),
        severity=severity,
        severities=SEVERITIES,
        terminal_id=terminal_id,
        run_id=run_id,
        runs=runs,
        findings=findings,
        error=error,
    ), (400 if error else 200)


@bp.route("/policies", methods=["GET", "POST"])
def policies() -> Any:
    """Policy drafts (four eyes): an admin drafts terms; another admin approves them,
    and only then are they signed. Auditors see them; merchants' users do not."""
    if current_user.role not in ("admin", "auditor"):
        abort(403)
    union = _union()
    error, status = None, 200
    if request.method == "POST":
        if current_user.role != "admin":
            abort(403)
        try:
            terms = json.loads(request.form.get("terms", ""))
            if not isinstance(terms, dict):
                raise ValueError("not an object")
            union.draft_policy(request.form.get("merchant", ""), terms, current_user.name)
        except CentralError as exc:  # (an InputError, naming the field, is a ValueError too)
            error, status = say(exc.msg), exc.http_status
        except (ValueError, RecursionError):
            error, status = _("The terms are not a JSON object."), 400
        else:
            return redirect(url_for("console.policies"))
    drafts = _drafts(union)
    return render_template(
        "console/policies.html", drafts=drafts, merchants=_merchants(), error=error
    ), status


@bp.post("/policies/<int(max=9223372036854775807):draft_id>/<decision>")
def decide(draft_id: int, decision: str) -> Any:
    if current_user.role != "admin" or decision not in ("approve", "reject"):
        abort(403)
    union = _union()
    try:
        if decision == "approve":
            union.approve_policy(draft_id, current_user.name)
        else:
            union.reject_policy(draft_id, current_user.name)
    except NotFoundError as exc:  # the service's words name the command line's
        message = _("There is no policy draft #%(id)s.", id=draft_id)
        return _policies_page(union, str(message), exc.http_status)
    except CentralError as exc:
        return _policies_page(union, say(exc.msg), exc.http_status)
    return redirect(url_for("console.policies"))


def _policies_page(union: Union, error: str, status: int) -> Any:
    return render_template(
        "console/policies.html", drafts=_drafts(union), merchants=_merchants(), error=error
    ), status


def _drafts(union: Union) -> list[dict[str, Any]]:
    """The drafts waiting, each with its rules' ids, its whole terms in plain words and
    what it changes against the merchant's policy in force (central.partners): the
    second admin approves what they read, not a list of rule ids."""
    shown = []
    for d in union.store.drafts():
        terms = json.loads(d["terms"])
        review = draft_review(union, d)
        shown.append(
            {
                **d,
                "rules": [r.get("id", "?") for r in terms.get("rules", [])],
                "against": review.against,
                "words": [say(line) for line in review.terms],
                "changes": [say(line) for line in review.changes],
                "json": json.dumps(terms, ensure_ascii=False, indent=2),
            }
        )
    return shown


def _merchants() -> list[dict[str, Any]]:
    rows = _union().store.merchants()
    return [m for m in rows if current_user.may_see(m["merchant_id"])]


def _secret(data_dir: Path) -> bytes:
    """The key that signs the console's session cookies, made once and shared by every
    worker (0600; made atomically: the first worker's stays)."""
    path = data_dir / SECRET_FILE
    try:
        key = path.read_bytes()
        if len(key) >= 32:
            return key
    except FileNotFoundError:
        pass
    fresh = data_dir / f".{SECRET_FILE}.{os.getpid()}"
    atomic_write(fresh, os.urandom(32), mode=0o600)
    try:
        os.link(fresh, path)  # fails if another worker made it first: theirs is kept
    except FileExistsError:
        pass
    finally:
        fresh.unlink(missing_ok=True)
    return path.read_bytes()


def init_console(app: Flask, data_dir: Path) -> None:
    app.config.update(
        SECRET_KEY=_secret(data_dir),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        WTF_CSRF_CHECK_DEFAULT=False,  # the console's POSTs only (the API uses bearer secrets)
        WTF_CSRF_TIME_LIMIT=None,
    )
    csrf.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "console.login"
    login_manager.login_message = ""
    Babel(app, locale_selector=language, default_translation_directories=str(TRANSLATIONS))

    @app.errorhandler(CSRFError)
    def _stale_form(exc: CSRFError) -> Any:
        if request.path.startswith("/console"):  # a person: a page, never JSON
            message = _("The form has expired: reload the page and try again.")
            return render_template("console/message.html", message=message), 400
        return {"error": exc.description}, 400

    app.add_template_filter(fen, "yuan")  # integer fen as yuan (pact.money): no float
    app.add_template_global(status_name, "status_name")
    app.add_template_filter(status_name, "word")
    app.add_template_filter(say, "say")

    @app.context_processor
    def _lang() -> dict[str, Any]:
        lang = language()
        return {"lang": lang, "lang_tag": LANGUAGES[lang]}

    app.register_blueprint(bp)
