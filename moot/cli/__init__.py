"""The ``moot`` command: look at a coordination backend from a shell.

Every subcommand but ``demo`` opens one coordinator that joins nothing,
campaigns for nothing and holds nothing: it only reads, and but for
``watch`` it closes at once. Its session has a short TTL, so even a killed
``moot`` leaves no trace for long.

Output is a table for people, or JSON with ``--json`` for scripts. Errors are
one line on stderr (moot's messages never contain a password); the exit
status says what kind of error it was (see ``EPILOG``).

Each view (locks, semaphores, elections, groups, one group's members, one
election's leader) is written once in :mod:`moot.cli.views` and printed either
once (``moot locks``, ``moot semaphores``, ``moot elections``, ``moot groups``,
``moot members``, ``moot leader``) or live (``moot watch``):
``moot watch`` keeps its coordinator open and shows the view again whenever
the backend reports a change to what it shows (the backend's watches, so a
change appears within milliseconds), and re-reads it every ``--interval``
seconds to pick up new lock or group names (which no watch announces) and to
update how long each holder and waiter has been there.

The command uses moot's public API (``moot.__all__``) only, plus
:func:`moot.url.redact` and :func:`moot.url.parse_url` to keep a URL's password
out of what it prints and to find a file:// URL's directory, and
:mod:`moot.recipes.listing` (through ``coord.session``) for what the
coordinator does not list itself: elections, and watches on one semaphore or
election.

A file:// directory is only read: a directory that does not exist is an
error (exit status 1), never created, so a mistyped path is reported instead
of becoming a new, empty backend.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

import moot
from moot.cli.live import LiveView
from moot.cli.output import one_line, pretty_json, scrub, table, url_secret
from moot.cli.views import VIEWS, GroupsView, NotFound
from moot.url import parse_url, redact

__all__ = ["EXIT_BACKEND", "EXIT_NOT_FOUND", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]

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

EPILOG = """\
exit status:
  0  success
  1  error talking to the backend (unreachable, refused, session lost,
     no such file:// directory: moot only reads it, never creates it)
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
  moot --url redis://127.0.0.1:6379 --json elections
  moot --url file:///var/lib/app/coord --json members conductors
  moot watch locks volume-                    # live view until Ctrl-C
  moot --json watch group conductors          # one JSON object per change
"""


# -- subcommands ------------------------------------------------------------------
def cmd_ping(args: argparse.Namespace) -> int:
    """Reachable or not, best round trip of three, and what the server says it is."""
    url = resolve_url(args)
    try:
        coord = open_coordinator(args)
    except Exception as exc:
        if args.json:
            message = str(exc) if isinstance(exc, moot.MootError) else f"{type(exc).__name__}: {exc}"
            print(pretty_json({"url": redact(url), "reachable": False, "error": one_line(message, url)}))
        raise
    with coord:
        rtts = []
        server = ""
        for _ in range(3):
            started = time.perf_counter()
            server = coord.ping()
            rtts.append((time.perf_counter() - started) * 1000)
    result = {"url": coord.url, "reachable": True, "rtt_ms": round(min(rtts), 3), "server": server}
    if args.json:
        print(pretty_json(result))
    else:
        print(table(["URL", "STATUS", "RTT", "SERVER"],
                    [[coord.url, "reachable", f"{min(rtts):.3g} ms", server]]))
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    """Print the view ``args.view`` once: a table, or JSON with ``--json``."""
    with open_coordinator(args) as coord:
        view = VIEWS[args.view](coord, args.target or "")
        data = view.read()
    if view.missing(data):
        raise NotFound(view.text(data))
    print(pretty_json(view.json(data)) if args.json else view.text(data))
    return EXIT_OK


def cmd_watch(args: argparse.Namespace) -> int:
    """Show the view ``args.view`` again on every change until Ctrl-C,
    SIGTERM, --count or --duration."""
    kind, target, view_class = args.view, args.target, VIEWS[args.view]
    if view_class.target_required and target is None:
        raise moot.InvalidArgument(f"moot watch {kind} needs {view_class.target}: moot watch {kind} NAME")
    if view_class.target is None and target is not None:
        hint = f"; did you mean: moot watch group {target}" if view_class is GroupsView else ""
        raise moot.InvalidArgument(f"moot watch {kind} takes no argument (got {target!r}){hint}")
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
            fmt = "json" if args.json else "tty" if sys.stdout.isatty() else "text"
            live.append(LiveView(coord, view_class(coord, target or ""), sys.stdout, fmt, args.interval,
                                 args.count, args.duration))
            if not signalled:
                live[0].run()
            return EXIT_OK
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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


class NoSuchDirectory(moot.MootError):
    """A file:// URL names a directory that does not exist (exit status 1):
    the CLI only reads, so it never creates one."""


def check_file_directory(url: str, *, default: bool) -> None:
    """Raise :class:`NoSuchDirectory` if ``url`` is a file:// URL whose
    directory does not exist (or is not a directory); other URLs, and
    malformed ones (``moot.connect`` words those), pass. ``default``: the URL
    is moot's default, not one the user gave."""
    try:
        parsed = parse_url(url)
    except moot.MootError:
        return
    if parsed.scheme != "file" or not os.path.isabs(parsed.path):
        return
    path = os.path.normpath(parsed.path)
    if os.path.isdir(path):
        return
    if os.path.exists(path):
        raise NoSuchDirectory(f"{path!r} is not a directory (file:// needs one)")
    if default:
        raise NoSuchDirectory(f"nothing on this host has used moot's default file:// directory {path!r} yet "
                              "(moot only reads it, so it does not create it); give the backend with --url "
                              "or $MOOT_URL")
    raise NoSuchDirectory(f"no directory {path!r}: the path is mistyped, or nothing has used this file:// "
                          "backend yet (moot only reads it, so it does not create it)")


def open_coordinator(args: argparse.Namespace) -> moot.Coordinator:
    """A read-only coordinator: joins nothing, short TTL, bounded connect time;
    on file://, only over a directory that already exists."""
    url = resolve_url(args)
    check_file_directory(url, default=not (args.url or os.environ.get("MOOT_URL")))
    options: dict[str, Any] = {"ttl": CLI_TTL, "timeout": args.timeout}
    if args.namespace:
        options["namespace"] = args.namespace
    member_id = f"moot-cli-{socket.gethostname()}-{os.getpid()}"
    # None when the URL is $MOOT_URL's: moot.connect then names $MOOT_URL in its errors.
    return moot.connect(args.url or None, member_id=member_id, **options)


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
        description="Look at locks, semaphores, groups and elections on a moot backend.")
    parser.add_argument("--version", action="version", version=f"moot {moot.__version__}")
    _common_options(parser, defaults=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, func: Callable[[argparse.Namespace], int], help_text: str,
            common: bool = True, **defaults: Any) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text, description=help_text, epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
        if common:
            _common_options(command, defaults=False)
        command.set_defaults(func=func, **defaults)
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
    # The views printed once: each takes its TARGET (a prefix or a name) as ``target``.
    locks = add("locks", cmd_show, "locks held or waited for: holder, token, held for, waiters", view="locks")
    locks.add_argument("target", nargs="?", default="", metavar="PREFIX", help="only locks whose name starts so")
    semaphores = add("semaphores", cmd_show, "semaphores held or waited for: limit, holders, tokens, waiters",
                     view="semaphores")
    semaphores.add_argument("target", nargs="?", default="", metavar="PREFIX",
                            help="only semaphores whose name starts so")
    elections = add("elections", cmd_show, "elections with a candidate: leader, token, led for, candidates "
                                           "waiting", view="elections")
    elections.add_argument("target", nargs="?", default="", metavar="PREFIX",
                           help="only elections whose name starts so")
    add("groups", cmd_show, "groups and how many live members each has", view="groups", target=None)
    members = add("members", cmd_show, "live members of a group: capabilities, joined, last seen", view="group")
    members.add_argument("target", metavar="GROUP")
    leader = add("leader", cmd_show, "leader of an election and the candidates waiting behind it", view="leader")
    leader.add_argument("target", metavar="NAME")
    watch = add("watch", cmd_watch, "live view of the locks (default), the semaphores, the elections, the "
                                    "groups, one group's members, or an election's leader, shown again on "
                                    "every change until Ctrl-C")
    watch.add_argument("view", nargs="?", choices=tuple(VIEWS), default="locks",
                       help="what to show: locks [PREFIX] | semaphores [PREFIX] | elections [PREFIX] | groups "
                            "| group NAME | leader NAME")
    watch.add_argument("target", nargs="?", default=None, metavar="PREFIX|NAME",
                       help="locks, semaphores, elections: only names starting so; group: the group's name; "
                            "leader: the election's name")
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
        return scrub(super().format(record), self.secret)


def _log_verbosely(url: str | None) -> None:
    """``-v``: moot's own debug log on stderr; other libraries' warnings only.
    The password of ``url`` never reaches the output."""
    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter("moot: %(levelname)s %(name)s: %(message)s", url_secret(url)))
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
    except (moot.ConfigurationError, moot.InvalidName, moot.InvalidArgument, moot.DriverNotInstalled) as exc:
        _error(str(exc), args)
        return EXIT_USAGE
    except moot.MootError as exc:
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
