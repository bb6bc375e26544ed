# The two commands of the README: `make demo` and `make test`. Both create
# .venv and install what they need on a fresh machine: `make demo` moot
# alone (the demo needs nothing else), `make test` every extra and the dev
# tools (pytest, ruff, mypy, the clients the tests use).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo

.PHONY: demo test lint audit docs bench servers-install check-python clean

# Before creating the venv: a Python 3.11+ that can make one. A minimal
# Debian/Ubuntu has python3 without its venv module's pip (python3-venv):
# say the one command that installs it rather than show venv's traceback.
check-python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { \
	  echo "make: $(PYTHON) not found; moot needs Python 3.11+: $(SUDO)apt-get install python3" >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
	  echo "make: moot needs Python 3.11+, $(PYTHON) is $$($(PYTHON) -V 2>&1); run with PYTHON=python3.11 (or newer)" >&2; \
	  exit 1; }
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { \
	  echo "make: $(PYTHON) cannot create a virtualenv (python3-venv is missing); install it with:" >&2; \
	  echo "    $(SUDO)apt-get install $(VENV_PACKAGE)" >&2; exit 1; }

# `sudo ` unless already root; python3-venv for the system's python3, else python3.X-venv.
SUDO = $(shell [ "$$(id -u)" = 0 ] || echo 'sudo ')
VENV_PACKAGE = $(shell if [ "$(PYTHON)" = python3 ]; then echo python3-venv; \
  else $(PYTHON) -c 'import sys; print("python%d.%d-venv" % sys.version_info[:2])' 2>/dev/null || echo python3-venv; fi)

$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory check-python
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[all,dev]'
	touch $(STAMP) $(DEMO_STAMP)

$(DEMO_STAMP): pyproject.toml
	@$(MAKE) --no-print-directory check-python
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(VENV)/bin/moot demo

servers-install:
	bash scripts/install-deps.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check moot tests
	$(VENV)/bin/mypy moot

# Two test processes (pytest-xdist), each with its own servers, a file's tests in one process (its
# module-scoped clusters start once): the suite mostly waits on TTLs, failovers and fault schedules, so
# two share the 2 cores and halve the wall time.
test: $(STAMP) servers-install lint
	$(PY) -m pytest -q -p no:cacheprovider -n 2 --dist loadfile

# Known vulnerabilities in the dependencies (scripts/audit-deps.py says which
# sets and what blocks). pip-audit lives in a venv of its own so that it and
# its own dependencies are not audited as moot's; not part of `make test`.
AUDIT_VENV := .venv-audit
AUDIT_STAMP := $(AUDIT_VENV)/.installed

$(AUDIT_STAMP):
	@$(MAKE) --no-print-directory check-python
	$(PYTHON) -m venv $(AUDIT_VENV)
	$(AUDIT_VENV)/bin/python -m pip install --quiet 'pip-audit>=2.7,<3'
	touch $(AUDIT_STAMP)

audit: $(STAMP) $(AUDIT_STAMP)
	$(PY) scripts/audit-deps.py $(AUDIT_VENV)/bin/pip-audit

docs: $(STAMP)
	bash scripts/build-docs.sh

clean:
	rm -rf $(VENV) $(AUDIT_VENV) .servers build *.egg-info

bench: $(STAMP) servers-install
	$(PY) -m pip install --quiet -r bench/requirements.txt
	$(PY) -m bench $(BENCH_ARGS)
