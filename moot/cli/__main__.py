"""``python -m moot.cli``: the ``moot`` command."""

import sys

from moot.cli import main

if __name__ == "__main__":
    sys.exit(main())
