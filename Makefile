# Everything a new machine needs, from scratch: `make demo` and `make test` create .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test lint typecheck imports unit integration crash-all bench schema record clean

# Each step says what it is doing, and the main install shows pip's own progress (what it is
# collecting, downloading, building): on a fresh machine it takes a while, silence reads as a hang.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	@echo "==> [1/3] creating the virtual environment in $(VENV) ($$($(PYTHON) --version))"
	$(PYTHON) -m venv $(VENV)
	@echo "==> [2/3] upgrading pip"
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	@echo "==> [3/3] installing billing-reconciler and its dev tools (pip progress follows)"
	$(BIN)/pip install --disable-pip-version-check --progress-bar on -e '.[dev]'
	@touch $(STAMP)
	@echo "==> $(VENV) is ready"

install: $(STAMP)

## The main job on the embedded default: local Stripe emulator + SQLite.
demo: install
	$(BIN)/reconcile demo
	@echo 'Next: the subscriptions API on serve --emulator, step by step: README.md, "Walkthrough: subscriptions on the emulator".'

## The whole suite: lint, types, layering contract, then every test (the slow half in a second
## pytest process beside the rest, which runs over 2 pytest-xdist workers, BR_TEST_WORKERS:
## scripts/test-parallel).
test: install lint typecheck imports
	PYTEST=$(BIN)/pytest scripts/test-parallel

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install
	$(BIN)/mypy --strict src

imports: install
	$(BIN)/lint-imports

unit: install
	$(BIN)/pytest tests/unit

integration: install
	$(BIN)/pytest tests/integration

## The crash matrices in full: a crash at every mutating request of a cold apply (both fault
## kinds), each from a cold store, then a rerun; SQLite and PostgreSQL. Customers: a 200-account
## cold apply (about 8 s a position); subscriptions: a 100-subscription one (about 15 s a
## position). The suite runs a seeded sample of each.
crash-all: install
	BILLING_CRASH_ALL=1 $(BIN)/pytest -p no:cacheprovider tests/integration/customers/test_crash_matrix.py tests/integration/subscriptions/test_crash_matrix.py tests/integration/credits/test_meter_crash_matrix.py

## Benchmarks (not tests): JSON reports; results are kept in bench/RESULTS.md.
bench: install
	$(BIN)/python bench/emulator.py
	$(BIN)/python bench/catalog.py
	$(BIN)/python bench/webhooks.py

schema: install
	$(BIN)/reconcile schema --write

## Re-record the contract cassettes against real Stripe test mode (needs STRIPE_API_KEY=sk_test_...).
record: install
	BILLING_VCR_RECORD=all $(BIN)/pytest tests/integration/contract

clean:
	rm -rf $(VENV) .billing .pytest_cache .mypy_cache .ruff_cache
