# The project's commands. Every target bootstraps .venv from pyproject.toml first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
GEN := generated
PROTO_FILES := $(wildcard protos/wallet/v1/*.proto)

.PHONY: help venv run sandbox test lint fmt proto proto-check clean bench

help:
	@echo "make run    - start the service (SQLite under ./var, KasPro sandbox in-process)"
	@echo "make run-cluster - two replicas on PostgreSQL (WALLET_DB_URL) and the sandbox, as processes"
	@echo "make test   - run the whole test suite"
	@echo "make lint   - ruff, mypy, buf lint, and a check that generated/ is fresh"
	@echo "make proto  - regenerate generated/ from protos/"
	@echo "make sandbox - run the KasPro sandbox alone on port 8090"
	@echo "make bench  - benchmarks against the gRPC ceiling (QUICK=1: about 30 s)"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(PY) -m wallet_service serve

sandbox: $(STAMP)
	$(PY) -m kaspro_sandbox

# Two replicas on one PostgreSQL database (WALLET_DB_URL, default the local server's
# `wallet`, created if missing) and the sandbox, each a process (wallet_service/cluster.py).
.PHONY: run-cluster
run-cluster: $(STAMP)
	$(PY) -m wallet_service.cluster

# Three workers (pytest-xdist) on two cores: most of a test's time is waiting on sockets and
# on PostgreSQL; with its half run the suite took 7:11 on two workers, 5:36 on three.
test: $(STAMP)
	$(PY) -m pytest -q -n 3

# Fails unless the server named by WALLET_TEST_POSTGRES_URL answers (CI runs it first).
.PHONY: postgres-check
postgres-check: $(STAMP)
	$(PY) -m tests.postgres


lint: $(STAMP) proto-check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/buf lint

fmt: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Generate into a directory, then fix nothing: protoc's absolute imports
# (`from wallet.v1 import common_pb2`) work because generated/wallet is installed
# as the `wallet` package (see pyproject.toml).
define generate
	mkdir -p $(1)
	$(PY) -m grpc_tools.protoc -Iprotos \
		--plugin=protoc-gen-mypy=$(VENV)/bin/protoc-gen-mypy \
		--plugin=protoc-gen-mypy_grpc=$(VENV)/bin/protoc-gen-mypy_grpc \
		--python_out=$(1) --grpc_python_out=$(1) \
		--mypy_out=$(1) --mypy_grpc_out=$(1) \
		$(PROTO_FILES)
	touch $(1)/wallet/__init__.py $(1)/wallet/v1/__init__.py $(1)/wallet/v1/py.typed
endef

proto: $(STAMP)
	rm -rf $(GEN)/wallet
	$(call generate,$(GEN))

proto-check: $(STAMP)
	rm -rf $(VENV)/proto-check && mkdir -p $(VENV)/proto-check
	$(call generate,$(VENV)/proto-check)
	diff -r $(VENV)/proto-check/wallet $(GEN)/wallet || \
		(echo "generated/ is stale: run 'make proto' and commit the result" >&2; exit 1)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

# Benchmarks (docs/performance.md): `make bench`, or `make bench QUICK=1` for about 30 s;
# `make bench STORE=postgres`: SQLite against PostgreSQL with one and two replicas.
bench: $(STAMP)
	$(PY) -m bench $(if $(QUICK),--quick,) $(if $(STORE),--store $(STORE),)

# Chaos simulation (docs/reliability.md): `make chaos`, or `make chaos SEED=7 OPS=5000 KILLS=10`;
# `make chaos STORE=postgres REPLICAS=3` (TERMINATIONS=n) on the server of WALLET_CHAOS_POSTGRES_URL.
.PHONY: chaos
chaos: $(STAMP)
	$(PY) -m chaos --seed $(or $(SEED),1) --ops $(or $(OPS),2000) $(if $(KILLS),--kills $(KILLS),) \
		--store $(or $(STORE),sqlite) $(if $(REPLICAS),--replicas $(REPLICAS),) \
		$(if $(TERMINATIONS),--terminations $(TERMINATIONS),)
