"""``python -m moot.cli``: the ``moot`` command."""

import sys

from moot.cli import main

sys.exit(main())
