# impactbus: everything needs only python3 (and, for browser tests, Debian's chromium,
# which `make test` installs when it is missing and it may).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: up demo test test-fast lint typecheck bench install browser clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

## Set up (first time) and run the hub on its embedded defaults until Ctrl-C.
up: install
	$(BIN)/impactbus up

## The hub with two real initiatives' worth of demo data.
demo: install
	$(BIN)/impactbus demo

browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian chromium for the browser tests..."; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "warning: could not install chromium; browser tests will be skipped"; \
	  else echo "warning: chromium missing and not root; browser tests will be skipped"; fi; }

## Run the whole test suite (what CI runs).
# Two workers: most tests wait on their own nats-server, SMTP sink or browser, so two
# processes keep both cores busy (about 5.5 instead of 7.5 minutes here).
test: install browser
	$(BIN)/python -m pytest -n 2

## The inner loop: unit and component tests, no e2e, deploy or browser tests.
test-fast: install
	$(BIN)/python -m pytest -n 2 -m "not e2e and not browser" --ignore=tests/deploy -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

bench: install
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .impactbus .pytest_cache .mypy_cache .ruff_cache
