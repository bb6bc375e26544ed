"""moot's errors as tooz's: the one place a tooz caller's ``except`` clauses
are honoured.

================================  ==========================================
moot                              tooz
================================  ==========================================
``GroupNotFound``                 ``GroupNotCreated``
``GroupNotEmpty``                 ``GroupNotEmpty``
``MemberAlreadyJoined``           ``MemberAlreadyExist``
``MemberNotFound``                ``MemberNotJoined``
``ConnectionLost``,               ``ToozConnectionError`` (retrying may help)
``SessionExpired``
bad capabilities                  ``SerializationError``
any other ``MootError``           ``ToozError`` (message kept, cause chained)
================================  ==========================================
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import tooz
from tooz import coordination

import moot


@contextlib.contextmanager
def translated(group_id: bytes | None = None, member_id: bytes | None = None) -> Iterator[None]:
    """Raise the tooz equivalent of any moot error raised inside; group and
    member errors name ``group_id`` and ``member_id`` as tooz's do."""
    try:
        yield
    except moot.GroupNotFound as e:
        raise coordination.GroupNotCreated(group_id or b"?") from e
    except moot.GroupNotEmpty as e:
        raise coordination.GroupNotEmpty(group_id or b"?") from e
    except moot.MemberAlreadyJoined as e:
        raise coordination.MemberAlreadyExist(group_id or b"?", member_id or b"?") from e
    except moot.MemberNotFound as e:
        raise coordination.MemberNotJoined(group_id or b"?", member_id or b"?") from e
    except (moot.ConnectionLost, moot.SessionExpired) as e:
        raise coordination.ToozConnectionError(str(e), cause=e) from e
    except moot.MootError as e:
        raise tooz.ToozError(str(e), cause=e) from e


@contextlib.contextmanager
def serializing() -> Iterator[None]:
    """Capabilities moot cannot store (see :mod:`moot.values`) raise tooz's
    ``SerializationError`` before any I/O."""
    try:
        yield
    except moot.InvalidArgument as e:
        raise coordination.SerializationError(str(e), cause=e) from e
