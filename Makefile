# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
COMPOSE := .cache/compose/bin/docker-compose
PROMTOOL := $(or $(shell command -v promtool),/usr/bin/promtool)

.PHONY: setup infra run check test lint unit faults bench bench-peers docs-settings clean stop lock

setup: $(STAMP)

# An install from before the distribution was named merlin-chat goes first: it claims the same
# packages and the `merlin` command, and uninstalled later it would take the command with it.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip uninstall -q -y merlin 2>/dev/null
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# docker-compose from PyPI renders and checks docker/compose.yaml; no Docker engine runs here.
# Its last release pins PyYAML < 6, whose 5.4.1 only builds with Cython < 3.
$(COMPOSE):
	$(PYTHON) -m venv .cache/compose
	.cache/compose/bin/pip install -q "cython<3" wheel setuptools
	.cache/compose/bin/pip install -q --no-build-isolation "pyyaml==5.4.1"
	.cache/compose/bin/pip install -q "docker-compose==1.29.2"

# The image's dependencies, pinned with their hashes, from pyproject's [project] dependencies: run
# after changing those (a unit test fails until the lock satisfies them again). uv rather than
# pip-compile or `pip lock`: those resolve for the interpreter that runs them, uv for the image's
# platform (the Dockerfile's CPython on x86_64 Linux) from any machine. The hashes cover every
# file of each pinned release, so an arm64 build checks its wheels too. Pins that still fit
# pyproject are kept; `make lock LOCK_FLAGS=--upgrade` takes the newest releases instead.
LOCK := docker/requirements.lock
LOCK_VENV := .cache/lock
LOCK_FLAGS ?=
# The image's Python, major.minor, from the Dockerfile's base.
IMAGE_PYTHON := $(shell sed -n 's/^FROM python:\([0-9]*\.[0-9]*\).*/\1/p' docker/Dockerfile | head -n 1)

lock: $(LOCK_VENV)/bin/uv
	$(LOCK_VENV)/bin/uv pip compile pyproject.toml --quiet --generate-hashes \
	  --python-version $(IMAGE_PYTHON) --python-platform x86_64-manylinux_2_28 \
	  --custom-compile-command "make lock" --output-file $(LOCK) $(LOCK_FLAGS)

$(LOCK_VENV)/bin/uv:
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install -q "uv==0.13.8"

# promtool checks and unit-tests the alert rules, and a real Prometheus scrapes a live merlin in the
# tests: Debian's package, installed when missing (as root). Where an init system runs, its postinst
# starts a daemon on :9090 that nothing here wants: stopped by its pid.
$(PROMTOOL):
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus
	@for pid in $$(cat /run/prometheus/prometheus.pid 2>/dev/null) \
	    $$(systemctl show --property=MainPID --value prometheus.service 2>/dev/null); do \
	  if [ "$$pid" -gt 0 ] 2>/dev/null; then kill "$$pid" && echo "stopped prometheus (pid $$pid)"; fi; \
	done

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

# The unit tests on every core: no broker, no database.
unit: setup $(COMPOSE) $(PROMTOOL)
	$(BIN)/pytest -m "not integration" -n auto

# The inner loop: lint, types, import contracts and the unit tests (under two minutes).
check: lint unit

# Three pytest workers on two cores: integration tests spend most of their time waiting on
# brokers, sessions and outages. A file at a time per worker (--dist loadfile), so a file's own
# broker (started once for its tests, on fixed ports) is in one worker. The fault scenarios'
# three-node cluster then starts on a quiet machine, alone: beside the rest it times out.
# pytest exits 5 when it collects nothing, which fails this target as it should.
test: infra lint $(COMPOSE) $(PROMTOOL)
	$(BIN)/pytest -n 3 --dist loadfile -m "not faults"
	$(BIN)/pytest -m faults

# The fault scenarios alone (also part of `make test`), with their figures printed.
faults: infra
	$(BIN)/pytest -m faults -s -p no:randomly

# Benchmarks beside the machine's limits: a table, JSON and a PNG in bench/results/ (minutes).
bench: infra
	$(BIN)/python -m bench

# merlin beside Kafka Connect's Debezium JDBC and Camel HTTP sinks, N = 1 and 2 (jars from Maven Central, once).
bench-peers: infra
	$(BIN)/python -m bench --peers

# docs/settings.md, from the settings classes' descriptions (a unit test fails while it is stale).
docs-settings: setup
	$(BIN)/python -m merlin.settings_reference

stop:
	-$(BIN)/merlin kafka stop
	-$(BIN)/merlin postgres stop

clean: stop
	rm -rf var .venv
