# mserve: the README's commands. `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= .venv/bin/python
RUFF ?= .venv/bin/ruff
MSERVE_CACHE ?= $(HOME)/.cache/mserve
export MSERVE_CACHE
include hack/versions.env
# helm from hack/build.sh's cache unless one is on PATH or given as HELM=...
HELM ?= $(or $(shell command -v helm 2>/dev/null),$(MSERVE_CACHE)/bin/helm-$(HELM_VERSION))
export HELM
LOCAL_KUBECONFIG := $(MSERVE_CACHE)/cluster/admin.kubeconfig
# e2e and `make up` use KUBECONFIG when it is set, else this machine's cluster.
E2E_KUBECONFIG := $(or $(KUBECONFIG),$(LOCAL_KUBECONFIG))
TIER := hack/test-tier.sh

.PHONY: help venv demo up down images images-gpu load-images helm lint format \
        test test-ruff test-unit test-runtime test-cluster test-integration test-e2e cluster-up

help: ## this list
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{ printf "  make %-16s %s\n", $$1, $$2 }'

venv: ## create/update the virtual environment (.venv) with every extra
	hack/venv.sh dev

# A fresh clone has no .venv yet: the commands below make it first (once).
.venv/bin/python:
	hack/venv.sh dev

demo: | .venv/bin/python ## no cluster: train the digits model, serve it locally, call it with curl
	bash hack/demo.sh

up: | .venv/bin/python ## the whole story on a cluster: images, S3 store, chart, digits model, a real inference
	bash hack/up.sh

down: ## remove what `make up` made (and stop this machine's cluster if up started it)
	bash hack/down.sh

images: ## build the runtime, optimizer, operator and local S3 store images on the local base image
	bash hack/mserve-images.sh build

images-gpu: ## build the GPU runtime image (onnxruntime-gpu + CUDA wheels, several GB)
	bash hack/mserve-images.sh build runtime-gpu

load-images: ## load the images into the cluster (this machine's containerd, or kind)
	bash hack/mserve-images.sh load

helm: ## build helm from its Go module (cached) unless one is on PATH
	@[[ -x "$(HELM)" ]] || bash hack/build.sh helm

lint: helm ## ruff check + ruff format --check + helm lint
	$(RUFF) check .
	$(RUFF) format --check .
	$(HELM) lint charts/mserve --strict

format: ## apply ruff's formatting and safe fixes
	$(RUFF) check --fix .
	$(RUFF) format .

# ---------------------------------------------------------------------------------- tests
# Tiers in order; make stops at the first that fails. Each prints its time.
test: test-ruff test-unit test-runtime test-cluster test-integration test-e2e ## every tier, in order
	@echo "==> all tiers passed"

test-ruff: | .venv/bin/python
	@echo "==> ruff check"; $(RUFF) check .

test-unit: helm ## unit tier (chart tests need helm)
	$(TIER) unit tests/unit

test-runtime: ## runtime + optimizer tier (real models over real HTTP, real quantization)
	$(TIER) runtime+optimizer tests/runtime tests/optimizer

cluster-up:
	@start=$$(date +%s); bash hack/cluster.sh up; echo "==> cluster up in $$(( $$(date +%s) - start ))s"

test-cluster: cluster-up ## this machine's cluster, built from upstream parts
	MSERVE_REQUIRE_CLUSTER=1 KUBECONFIG=$(LOCAL_KUBECONFIG) $(TIER) cluster tests/cluster

test-integration: cluster-up ## the operator in-process against the real API server
	MSERVE_REQUIRE_CLUSTER=1 KUBECONFIG=$(LOCAL_KUBECONFIG) $(TIER) integration tests/integration

test-e2e: helm ## helm install -> ModelService -> Job -> Ready -> inference, on KUBECONFIG or this machine's cluster
	@if [[ -z "$${KUBECONFIG:-}" ]]; then $(MAKE) --no-print-directory cluster-up; fi
	@start=$$(date +%s); bash hack/mserve-images.sh build; KUBECONFIG=$(E2E_KUBECONFIG) bash hack/mserve-images.sh load; \
	  echo "==> images built and loaded in $$(( $$(date +%s) - start ))s"
	KUBECONFIG=$(E2E_KUBECONFIG) $(TIER) e2e tests/e2e

print-helm:
	@echo $(HELM)
