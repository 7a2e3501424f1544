# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
COMPOSE := .cache/compose/bin/docker-compose
PROMTOOL := $(or $(shell command -v promtool),/usr/bin/promtool)
# The browser the API explorer's test drives (Playwright cannot download its own builds here).
CHROMIUM := /usr/bin/chromium

.PHONY: setup infra run check test lint unit faults bench bench-peers docs docs-build docs-reference docs-settings clean stop lock chart-tools chromium centrifugo

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

# Headless Chromium for tests/integration/test_api_explorer.py: Debian's package, installed when
# missing (as root), since Playwright's own browser downloads are not reachable from here.
chromium: $(CHROMIUM)

$(CHROMIUM):
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium

# The Helm chart (deploy/helm/merlin) is checked by rendering, as no cluster runs here: helm lints and
# renders it and kubeconform validates what it renders. Both are built once from the Go module proxy,
# each version in a folder of its own so that a new version is built anew. kubeconform's Kubernetes
# schemas are made from the API's OpenAPI spec in the k8s.io/kubernetes module, the release whose client
# libraries this helm is built on; the ServiceMonitor's from prometheus-operator's CRD, by kubeconform's
# own converter (tests/kube_tools.py reads these versions).
GO := $(or $(shell command -v go),/usr/local/go/bin/go)
# -trimpath keeps this folder's path out of what Go compiles, so that a clone elsewhere (CI's) finds
# the packages in Go's build cache instead of compiling helm again (about ten minutes on two cores).
GO_ENV := GOPATH=$(CURDIR)/.cache/go/path GOMODCACHE=$(CURDIR)/.cache/go/mod GOFLAGS="-modcacherw -trimpath"
HELM_VERSION := v4.3.2
KUBECONFORM_VERSION := v0.8.0
KUBERNETES_VERSION := v1.37.2
PROMETHEUS_OPERATOR_VERSION := v0.85.0
HELM := .cache/go/bin/helm-$(HELM_VERSION)/helm
KUBECONFORM := .cache/go/bin/kubeconform-$(KUBECONFORM_VERSION)/kubeconform
KUBE_SCHEMAS := .cache/kube-schemas/$(KUBERNETES_VERSION)-standalone-strict/.complete
CRD_SCHEMAS := .cache/kube-schemas/prometheus-operator-$(PROMETHEUS_OPERATOR_VERSION)/.complete
GO_MODULE_DIR = $$($(GO_ENV) $(GO) mod download -json $(1) | $(PYTHON) -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')

$(HELM):
	GOBIN=$(CURDIR)/$(@D) $(GO_ENV) $(GO) install helm.sh/helm/v4/cmd/helm@$(HELM_VERSION)

$(KUBECONFORM):
	GOBIN=$(CURDIR)/$(@D) $(GO_ENV) $(GO) install github.com/yannh/kubeconform/cmd/kubeconform@$(KUBECONFORM_VERSION)

$(KUBE_SCHEMAS): tests/kube_tools.py | $(STAMP)
	rm -rf $(@D)
	$(BIN)/python -m tests.kube_tools schemas \
	  "$(call GO_MODULE_DIR,k8s.io/kubernetes@$(KUBERNETES_VERSION))/api/openapi-spec/swagger.json" $(@D)
	touch $@

$(CRD_SCHEMAS): | $(STAMP)
	rm -rf $(@D) && mkdir -p $(@D)
	cd $(@D) && FILENAME_FORMAT='{kind}-{group}-{version}' $(abspath $(BIN))/python \
	  "$(call GO_MODULE_DIR,github.com/yannh/kubeconform@$(KUBECONFORM_VERSION))/scripts/openapi2jsonschema.py" \
	  "$(call GO_MODULE_DIR,github.com/prometheus-operator/prometheus-operator@$(PROMETHEUS_OPERATOR_VERSION))/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml"
	touch $@

# No registry serves Strimzi's CRDs as YAML (its Maven jars hold only classes), so its KafkaTopic and
# KafkaUser are checked with the validators an npm package generates from them
# (tests/strimzi_validate.mjs). The package asks for Node.js 22; it runs on this machine's 20.
STRIMZI_MODELS_VERSION := 1.0.1
STRIMZI_MODELS := .cache/npm/strimzi-models-$(STRIMZI_MODELS_VERSION)/.complete

$(STRIMZI_MODELS):
	rm -rf $(@D) && mkdir -p $(@D)
	npm install --prefix $(@D) --no-audit --no-fund --loglevel=error \
	  @kubernetes-models/strimzi-kafka-operator@$(STRIMZI_MODELS_VERSION)
	touch $@

# What the chart's tests need: `make chart-tools` alone, or as part of `make unit` and `make test`.
CHART_TOOLS := $(HELM) $(KUBECONFORM) $(KUBE_SCHEMAS) $(CRD_SCHEMAS) $(STRIMZI_MODELS)
chart-tools: $(CHART_TOOLS)

# Centrifugo, the peer of merlin's live rooms in the benchmarks (`python -m bench --only live`, and
# `--peers`), from the Go module proxy once: about 2.5 minutes on two cores, a 92 MB binary. Its version
# stamped as its release builds stamp it. bench/live/centrifugo.py names the same version and folder
# (a unit test holds them equal) and builds it there when it is missing.
CENTRIFUGO_VERSION := v6.9.1
CENTRIFUGO := .cache/go/bin/centrifugo-$(CENTRIFUGO_VERSION)/centrifugo
CENTRIFUGO_MODULE := github.com/centrifugal/centrifugo/v6

$(CENTRIFUGO):
	GOBIN=$(CURDIR)/$(@D) $(GO_ENV) CGO_ENABLED=0 $(GO) install \
	  -ldflags=-X=$(CENTRIFUGO_MODULE)/internal/build.Version=$(CENTRIFUGO_VERSION:v%=%) \
	  $(CENTRIFUGO_MODULE)@$(CENTRIFUGO_VERSION)

centrifugo: $(CENTRIFUGO)

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

# The unit tests on every core: no broker, no database. And the documentation's strict build (seconds).
unit: setup docs-build $(COMPOSE) $(PROMTOOL) $(CHART_TOOLS)
	$(BIN)/pytest -m "not integration" -n auto

# The inner loop: lint, types, import contracts and the unit tests (under two minutes).
check: lint unit

# Three pytest workers on two cores: integration tests spend most of their time waiting on
# brokers, sessions and outages. A file at a time per worker (--dist loadfile), so a file's own
# broker (started once for its tests, on fixed ports) is in one worker. The fault scenarios'
# three-node cluster then starts on a quiet machine, alone: beside the rest it times out.
# pytest exits 5 when it collects nothing, which fails this target as it should.
test: infra lint docs-build $(COMPOSE) $(PROMTOOL) $(CHROMIUM) $(CHART_TOOLS) $(CENTRIFUGO)
	$(BIN)/pytest -n 3 --dist loadfile -m "not faults"
	$(BIN)/pytest -m faults

# The fault scenarios alone (also part of `make test`), with their figures printed.
faults: infra
	$(BIN)/pytest -m faults -s -p no:randomly

# Benchmarks beside the machine's limits (minutes): a table, and JSON and a PNG chart in var/bench/,
# which git ignores. RECORD=1 (python -m bench --record) writes them into bench/results/, to be
# committed. `python -m bench --render <results.json>` draws a saved run's chart again, beside it.
RECORD ?=
BENCH_RECORD := $(if $(filter 1,$(RECORD)),--record)

bench: infra $(CENTRIFUGO)
	$(BIN)/python -m bench $(BENCH_RECORD)

# merlin beside Kafka Connect's Debezium JDBC and Camel HTTP sinks, N = 1 and 2 (jars from Maven Central,
# once); its results go where `make bench`'s do (var/bench/, or bench/results/ with RECORD=1).
bench-peers: infra $(CENTRIFUGO)
	$(BIN)/python -m bench --peers $(BENCH_RECORD)

# docs/settings.md, from the settings classes' descriptions (a unit test fails while it is stale).
docs-settings: setup
	$(BIN)/python -m merlin.settings_reference

# Every page written from the code: the HTTP API and webhooks (OpenAPI), metrics, the merlin command,
# the decision records' index and docs/settings.md (a unit test fails while one is stale).
docs-reference: setup
	$(BIN)/python -m merlin.docs_reference

# The documentation site (mkdocs.yml; decision 0024). Material for MkDocs prints a banner about
# MkDocs' future on every run, unless told not to.
MKDOCS := NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs

# Served on http://127.0.0.1:8000, rebuilt on every change; Ctrl-C stops.
docs: setup
	$(MKDOCS) serve

# Built strict into site/ (ignored): a broken link or anchor, or a page not in the nav, fails.
docs-build: setup
	$(MKDOCS) build --strict --quiet

stop:
	-$(BIN)/merlin kafka stop
	-$(BIN)/merlin postgres stop

clean: stop
	rm -rf var .venv
