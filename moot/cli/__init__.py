"""The ``moot`` command: look at a coordination backend from a shell.

Every subcommand but ``demo`` opens one coordinator that joins nothing,
campaigns for nothing and holds nothing: it only reads, and but for
``watch`` it closes at once. Its session has a short TTL, so even a killed
``moot`` leaves no trace for long.

Output is a table for people, or JSON with ``--json`` for scripts. Errors are
one line on stderr (moot's messages never contain a password); the exit
status says what kind of error it was (see ``EPILOG``).

``moot watch`` keeps its coordinator open and shows a view (locks, groups, or
one group's members) again whenever the backend reports a change to what it
shows (the backend's watches, so a change appears within milliseconds), and
re-reads it every ``--interval`` seconds to pick up new lock or group names
(which no watch announces) and to update how long each holder and waiter has
been there.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any, Protocol, TextIO

import moot
from moot.backends.base import Watch
from moot.errors import (
    ConfigurationError,
    ConnectionLost,
    DriverNotInstalled,
    GroupNotFound,
    InvalidArgument,
    InvalidName,
    MemberNotFound,
    MootError,
)
from moot.recipes.lock import lock_prefix
from moot.recipes.queue import Waiter
from moot.url import parse_url, redact

EXIT_OK = 0
EXIT_BACKEND = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3

#: Session TTL of the CLI's own coordinator (it holds nothing).
CLI_TTL = 5.0
#: Seconds to reach the backend before giving up (``--timeout``).
DEFAULT_CONNECT_TIMEOUT = 5.0
#: ``moot watch``: seconds between two periodic re-reads (``--interval``).
DEFAULT_WATCH_INTERVAL = 1.0
#: ``moot watch``: at most this many locks or groups are watched at once; the
#: others (the least recently seen) are still re-read every interval.
MAX_WATCHES = 256

EPILOG = """\
exit status:
  0  success
  1  error talking to the backend (unreachable, refused, session lost)
  2  usage error (bad arguments, malformed URL, unknown backend scheme,
     missing client package)
  3  not found (unknown group, election without a leader)
  `moot watch` exits 0 on Ctrl-C or SIGTERM, and after --count changes or
  --duration seconds

