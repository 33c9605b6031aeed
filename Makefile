# Two commands on a fresh machine: `make serve` runs the server, `make test` runs every check.
# Both create .venv on first use and install from the locks in requirements/ (exact versions, sha256 hashes):
# `make serve` the runtime set only, `make test` the dev set too (tools, engine clients, engines). `make test`
# also installs and starts the engines the distributed tests use (scripts/services.sh, docs/development.md).
# `make lock` refreshes the locks from pyproject.toml's ranges on purpose; nothing else ever changes a version.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
# --no-deps: the lock is the whole set; `pip check` then proves nothing it needs is missing.
PIP_LOCKED := $(BIN)/python -m pip install --quiet --require-hashes --no-deps
RUNTIME_STAMP := $(VENV)/.installed-runtime
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: serve test lint install install-runtime lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The project itself goes in editable, built with the locked setuptools (no build isolation: no download).
$(RUNTIME_STAMP): requirements/runtime.txt pyproject.toml | $(BIN)/python
	$(PIP_LOCKED) -r requirements/runtime.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	touch $@

$(DEV_STAMP): requirements/dev.txt pyproject.toml | $(BIN)/python
	$(PIP_LOCKED) -r requirements/dev.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	touch $@ $(RUNTIME_STAMP)

install-runtime: $(RUNTIME_STAMP)

install: $(DEV_STAMP)

serve: $(RUNTIME_STAMP)
	$(BIN)/flare serve

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

# The suite on one worker more than there are cores: a file's tests stay on one worker (they share its servers);
# the run waits on servers and sockets as much as on the CPU (on two cores: 13 minutes with two workers, under 10
# with three). A run stuck past 40 minutes is stopped (faulthandler_timeout has printed where).
WORKERS = $(shell $(PYTHON) -c "import os; print(len(os.sched_getaffinity(0)) + 1)")
test: lint
	VENV=$(VENV) bash scripts/services.sh start
	timeout --kill-after=30 2400 $(BIN)/pytest -q -n $(WORKERS) --dist loadfile

lock:
	bash scripts/lock.sh $(ARGS)

clean:
	rm -rf $(VENV) .venv-lock .mypy_cache .ruff_cache .pytest_cache build dist

# Mutation testing of the core services (not part of CI; tens of minutes on two cores): mutants of the modules
# in pyproject.toml's [tool.mutmut], run against the in-process unit tests that cover them. Survivors are listed
# at the end; `$(BIN)/mutmut show <name>` prints one. docs/development.md, "Mutation testing".
# The Redis URL points nowhere: these tests need no engine, and the session check that tests leave Redis db 15
# as they found it (tests/conftest.py) would trip over keys of another run using it meanwhile.
.PHONY: mutation
mutation: $(DEV_STAMP)
	FLARE_TEST_REDIS_URL=redis://127.0.0.1:1/15 $(BIN)/mutmut run
	$(BIN)/mutmut results
