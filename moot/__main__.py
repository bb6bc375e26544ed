"""``python -m moot``: the ``moot`` command (the same as ``moot`` and ``python -m moot.cli``)."""

import sys

from moot.cli import main

if __name__ == "__main__":
    sys.exit(main())
