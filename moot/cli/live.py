"""``moot watch``: a view shown again on every change the backend reports."""

from __future__ import annotations

import collections
import sys
import threading
import time
from typing import Any, TextIO

import moot
from moot.cli.output import compact_json, one_line, printable
from moot.cli.views import Cancellable, View

#: Fields that change with the clock alone: a view whose other fields are
#: unchanged has not changed.
VOLATILE = frozenset({"held_for", "waiting_for", "leading_for", "last_seen"})
#: Seconds between two looks at the stop flag set by SIGINT/SIGTERM.
STOP_CHECK = 0.1
#: Re-reads, at most, to cover the names that newly appeared in a read.
FOLLOW_ROUNDS = 3
#: At most this many locks or groups are watched at once; the others (the
#: least recently seen) are still re-read every interval.
MAX_WATCHES = 256


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

    def run(self) -> None:
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
                except moot.ConnectionLost as exc:
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
        title = printable(self.view.title)
        if self.fmt == "json":
            self.out.write(compact_json({"time": round(time.time(), 3), **self.view.event(data)}) + "\n")
        elif self.fmt == "text":
            self.out.write(f"-- {clock} {title}\n{self.view.text(data)}\n\n")
        else:
            trouble = f"  [{one_line(self._trouble)}; retrying]" if self._trouble else ""
            self.out.write(f"\x1b[H\x1b[2Jmoot watch {title}  on {printable(self.coord.url)} "
                           f"(namespace {printable(self.coord.namespace)})  {clock}  Ctrl-C to stop{trouble}\n\n"
                           f"{self.view.text(data)}\n")
        self.out.flush()
