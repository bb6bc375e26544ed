"""Who may use a file:// directory: the trust check on the directory moot
works in, and the modes of the files and directories it creates there.

Two ways of using a directory, chosen with the ``mode`` option:

``mode=0600`` (the default): owner only
    The directory must be owned by the user moot runs as and writable by
    nobody else (no group or other write bit), as ssh and tmux require of
    theirs; moot creates its files 0600 and its directories 0700.

``mode=0660``: shared on purpose with the directory's group
    For services running as different users that share one directory
    through a group (``install -d -m 2770 -g GROUP DIR``). The directory may
    be writable by its group; it must be owned by the user moot runs as, by
    root, or belong to one of this user's groups, and it must not be
    writable by other users. moot creates its files 0660 and its
    directories 0770 (whatever the umask), keeping a set-group-ID bit.

In both, a directory writable by every user is refused, sticky or not (a
sticky world-writable *parent*, like /tmp, is fine), and so is a symbolic
link as the directory itself unless root or this user made the link. The
check is made on the directory of the URL (the one moot creates its files
in) when connecting; directories moot creates inside it get the mode above.
"""

from __future__ import annotations

import getpass
import grp
import os
import pwd
import shlex
import stat
import tempfile
from collections.abc import Mapping

from moot.errors import ConfigurationError, InvalidURL

#: accepted ``mode`` values -> (file mode, directory mode)
MODES = {0o600: (0o600, 0o700), 0o660: (0o660, 0o770)}


def parse_mode(options: Mapping[str, object]) -> int:
    """The ``mode`` option: 0600 (default) or 0660, written ``0600``,
    ``600`` or ``0o600`` (or given as the int ``0o600``). Anything else is
    :class:`InvalidURL` naming the accepted values."""
    value = options.get("mode", 0o600)
    mode: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        mode = value
    elif isinstance(value, str):
        text = value[2:] if value[:2] in ("0o", "0O") else value
        if 3 <= len(text) <= 4 and text.isascii() and text.isdigit() and "8" not in text and "9" not in text:
            mode = int(text, 8)
    if mode not in MODES:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "..."
        raise InvalidURL(
            f"option mode={shown} is not accepted; write mode=0600 (the default: this user only) or "
            f"mode=0660 (shared on purpose with the directory's group); other users are never given access")
    return mode


def _name(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _group(gid: int) -> str:
    try:
        return f"{grp.getgrgid(gid).gr_name} (gid {gid})"
    except KeyError:
        return f"gid {gid}"


def check_directory(root: str, mode: int, default: bool) -> None:
    """Refuse (:class:`ConfigurationError` saying why and what to do) a
    directory other users could tamper with, as the module docstring says.
    ``default`` tells that ``root`` is the zero-config default directory,
    for the advice given."""
    me = os.geteuid()
    link = os.lstat(root)
    info = os.stat(root) if stat.S_ISLNK(link.st_mode) else link
    where = shlex.quote(root)
    elsewhere = ("point moot at a directory of your own: set $MOOT_URL=file:///path/to/dir, or $XDG_RUNTIME_DIR "
                 "(the default is $XDG_RUNTIME_DIR/moot-$USER, else moot-$USER in the temporary directory)"
                 if default else "choose a directory of your own in the URL (file:///path/to/dir)")
    share = f"set MOOT_URL={shlex.quote(f'file://{root}?mode=0660')}" if default else "add ?mode=0660 to the URL"
    unknown = f"if you did not make it, someone else may have: remove it (rm -r {where}) or {elsewhere}"

    def refuse(why: str, fix: str) -> ConfigurationError:
        return ConfigurationError(f"refusing to use {root!r} as a file backend: {why}; {fix}")

    if stat.S_ISLNK(link.st_mode) and link.st_uid not in (me, 0):
        raise refuse(f"it is a symbolic link made by {_name(link.st_uid)}, who could point it elsewhere at any "
                     f"time", unknown)
    if not stat.S_ISDIR(info.st_mode):
        raise refuse("it is not a directory", elsewhere)
    perms = stat.S_IMODE(info.st_mode)
    if perms & stat.S_IWOTH:
        owner = f"if you made it so, run chmod o-w {where}; " if info.st_uid == me else \
            f"it belongs to {_name(info.st_uid)}; "
        raise refuse(f"it is writable by every user (mode {perms:04o}), who could delete or replace its lock "
                     f"files", owner + unknown)
    if mode == 0o600:
        if info.st_uid != me:
            raise refuse(f"it is owned by {_name(info.st_uid)}, not by {_name(me)} that moot runs as, so its "
                         f"owner controls every lock in it",
                         f"{unknown}; to share a directory between users on purpose, give it a group and "
                         f"{share}")
        if perms & stat.S_IWGRP:
            raise refuse(f"it is writable by its group {_group(info.st_gid)} (mode {perms:04o})",
                         f"if it is not shared on purpose, run chmod g-w {where}; to share it with that group, "
                         f"{share}")
        return
    groups = {os.getegid(), *os.getgroups()}
    if info.st_uid not in (me, 0) and info.st_gid not in groups:
        raise refuse(f"it is owned by {_name(info.st_uid)} and its group {_group(info.st_gid)} is not one of "
                     f"{_name(me)}'s, so mode=0660 shares it with strangers",
                     f"make it with a group this user is in (install -d -m 2770 -g GROUP {where}), or {unknown}")


class Access:
    """Creates moot's files and directories under a file:// directory with
    the chosen mode, exactly (the umask cannot take group bits away)."""

    __slots__ = ("dir_mode", "file_mode", "shared")

    def __init__(self, mode: int = 0o600):
        self.file_mode, self.dir_mode = MODES[mode]
        self.shared = mode != 0o600

    def create(self, name: str, flags: int, dir_fd: int | None = None) -> int:
        """Open ``name`` with ``flags | O_CREAT | O_EXCL`` at mode ``file_mode``."""
        fd = os.open(name, flags | os.O_CREAT | os.O_EXCL, self.file_mode, dir_fd=dir_fd)
        if self.shared:
            try:
                os.fchmod(fd, self.file_mode)
            except BaseException:
                os.close(fd)
                raise
        return fd

    def open_or_create(self, name: str, flags: int, dir_fd: int) -> int:
        """Open ``name`` (never through a symbolic link), creating it at mode
        ``file_mode`` if it does not exist."""
        try:
            return self.create(name, flags | os.O_NOFOLLOW, dir_fd)
        except FileExistsError:
            return os.open(name, flags | os.O_NOFOLLOW, dir_fd=dir_fd)

    def mkdir(self, path: str) -> None:
        """Make directory ``path`` at mode ``dir_mode`` (FileExistsError if it exists)."""
        os.mkdir(path, self.dir_mode)
        if self.shared:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            try:
                os.fchmod(fd, self.dir_mode | (os.fstat(fd).st_mode & stat.S_ISGID))
            finally:
                os.close(fd)


def default_directory() -> str:
    """The zero-config directory: ``$XDG_RUNTIME_DIR/moot-$USER``, else
    ``moot-$USER`` in the temporary directory (``$TMPDIR``, else /tmp)."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name for this uid
        user = str(os.getuid())
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return os.path.join(base, f"moot-{user}")