environment:
  MOOT_URL  backend URL used when --url is not given
            (default: file://$XDG_RUNTIME_DIR/moot-$USER, or under the temp dir)

examples:
  moot demo                                   # see locks, groups and an election at work
  moot --url redis://127.0.0.1:6379 locks volume-
  moot --url file:///var/lib/app/coord --json members conductors
  moot watch locks volume-                    # live view until Ctrl-C
  moot --json watch group conductors          # one JSON object per change
"""


class NotFound(Exception):
    """What the user asked about does not exist (exit status 3)."""


# -- formatting -----------------------------------------------------------------
def age(seconds: float | None) -> str:
    """A duration for people: ``0.4s``, ``12.0s``, ``3m05s``, ``2h03m``, ``4d02h``."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def elapsed(since: float | None, now: float) -> float | None:
    """Seconds from ``since`` to ``now`` (never negative: clocks of hosts differ), or None."""
    return None if since is None else round(max(0.0, now - since), 3)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns separated by two spaces; ``None`` cells print as ``-``."""
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in cells)


def _json_default(value: object) -> object:
    if isinstance(value, bytes | bytearray):
        return {"hex": bytes(value).hex()}
    return repr(value)


def emit_json(data: object) -> None:
    print(json.dumps(data, indent=2, default=_json_default))


def _capabilities_text(capabilities: Any) -> str:
    if capabilities is None:
        return "-"
    if isinstance(capabilities, bytes | bytearray):
        return repr(bytes(capabilities))
    return json.dumps(capabilities, separators=(",", ":"), default=_json_default)


# -- subcommands ------------------------------------------------------------------
def cmd_ping(args: argparse.Namespace) -> int:
    """Reachable or not, best round trip of three, and what the server says it is."""
    url = resolve_url(args)
    try:
        coord = open_coordinator(args)
    except Exception as exc:
        if args.json:
            message = str(exc) if isinstance(exc, MootError) else f"{type(exc).__name__}: {exc}"
            emit_json({"url": shown_url(url), "reachable": False, "error": one_line(message, url)})
        raise
    with coord:
        rtts = []
        server = ""
        for _ in range(3):
            started = time.perf_counter()
            server = coord.backend.ping()
            rtts.append((time.perf_counter() - started) * 1000)
    result = {"url": coord.url, "reachable": True, "rtt_ms": round(min(rtts), 3), "server": server}
    if args.json:
        emit_json(result)
    else:
        print(table(["URL", "STATUS", "RTT", "SERVER"],
                    [[coord.url, "reachable", f"{min(rtts):.3g} ms", server]]))
    return EXIT_OK


def locks_data(coord: moot.Coordinator, prefix: str) -> list[dict[str, Any]]:
    """Every lock whose name starts with ``prefix``: its holders (one
    exclusive, or several shared) and its waiters in order, each with its
    member, token, mode, and how long it has held or waited. ``holder``,
    ``token``, ``mode``, ``since`` and ``held_for`` repeat the first holder."""
    infos = [info for info in coord.locks() if info.name.startswith(prefix)]
    now = time.time()

    def entry(who: Waiter, duration: str) -> dict[str, Any]:
        return {"member": who.member, "token": who.token, "mode": who.mode, "since": who.since,
                duration: elapsed(who.since, now)}

    return [{
        "name": info.name,
        "holder": info.holder,
        "token": info.token,
        "mode": info.mode,
        "since": info.since,
        "held_for": elapsed(info.since, now),
        "holders": [entry(h, "held_for") for h in info.holders],
        "waiters": [entry(w, "waiting_for") for w in info.waiters],
    } for info in infos]


def locks_text(data: list[dict[str, Any]], namespace: str, prefix: str) -> str:
    if not data:
        what = f" whose name starts with {prefix!r}" if prefix else ""
        return f"no lock{what} is held or waited for in namespace {namespace!r}"
    rows: list[list[object]] = []
    for lock in data:
        people = [(h, "holds", h["held_for"]) for h in lock["holders"]]
        people += [(w, f"waits #{place}", w["waiting_for"]) for place, w in enumerate(lock["waiters"], 1)]
        for row, (who, state, duration) in enumerate(people):
            rows.append([lock["name"] if row == 0 else "", who["member"], state, who["token"], who["mode"],
                         age(duration)])
    return table(["LOCK", "MEMBER", "STATE", "TOKEN", "MODE", "FOR"], rows)


def groups_data(coord: moot.Coordinator) -> list[dict[str, Any]]:
    """Every group of the namespace with the ids of its live members."""
    data = []
    for name in sorted(coord.groups()):
        try:
            members = sorted(coord.group(name).members())
        except GroupNotFound:  # deleted since it was listed
            continue
        data.append({"name": name, "members": members})
    return data


def groups_text(data: list[dict[str, Any]], namespace: str) -> str:
    if not data:
        return f"no group in namespace {namespace!r}"
    return table(["GROUP", "MEMBERS"], [[g["name"], len(g["members"])] for g in data])


def members_data(coord: moot.Coordinator, name: str) -> list[dict[str, Any]] | None:
    """The live members of group ``name`` (None if there is no such group)."""
    group = coord.group(name)
    try:
        members = group.members()
    except GroupNotFound:
        return None
    data = []
    for member_id in sorted(members):
        member = members[member_id]
        try:
            last_seen: float | None = group.member(member_id).last_seen
            up = True
        except MemberNotFound:  # left since it was listed
            last_seen, up = None, False
        data.append({"member": member_id, "up": up, "capabilities": member.capabilities,
                     "joined_at": member.joined_at, "last_seen": last_seen})
    return data


def members_text(data: list[dict[str, Any]] | None, name: str, namespace: str) -> str:
    if data is None:
        return f"no group {name!r} in namespace {namespace!r}"
    if not data:
        return f"group {name!r} has no members"
    now = time.time()
    rows = [[m["member"], "up" if m["up"] else "gone", f"{age(elapsed(m['joined_at'], now))} ago",
             f"{age(elapsed(m['last_seen'], now))} ago" if m["last_seen"] else "-",
             _capabilities_text(m["capabilities"])] for m in data]
    return table(["MEMBER", "STATE", "JOINED", "LAST SEEN", "CAPABILITIES"], rows)


def cmd_locks(args: argparse.Namespace) -> int:
    """Every lock held or waited for (optionally only names starting with PREFIX)."""
    with open_coordinator(args) as coord:
        data = locks_data(coord, args.prefix)
    if args.json:
        emit_json(data)
    else:
        print(locks_text(data, coord.namespace, args.prefix))
    return EXIT_OK


def cmd_groups(args: argparse.Namespace) -> int:
    """Every group of the namespace with its live members."""
    with open_coordinator(args) as coord:
        data = groups_data(coord)
    if args.json:
        emit_json(data)
    else:
        print(groups_text(data, coord.namespace))
    return EXIT_OK


def cmd_members(args: argparse.Namespace) -> int:
    """The live members of GROUP: capabilities, when they joined, when last seen alive."""
    with open_coordinator(args) as coord:
        data = members_data(coord, args.group)
    if data is None:
        raise NotFound(members_text(data, args.group, coord.namespace))
    if args.json:
        emit_json(data)
    else:
        print(members_text(data, args.group, coord.namespace))
    return EXIT_OK


def cmd_leader(args: argparse.Namespace) -> int:
    """The leader of election NAME and the candidates waiting behind it, in order."""
    with open_coordinator(args) as coord:
        candidates = coord.election(args.name).candidates()
    if not candidates:
        raise NotFound(f"election {args.name!r} has no leader (no candidates) in namespace "
                       f"{coord.namespace!r}")
    if args.json:
        emit_json({"election": args.name, "leader": candidates[0], "candidates": candidates})
    else:
        print(table(["ELECTION", "LEADER", "WAITING"],
                    [[args.name, candidates[0], ", ".join(candidates[1:]) or "-"]]))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo (see :mod:`moot.demo`)."""
    from moot import demo

    # Never $MOOT_URL: the demo must not land on a real deployment by accident.
    return demo.run(url=args.url, workers=args.workers, duration=args.duration,
                    namespace=args.namespace or "default")


# -- moot watch ----------------------------------------------------------------------
#: Fields that change with the clock alone: a view whose other fields are
#: unchanged has not changed.
VOLATILE = frozenset({"held_for", "waiting_for", "last_seen"})
#: Seconds between two looks at the stop flag set by SIGINT/SIGTERM.
STOP_CHECK = 0.1
#: Re-reads, at most, to cover the names that newly appeared in a read.
FOLLOW_ROUNDS = 3


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class View(Protocol):
    """One thing ``moot watch`` shows: how to read it, watch it and print it."""

    title: str

    def read(self) -> Any:
        """The current state (JSON-able), read from the backend."""

    def names(self, data: Any) -> list[str]:
        """Names of the locks or groups in ``data`` whose changes to watch."""

    def watch(self, name: str, wake: Callable[[], None]) -> Cancellable:
        """Call ``wake()`` after any change to lock or group ``name``."""

    def text(self, data: Any) -> str: ...

    def json(self, data: Any) -> dict[str, Any]: ...


class LocksView:
    def __init__(self, coord: moot.Coordinator, prefix: str):
        self.coord, self.prefix = coord, prefix
        self.title = f"locks {prefix}*" if prefix else "locks"

    def read(self) -> list[dict[str, Any]]:
        return locks_data(self.coord, self.prefix)

    def names(self, data: list[dict[str, Any]]) -> list[str]:
        return [lock["name"] for lock in data]

    def watch(self, name: str, wake: Callable[[], None]) -> Watch:
        return self.coord.backend.watch(lock_prefix(self.coord, name), wake)

    def text(self, data: list[dict[str, Any]]) -> str:
        return locks_text(data, self.coord.namespace, self.prefix)

    def json(self, data: list[dict[str, Any]]) -> dict[str, Any]:
        return {"view": "locks", "prefix": self.prefix, "locks": data}


class GroupsView:
    title = "groups"

    def __init__(self, coord: moot.Coordinator):
        self.coord = coord

    def read(self) -> list[dict[str, Any]]:
        return groups_data(self.coord)

    def names(self, data: list[dict[str, Any]]) -> list[str]:
        return [group["name"] for group in data]

    def watch(self, name: str, wake: Callable[[], None]) -> Cancellable:
        return watch_group(self.coord, name, wake)

    def text(self, data: list[dict[str, Any]]) -> str:
        return groups_text(data, self.coord.namespace)

    def json(self, data: list[dict[str, Any]]) -> dict[str, Any]:
        return {"view": "groups", "groups": data}


class GroupView:
    def __init__(self, coord: moot.Coordinator, name: str):
        self.coord, self.name = coord, name
        self.title = f"group {name}"

    def read(self) -> list[dict[str, Any]] | None:
        return members_data(self.coord, self.name)

    def names(self, data: list[dict[str, Any]] | None) -> list[str]:
        return [self.name]  # watched even before it exists: its first join shows at once

    def watch(self, name: str, wake: Callable[[], None]) -> Cancellable:
        return watch_group(self.coord, name, wake)

    def text(self, data: list[dict[str, Any]] | None) -> str:
        return members_text(data, self.name, self.coord.namespace)

    def json(self, data: list[dict[str, Any]] | None) -> dict[str, Any]:
        return {"view": "group", "group": self.name, "exists": data is not None, "members": data or []}


def watch_group(coord: moot.Coordinator, name: str, wake: Callable[[], None]) -> Cancellable:
    """Call ``wake()`` after every join or leave of group ``name``."""
    return coord.group(name).watch(on_join=lambda _member: wake(), on_leave=lambda _member: wake())


def stable(data: Any) -> Any:
    """``data`` without its :data:`VOLATILE` fields, to tell a change from the clock ticking."""
    if isinstance(data, dict):
        return {k: stable(v) for k, v in data.items() if k not in VOLATILE}
    if isinstance(data, list):
        return [stable(v) for v in data]
    return data


class LiveView:
    """Shows ``view`` again on every change until stopped.

    Guarantees: after every change the backend reports, the view is read
    again and shown if it changed, so the current state is always the last
    one shown (states that lasted less than one read may be merged into the
    next); states that differ only in :data:`VOLATILE` fields count as one;
    new lock or group names appear within ``interval`` seconds. ``fmt`` is ``"tty"``
    (redraw the screen every change and every interval), ``"text"`` (a
    timestamped table per change) or ``"json"`` (one JSON object per line per
    change). Stops after ``count`` changes, after ``duration`` seconds, or
    once :meth:`stop` is called (from a signal handler too).
    """

    def __init__(self, coord: moot.Coordinator, view: View, out: TextIO, fmt: str, interval: float,
                 count: int | None = None, duration: float | None = None):
        self.coord, self.view, self.out, self.fmt = coord, view, out, fmt
        self.interval, self.count, self.duration = interval, count, duration
        self._changed = threading.Event()
        self._watches: collections.OrderedDict[str, Cancellable] = collections.OrderedDict()
        self._stopping = False
        self._trouble: str | None = None

    def stop(self) -> None:
        """Ask :meth:`run` to return (sets a flag only: safe in a signal handler)."""
        self._stopping = True

    def run(self) -> int:
        started = time.monotonic()
        end = None if self.duration is None else started + self.duration
        shown = 0
        last: Any = None
        data: Any = None
        try:
            while not self._stopping:
                self._changed.clear()
                try:
                    data = self.view.read()
                    for _ in range(FOLLOW_ROUNDS):  # a change made before a new watch was set is not lost
                        if not self._follow(self.view.names(data)):
                            break
                        data = self.view.read()
                    else:  # names keep appearing: follow them on the next round
                        self._changed.set()
                except ConnectionLost as exc:
                    self._report(str(exc))
                    if self.fmt == "tty" and shown:
                        self._show(data)  # the last state read, under a header that says so
                else:
                    self._report(None)
                    state = stable(data)
                    if shown == 0 or state != last:
                        shown, last = shown + 1, state
                        self._show(data)
                        if self.count is not None and shown >= self.count:
                            break
                    elif self.fmt == "tty":
                        self._show(data)  # the durations moved on
                if not self._wait(time.monotonic() + self.interval, end):
                    break
        finally:
            for watch in self._watches.values():
                watch.cancel()
        return EXIT_OK

    def _wait(self, tick: float, end: float | None) -> bool:
        """Wait for a change or ``tick``; False once it is time to stop."""
        while not self._stopping:
            now = time.monotonic()
            if end is not None and now >= end:
                return False
            if now >= tick or self._changed.wait(min(STOP_CHECK, tick - now)):
                return True
        return False

    def _follow(self, names: list[str]) -> bool:
        """Watch ``names`` (the most recently seen first, up to MAX_WATCHES);
        True if a new watch was set."""
        present = set(names)
        added = False
        for name in names:
            if name in self._watches:
                self._watches.move_to_end(name)
            elif len(self._watches) < MAX_WATCHES or self._forget_one(present):
                self._watches[name] = self.view.watch(name, self._changed.set)
                added = True
        return added

    def _forget_one(self, present: set[str]) -> bool:
        for name in self._watches:  # least recently seen first
            if name not in present:
                self._watches.pop(name).cancel()
                return True
        return False

    def _report(self, trouble: str | None) -> None:
        """Say once when the backend stops answering, and once when it is back."""
        if trouble == self._trouble or (trouble is not None and self._trouble is not None):
            return
        self._trouble = trouble
        if self.fmt != "tty":
            message = "backend reachable again" if trouble is None else f"{trouble} (retrying)"
            print(f"moot: {one_line(message)}", file=sys.stderr, flush=True)

    def _show(self, data: Any) -> None:
        clock = time.strftime("%H:%M:%S")
        if self.fmt == "json":
            line = json.dumps({"time": round(time.time(), 3), **self.view.json(data)},
                              separators=(",", ":"), default=_json_default)
            self.out.write(line + "\n")
        elif self.fmt == "text":
            self.out.write(f"-- {clock} {self.view.title}\n{self.view.text(data)}\n\n")
        else:
            trouble = f"  [{one_line(self._trouble)}; retrying]" if self._trouble else ""
            self.out.write(f"\x1b[H\x1b[2Jmoot watch {self.view.title}  on {self.coord.url} "
                           f"(namespace {self.coord.namespace})  {clock}  Ctrl-C to stop{trouble}\n\n"
                           f"{self.view.text(data)}\n")
        self.out.flush()


def cmd_watch(args: argparse.Namespace) -> int:
    """Show a view again on every change until Ctrl-C, SIGTERM, --count or --duration."""
    if args.view == "group" and args.target is None:
        raise InvalidArgument("moot watch group needs the group's NAME: moot watch group NAME")
    if args.view == "groups" and args.target is not None:
        raise InvalidArgument(f"moot watch groups takes no argument (got {args.target!r}); "
                              f"did you mean: moot watch group {args.target}")
    live: list[LiveView] = []
    signalled: list[int] = []  # plain lists: a signal handler must not take locks

    def on_signal(signum: int, frame: FrameType | None) -> None:
        signalled.append(signum)
        for view in live:
            view.stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)} \
        if threading.current_thread() is threading.main_thread() else {}
    try:
        with open_coordinator(args) as coord:
            view: View
            if args.view == "groups":
                view = GroupsView(coord)
            elif args.view == "group":
                view = GroupView(coord, args.target)
            else:
                view = LocksView(coord, args.target or "")
            fmt = "json" if args.json else "tty" if sys.stdout.isatty() else "text"
            live.append(LiveView(coord, view, sys.stdout, fmt, args.interval, args.count, args.duration))
            return EXIT_OK if signalled else live[0].run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# -- plumbing -----------------------------------------------------------------------
