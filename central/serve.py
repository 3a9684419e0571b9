"""Serving the central service: gunicorn in production, a thread for demos and tests."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any

from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server

from central import create_app
from central.errors import CentralError


def check_listen(host: str, port: int) -> None:
    """CentralError (one line) when nothing can listen on ``host:port``: gunicorn
    would log a dozen lines of retries over five seconds before giving up."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        raise CentralError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}): stop what holds that "
            "port or choose another with --port (and --host)"
        ) from None


def run_gunicorn(
    data: Path, database_url: str | None, host: str, port: int, workers: int = 2
) -> None:
    from gunicorn.app.base import BaseApplication

    class _Central(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", workers)
            self.cfg.set("accesslog", "-")

        def load(self) -> Flask:
            return create_app({"DATA_DIR": str(data), "DATABASE_URL": database_url})

    _Central().run()


class ThreadedServer:
    """A WSGI app on a loopback port in a background thread (demo, tests)."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self.server: BaseWSGIServer = make_server(host, port, app, threaded=True)
        self.url = f"http://{host}:{self.server.server_port}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.thread.join()
        self.server.server_close()
