"""``python -m tests.eventlet_pytest ARGS``: pytest in a process that
eventlet has monkey-patched first, as cinder, nova and ironic services are."""

from __future__ import annotations

import sys
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # eventlet's own deprecation notice
    import eventlet

eventlet.monkey_patch()

import pytest  # noqa: E402  (after monkey-patching, as in a patched service)

if __name__ == "__main__":
    sys.exit(pytest.main(sys.argv[1:]))
