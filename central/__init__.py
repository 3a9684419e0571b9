"""The central union service: members, merchants, signed rosters, ingest, settlement.

``create_app`` is the Flask app factory (gunicorn: ``central:create_app()``). It reads
``UNIONCARD_CENTRAL_DATA`` (the data folder, as ``unioncard central --data``) and
``UNIONCARD_DATABASE_URL`` (as ``--database-url``) from the environment, and
``UNIONCARD_PROXIES``: how many proxies of the union's own (nginx terminating TLS)
stand in front of it, whose ``X-Forwarded-For`` and ``X-Forwarded-Proto`` it believes
(0, the default: none, and the peer's address is the client's). Behind nginx without
it, every shop's address was nginx's: ten wrong enrolment codes from anyone blocked
every shop's enrolment.

A request that came over HTTPS (``request.is_secure``: directly, or by the proxy's
``X-Forwarded-Proto`` with ``UNIONCARD_PROXIES``) gets its session cookie marked
``Secure`` and a ``Strict-Transport-Security`` header; plain HTTP on the loopback (the
demo, the tests) keeps working. Errors are pages in the reader's language for the
console's paths (``/console``), JSON everywhere else.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, request
from flask.sessions import SecureCookieSessionInterface
from werkzeug.exceptions import BadRequest, HTTPException, RequestEntityTooLarge
from werkzeug.middleware.proxy_fix import ProxyFix

from central import api, partners
from central.console import UNSTORABLE, error_page, for_people, init_console, say
from central.errors import CentralError
from central.service import CentralPaths, Union, storable


def system_clock() -> datetime:
    """The wall clock: the one place the central service reads it."""
    return datetime.now(UTC)


HSTS = "max-age=31536000"  # a year: browsers come back over HTTPS only


class UnstorableText(BadRequest):
    """A query or form value with a NUL or a lone surrogate (no database stores it)."""


class SessionOverHttps(SecureCookieSessionInterface):
    """Flask's signed-cookie session, its cookie ``Secure`` whenever the request came
    over HTTPS: never sent back over plain HTTP, where anyone on the way reads it."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(super().get_cookie_secure(app)) or request.is_secure


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(
        DATA_DIR=os.environ.get("UNIONCARD_CENTRAL_DATA", "central-data"),
        DATABASE_URL=os.environ.get("UNIONCARD_DATABASE_URL") or None,
        # A request's body at the most, as sent (413 beyond): terminals send uploads of
        # at most 512 KiB gzip (sync.client); and once decompressed.
        MAX_CONTENT_LENGTH=4 * 1024 * 1024,
        MAX_DECODED_LENGTH=8 * 1024 * 1024,
        CLOCK=system_clock,  # the wall clock; tests and the demo pass their own
        PROXIES=os.environ.get("UNIONCARD_PROXIES", "0"),
    )
    if test_config is not None:
        app.config.from_mapping(test_config)
    proxies = str(app.config["PROXIES"]).strip()
    if not proxies.isdigit() or not 0 <= int(proxies) <= 4:
        raise CentralError(
            f"UNIONCARD_PROXIES={proxies!r}: give how many proxies of the union's stand in "
            "front of the service, 0 to 4 (1 behind one nginx)"
        )
    if int(proxies):
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=int(proxies), x_proto=int(proxies)
        )
    paths = CentralPaths(Path(app.config["DATA_DIR"]))
    clock = app.config["CLOCK"]
    union = Union.open(paths, app.config["DATABASE_URL"], clock)
    app.extensions["unioncard"] = union

    @app.before_request  # the first check of every request, before the console's CSRF
    def _refuse_large_bodies() -> None:
        """413 for a body declared larger than the cap, on every route: also those that
        do not read one (Flask checks ``MAX_CONTENT_LENGTH`` only when a body is read)."""
        limit = app.config["MAX_CONTENT_LENGTH"]
        if limit is not None and (request.content_length or 0) > limit:
            raise RequestEntityTooLarge(
                f"the request body is larger than {limit} bytes: send smaller batches"
            )

    @app.before_request
    def _refuse_unstorable_text() -> None:
        """400 for a query or form value with a NUL or a lone surrogate, before anything
        is written: PostgreSQL refuses either, so a console form was a 500 after a
        merchant and its signed policy were already kept, its registry entry not."""
        values = [*request.args.values()]
        if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
            values += request.form.values()
        if any(not storable(value) for value in values):
            raise UnstorableText(
                "a field holds a character that cannot be stored (a NUL, or half of a "
                "surrogate pair): type it again"
            )

    app.register_blueprint(api.bp)
    app.register_blueprint(partners.bp)  # the public partners list: /partners
    init_console(app, paths.data_dir)  # the people's pages: /console

    app.session_interface = SessionOverHttps()

    @app.after_request
    def _https_only(response: Response) -> Response:
        if request.is_secure:
            response.headers.setdefault("Strict-Transport-Security", HSTS)
        return response

    @app.errorhandler(CentralError)
    def _central_error(exc: CentralError) -> Any:
        if for_people():  # a person's browser: a page (the service's words, translated)
            return error_page(exc.http_status, say(exc.msg))
        return jsonify(error=str(exc)), exc.http_status

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Any:
        code = exc.code or 500
        if for_people():  # a page in the reader's language, never the API's JSON
            if isinstance(exc, UnstorableText):
                return error_page(code, UNSTORABLE)
            own = exc.description != type(exc).description  # words given by our code
            return error_page(code, exc.description if own else None)
        return jsonify(error=exc.description), code

    return app
