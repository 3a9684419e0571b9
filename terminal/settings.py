"""The terminal's settings: one frozen dataclass, built at the edge.

Read from a TOML file (every key is documented in config/terminal.example.toml),
then overridden by ``UNIONCARD_<KEY>`` environment variables (e.g.
``UNIONCARD_LISTEN_PORT=8081``), then by the command line's own options. The
file is the one named by ``--config`` or ``$UNIONCARD_CONFIG``, else
``/etc/unioncard/terminal.toml`` when it exists, else none (the defaults).

An unknown key, a value of the wrong kind or out of range stops start-up with
one line that names the key and where it came from.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from pact.wire import MAX_BATCH
from terminal.errors import ConfigError

DEFAULT_FILE = Path("/etc/unioncard/terminal.toml")
ENV_PREFIX = "UNIONCARD_"


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("/var/lib/unioncard/terminal")  # enrolment, roster, policy, journal
    reader: str | None = None  # part of the PC/SC reader's name; None: every reader
    card_timeout: float = 30.0  # seconds a checkout waits for a card (0.1 to 600)
    listen_host: str = "127.0.0.1"  # the cashier page and the till API
    listen_port: int = 8080  # 1 to 65535
    sync_batch: int = 500  # sales per upload request (1 to 1000)
    # the daemon's own syncs: this many minutes after the last, or after this many new
    # entries, when idle (0: never); the nightly timer stays as the backstop
    sync_every_minutes: float = 15.0
    sync_after_sales: int = 100
    printer: str | None = None  # receipt printer: usb:VID:PID, network:HOST[:PORT], file:PATH


def _path(value: Any) -> Path:
    if not isinstance(value, str) or not value:
        raise ValueError("a folder path")
    return Path(value)


def _optional_text(value: Any) -> str | None:
    if not isinstance(value, str):
        raise ValueError("text")
    return value or None


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("non-empty text")
    return value


def _number(lo: float, hi: float) -> Callable[[Any], float]:
    def convert(value: Any) -> float:
        wanted = f"a number from {lo:g} to {hi:g}"
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ValueError(wanted) from None
        if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
            raise ValueError(wanted)
        return float(value)

    return convert


def _whole(lo: int, hi: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ValueError(f"a whole number from {lo} to {hi}")
        return value

    return convert


CONVERT: dict[str, Callable[[Any], Any]] = {
    "data_dir": _path,
    "reader": _optional_text,
    "card_timeout": _number(0.1, 600),
    "listen_host": _text,
    "listen_port": _whole(1, 65535),
    "sync_batch": _whole(1, MAX_BATCH),
    "sync_every_minutes": _number(0, 1440),
    "sync_after_sales": _whole(0, 100_000),
    "printer": _optional_text,  # the central service takes no more per upload
}
KEYS = tuple(f.name for f in fields(Settings))


def _read_file(path: Path) -> dict[str, Any]:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"settings file {path} not found: give --config an existing file"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"settings file {path} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"settings file {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise ConfigError(
            f"settings file {path}: unknown key {unknown[0]!r} (the keys are {', '.join(KEYS)})"
        )
    return raw


def load(
    path: Path | None,
    environ: Mapping[str, str],
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """The settings from ``path`` (None: ``$UNIONCARD_CONFIG``, else the default file when
    it exists), ``environ`` and ``overrides`` (the command line; None values are unset)."""
    if path is None and environ.get("UNIONCARD_CONFIG"):
        path = Path(environ["UNIONCARD_CONFIG"])
    if path is None and DEFAULT_FILE.is_file():
        path = DEFAULT_FILE
    sources: dict[str, tuple[Any, str]] = {}
    if path is not None:
        sources.update({key: (value, f"in {path}") for key, value in _read_file(path).items()})
    for key in KEYS:
        name = ENV_PREFIX + key.upper()
        if name in environ:
            sources[key] = (environ[name], f"from {name}")
    for key, value in (overrides or {}).items():
        if key not in CONVERT:
            raise ValueError(f"no setting {key!r}")
        if value is not None:
            sources[key] = (
                value if not isinstance(value, Path) else str(value),
                "on the command line",
            )
    values: dict[str, Any] = {}
    for key, (raw, where) in sources.items():
        try:
            values[key] = CONVERT[key](raw)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"setting {key} = {raw!r} {where} is not valid: use {exc}") from None
    return replace(Settings(), **values)
