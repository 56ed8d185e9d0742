# canaryd: `make demo` and `make test` do all set-up on a fresh Debian/Ubuntu machine.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: demo test lint typecheck unit check-config bench clean system-deps

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $(STAMP)

# Prometheus and HAProxy from Debian where we can (root on Debian/Ubuntu); the demo
# falls back to labelled in-process stand-ins where they are missing.
system-deps:
	@if command -v prometheus >/dev/null && command -v haproxy >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus haproxy; \
	else echo "note: prometheus/haproxy missing; install with: sudo apt-get install prometheus haproxy"; fi

# e.g. make demo DEMO_ARGS='--scenario errors --report demo.html'
DEMO_ARGS ?=
demo: $(STAMP) system-deps
	$(BIN)/canaryd demo $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check canaryd tests benchmarks
	$(BIN)/ruff format --check canaryd tests benchmarks
	$(BIN)/lint-imports
	@! git grep -nE '^(<<<<<<<|>>>>>>>)( |$$)' -- . ':!*.md' || { echo 'merge conflict markers committed'; exit 1; }

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q

check-config: $(STAMP)
	$(BIN)/canaryd check -c config/canaryd.example.yaml

test: lint typecheck check-config unit

bench: $(STAMP)
	$(BIN)/python benchmarks/scale.py --canaries 1000 --interval 10 --duration 30

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache
