# canaryd: `make demo` and `make test` do all set-up on a fresh Debian/Ubuntu machine.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# Exact versions, so that an install next year gets what was tested (README, "Two commands").
CONSTRAINTS = constraints.txt
PIP     = $(BIN)/python -m pip install -q -c $(CONSTRAINTS)
STAMP   = $(VENV)/.installed
SERVICE = $(VENV)/.installed-service

.PHONY: demo test lint typecheck unit tests check-config bench clean system-deps constraints

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# canaryd and its run-time dependencies only: what the service and the demo need.
$(SERVICE): pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(PIP) -e .
	@touch $(SERVICE)

# Plus the test and lint tools (the `test` extra).
$(STAMP): pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(PIP) -e '.[test]'
	@touch $(SERVICE) $(STAMP)

# Rewrite constraints.txt after changing dependencies in pyproject.toml: resolve them
# afresh (no constraints), install, and record what got installed.
constraints: | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	@{ sed -n '1,/^# Regenerate/p' $(CONSTRAINTS); \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -v '^canaryd'; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)
	@touch $(SERVICE) $(STAMP)

# Prometheus and HAProxy from Debian where we can (root on Debian/Ubuntu); the demo
# falls back to labelled in-process stand-ins where they are missing.
system-deps:
	@if command -v prometheus >/dev/null && command -v haproxy >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus haproxy; \
	else echo "note: prometheus/haproxy missing; install with: sudo apt-get install prometheus haproxy"; fi

# e.g. make demo DEMO_ARGS='--scenario errors --report demo.html'
DEMO_ARGS ?=
demo: $(SERVICE) system-deps
	$(BIN)/canaryd demo $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check canaryd tests benchmarks
	$(BIN)/ruff format --check canaryd tests benchmarks
	$(BIN)/lint-imports
	@! git grep -nE '^(<<<<<<<|>>>>>>>)( |$$)' -- . ':!*.md' || { echo 'merge conflict markers committed'; exit 1; }

typecheck: $(STAMP)
	$(BIN)/mypy

# Python may cache bytecode (__pycache__, git-ignored) even where the environment says not
# to: compiling canaryd and the tests afresh costs every run ~5 s of CPU.
PYTEST = PYTHONDONTWRITEBYTECODE= $(BIN)/pytest

# The fast tests: no real external server, no process, nothing slow (well under a minute);
# a unit test that starts a process fails (tests/support/guard.py). The stateful property
# test runs 30 examples here and its full 120 in `make tests`. Four pytest-xdist workers:
# the unit tests mostly wait (timeouts, retries), so four share two cores well.
unit: $(STAMP)
	CANARYD_PROPERTY_EXAMPLES=30 $(PYTEST) -q -n 4 -m "not slow and not integration" --durations=15

# Every test, the slow and integration ones too.
tests: $(STAMP)
	$(PYTEST) -q

check-config: $(STAMP)
	$(BIN)/canaryd check -c config/canaryd.example.yaml

test: lint typecheck check-config tests

bench: $(STAMP)
	$(BIN)/python benchmarks/scale.py --canaries 1000 --interval 10 --duration 30

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache
