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
PACKAGES := common user-service gateway infra/devstack
PYPROJECTS := $(foreach p,$(PACKAGES),$(p)/pyproject.toml)
SOURCES := common/src user-service/src gateway/src infra/devstack/src
PYTEST := $(BIN)/pytest

.PHONY: help up down test lint typecheck protos check-protos setup infra secrets unit integration e2e deploy-check bench clean

help:
	@echo "make up            run the deployment (Docker if an engine answers, else local processes)"
	@echo "make test          lint, type check, unit, integration, deployment and end-to-end tests"
	@echo "make down          stop what 'make up' started"
	@echo "make lint          ruff and mypy (strict for source)"
	@echo "make protos        regenerate code from protos/"
	@echo "make check-protos  fail when generated code is stale"
	@echo "make bench         gateway vs direct vs nginx, requests/s and latency"

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
	$(BIN)/mypy $(SOURCES)
	$(BIN)/mypy --config-file pyproject.toml --disallow-untyped-defs=False tests */tests infra/devstack/tests

typecheck: lint

unit: setup
	$(PYTEST) -q common/tests user-service/tests/unit gateway/tests/unit infra/devstack/tests

integration: setup infra
	$(PYTEST) -q -m integration user-service/tests/integration gateway/tests/integration

deploy-check: setup
	$(PYTEST) -q tests/deploy

e2e: setup infra
	$(PYTEST) -q -m e2e tests/e2e

test: setup check-protos lint unit integration deploy-check e2e

bench: setup infra
	$(BIN)/python tests/bench/bench_gateway.py

clean:
	rm -rf $(VENV) .run .mypy_cache .ruff_cache .pytest_cache
