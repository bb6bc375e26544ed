#!/usr/bin/env bash
# Build the documentation site into site/ (`make docs`): the pages of docs/
# and the API reference generated from moot's docstrings, with
# `mkdocs build --strict`, so that any warning (a broken link or anchor, a
# page missing from the nav, a docstring mkdocstrings cannot render) fails
# the build. Installs docs/requirements.txt into .venv first if mkdocs or
# mkdocstrings is missing there. Extra arguments go to `mkdocs build`
# (e.g. --site-dir DIR).
set -euo pipefail

cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY="$VENV/bin/python"

if [ ! -x "$PY" ]; then
    echo "build-docs: no $VENV; run 'make demo' or 'python3 -m venv $VENV' first" >&2
    exit 2
fi
if ! "$PY" -c "import mkdocs, mkdocstrings, mkdocstrings_handlers.python" 2>/dev/null; then
    echo "build-docs: installing docs/requirements.txt into $VENV" >&2
    "$PY" -m pip install --quiet -r docs/requirements.txt
fi
# The API reference reads moot's sources in the checkout (mkdocs.yml:
# paths: [.]) without importing them: no extra of moot is needed.
exec "$PY" -m mkdocs build --strict --clean "$@"