def resolve_url(args: argparse.Namespace) -> str:
    """``--url``, else ``$MOOT_URL``, else moot's default file:// directory."""
    return str(args.url or moot.default_url())


def open_coordinator(args: argparse.Namespace) -> moot.Coordinator:
    """A read-only coordinator: joins nothing, short TTL, bounded connect time."""
    options: dict[str, Any] = {"ttl": CLI_TTL, "timeout": args.timeout}
    if args.namespace:
        options["namespace"] = args.namespace
    member_id = f"moot-cli-{socket.gethostname()}-{os.getpid()}"
    return moot.connect(resolve_url(args), member_id=member_id, **options)


def shown_url(url: str) -> str:
    """``url`` with its password hidden."""
    return redact(url)


def one_line(message: str, url: str | None = None) -> str:
    """``message`` on one line, with the password of ``url`` (if any) scrubbed out."""
    text = " ".join(message.split())
    if url:
        try:
            password = parse_url(url).password
        except MootError:
            password = None
        if password:
            text = text.replace(password, "***")
    return text


def _common_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """Options accepted before and after the subcommand (``defaults`` only on the top parser)."""
    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument("--url", default=default(None), metavar="URL",
                        help="backend URL (default: $MOOT_URL, else a file:// directory of this user)")
    parser.add_argument("--namespace", default=default(None), metavar="NS",
                        help="namespace to look at (default: the URL's ?namespace=, else 'default')")
    parser.add_argument("--json", action="store_true", default=default(False),
                        help="print JSON for scripts instead of a table")
    parser.add_argument("--timeout", type=float, default=default(DEFAULT_CONNECT_TIMEOUT), metavar="SEC",
                        help=f"seconds to reach the backend (default: {DEFAULT_CONNECT_TIMEOUT:g})")
    parser.add_argument("-v", "--verbose", action="store_true", default=default(False),
                        help="log what moot does to stderr (passwords hidden)")


