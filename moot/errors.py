"""The one exception hierarchy of moot.

Every error moot raises on purpose is a :class:`MootError`; catch that to
handle them all. Messages say what went wrong and what to do about it, and
never contain a password from a backend URL.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import urllib.parse
import urllib.request


class MootError(Exception):
    """Root of every error moot raises on purpose."""


class ConfigurationError(MootError, ValueError):
    """The arguments or configuration given to moot cannot work."""


class InvalidURL(ConfigurationError):
    """The backend URL is malformed or carries a bad option value."""


class UnknownBackend(InvalidURL):
    """The URL's scheme names no backend moot knows."""


class AuthenticationFailed(ConfigurationError):
    """The backend refused the credentials (user, password, token) moot gave
    it. Not retryable: fix the credentials in the URL (or the server's users)."""


class PermissionDenied(ConfigurationError):
    """The backend knows who moot is but refuses it this root: the key prefix,
    key range, schema or database the URL names belongs to another tenant, or
    the user lacks a privilege moot needs there (docs/security.md lists them).
    Nothing was read or changed. Not retryable: use the root the user was
    given, or grant the user that root."""


class TLSFailed(ConfigurationError):
    """The TLS handshake with the backend failed for a reason a retry cannot
    fix: the server's certificate is not signed by a trusted authority (see
    the ``ca_cert`` option), does not name the host in the URL, has expired,
    or the server refused the client certificate, or does not speak TLS.
    Not retryable: fix the certificates or the URL's TLS options."""


class DriverNotInstalled(MootError, ImportError):
    """The client library a backend needs is not installed.

    The message names the extra of moot to install and the command that
    installs it where this moot came from (:func:`install_command`).
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


def install_command(extra: str) -> str:
    """The command that adds ``extra`` to the moot this interpreter runs:
    from the directory, wheel or VCS URL it was installed from when pip
    recorded one (a source or editable install), else from the package index."""
    pip = f"{shlex.quote(sys.executable)} -m pip install"
    origin = _origin()
    if origin is not None:
        url = origin.get("url")
        if isinstance(url, str):
            vcs = origin.get("vcs_info")
            if isinstance(vcs, dict) and isinstance(vcs.get("vcs"), str):
                ref = vcs.get("commit_id") or vcs.get("requested_revision")
                where = f"{vcs['vcs']}+{url}" + (f"@{ref}" if isinstance(ref, str) else "")
                return f"{pip} {shlex.quote(f'moot[{extra}] @ {where}')}"
            if url.startswith("file://"):
                path = urllib.request.url2pathname(urllib.parse.urlparse(url).path)
                if os.path.exists(path):
                    dir_info = origin.get("dir_info")
                    editable = isinstance(dir_info, dict) and dir_info.get("editable") is True
                    return f"{pip} {'-e ' if editable else ''}{shlex.quote(f'{path}[{extra}]')}"
    return f"{pip} {shlex.quote(f'moot[{extra}]')}"


def missing_driver(what: str, package: str, extra: str) -> DriverNotInstalled:
    """The DriverNotInstalled for ``what`` (e.g. "the redis:// backend")
    lacking ``package``, saying which extra of moot installs it and how."""
    return DriverNotInstalled(f"{what} needs the {package!r} package, which is not installed: install the "
                              f"{extra!r} extra of moot: {install_command(extra)}")


def _origin() -> dict[str, object] | None:
    """pip's record of where the installed moot came from (PEP 610), if any."""
    try:
        from importlib import metadata

        # A checkout's own moot.egg-info may come first on sys.path: it records nothing.
        texts = [dist.read_text("direct_url.json") for dist in metadata.distributions(name="moot")]
    except Exception:  # unreadable metadata: say nothing about where moot came from
        texts = []
    for text in texts:
        try:
            origin = json.loads(text or "")
        except ValueError:
            continue
        if isinstance(origin, dict):
            return origin
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.path.isfile(os.path.join(root, "pyproject.toml")):  # run from a checkout, not installed
        return {"url": urllib.parse.urljoin("file:", urllib.request.pathname2url(root)), "dir_info": {}}
    return None
