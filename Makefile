# Everything a developer or CI needs, unattended on a fresh Debian 12 machine.
#   make test       unit + integration tests (starts real Consul agents; installs Consul 1.8.7 if missing)
#   make test-slow  the long scale and fault scenarios
#   make tools      Debian's chromium and promtool for the web page and metrics tests (CI does this itself)
#   make lint       ruff check, ruff format --check, mypy (strict)
#   make run        a local Consul and the demo fleet
#   make bench      the benchmark report
#   make bench-scale  the scale and fault report with plots (docs/scale-and-faults.md; about 20 minutes)
SHELL := /bin/bash
.DEFAULT_GOAL := test

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.install.stamp

# Where the Consul binary is cached (outside the work tree, so it survives `make clean` and fresh clones).
CONSUL_AGENTS_CACHE ?= $(if $(HOME),$(HOME)/.cache/consul-agents,$(CURDIR)/.cache/consul-agents)
CONSUL_BIN ?= $(CONSUL_AGENTS_CACHE)/bin/consul
export CONSUL_AGENTS_CACHE CONSUL_BIN

.PHONY: venv consul tools test test-slow lint run bench bench-client bench-scale clean

venv: $(STAMP)

$(BIN)/python:
	@$(PYTHON) -m venv $(VENV) || { \
	  echo "error: '$(PYTHON) -m venv $(VENV)' failed. On Debian/Ubuntu: apt-get install python3-venv" \
	       "(Python >= 3.11 needed; choose another interpreter with PYTHON=...)" >&2; \
	  rm -rf $(VENV); exit 1; }

# Re-installs only when a pyproject.toml is newer than the stamp. The plugins are their own distributions
# (plugins/*/pyproject.toml), installed editable so the tests use them; the core never imports them.
PLUGINS := plugins/aiohttp plugins/agent
$(STAMP): pyproject.toml $(addsuffix /pyproject.toml,$(PLUGINS)) | $(BIN)/python
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]' $(addprefix -e ,$(PLUGINS))
	@echo "installed $(BIN)/consul-agents (not on PATH: run it from there, or 'source $(BIN)/activate' first)"
	@touch $@

# Finds the binary once up front (CONSUL_BIN, else the cache), installing it if missing, so a failed
# download shows here with its cause instead of as a failure in every test.
consul: venv
	@$(BIN)/python -m consul_agents.dev find >/dev/null 2>&1 || $(BIN)/python -m consul_agents.dev install
	@echo "consul: $$($(BIN)/python -m consul_agents.dev find)"

# Debian's chromium (the web page test), dig (the README test) and its prometheus package: promtool (the metrics test) and the
# prometheus server (the http_sd test); prometheus-alertmanager's amtool checks deploy/prometheus/alertmanager.yml. Their tests skip with a reason when these are missing; CI (CI=true)
# installs them, as root, through apt-get.
TOOLS_PACKAGES := chromium prometheus prometheus-alertmanager bind9-dnsutils
tools:
	@if command -v chromium >/dev/null && command -v promtool >/dev/null && command -v prometheus >/dev/null && command -v amtool >/dev/null && command -v dig >/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
	  echo "note: chromium/prometheus missing and not root with apt-get: their tests will be skipped" >&2; exit 0; fi; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get install -y -q --no-install-recommends $(TOOLS_PACKAGES) >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $(TOOLS_PACKAGES) >/dev/null; } || \
	  echo "warning: could not install $(TOOLS_PACKAGES); their tests will be skipped" >&2

test: venv consul $(if $(CI),tools)
	$(BIN)/pytest -q -m "not slow" --durations=25

test-slow: venv consul
	$(BIN)/pytest -q -m slow

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

run: venv consul
	$(BIN)/consul-agents demo

bench: venv consul
	$(BIN)/python -m benchmarks.core
	$(BIN)/python -m benchmarks.security
	$(BIN)/python -m benchmarks.api
	$(BIN)/python -m benchmarks.dns_sidecar
	$(BIN)/python -m benchmarks.read_validation
	$(BIN)/python -m benchmarks.a2a
	$(MAKE) bench-client

# Client layer: cached vs direct discovery, select_agent, change propagation, selection evenness.
# BENCH_CLIENT_ARGS=--large adds the 10,000-agent size (Consul needs ~3 minutes to register them).
bench-client: venv consul
	$(BIN)/python -m benchmarks.client $(BENCH_CLIENT_ARGS)

bench-scale: venv consul
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev,bench]'
	$(BIN)/python -m benchmarks.scale

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info build dist
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
