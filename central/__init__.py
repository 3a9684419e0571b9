"""The central union service: members, merchants, signed rosters, ingest, settlement.

``create_app`` is the Flask app factory (gunicorn: ``central:create_app()``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from central.errors import CentralError
from central.service import CentralPaths, Union


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(
        DATA_DIR="central-data",
        DATABASE_URL=None,
        MAX_CONTENT_LENGTH=16 * 1024 * 1024,
    )
    app.config.from_prefixed_env("UNIONCARD")
    if test_config is not None:
        app.config.from_mapping(test_config)
    paths = CentralPaths(Path(app.config["DATA_DIR"]))
    clock = app.config.get("CLOCK") or (lambda: datetime.now(UTC))  # tests pass their own
    union = Union.open(paths, app.config["DATABASE_URL"], clock)
    app.extensions["unioncard"] = union

    from central import api

    app.register_blueprint(api.bp)

    @app.errorhandler(CentralError)
    def _central_error(exc: CentralError) -> Any:
        return jsonify(error=str(exc)), exc.http_status

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Any:
        return jsonify(error=exc.description), exc.code

    return app
