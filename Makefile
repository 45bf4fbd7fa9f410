# Storefront — one entry point for every task. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/.tools/bin:$(PATH)
TAG ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)

.PHONY: help install dev test test-components test-fast lint typecheck format tools images bench \
	bench-quick clean generate check-generated dashboards check-dashboards previews chart-lint kind-up \
	kind-e2e kind-down

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## Create the virtual environment and install Storefront with its dev tools

dev: install ## Run API, worker and scheduler on SQLite and embedded Redis, with sample products (http://127.0.0.1:8000)
	$(BIN)/storefront dev --seed --port 8000

tools: ## Install or build every real component the tests use, Docker and the kind images included (idempotent)
	bash scripts/tools.sh

images: ## Build the Storefront and operator images (TAG=0.1.0 by default; offline: a base made here)
	bash scripts/images.sh --tag $(TAG) app operator

lint: install ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install ## mypy on our packages
	$(BIN)/mypy

format: install ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: install tools lint typecheck check-generated ## Everything: lint, types, and the full suite against real components
	$(BIN)/pytest

test-components: install tools ## Smoke-test every real component fixture (a query each)
	$(BIN)/pytest tests/components -q

test-fast: install ## The suite without cluster, kind, Docker, Jaeger, fault and slow tests (inner loop)
	$(BIN)/pytest -m "not cluster and not slow and not fault and not jaeger and not helm and not docker and not kind"

bench: install tools ## Benchmarks against their baselines, side by side
	$(BIN)/python -m bench

bench-quick: install ## A short benchmark run for development
	$(BIN)/python -m bench --quick

generate: install ## Regenerate every generated file: the CRD (and its chart copy) and the dashboards
	$(BIN)/storefront crd --write
	$(BIN)/python -m dashboards.generate

check-generated: install ## Fail when a committed generated file differs from its source
	$(BIN)/storefront crd | diff -q - operator/crds/storefronts.storefront.dev.yaml
	diff -q operator/crds/storefronts.storefront.dev.yaml charts/storefront/crds/storefronts.storefront.dev.yaml
	$(BIN)/python -m dashboards.generate --check

dashboards: install ## Regenerate the Grafana dashboards (dashboards/*.json and the chart's copy)
	$(BIN)/python -m dashboards.generate

check-dashboards: install ## Fail when the committed dashboards differ from the code
	$(BIN)/python -m dashboards.generate --check

previews: install ## PNG previews of the dashboards from a running Prometheus (PROMETHEUS=url)
	$(BIN)/python -m dashboards.preview --prometheus $(PROMETHEUS) --var job=storefront

chart-lint: tools ## helm lint --strict the chart
	helm lint --strict charts/storefront

kind-up: install ## A kind cluster with Prometheus, Jaeger and metrics-server, the images loaded (TAG=)
	bash scripts/images.sh --tag $(TAG) app operator
	TAG=$(TAG) bash scripts/kind-up.sh

kind-e2e: install tools ## The user's whole path on a kind cluster: Helm, a Storefront, traffic, scaling, upgrade
	$(BIN)/pytest -m kind tests/kind

kind-down: ## Delete the kind cluster (kind-up's, or one the e2e kept with STOREFRONT_KIND_KEEP=1)
	bash scripts/kind-down.sh

clean: ## Remove the virtual environment, caches and local data (keeps .tools)
	rm -rf $(VENV) .storefront .pytest_cache .mypy_cache .ruff_cache
