# The README's two commands: `make run` and `make test`.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install sandbox-host lint bench bench-strategies bench-defi bench-plugins clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP) sandbox-host

# bubblewrap, one of the plugin sandbox's layers (docs/sandbox.md), from Debian's packages
# where this user may install them; without it the sandbox runs on its other layers.
sandbox-host:
	@command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get install -y -qq bubblewrap >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null && apt-get install -y -qq bubblewrap >/dev/null; }; }; } || \
	  echo "bubblewrap is not installed: plugins run sandboxed without it (docs/sandbox.md)"

run: install
	$(BIN)/alphintra migrate
	$(BIN)/alphintra seed-demo
	ALPHINTRA_PLUGIN_SANDBOX=$${ALPHINTRA_PLUGIN_SANDBOX:-best-effort} $(BIN)/alphintra serve

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
	$(BIN)/python bench/connector_routing.py

bench-defi: install
	$(BIN)/python bench/defi_quotes.py
	$(BIN)/python bench/defi_lending.py

clean:
	rm -rf $(VENV) alphintra.db alphintra.db-shm alphintra.db-wal
