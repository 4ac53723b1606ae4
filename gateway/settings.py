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
    # The web console's partner domains: "host=tenant-slug" pairs; the console served on such a
    # host shows that tenant's white label before sign-in (gateway/http/console.py).
    console_hosts: tuple[str, ...] = ()

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
    # A query whose JSON answer is larger is answered RESPONSE_TOO_LARGE instead (mutations are
    # delivered whatever their size: their effects are committed). 0: no cap.
    max_response_bytes: int = 8_000_000
    # Automatic persisted queries: documents remembered by hash, per tenant, in each process.
    apq_cache_size: int = 2_000
    # Token buckets (requests a second, burst) per API key (or JWT user) and per tenant, over
    # HTTP and WebSocket subscribes; in Redis when redis_url is set. A rate of 0 turns one off.
    rate_limit_key_per_second: float = 100.0
    rate_limit_key_burst: int = 200
    rate_limit_tenant_per_second: float = 500.0
    rate_limit_tenant_burst: int = 1_000
    # Browsers: origins allowed to call /graphql cross-origin (CORS, comma-separated; "*" any;
    # empty: none) and, besides the gateway's own, to open its WebSocket (the Origin header;
    # clients that send none are not browsers and pass). docs/security.md.
    cors_origins: tuple[str, ...] = ()
    websocket_origins: tuple[str, ...] = ()
    # Open WebSockets re-authenticate their credentials this often (revocations also arrive at
    # once by the bus); a JWT or key expiring closes its socket when it expires.
    websocket_recheck_seconds: float = 30.0
    # "production" turns insecure defaults (a wildcard CORS origin) into start-up warnings.
    environment: str = "development"

    # Separation of duties: a user made by someone (or given a key by them) within this window
    # may not approve that person's strategy or role grant.
    approval_window_hours: float = 24.0

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
    # Nothing lost in outages (gateway/outbox.py, gateway/jobs/upkeep.py). A RUNNING job whose
    # worker died (no heartbeat) is re-queued within job_lease_ms, and finishes exactly once: a
    # run that lost its lease has its later writes refused. Workers renew their leases every
    # job_heartbeat_ms; the reaper looks every job_reaper_interval_ms, and re-sends the message
    # of a job QUEUED for job_redeliver_after_ms whose message the broker lost. The outbox
    # dispatcher polls every outbox_poll_ms (a local commit wakes it at once) and backs off up to
    # outbox_retry_max_ms while the broker or the bus is down.
    job_lease_ms: int = 30_000
    job_heartbeat_ms: int = 5_000
    job_reaper_interval_ms: int = 2_000
    job_redeliver_after_ms: int = 5_000
    outbox_poll_ms: int = 500
    outbox_retry_max_ms: int = 5_000

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
        if self.environment not in {"development", "production"}:
            raise ValueError("environment must be development or production")
        if min(self.rate_limit_key_per_second, self.rate_limit_tenant_per_second) < 0 or \
                min(self.rate_limit_key_burst, self.rate_limit_tenant_burst) < 1:
            raise ValueError("rate limits must be >= 0 a second with a burst of at least 1")
        if self.websocket_recheck_seconds <= 0:
            raise ValueError("websocket_recheck_seconds must be positive")
        if not 0 <= self.llm_max_repairs <= 10:
            raise ValueError("llm_max_repairs must be 0 to 10")
        if min(self.job_heartbeat_ms, self.job_reaper_interval_ms, self.job_redeliver_after_ms,
               self.outbox_poll_ms, self.outbox_retry_max_ms) <= 0:
            raise ValueError("job and outbox intervals must be positive")
        if 2 * self.job_heartbeat_ms > self.job_lease_ms - self.job_reaper_interval_ms:
            # a live worker must renew at least twice within the lease it writes
            raise ValueError("job_lease_ms must be at least job_reaper_interval_ms + twice "
                             "job_heartbeat_ms")

    @property
    def runs_embedded_worker(self) -> bool:
        if self.embedded_worker == "auto":
            return not self.redis_url
        return self.embedded_worker == "on"

    @property
    def job_lease_written_s(self) -> float:
        """The lease a worker writes: expired, it waits at most one reaper interval."""
        return (self.job_lease_ms - self.job_reaper_interval_ms) / 1000

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
