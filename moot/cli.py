"""The ``moot`` command: look at a coordination backend from a shell.

Every subcommand but ``demo`` opens one short-lived coordinator that joins
nothing, campaigns for nothing and holds nothing: it only reads. Its session
has a short TTL, so even a killed ``moot`` leaves no trace for long.

Output is a table for people, or JSON with ``--json`` for scripts. Errors are
one line on stderr (moot's messages never contain a password); the exit
status says what kind of error it was (see ``EPILOG``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import moot
from moot.errors import (
    ConfigurationError,
    DriverNotInstalled,
    GroupNotFound,
    InvalidArgument,
    InvalidName,
    MemberNotFound,
    MootError,
)
from moot.url import parse_url, redact

EXIT_OK = 0
EXIT_BACKEND = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3

#: Session TTL of the CLI's own coordinator (it holds nothing).
CLI_TTL = 5.0
#: Seconds to reach the backend before giving up (``--timeout``).
DEFAULT_CONNECT_TIMEOUT = 5.0

EPILOG = """\
exit status:
  0  success
  1  error talking to the backend (unreachable, refused, session lost)
  2  usage error (bad arguments, malformed URL, unknown backend scheme,
     missing client package)
  3  not found (unknown group, election without a leader)

environment:
  MOOT_URL  backend URL used when --url is not given
            (default: file://$XDG_RUNTIME_DIR/moot-$USER, or under the temp dir)

examples:
  moot demo                                   # see locks, groups and an election at work
  moot --url redis://127.0.0.1:6379 locks volume-
  moot --url file:///var/lib/app/coord --json members conductors
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


def cmd_locks(args: argparse.Namespace) -> int:
    """Every lock held or waited for (optionally only names starting with PREFIX)."""
    with open_coordinator(args) as coord:
        infos = [info for info in coord.locks() if info.name.startswith(args.prefix)]
        now = time.time()
    data = [{
        "name": info.name,
        "holder": info.holder,
        "token": info.token,
        "mode": info.mode,
        "since": info.since,
        "held_for": elapsed(info.since, now),
        "waiters": [{"member": w.member, "token": w.token, "mode": w.mode, "since": w.since,
                     "waiting_for": elapsed(w.since, now)} for w in info.waiters],
    } for info in infos]
    if args.json:
        emit_json(data)
        return EXIT_OK
    if not data:
        what = f" whose name starts with {args.prefix!r}" if args.prefix else ""
        print(f"no lock{what} is held or waited for in namespace {coord.namespace!r}")
        return EXIT_OK
    rows: list[list[object]] = []
    for info in infos:
        rows.append([info.name, info.holder, "holds", info.token, info.mode, age(elapsed(info.since, now))])
        for place, waiter in enumerate(info.waiters, 1):
            rows.append(["", waiter.member, f"waits #{place}", waiter.token, waiter.mode,
                         age(elapsed(waiter.since, now))])
    print(table(["LOCK", "MEMBER", "STATE", "TOKEN", "MODE", "FOR"], rows))
    return EXIT_OK


def cmd_groups(args: argparse.Namespace) -> int:
    """Every group of the namespace with its live members."""
    with open_coordinator(args) as coord:
        data = []
        for name in sorted(coord.groups()):
            try:
                members = sorted(coord.group(name).members())
            except GroupNotFound:  # deleted since it was listed
                continue
            data.append({"name": name, "members": members})
    if args.json:
        emit_json(data)
    elif not data:
        print(f"no group in namespace {coord.namespace!r}")
    else:
        print(table(["GROUP", "MEMBERS"], [[g["name"], len(g["members"])] for g in data]))
    return EXIT_OK


def cmd_members(args: argparse.Namespace) -> int:
    """The live members of GROUP: capabilities, when they joined, when last seen alive."""
    with open_coordinator(args) as coord:
        group = coord.group(args.group)
        try:
            members = group.members()
        except GroupNotFound:
            raise NotFound(f"no group {args.group!r} in namespace {coord.namespace!r}") from None
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
        now = time.time()
    if args.json:
        emit_json(data)
    elif not data:
        print(f"group {args.group!r} has no members")
    else:
        rows = [[m["member"], "up" if m["up"] else "gone", f"{age(elapsed(m['joined_at'], now))} ago",
                 f"{age(elapsed(m['last_seen'], now))} ago" if m["last_seen"] else "-",
                 _capabilities_text(m["capabilities"])] for m in data]
        print(table(["MEMBER", "STATE", "JOINED", "LAST SEEN", "CAPABILITIES"], rows))
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
                        help="log what moot does to stderr")


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
    return parser


def _error(message: str, args: argparse.Namespace) -> None:
    url = getattr(args, "url", None) or os.environ.get("MOOT_URL")
    print(f"moot: {one_line(message, url)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``moot`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, format="moot: %(levelname)s %(name)s: %(message)s")
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
