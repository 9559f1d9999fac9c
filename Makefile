# tradebot: the two commands are `make demo` and `make test`; see README.md.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TOOLS := .tools
export PATH := $(CURDIR)/$(TOOLS)/bin:$(CURDIR)/$(VENV)/bin:$(PATH)
export TRADEBOT_TOOLS_DIR := $(CURDIR)/$(TOOLS)

.PHONY: help venv tools demo test lint bench clean

help:
	@echo "make demo   run the live pipeline and the dashboard on this machine (no servers needed)"
	@echo "make test   install every tool and server the tests need into .tools/, then run the whole suite"
	@echo "make tools  install Kafka, Redis, Prometheus, Chromium, kcat, etcd, kube-apiserver, helm into .tools/"
	@echo "make lint   ruff, mypy (strict), import-linter"
	@echo "make bench  benchmarks against peers (backtesting.py, vectorbt, raw Kafka); never part of make test"

# The venv is rebuilt only when pyproject.toml changes.
$(VENV)/.installed-dev: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

$(VENV)/.installed-bench: $(VENV)/.installed-dev
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	@touch $@

venv: $(VENV)/.installed-dev

tools: venv
	bash .ci/tools/install.sh

demo: venv
	$(VENV)/bin/tradebot up --embedded

test: venv tools
	$(PY) -m pytest --ignore=tests/benchmarks

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy services backtest operator tests manifests/monitoring/dashboard.py
	$(PY) manifests/monitoring/dashboard.py --check
	$(VENV)/bin/lint-imports

bench: $(VENV)/.installed-bench tools
	$(PY) -m pytest tests/benchmarks -p no:cacheprovider -s --benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
