# The few verbs a newcomer needs. Each one creates the virtual environment first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8080
DATA_DIR ?= ./var

.PHONY: venv run serve test lint format bench clean browser postgres

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

run: venv
	$(BIN)/budget-router up --port $(PORT) --data-dir $(DATA_DIR)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The dashboard test drives Debian's chromium; install it when we can (root), else it skips.
browser:
	@command -v chromium >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	  echo "chromium could not be installed: the dashboard browser test will skip"

# The shared-ledger tests start a throwaway cluster from Debian's PostgreSQL server binaries;
# install them when we can (root). Without them those tests fail (they never skip silently).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) || \
	  echo "postgresql could not be installed: the shared-ledger tests will fail"

test: lint browser postgres
	$(BIN)/python -m pytest

bench: venv
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
