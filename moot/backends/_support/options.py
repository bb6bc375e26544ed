"""Boolean options.

:func:`option_bool` belongs in :mod:`moot.url` beside ``option_float`` (the
one place that turns an option's text into a value); it lives here until it
moves there, and every backend reads booleans through it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from moot.errors import InvalidURL

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def option_bool(options: Mapping[str, Any], name: str, default: bool) -> bool:
    """Read a boolean option (from a URL query or keyword), with a typed error.

    Accepts ``True``/``False`` and the texts ``true``/``false``, ``yes``/``no``,
    ``on``/``off``, ``1``/``0`` (any case); anything else, ``"treu"`` or
    ``2`` or ``""``, raises :class:`InvalidURL` naming the option."""
    value = options.get(name, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:60] + "..."
    raise InvalidURL(f"option {name}={shown} is not a boolean; write true or false")
