# The two commands a new user needs: `make demo` and `make test`. Both work on a fresh machine
# with only Python (3.11+) and make: they create .venv and install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test check lint typecheck unit bench provision clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,aws,gcp,bench]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/coder-agent demo --for 15s

# Lint, type-check, then every test (CI provisions Docker, the Dev Containers CLI and Go first).
test: $(STAMP) lint typecheck
	$(BIN)/pytest -q -ra $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy src bench

unit: $(STAMP)
	$(BIN)/pytest -q -m "not slow and not docker"

bench: $(STAMP)
	$(BIN)/python -m bench.report

# Installs what the integration tests use: a Docker engine, the Dev Containers CLI, Go + yamux.
provision:
	bash scripts/provision.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