def _positive(kind: Callable[[str], float] | Callable[[str], int]) -> Callable[[str], Any]:
    """An argparse type: a number of ``kind`` greater than zero."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value > 0 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"{text!r} must be a finite number greater than 0")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moot", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Look at locks, groups and elections on a moot backend.")
    parser.add_argument("--version", action="version", version=f"moot {moot.__version__}")
    _common_options(parser, defaults=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, func: Callable[[argparse.Namespace], int], help_text: str,
            common: bool = True) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text, description=help_text, epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
        if common:
            _common_options(command, defaults=False)
        command.set_defaults(func=func)
        return command

    demo = add("demo", cmd_demo, "run worker processes that share locks, a group and an election, "
                                 "kill the leader, and narrate what happens", common=False)
    demo.add_argument("--url", default=argparse.SUPPRESS, metavar="URL",
                      help="backend URL (default: a fresh temporary file:// directory, removed at the end; "
                           "never $MOOT_URL)")
    demo.add_argument("--namespace", default=argparse.SUPPRESS, metavar="NS",
                      help="namespace for the demo's locks, group and election (default: 'default')")
    demo.add_argument("--workers", type=int, default=4, help="worker processes (default: 4)")
    demo.add_argument("--duration", type=float, default=20.0, help="seconds to run (default: 20)")
    add("ping", cmd_ping, "is the backend reachable: round-trip time and server description")
    locks = add("locks", cmd_locks, "locks held or waited for: holder, token, held for, waiters")
    locks.add_argument("prefix", nargs="?", default="", metavar="PREFIX", help="only locks whose name starts so")
    add("groups", cmd_groups, "groups and how many live members each has")
    members = add("members", cmd_members, "live members of a group: capabilities, joined, last seen")
    members.add_argument("group", metavar="GROUP")
    leader = add("leader", cmd_leader, "leader of an election and the candidates waiting behind it")
    leader.add_argument("name", metavar="NAME")
    watch = add("watch", cmd_watch, "live view of the locks (default), the groups, or one group's members, "
                                    "shown again on every change until Ctrl-C")
    watch.add_argument("view", nargs="?", choices=("locks", "groups", "group"), default="locks",
                       help="what to show: locks [PREFIX] | groups | group NAME")
    watch.add_argument("target", nargs="?", default=None, metavar="PREFIX|NAME",
                       help="locks: only names starting so; group: the group's name")
    watch.add_argument("--interval", type=_positive(float), default=DEFAULT_WATCH_INTERVAL, metavar="SEC",
                       help="seconds between two re-reads, for new names and durations "
                            f"(default: {DEFAULT_WATCH_INTERVAL:g}); changes show at once")
    watch.add_argument("--count", type=_positive(int), default=None, metavar="N",
                       help="stop after showing N states (the first one counts)")
    watch.add_argument("--duration", type=_positive(float), default=None, metavar="SEC",
                       help="stop after SEC seconds")
    return parser


def _error(message: str, args: argparse.Namespace) -> None:
    url = getattr(args, "url", None) or os.environ.get("MOOT_URL")
    print(f"moot: {one_line(message, url)}", file=sys.stderr)


class RedactingFormatter(logging.Formatter):
    """Formats records with every occurrence of ``secret`` replaced by ``***``
    (client libraries log what they send, a ZooKeeper digest login included)."""

    def __init__(self, fmt: str, secret: str | None):
        super().__init__(fmt)
        self.secret = secret

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text.replace(self.secret, "***") if self.secret else text


def _log_verbosely(url: str | None) -> None:
    """``-v``: moot's own debug log on stderr; other libraries' warnings only.
    The password of ``url`` never reaches the output."""
    try:
        secret = parse_url(url).password if url else None
    except MootError:
        secret = None
    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter("moot: %(levelname)s %(name)s: %(message)s", secret))
    logging.getLogger().addHandler(handler)
    logging.getLogger("moot").setLevel(logging.DEBUG)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``moot`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.verbose:
        _log_verbosely(getattr(args, "url", None) if args.command == "demo" else resolve_url(args))
    else:  # warnings (heartbeat retries...) would break the one-line-error promise
        logging.getLogger("moot").addHandler(logging.NullHandler())
        logging.getLogger("moot").propagate = False
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except NotFound as exc:
        _error(str(exc), args)
        return EXIT_NOT_FOUND
    except (ConfigurationError, InvalidName, InvalidArgument, DriverNotInstalled) as exc:
        _error(str(exc), args)
        return EXIT_USAGE
    except MootError as exc:
        _error(str(exc), args)
        return EXIT_BACKEND
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `moot locks | head`: the reader left, nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:  # a client library's own error: one line, never a traceback
        _error(f"unexpected {type(exc).__name__}: {exc}", args)
        return EXIT_BACKEND


if __name__ == "__main__":
    sys.exit(main())
