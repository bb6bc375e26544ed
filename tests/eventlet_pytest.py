"""``python -m tests.eventlet_pytest ARGS``: pytest in a process that
eventlet has monkey-patched first, as cinder, nova and ironic services are."""

from __future__ import annotations

import faulthandler
import sys
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # eventlet's own deprecation notice
    import eventlet

eventlet.monkey_patch()

import pytest  # noqa: E402  (after monkey-patching, as in a patched service)

#: A run still going after this many seconds prints every thread's stack and
#: exits, inside the bound of its caller (tests/test_eventlet.py, 540 s): a
#: hang that the per-test timeout cannot interrupt (at exit, in C) says where.
HANG_DUMP_SECONDS = 500

if __name__ == "__main__":
    faulthandler.dump_traceback_later(HANG_DUMP_SECONDS, exit=True)  # a real C thread, not a green one
    sys.exit(pytest.main(sys.argv[1:]))
