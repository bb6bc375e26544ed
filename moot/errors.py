"""The one exception hierarchy of moot.

Every error moot raises on purpose is a :class:`MootError`; catch that to
handle them all. Messages say what went wrong and what to do about it, and
never contain a password from a backend URL.
"""

from __future__ import annotations


class MootError(Exception):
    """Root of every error moot raises on purpose."""


class ConfigurationError(MootError, ValueError):
    """The arguments or configuration given to moot cannot work."""


class InvalidURL(ConfigurationError):
    """The backend URL is malformed or carries a bad option value."""


class UnknownBackend(InvalidURL):
    """The URL's scheme names no backend moot knows."""


class DriverNotInstalled(MootError, ImportError):
    """The client library a backend needs is not installed.

    The message names the extra to install, e.g. ``pip install 'moot[redis]'``.
    """


class InvalidName(MootError, ValueError):
    """A lock, group, election or member name is empty, too long or not a str."""


class InvalidArgument(MootError, ValueError):
    """An argument is out of range (a negative timeout, a bad TTL...)."""


class BackendError(MootError):
    """The backend answered something moot did not expect."""


class ConnectionLost(BackendError):
    """The backend cannot be reached (now); the operation may be retried."""


class SessionExpired(BackendError):
    """The coordinator's session ended: its locks and memberships are gone."""


class CoordinatorClosed(MootError):
    """The coordinator was closed; open a new one with ``moot.connect()``."""


class LockError(MootError):
    """A lock was used in a way that cannot work (e.g. acquired twice)."""


class LockTimeout(LockError, TimeoutError):
    """A lock (or leadership) was not acquired before the timeout ran out."""


class UpgradeConflict(LockError):
    """Another holder of the shared lock is already upgrading; waiting for it
    would deadlock both. The shared hold is kept: release it (so the other
    upgrade can finish) and try again."""


class SemaphoreLimitMismatch(LockError):
    """The semaphore is in use with another limit than the one given."""


class GroupError(MootError):
    """Base of group membership errors."""


class GroupNotFound(GroupError, LookupError):
    """The group does not exist (nobody ever joined it, or it was deleted)."""


class GroupNotEmpty(GroupError):
    """The group still has members, so it cannot be deleted."""


class MemberNotFound(GroupError, LookupError):
    """The member is not (or no longer) in the group."""


class MemberAlreadyJoined(GroupError):
    """Another live session already joined the group under this member id."""


class NoLiveMember(MemberNotFound):
    """The service group has no live member to offer (``ServiceGroup.pick()``)."""
