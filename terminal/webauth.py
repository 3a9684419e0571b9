"""Who may use the till API and the cashier page (an adapter of the Flask app).

- A till (or any program) sends the till token as ``Authorization: Bearer ...``
  (``terminal.access``; made at enrolment, replaced by ``unioncard terminal api-token``).
- The supervisor token, sent the same way, opens void and refund only.
- A browser signs in once at ``/login`` with the till token and then holds a session
  cookie (HttpOnly, SameSite=Strict, a year long); every POST it makes carries the
  CSRF token of the page (``X-CSRFToken``, Flask-WTF). Replacing the till token ends
  every session signed in with the old one.
- Only the health check is open (``/api/v1/health``), and the static files.
"""

from __future__ import annotations

import hmac
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    Flask,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext as _
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from flask_wtf import FlaskForm
from flask_wtf.csrf import CSRFError, CSRFProtect
from wtforms import PasswordField
from wtforms.validators import InputRequired

from pact.files import atomic_write
from pact.paths import local_path
from terminal.access import (
    API_TOKEN_FILE,
    SUPERVISOR_TOKEN_FILE,
    digest_matches,
    token_digest,
    token_matches,
)

SECRET_FILE = "web.secret"  # the key that signs session cookies (0600)
SESSION_DAYS = 365
OPEN_ENDPOINTS = {"auth.login", "cashier.health", "cashier.language_switch", "static"}
SUPERVISOR_ENDPOINTS = {"cashier.void", "cashier.refund"}

bp = Blueprint("auth", __name__)
csrf = CSRFProtect()
login_manager = LoginManager()


class Caller(UserMixin):  # type: ignore[misc]
    """Who sent the request: ``till`` (bearer), ``page`` (session) or ``supervisor``."""

    def __init__(self, role: str, fingerprint: str) -> None:
        self.role = role
        self.id = f"{role}:{fingerprint}"


def _data_dir() -> Path:
    path: Path = current_app.config["UNIONCARD_DATA_DIR"]
    return path


def _fingerprint(digest: str | None) -> str:
    """A short mark of the till token whose kept digest is ``digest``: sessions hold it,
    so a new token ends them."""
    return (digest or "none")[:16]


def _current_fingerprint() -> str:
    return _fingerprint(token_digest(_data_dir() / API_TOKEN_FILE))


@login_manager.user_loader  # type: ignore[untyped-decorator]
def _load_session(user_id: str) -> Caller | None:
    role, _, mark = user_id.partition(":")
    if role != "page" or not hmac.compare_digest(mark, _current_fingerprint()):
        return None
    return Caller("page", mark)


@login_manager.request_loader  # type: ignore[untyped-decorator]
def _load_bearer(req: Any) -> Caller | None:
    scheme, _, token = req.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    till = token_digest(_data_dir() / API_TOKEN_FILE)  # read once a request
    if digest_matches(till, token):
        return Caller("till", _fingerprint(till))
    if token_matches(_data_dir() / SUPERVISOR_TOKEN_FILE, token):
        g.supervisor_token = token
        return Caller("supervisor", "sup")
    return None


def supervisor_token() -> str | None:
    """The supervisor token the request was authorised with, if any."""
    token: str | None = g.get("supervisor_token")
    return token


def _unauthorized() -> Any:
    if request.path.startswith("/api/"):
        response = jsonify(
            error=_(
                "this needs the till token: send Authorization: Bearer TOKEN "
                "(`unioncard terminal api-token` makes one)"
            ),
            kind="unauthorized",
        )
        response.status_code = 401
        response.headers["WWW-Authenticate"] = 'Bearer realm="unioncard till"'
        return response
    return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))


def _guard() -> Any:
    """Before every request: open endpoints pass; others need a caller, and a page's
    POST needs its CSRF token."""
    if request.endpoint in OPEN_ENDPOINTS or request.endpoint is None:
        return None
    if not current_user.is_authenticated:
        return _unauthorized()
    role = current_user.role
    if role == "supervisor" and request.endpoint not in SUPERVISOR_ENDPOINTS:
        response = jsonify(
            error=_("the supervisor token opens void and refund only; use the till token"),
            kind="forbidden",
        )
        response.status_code = 403
        return response
    if role == "page" and request.method not in ("GET", "HEAD", "OPTIONS"):
        csrf.protect()
    return None


class LoginForm(FlaskForm):  # type: ignore[misc]
    token = PasswordField("token", validators=[InputRequired()])


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    form = LoginForm()
    error = None
    if form.validate_on_submit():
        if token_matches(_data_dir() / API_TOKEN_FILE, form.token.data.strip()):
            session.permanent = True
            login_user(Caller("page", _current_fingerprint()))
            return redirect(local_path(request.args.get("next")) or url_for("cashier.page"))
        error = _("That is not this terminal's till token. Ask the technician for it.")
    elif request.method == "POST":
        error = _("The form has expired: please enter the till token again.")
    return render_template("login.html", form=form, error=error), (200 if error is None else 401)


@bp.post("/logout")
def logout() -> Any:
    logout_user()
    return redirect(url_for("auth.login"))


def _secret(data_dir: Path) -> bytes:
    """The key that signs session cookies, made once per terminal (0600)."""
    path = data_dir / SECRET_FILE
    try:
        key = path.read_bytes()
        if len(key) >= 32:
            return key
    except FileNotFoundError:
        pass
    key = os.urandom(32)
    atomic_write(path, key, mode=0o600)
    return key


def init_auth(app: Flask, data_dir: Path) -> None:
    app.config.update(
        UNIONCARD_DATA_DIR=data_dir,
        SECRET_KEY=_secret(data_dir),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=timedelta(days=SESSION_DAYS),
        WTF_CSRF_CHECK_DEFAULT=False,  # checked in _guard, for page sessions only
        WTF_CSRF_TIME_LIMIT=None,  # the page stays open all day: valid for the session
    )
    csrf.init_app(app)
    login_manager.init_app(app)
    login_manager.session_protection = None  # a shop's kiosk; the token mark guards rotation
    app.register_blueprint(bp)
    app.before_request(_guard)

    @app.errorhandler(CSRFError)
    def _csrf(exc: CSRFError) -> Any:
        return jsonify(
            error=_("the page is out of date: reload it (F5) and try again"), kind="csrf"
        ), 400
