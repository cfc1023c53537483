# Two commands: `make run` (the embedded demo) and `make test` (the whole suite).
# Both create the virtualenv when missing and install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench system-deps clean

$(STAMP): pyproject.toml
	@bash scripts/bootstrap.sh "$(PYTHON)" "$(VENV)"
	@touch $@

system-deps:
	@bash scripts/ensure-system-deps.sh

run: $(STAMP) system-deps
	$(BIN)/edge-agent demo

test: $(STAMP) system-deps
	$(BIN)/python -m pytest

bench: $(STAMP) system-deps
	@$(BIN)/python -c 'import psutil' 2>/dev/null || $(BIN)/python -m pip install -q --disable-pip-version-check -e '.[bench]'
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis edge-agent-demo.db*
