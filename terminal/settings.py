"""The terminal daemon's settings: one frozen dataclass, built at the edge.

Loaded from a TOML file (config/terminal.example.toml) with ``UNIONCARD_*``
environment overrides, e.g. ``UNIONCARD_LISTEN_PORT=8081``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from terminal.errors import ConfigError


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("/var/lib/unioncard/terminal")  # enrolment, roster, policy, journal
    reader: str | None = None  # substring of the PC/SC reader name; None = first reader
    card_timeout: float = 30.0  # seconds a checkout waits for a card
    listen_host: str = "127.0.0.1"  # cashier page and till API
    listen_port: int = 8080
    sync_batch: int = 500  # sales per upload request


def load(path: Path | None, environ: Mapping[str, str]) -> Settings:
    values: dict[str, Any] = {}
    if path is not None:
        try:
            values.update(tomllib.loads(path.read_text()))
        except FileNotFoundError:
            raise ConfigError(f"settings file {path} not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"settings file {path} is not valid TOML: {exc}") from None
    for f in fields(Settings):
        key = f"UNIONCARD_{f.name.upper()}"
        if key in environ:
            values[f.name] = environ[key]
    known = {f.name: f for f in fields(Settings)}
    unknown = set(values) - set(known)
    if unknown:
        raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
    settings = Settings()
    try:
        for name, raw in values.items():
            default = getattr(settings, name)
            if isinstance(default, Path):
                value: Any = Path(raw)
            elif isinstance(default, bool):
                value = bool(raw)
            elif isinstance(default, int):
                value = int(raw)
            elif isinstance(default, float):
                value = float(raw)
            else:
                value = str(raw) if raw not in ("", None) else None
            settings = replace(settings, **{name: value})
    except (TypeError, ValueError):
        raise ConfigError(f"setting {name} has an invalid value {raw!r}") from None
    return settings
