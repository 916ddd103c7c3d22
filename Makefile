# Berth: the two commands are `make up` and `make test`. Everything they need is
# installed by these targets on a fresh machine; slow products (Go build, wheels)
# are cached outside the repository (~/.cache/berth, ~/.cache/uv, Go's caches).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PY      := .venv/bin/python
UV      := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
PYTEST_ARGS ?=

# Debian packages of the dev cluster's real node (container runtime, CNI, image tools).
NODE_PKGS := containerd runc containernetworking-plugins buildah mmdebstrap busybox-static iptables

.PHONY: help venv k8s helm s3 prometheus node-deps images up down status test test-unit test-integration test-e2e lint bench bench-quick clean

help:
	@echo "make up      start the local cluster (control plane, fake GPU nodes, real node, Prometheus, operator, examples)"
	@echo "make down    stop it"
	@echo "make test    run every test tier (unit, integration, e2e) on CPU"
	@echo "make bench   run the benchmarks, results under bench/results/"
	@echo "make lint    ruff + mypy"
	@echo "make images  build the container images (operator, runtime, pause) into ~/.cache/berth/images"

$(UV):
	@command -v uv >/dev/null 2>&1 || python3 -m pip install --user --quiet uv || python3 -m pip install --user --quiet --break-system-packages uv

.venv/.synced: pyproject.toml $(wildcard */pyproject.toml) uv.lock Makefile | $(UV)
	@echo "[make] installing Python dependencies into .venv (first time: large download of PyTorch, cached in ~/.cache/uv)"
	$(UV) sync --locked --all-packages --all-extras  # extras: boto3 (s3://) and google-cloud-storage (gs://) for the source tests
	@touch $@

venv: .venv/.synced

k8s:
	@bash hack/build-k8s.sh >/dev/null

# helm and kube-score from Go modules (cached like the control plane)
helm:
	@bash hack/build-helm.sh >/dev/null

s3:  # versitygw, the real S3-compatible server of the s3:// source tests
	@bash hack/build-s3.sh >/dev/null

prometheus:
	@bash hack/install-prometheus.sh >/dev/null

node-deps:
	@missing=$$(for p in $(NODE_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "[make] installing the real node's packages: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# The operator image (buildah bud from images/operator/Containerfile), the runtime image
# (images/runtime/Containerfile's recipe, written as an OCI layout by hand) and the
# node's pause image; cached by content under ~/.cache/berth/images.
images: venv node-deps
	$(PY) -m berth_dev.images all

up: venv k8s helm prometheus node-deps
	.venv/bin/berth dev up

down: venv
	.venv/bin/berth dev down

status: venv
	.venv/bin/berth dev status

test: venv k8s helm prometheus node-deps s3 images
	.venv/bin/pytest $(PYTEST_ARGS)

test-unit: venv helm
	.venv/bin/pytest -m unit $(PYTEST_ARGS)

test-integration: venv k8s helm node-deps s3 images
	.venv/bin/pytest -m integration $(PYTEST_ARGS)

test-e2e: venv k8s helm prometheus node-deps images
	.venv/bin/pytest -m e2e $(PYTEST_ARGS)

lint: venv
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

bench: venv k8s prometheus node-deps
	.venv/bin/berth bench runtime
	.venv/bin/berth bench operator
	.venv/bin/berth bench autoscale
	.venv/bin/berth bench gateway
	.venv/bin/berth bench llm

bench-quick: venv
	.venv/bin/berth bench runtime --quick

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache
