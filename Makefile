# The README's two commands: `make run` and `make test`.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install sandbox-host browser-host lb-host bench-host frontend frontend-test lint bench bench-strategies bench-defi bench-plugins clean

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

# Chromium from Debian's packages for the console's browser tests (tests/test_console_browser.py
# drives it with Playwright, which never downloads a browser of its own).
browser-host:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get install -y -qq chromium >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null && apt-get install -y -qq chromium >/dev/null; }; }; } || \
	  echo "chromium is not installed: the console's browser tests will be skipped"

# HAProxy from Debian's packages, the load balancer of the slow topology drill
# (tests/test_topology.py: two replicas behind it, rendered from deploy/haproxy.cfg).
lb-host:
	@command -v haproxy >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get install -y -qq haproxy >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null && apt-get install -y -qq haproxy >/dev/null; }; }; } || \
	  echo "haproxy is not installed: the topology drill will be skipped (it fails under CI=true)"

# The web console: rebuilt from frontend/ with npm from its lockfile into the Python package
# (gateway/http/console_dist, committed: `make run` needs no node). docs/console.md.
frontend:
	cd frontend && npm ci --no-audit --no-fund && npm run build

# The console's unit tests (Vitest), where npm is installed.
frontend-test:
	@if command -v npm >/dev/null; then \
	  cd frontend && { [ -d node_modules ] && [ node_modules/.package-lock.json -nt package-lock.json ] || \
	    npm ci --no-audit --no-fund; } && npm test; \
	else echo "npm is not installed: the console's unit tests did not run"; fi

run: install
	$(BIN)/alphintra migrate
	$(BIN)/alphintra seed-demo
	ALPHINTRA_PLUGIN_SANDBOX=$${ALPHINTRA_PLUGIN_SANDBOX:-best-effort} $(BIN)/alphintra serve

test: install browser-host lb-host  # `make run` needs no browser nor load balancer
	$(BIN)/ruff check .
	$(MAKE) --no-print-directory frontend-test
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: install
	$(BIN)/ruff check .

# wrk from Debian's packages: the load generator of bench/graphql_throughput.py and friends.
bench-host:
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get install -y -qq wrk >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null && apt-get install -y -qq wrk >/dev/null; }; }; } || \
	  echo "wrk is not installed: run the throughput benches with --client httpx"

bench: install bench-host
	$(BIN)/python bench/graphql_throughput.py
	$(BIN)/python bench/marketplace_publish.py
	$(BIN)/python bench/audit_trail.py
	$(BIN)/python bench/order_intake.py  # needs ALPHINTRA_DATABASE_URL: a PostgreSQL database of its own
	$(BIN)/python bench/slippage.py

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
