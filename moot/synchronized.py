"""``@moot.synchronized``: run a function under a distributed lock named
after its arguments, as cinder's ``@coordination.synchronized`` does.

    @moot.synchronized("{volume.id}-{f_name}")
    def delete_volume(self, context, volume): ...

Guarantees:

* The lock name is ``name_template.format(**arguments, f_name=...)``: the call's
  arguments bound to the function's signature with defaults applied (``self``
  and ``cls`` included), ``f_name`` being the function's ``__name__``.
* The template is checked when the function is decorated: a field that names
  no parameter fails at once (InvalidArgument), not on the first call.
* The function runs only while the lock is held; the lock is released when it
  returns or raises. LockTimeout if the lock is not acquired within
  ``timeout`` (or at once, with ``blocking=False``).
* The coordinator is ``coordinator`` if given, else the default set with
  :func:`set_default` *at call time*; with neither, ConfigurationError.

The lock is not reentrant: a decorated function that calls itself (or another
one that formats the same name) from inside the lock waits for itself.
"""

from __future__ import annotations

import functools
import inspect
import re
import string
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from moot.coordinator import Coordinator
from moot.errors import ConfigurationError, InvalidArgument, LockTimeout
from moot.session import check_timeout

P = ParamSpec("P")
R = TypeVar("R")

_default: Coordinator | None = None


def set_default(coordinator: Coordinator | None) -> None:
    """Make ``coordinator`` the one used by ``@synchronized`` functions that
    were given none (None forgets it)."""
    global _default
    _default = coordinator


def get_default() -> Coordinator:
    """The coordinator set by :func:`set_default`; ConfigurationError if none."""
    if _default is None:
        raise ConfigurationError(
            "no default coordinator: call moot.set_default(coord) once at start-up "
            "(e.g. with coord = moot.from_config(...)), or pass coordinator= to @moot.synchronized")
    return _default


def _check_template(template: str, fn: Callable[..., object], signature: inspect.Signature) -> None:
    known = set(signature.parameters) | {"f_name"}
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
    except ValueError as exc:
        raise InvalidArgument(f"lock name template {template!r} is malformed: {exc}") from None
    for field in fields:
        name = re.split(r"[.\[]", field, maxsplit=1)[0]
        if not name or name.isdigit():
            raise InvalidArgument(f"lock name template {template!r}: positional field {{{field}}}; "
                                  f"name the argument instead, e.g. {{volume_id}}")
        if name not in known:
            raise InvalidArgument(f"lock name template {template!r}: {fn.__qualname__}() has no parameter "
                                  f"{name!r}; known: {', '.join(sorted(known))}")


def synchronized(name_template: str, coordinator: Coordinator | None = None, blocking: bool = True,
                 timeout: float | None = None) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a function (or method) to run under the lock named by
    ``name_template``; see the module docstring.

    ``timeout``: seconds to wait for the lock (None: forever); with
    ``blocking=False`` the lock is tried once.
    """
    if not isinstance(name_template, str) or not name_template:
        raise InvalidArgument(f"the lock name template must be a non-empty str, not {name_template!r}")
    check_timeout(timeout)

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        if inspect.iscoroutinefunction(fn):
            raise InvalidArgument(f"@moot.synchronized cannot decorate the coroutine function "
                                  f"{fn.__qualname__}(): its lock would block the event loop")
        signature = inspect.signature(fn)
        _check_template(name_template, fn, signature)

        @functools.wraps(fn)
        def locked(*args: P.args, **kwargs: P.kwargs) -> R:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            try:
                name = name_template.format(**{**bound.arguments, "f_name": fn.__name__})
            except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:
                raise InvalidArgument(f"lock name template {name_template!r} cannot be formatted from the "
                                      f"arguments of {fn.__qualname__}(): {exc!r}") from exc
            lock = (coordinator if coordinator is not None else get_default()).lock(name)
            if not lock.acquire(blocking=blocking, timeout=timeout):
                wait = "at once (blocking=False)" if not blocking else f"within {timeout}s"
                raise LockTimeout(f"lock {name!r} for {fn.__qualname__}() not acquired {wait}")
            try:
                return fn(*args, **kwargs)
            finally:
                lock.release()

        return locked

    return decorate
