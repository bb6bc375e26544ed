# The two commands of the README: `make demo` and `make test`. Both create
# .venv and install what they need on a fresh machine.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench servers-install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[all,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/moot demo

servers-install:
	bash scripts/install-deps.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check moot tests
	$(VENV)/bin/mypy moot

test: $(STAMP) servers-install lint
	$(PY) -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) .servers build *.egg-info

bench: $(STAMP) servers-install
	$(PY) -m pip install --quiet -r bench/requirements.txt
	$(PY) -m bench $(BENCH_ARGS)
