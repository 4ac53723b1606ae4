"""Every knob of the gateway, read from ALPHINTRA_* environment variables.

Settings are a frozen value built once by the caller (the CLI, a test, the app factory) and
passed down; nothing reads the environment after that.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

REGIONS: tuple[str, ...] = ("americas", "emea", "apac")


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {value!r}")


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite:///./alphintra.db"
    redis_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000

    # Authentication. HS256 needs jwt_secret; RS256 needs jwt_public_key (PEM text or a path).
    jwt_algorithm: str = "HS256"
    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_seconds: int = 30
    demo_api_key: str | None = None

    # GraphQL protections.
    introspection: bool = True
    graphiql: bool = True
    max_depth: int = 12
    max_aliases: int = 30
    max_tokens: int = 5_000
    max_cost: int = 50_000
    max_page_size: int = 200
    max_body_bytes: int = 1_000_000
    parse_cache_size: int = 512
    validation_cache_size: int = 512

    # Jobs and events.
    worker_threads: int = 4
    # "auto": worker threads inside the gateway without Redis, none with it ("on"/"off" force).
    embedded_worker: str = "auto"
    default_region: str = "americas"
    job_max_retries: int = 3
    job_min_backoff_ms: int = 500
    job_max_backoff_ms: int = 30_000
    job_time_limit_ms: int = 3_600_000
    redis_heartbeat_timeout_ms: int = 60_000
    redis_maintenance_chance: int = 1_000
    redis_namespace: str = "alphintra"

    # Encryption at rest (plugin secrets, signing keys): 32 bytes, base64. Unset, a key file
    # beside the working directory is made on first use (fine for `make run`, not production).
    secret_key: str | None = None
    secret_key_file: str = ".alphintra-secret.key"

    # Language models (strategy synthesis, news analysis). No key: the offline provider answers
    # (templates and a lexicon), and every result says it is not an LLM.
    anthropic_api_key: str | None = field(default=None, repr=False)  # never in a log line
    anthropic_models: tuple[str, ...] = ("claude-sonnet-4-6", "claude-haiku-4-5")  # first: synthesis
    anthropic_timeout_s: int = 60
    anthropic_max_retries: int = 2
    llm_max_repairs: int = 2  # answers fed back with their validation errors before giving up

    # DeFi chains: the in-process EVM (eth-tester on py-evm) named "embedded", built and
    # populated with the demo world on first use, plus any JSON-RPC chains (gateway/defi/chain.py
    # has the format: JSON, or "id:name:url[:explorer]" comma-separated).
    defi_embedded: bool = True
    defi_chains: str = ""

    # DeFi lending and events: a borrow or withdrawal that would leave the health factor under
    # this floor is refused before anything is sent (a decimal, above 1); the event poller's pace.
    defi_health_factor_floor: str = "1.2"
    defi_event_poll_ms: int = 500

    # Load calendars and train the pattern model in the background at start-up, so no request
    # pays for it.
    warm_on_start: bool = True

    # Real market data for every tenant: CSV/Parquet files and directories (comma-separated)
    # the built-in file source serves instead of its bundled sample, in the layout documented
    # in plugins/builtin/file_source.py. Its instruments win over the twin's of the same key.
    # `marketdata_adjust`: serve unadjusted rows with an `adjustment_factor` adjusted.
    marketdata_files: tuple[str, ...] = ()
    marketdata_adjust: bool = False
    # Each tenant's own files: `<dir>/<tenant id>/` serves that tenant only (its data wins).
    marketdata_tenant_dir: str = ""

    # The plugin sandbox (gateway/marketplace/sandbox/): one worker process per (tenant, plugin
    # version). "required" refuses to run marketplace plugins unless the minimum layers (a
    # dedicated uid, Landlock, seccomp, rlimits) are active; "best-effort" runs with what the
    # host has (logged at start-up); bubblewrap and cgroups are used where they work.
    plugin_sandbox: str = "required"
    plugin_bwrap: bool = True
    plugin_cgroups: bool = True
    plugin_call_timeout_s: float = 5.0
    plugin_start_timeout_s: float = 10.0
    plugin_idle_s: float = 300.0  # a worker with no call for this long stops (not connectors, rule packs)
    plugin_memory_mb: int = 512
    plugin_cpu_fraction: float = 0.5  # of one core, per worker
    plugin_pids: int = 64
    plugin_quarantine_failures: int = 5  # crashes or timeouts within 10 minutes
    # The egress proxy never connects to loopback or private addresses unless this is on
    # (tests run their "remote" servers on 127.0.0.1).
    plugin_egress_allow_private: bool = False

    # Operations.
    log_level: str = "INFO"
    log_json: bool = True
    otel_exporter: str = "none"  # none | console | otlp
    service_name: str = "alphintra-gateway"
    regions: tuple[str, ...] = field(default=REGIONS)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read ALPHINTRA_<FIELD> for each field; explicit overrides win."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(f"ALPHINTRA_{f.name.upper()}")
            if raw is None:
                continue
            default = f.default
            if isinstance(default, bool):
                values[f.name] = _bool(raw)
            elif isinstance(default, int):
                values[f.name] = int(raw)
            elif isinstance(default, float):
                values[f.name] = float(raw)
            elif isinstance(default, tuple):
                values[f.name] = tuple(p.strip() for p in raw.split(",") if p.strip())
            else:
                values[f.name] = raw or None
        values.update(overrides)
        settings = cls(**values)
        settings.check()
        return settings

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    def market_data_configs(self) -> dict[str, dict[str, Any]]:
        """The built-in data sources' configs these settings give (MarketDataService(configs=))."""
        config: dict[str, Any] = {"adjust": self.marketdata_adjust}
        if self.marketdata_files:
            config["paths"] = list(self.marketdata_files)
        return {"file-source": config}

    def check(self) -> None:
        if self.default_region not in self.regions:
            raise ValueError(f"default_region {self.default_region!r} not in {self.regions}")
        if self.jwt_algorithm not in {"HS256", "RS256"}:
            raise ValueError("jwt_algorithm must be HS256 or RS256")
        if self.embedded_worker not in {"auto", "on", "off"}:
            raise ValueError("embedded_worker must be auto, on or off")
        if self.otel_exporter not in {"none", "console", "otlp"}:
            raise ValueError("otel_exporter must be none, console or otlp")
        if self.plugin_sandbox not in {"required", "best-effort"}:
            raise ValueError("plugin_sandbox must be required or best-effort")
        if not 0 <= self.llm_max_repairs <= 10:
            raise ValueError("llm_max_repairs must be 0 to 10")

    @property
    def runs_embedded_worker(self) -> bool:
        if self.embedded_worker == "auto":
            return not self.redis_url
        return self.embedded_worker == "on"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
