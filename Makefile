# The README's two commands: `make run` and `make test`.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install lint bench bench-strategies bench-defi bench-plugins clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/alphintra migrate
	$(BIN)/alphintra seed-demo
	$(BIN)/alphintra serve

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python bench/graphql_throughput.py
	$(BIN)/python bench/marketplace_publish.py
	$(BIN)/python bench/audit_trail.py
	$(BIN)/python bench/order_intake.py  # needs ALPHINTRA_DATABASE_URL: a PostgreSQL database of its own

bench-strategies: install
	$(BIN)/python bench/strategy_lab.py
	$(BIN)/python bench/llm_news.py

bench-plugins: install
	$(BIN)/python bench/plugin_install.py
	$(BIN)/python bench/plugin_runtime.py

bench-defi: install
	$(BIN)/python bench/defi_quotes.py
	$(BIN)/python bench/defi_lending.py

clean:
	rm -rf $(VENV) alphintra.db alphintra.db-shm alphintra.db-wal
