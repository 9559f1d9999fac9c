# tradebot: the two commands are `make demo` and `make test`; see README.md.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TOOLS := .tools
export PATH := $(CURDIR)/$(TOOLS)/bin:$(CURDIR)/$(VENV)/bin:$(PATH)
export TRADEBOT_TOOLS_DIR := $(CURDIR)/$(TOOLS)

.PHONY: help venv tools cluster-tools cluster cluster-down demo test test-cluster lint bench lock clean

help:
	@echo "make demo   run the live pipeline and the dashboard on this machine (no servers needed)"
	@echo "make test   install every tool and server the tests need into .tools/, then run the whole suite"
	@echo "make tools  install Kafka, Redis, Prometheus, Chromium, kcat, etcd, kube-apiserver, helm into .tools/"
	@echo "make lint   ruff, mypy (strict), import-linter"
	@echo "make cluster       a local single-node Kubernetes (no Docker) with the chart installed; make cluster-down undoes it"
	@echo "make test-cluster  only tests/cluster, on that local cluster (make test runs it too)"
	@echo "make bench  benchmarks against peers (backtesting.py, vectorbt, raw Kafka); never part of make test"
	@echo "make lock   re-resolve the dependencies within pyproject.toml's ranges and pin them in .ci/constraints.txt"

# The venv is rebuilt only when pyproject.toml or the pinned versions change.
CONSTRAINTS := .ci/constraints.txt
# pip is quiet for `make test` and `make lint`; `make demo` shows each package as pip fetches it (a first run
# installs about 1.2 GB: minutes with nothing printed looked like a hang).
PIP_QUIET ?= --quiet
$(VENV)/.installed-dev: pyproject.toml $(CONSTRAINTS)
	@echo "==> $(VENV): installing tradebot and its dependencies (a first run downloads about 1.2 GB)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install $(PIP_QUIET) -c $(CONSTRAINTS) -e '.[dev]'
	@touch $@
	@echo "==> $(VENV): ready"

$(VENV)/.installed-bench: $(VENV)/.installed-dev
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e '.[dev,bench]'
	@touch $@

# Re-resolves every dependency within pyproject.toml's ranges, in a throwaway venv, and pins the result.
lock:
	rm -rf .tools/lock-venv
	$(PYTHON) -m venv .tools/lock-venv
	.tools/lock-venv/bin/python -m pip install --quiet --upgrade pip
	.tools/lock-venv/bin/python -m pip install --quiet -e '.[dev,bench]'
	{ sed -n '/^#/p' $(CONSTRAINTS); .tools/lock-venv/bin/python -m pip freeze --exclude-editable; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)
	rm -rf .tools/lock-venv

venv: $(VENV)/.installed-dev

tools: venv
	bash .ci/tools/install.sh

# What a node needs beyond `make tools`: containerd, runc, CNI, kubelet, CoreDNS, kube-router, ...
cluster-tools: tools
	bash .ci/tools/cluster.sh

# A real single-node Kubernetes on this machine with the chart installed; idempotent (a rerun reuses it).
cluster: cluster-tools
	bash .ci/cluster/images.sh
	bash .ci/cluster/up.sh

cluster-down:
	bash .ci/cluster/down.sh

# Target-specific, so the venv step that `make demo` runs inherits it: pip prints what it downloads and installs.
demo: PIP_QUIET := --progress-bar on
demo: venv
	@echo "==> starting the pipeline and the dashboard (tradebot up --embedded)"
	$(VENV)/bin/tradebot up --embedded

# The suite on host servers, then tests/cluster on a real single-node Kubernetes; the node's pieces and images
# (cluster-tools, images.sh) build in the background, as idle work, while the suite runs. See .ci/test.sh.
test: tools
	PY=$(PY) bash .ci/test.sh

# tests/cluster alone (part of `make test`), reusing a running `make cluster`, else starting and stopping one.
test-cluster: cluster-tools
	$(PY) -m pytest tests/cluster

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy services backtest operator tests manifests/monitoring/dashboard.py
	$(PY) manifests/monitoring/dashboard.py --check
	$(VENV)/bin/lint-imports

bench: $(VENV)/.installed-bench tools
	bash .ci/tools/bench.sh
	$(PY) -m pytest tests/benchmarks -p no:cacheprovider -s --benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
