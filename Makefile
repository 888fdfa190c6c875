# Settle developer tasks. Everything goes through uv; see `make help`.
#
#   make run [HOST=127.0.0.1] [PORT=8000]   migrate, load demo data, serve
#   make test [PYTEST_ARGS="-k invoices"]   run the test suite
#   make lint | format | schema | clean

.DEFAULT_GOAL := help
SHELL := /bin/bash

# Command-line overrides work (`make run PORT=8123`); a stray HOST/PORT in the
# environment deliberately does not.
HOST = 127.0.0.1
PORT = 8000
PYTEST_ARGS ?=
PYTHON ?= python3

# Never let uv download an interpreter: use the machine's Python (>= 3.11).
export UV_PYTHON_DOWNLOADS := never

# A working uv command: `uv` on PATH, else the pip --user script, else the
# module (`python3 -m uv`, which is what `ensure-uv` installs when uv is absent).
ifeq ($(origin UV),undefined)
UV := $(or $(shell command -v uv 2>/dev/null),$(wildcard $(HOME)/.local/bin/uv),$(PYTHON) -m uv)
endif

.PHONY: help ensure-uv sync run test lint format schema clean

help:
	@echo "Targets:"
	@echo "  run     migrate, load demo data and serve on http://$(HOST):$(PORT)"
	@echo "  test    run pytest (extra arguments via PYTEST_ARGS=...)"
	@echo "  lint    ruff check, ruff format --check, mypy"
	@echo "  format  ruff format and ruff check --fix"
	@echo "  schema  write the GraphQL schema to schema.graphql"
	@echo "  clean   remove .venv, var/ and caches"

ensure-uv:
	@$(UV) --version >/dev/null 2>&1 || { \
		echo "uv not found; installing it with pip --user"; \
		$(PYTHON) -m pip install --user uv \
		|| $(PYTHON) -m pip install --user --break-system-packages uv \
		|| $(PYTHON) -m pip install uv; \
	}
	@$(UV) --version

sync: ensure-uv
	$(UV) sync --frozen

run: sync
	$(UV) run --frozen settle migrate
	$(UV) run --frozen settle demo
	$(UV) run --frozen settle serve --host $(HOST) --port $(PORT)

test: sync
	$(UV) run --frozen pytest $(PYTEST_ARGS)

lint: sync
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy

format: sync
	$(UV) run --frozen ruff format .
	$(UV) run --frozen ruff check --fix .

schema: sync
	$(UV) run --frozen settle export-schema > schema.graphql.tmp \
		|| { rm -f schema.graphql.tmp; exit 1; }
	mv schema.graphql.tmp schema.graphql

clean:
	rm -rf .venv var .pytest_cache .mypy_cache .ruff_cache .coverage dist build schema.graphql.tmp
	find . -path ./.git -prune -o \( -name __pycache__ -o -name '*.egg-info' \) -type d -print0 \
		| xargs -0 rm -rf
	find . -path ./.git -prune -o -name '*.py[co]' -type f -print0 | xargs -0 rm -f
