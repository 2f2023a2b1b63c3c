# interceptor: the commands a user runs. Each target installs what it is missing first.
SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: demo test e2e images bench crds fmt lint deps build help

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

deps: ## install missing system packages (Debian; needs root)
	@scripts/install-deps.sh

build: deps ## build the release binaries
	cargo build --release --workspace --locked

demo: build ## capture real HTTP traffic between network namespaces (needs root)
	@scripts/demo.sh

test: deps ## run every test; starts and stops the Kafka-protocol broker the tests need
	@scripts/test.sh

e2e: build ## the images and a real one-node Kubernetes (root): e2e checks, ends with `e2e: N passed, M failed`
	@scripts/e2e.sh

images: deps ## build the worker and operator images with Docker (local base stand-ins where no registry answers)
	@scripts/images.sh

bench: build ## offline and live benchmarks against tshark and tcpdump (see BENCHMARKS.md)
	@scripts/bench.sh

crds: ## regenerate the CRD manifests in config/crd from the Rust types (a test fails when they are stale)
	cargo run --locked -q -p operator -- crds --out-dir config/crd

fmt: ## format the code
	cargo fmt --all

lint: ## formatting and clippy, as CI checks them
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
