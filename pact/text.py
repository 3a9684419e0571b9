"""Messages for people, as gettext message ids with parameters (pure).

The core never writes a sentence for a person in one language. It says what happened
with a message id, an English text with ``%(name)s`` placeholders marked with
:func:`N_` (so that ``pybabel extract`` finds it), and the parameters. The page and the
till API translate the id through the catalogue of the reader's language and fill in
the parameters, which may be messages themselves (translated in turn). ``str()`` gives
the English.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Union

Param = Union[str, int, "Msg"]


def N_(msgid: str) -> str:
    """Mark an English message id for the catalogue; it stays as it is here."""
    return msgid


def _same(msgid: str) -> str:
    return msgid


@dataclass(frozen=True)
class Msg:
    """A message id and its parameters (names to strings, numbers or messages)."""

    id: str
    params: tuple[tuple[str, Param], ...] = ()

    @classmethod
    def of(cls, msgid: str, **params: Param) -> Msg:
        return cls(msgid, tuple(sorted(params.items())))

    def render(self, translate: Callable[[str], str] = _same) -> str:
        """The text in a language: ``translate`` maps a message id to its translation
        (gettext); without it, the English."""
        text = translate(self.id)
        if not self.params:
            return text
        values = {k: v.render(translate) if isinstance(v, Msg) else v for k, v in self.params}
        try:
            return text % values
        except (KeyError, ValueError, TypeError):  # a broken translation: the English
            return self.id % values

    def __str__(self) -> str:
        return self.render()

    def as_json(self) -> dict[str, Any]:
        """``{"id": ..., "params": {...}}`` (messages among the parameters nested alike)."""
        return {
            "id": self.id,
            "params": {k: v.as_json() if isinstance(v, Msg) else v for k, v in self.params},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Msg:
        params = {
            k: cls.from_json(v) if isinstance(v, Mapping) else v
            for k, v in data.get("params", {}).items()
        }
        return cls.of(str(data["id"]), **params)
