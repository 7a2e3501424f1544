# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup infra run test lint unit bench clean stop

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# A real Kafka broker (jars from Maven Central, cached in .cache/) and a real
# PostgreSQL (Debian's package, installed when missing) on 127.0.0.1.
infra: setup
	$(BIN)/merlin kafka start
	$(BIN)/merlin postgres start

# Local Kafka + topics + SQLite read store + write API, forwarder and read API.
run: setup
	$(BIN)/merlin dev

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: setup
	$(BIN)/pytest -m "not integration"

# pytest exits 5 when it collects nothing, which fails this target as it should.
test: infra lint
	$(BIN)/pytest

# Benchmarks beside the machine's limits: a table, JSON and a PNG in bench/results/ (minutes).
bench: infra
	$(BIN)/python -m bench

stop:
	-$(BIN)/merlin kafka stop
	-$(BIN)/merlin postgres stop

clean: stop
	rm -rf var .venv
