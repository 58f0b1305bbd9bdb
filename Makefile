# The two commands a fresh machine needs: `make up` runs the service, `make test` the tests.
# Each creates .venv and installs what it needs the first time (and again when pyproject.toml
# changes).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up test lint format clean

# Quiet installs: no version nag, no root warning, no progress; errors still show.
PIP := PIP_DISABLE_PIP_VERSION_CHECK=1 $(BIN)/python -m pip install --quiet --root-user-action=ignore

# `make up PORT=9000 HOST=0.0.0.0`; `make up ARGS=-v` shows the logs in the terminal.
HOST ?= 127.0.0.1
PORT ?= 8000
ARGS ?=

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "modelpull needs Python 3.11 or newer")'
	@echo "installing modelpull into $(VENV) (the first time takes a minute)"
	@$(PYTHON) -m venv $(VENV)
	@$(PIP) --upgrade pip
	@$(PIP) -e '.[dev]'
	@touch $(STAMP)

up: $(STAMP)
	@$(BIN)/modelpull up --host $(HOST) --port $(PORT) $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	$(BIN)/python scripts/check_layout.py

test: lint
	$(BIN)/pytest

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .coverage .mypy_cache .ruff_cache build *.egg-info
