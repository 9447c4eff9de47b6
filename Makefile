# Interchange. The two commands: `make up` runs the deployment, `make test` tests it.
# Both set everything up themselves: virtualenv, pinned packages, generated code,
# development secrets, local PostgreSQL/Redis/RabbitMQ (see infra/devstack).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PROTOS := $(wildcard protos/*.proto)
CONTRACTS := common/src/interchange_common/contracts
# Every package: the internal library, the services and the dev tooling.
PACKAGES := common user-service gateway event-store order-service notification-service infra/devstack
# Packages with a tests/integration suite (real PostgreSQL, Redis, RabbitMQ, processes).
INTEGRATED := common user-service gateway event-store order-service notification-service
PYPROJECTS := $(foreach p,$(PACKAGES),$(p)/pyproject.toml)
MYPY_PACKAGES := -p interchange_common -p user_service -p gateway -p event_store -p order_service \
	-p notification_service -p devstack
PYTEST := $(BIN)/pytest

.PHONY: help up down test lint typecheck protos check-protos setup tools infra secrets unit integration e2e fault deploy-check \
	compose-test swarm-test bench fuzz clean

help:
	@echo "make up            run the deployment (Docker if an engine answers, else local processes)"
	@echo "make test          lint, type check, unit, integration, deployment, end-to-end, fault and container tests"
	@echo "make down          stop what 'make up' started"
	@echo "make lint          ruff and mypy (strict for source)"
	@echo "make protos        regenerate code from protos/"
	@echo "make check-protos  fail when generated code is stale"
	@echo "make compose-test  the end-to-end suite against docker-compose.yml in containers (a private Docker engine)"
	@echo "make swarm-test    the end-to-end suite and a rolling update against the Swarm stack (same engine)"
	@echo "make bench         gateway vs direct vs nginx; event-store appends vs pgbench; live fan-out; whole orders per second and CPU per order"
	@echo "make fuzz          schemathesis on the gateway's API for longer, with a new seed (FUZZ_MAX_EXAMPLES, FUZZ_SEED)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(INSTALLED): $(BIN)/python requirements/constraints.txt requirements/dev.txt $(PYPROJECTS)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c requirements/constraints.txt \
		-r requirements/dev.txt $(foreach p,$(PACKAGES),-e $(p))
	touch $@

# Generated code is committed (readable, and images need no protoc); it is made
# here when missing and checked for staleness by check-protos.
$(CONTRACTS)/user_pb2.py: | $(INSTALLED)
	$(MAKE) protos

setup: $(INSTALLED) $(CONTRACTS)/user_pb2.py secrets

# Debian packages the tests drive: Chromium for the browser test, docker-compose to
# check the compose file offline, prometheus for promtool (the alert rules and the
# dashboard's queries). Installed when missing (root and apt-get); elsewhere the tests
# that need them skip and say why. No Debian package ships promtool alone: prometheus
# comes without its Recommends (node-exporter, another server), and the Prometheus
# server its install starts where an init system runs services is stopped and disabled.
DEBIAN_TOOLS := chromium docker-compose prometheus
tools:
	@missing=""; for tool in $(DEBIAN_TOOLS); do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
		echo "not installed:$$missing (tests that need them will skip)"; exit 0; fi; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt_install() { apt-get install -y -q "$$@" >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q "$$@" >/dev/null; }; }; \
	others="$${missing/ prometheus/}"; \
	if [ -n "$${others// /}" ]; then apt_install $$others; fi; \
	if [ "$$others" != "$$missing" ]; then \
		apt_install --no-install-recommends prometheus; \
		if [ -d /run/systemd/system ]; then systemctl disable --now prometheus.service >/dev/null 2>&1 || true; \
		else update-rc.d prometheus disable >/dev/null 2>&1 || true; service prometheus stop >/dev/null 2>&1 || true; fi; \
	fi

secrets: $(INSTALLED)
	$(BIN)/python -m devstack secrets

infra: $(INSTALLED)
	$(BIN)/python -m devstack infra

# $(call generate,OUTPUT_DIR): Python, gRPC and typing stubs for every proto, into OUTPUT_DIR.
generate = mkdir -p $(1) && $(BIN)/python -m grpc_tools.protoc -Iinterchange_common/contracts=protos \
	--python_out=$(1) --grpc_python_out=$(1) --mypy_out=quiet:$(1) --mypy_grpc_out=quiet:$(1) \
	--plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy --plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc \
	$(PROTOS)

protos: $(INSTALLED)
	$(call generate,common/src)
	touch $(CONTRACTS)/__init__.py

check-protos: $(INSTALLED)
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(call generate,$$tmp); \
	if ! diff -r -q -x __init__.py -x __pycache__ "$$tmp/interchange_common/contracts" $(CONTRACTS); then \
		echo "Generated code in $(CONTRACTS) is stale: run 'make protos' and commit the result."; exit 1; \
	fi; echo "generated code is up to date"

up: setup
	$(BIN)/python -m devstack up

down: $(INSTALLED)
	$(BIN)/python -m devstack down

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy $(MYPY_PACKAGES)
	@# Tests are typed more loosely (see pyproject.toml), one package at a time so
	@# that the many tests/ folders do not collide as module names.
	for d in . $(PACKAGES); do (cd $$d && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml tests); done

typecheck: lint

# Each package's suite runs with the package as rootdir: pytest's importlib mode
# would otherwise import the gateway/ folder in place of the gateway package.
pytest_in = $(PYTEST) -q -c pyproject.toml --rootdir=$(1) $(2)

unit: setup
	$(foreach p,$(PACKAGES),$(call pytest_in,$(p),$(p)/tests/unit) &&) true

integration: setup infra
	$(foreach p,$(INTEGRATED),$(call pytest_in,$(p),-m integration $(p)/tests/integration) &&) true

deploy-check: setup tools
	$(PYTEST) -q tests/deploy

e2e: setup tools infra
	$(PYTEST) -q -m e2e tests/e2e

# Each module kills, stops or restarts parts of a stack of its own.
fault: setup infra
	$(PYTEST) -q -m fault tests/fault

# The end-to-end suite against the deployment in containers: a private Docker engine,
# every image built from its Dockerfile (stand-ins for images no registry gives here),
# `make up`'s Docker branch; skipped, saying why, where no engine can start.
compose-test: setup tools
	E2E_STACK=compose $(PYTEST) -q -rs -m e2e tests/e2e

# The same suite against deploy/swarm/stack.yml on a single-node swarm in that engine,
# then a rolling update of every service to a new image under traffic
# (tests/e2e/test_rolling_update.py); skipped, saying why, where no engine can start.
swarm-test: setup tools
	E2E_STACK=swarm $(PYTEST) -q -rs -m e2e tests/e2e

test: setup tools check-protos lint unit integration deploy-check e2e fault compose-test swarm-test

bench: setup infra
	$(BIN)/python tests/bench/bench_gateway.py
	$(BIN)/python tests/bench/bench_eventstore.py
	$(BIN)/python tests/bench/bench_live.py
	$(BIN)/python tests/bench/bench_orders.py

# The API fuzzer as in `make test` (tests/e2e/test_fuzz.py), longer and with a new seed
# each run; a failure prints its seed and a curl command that reproduces it.
fuzz: setup infra
	FUZZ_MAX_EXAMPLES=$${FUZZ_MAX_EXAMPLES:-500} FUZZ_SEED=$${FUZZ_SEED:-random} $(PYTEST) -q -m e2e tests/e2e/test_fuzz.py

clean:
	rm -rf $(VENV) .run .mypy_cache .ruff_cache .pytest_cache
