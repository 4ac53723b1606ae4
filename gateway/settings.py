"""Every knob of the gateway, read from ALPHINTRA_* environment variables.

Settings are a frozen value built once by the caller (the CLI, a test, the app factory) and
passed down; nothing reads the environment after that. Each field carries its help text in its
metadata: `alphintra config` and docs/settings.md (`alphintra config --markdown`) are made from
it, so the reference cannot drift from the code.

A plain dataclass rather than pydantic-settings on purpose: a BaseSettings model reads the
environment in its constructor, so every `Settings(...)` in tests and benches would silently pick
up the CI's ALPHINTRA_* variables; here only `from_env` reads it.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from dataclasses import Field, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, NamedTuple

REGIONS: tuple[str, ...] = ("americas", "emea", "apac")
PREFIX = "ALPHINTRA_"


class SettingsError(ValueError):
    """A setting that cannot be used, said in one line (the CLI prints it and exits 2)."""


_ORIGIN = re.compile(r"^https?://[^/\s]+/?$")  # what a browser sends as Origin (a trailing / allowed)
_VENUE_URL = re.compile(r"^tcp://(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}/?$")


def _help(text: str, *, secret: bool = False) -> dict[str, Any]:
    return {"help": text, "secret": secret}


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {value!r}")


@dataclass(frozen=True)
class Settings:
    database_url: str = field(default="sqlite:///./alphintra.db", metadata=_help(
        "SQLAlchemy URL of the database: SQLite (the embedded default) or "
        "postgresql+psycopg://… (production, several replicas)."))
    redis_url: str | None = field(default=None, metadata=_help(
        "Redis for the job broker, the event bus and shared rate limits. Unset: all in process "
        "(one gateway, worker threads inside it)."))
    host: str = field(default="127.0.0.1", metadata=_help("Address `alphintra serve` listens on."))
    port: int = field(default=8000, metadata=_help("Port `alphintra serve` listens on."))

    # Authentication. HS256 needs jwt_secret; RS256 needs jwt_public_key (PEM text or a path).
    jwt_algorithm: str = field(default="HS256", metadata=_help(
        "Algorithm of incoming JWTs: HS256 (needs jwt_secret) or RS256 (needs jwt_public_key)."))
    jwt_secret: str | None = field(default=None, repr=False, metadata=_help(
        "Shared secret for HS256 JWTs. Unset: JWTs are refused (API keys still work).",
        secret=True))
    jwt_public_key: str | None = field(default=None, metadata=_help(
        "PEM text or file path of the RS256 public key JWTs are checked with."))
    jwt_issuer: str | None = field(default=None, metadata=_help(
        "Required `iss` claim of JWTs (unset: not checked)."))
    jwt_audience: str | None = field(default=None, metadata=_help(
        "Required `aud` claim of JWTs (unset: not checked)."))
    jwt_leeway_seconds: int = field(default=30, metadata=_help(
        "Clock skew allowed on JWT `exp` and `nbf`, in seconds."))
    # Credential and decision caches (gateway/auth/cache.py). Changes made through the gateway
    # invalidate at once on every replica (the bus); the TTL bounds only changes made behind its
    # back (SQL, the CLI without Redis) or a lost event. 5 s: a miss costs one ~0.6 ms look-up,
    # so a busy key pays it on well under 1 % of its requests, and a change made outside shows
    # within the 5 s that revocation of open WebSockets is held to.
    auth_cache_seconds: float = field(default=5.0, metadata=_help(
        "How long a credential look-up (an API key's row, a JWT's user and tenant) is reused; "
        "the key's secret and expiry are still checked on every request. Revocations and "
        "deactivations made through the gateway apply at once on every replica; this bounds "
        "changes made directly in the database. 0: off."))
    auth_cache_size: int = field(default=10_000, metadata=_help(
        "Most credential look-ups kept per process (the oldest go first)."))
    policy_cache_size: int = field(default=50_000, metadata=_help(
        "Most authorisation decisions kept per process, per (user, tenant, object, action); "
        "emptied whenever the policy changes. 0: off."))
    demo_api_key: str | None = field(default=None, repr=False, metadata=_help(
        "The API key `alphintra seed-demo` gives the demo tenant's admin (unset: generated).",
        secret=True))
    # The web console's partner domains (gateway/http/console.py).
    console_hosts: tuple[str, ...] = field(default=(), metadata=_help(
        "The web console's partner domains, comma-separated `host=tenant-slug` pairs: the console "
        "served on such a host shows that tenant's white label before sign-in."))

    # GraphQL protections.
    introspection: bool = field(default=True, metadata=_help(
        "Allow schema introspection (and field suggestions, and `_service` for any caller). "
        "Warned about in production."))
    graphiql: bool = field(default=True, metadata=_help(
        "Serve the GraphiQL IDE on GET /graphql. Warned about in production."))
    max_depth: int = field(default=12, metadata=_help("Deepest selection nesting a document may have."))
    max_aliases: int = field(default=30, metadata=_help("Most aliases a document may use."))
    max_tokens: int = field(default=5_000, metadata=_help("Most lexical tokens a document may have."))
    max_cost: int = field(default=50_000, metadata=_help(
        "Highest estimated cost (fields times list sizes) a document may have."))
    max_page_size: int = field(default=200, metadata=_help("Largest `first`/`last` of a list field."))
    max_body_bytes: int = field(default=1_000_000, metadata=_help(
        "Largest HTTP request body, in bytes (413 above)."))
    request_threads: int = field(default=4, metadata=_help(
        "Threads a process runs GraphQL requests' synchronous work on at once (more wait their "
        "turn on the event loop): few, as on a GIL more threads only contend; enough that a "
        "slow request does not hold up the others."))
    parse_cache_size: int = field(default=512, metadata=_help("Parsed documents kept per process."))
    validation_cache_size: int = field(default=512, metadata=_help(
        "Validation results kept per process."))
    max_response_bytes: int = field(default=8_000_000, metadata=_help(
        "A query whose JSON answer is larger is answered RESPONSE_TOO_LARGE instead (mutations are "
        "delivered whatever their size: their effects are committed). 0: no cap."))
    apq_cache_size: int = field(default=2_000, metadata=_help(
        "Automatic persisted queries: documents remembered by hash, per tenant, in each process."))
    # The response cache (gateway/http/response_cache.py; docs/operations.md, "Response cache").
    response_cache: str = field(default="off", metadata=_help(
        "on: answers of allow-listed queries (jobs, orders) are kept per tenant, roles, document "
        "and variables, and dropped by the domain events that change them; off: never cached."))
    response_cache_ttl_s: float = field(default=30.0, metadata=_help(
        "Longest a cached answer is served, in seconds: bounds an invalidation the bus lost."))
    response_cache_entries: int = field(default=10_000, metadata=_help(
        "Most answers the response cache keeps per process (the least recently used go first)."))
    response_cache_bytes: int = field(default=64_000_000, metadata=_help(
        "Most bytes of answers the response cache keeps per process; a larger answer is not kept."))
    # How an HTTP operation executes (gateway/http/plan/; docs/performance.md, "Issue 14").
    execution: str = field(default="compiled", metadata=_help(
        "compiled: a plan compiled once per schema and document runs queries and mutations, and "
        "graphql-core runs what the compiler does not support; graphql-core: always graphql-core; "
        "verify: every query runs on both and any difference answers INTERNAL_ERROR (tests)."))
    # Token buckets per API key (or JWT user) and per tenant; in Redis when redis_url is set.
    rate_limit_key_per_second: float = field(default=100.0, metadata=_help(
        "Requests a second per API key or JWT user (HTTP and WebSocket subscribes). 0: off."))
    rate_limit_key_burst: int = field(default=200, metadata=_help(
        "Burst of the per-key token bucket."))
    rate_limit_tenant_per_second: float = field(default=500.0, metadata=_help(
        "Requests a second per tenant. 0: off."))
    rate_limit_tenant_burst: int = field(default=1_000, metadata=_help(
        "Burst of the per-tenant token bucket."))
    cors_origins: tuple[str, ...] = field(default=(), metadata=_help(
        "Origins allowed to call /graphql cross-origin (CORS), comma-separated; `*` any (warned "
        "about in production); empty: none. docs/security.md."))
    websocket_origins: tuple[str, ...] = field(default=(), metadata=_help(
        "Origins, besides the gateway's own, allowed to open its WebSocket (clients that send no "
        "Origin header are not browsers and pass)."))
    websocket_recheck_seconds: float = field(default=30.0, metadata=_help(
        "Open WebSockets re-authenticate their credentials this often (revocations also arrive at "
        "once by the bus); a JWT or key expiring closes its socket when it expires."))
    subscription_fanout: bool = field(default=True, metadata=_help(
        "Identical subscriptions (same schema, document, variables, tenant and roles) share one "
        "execution, and each event is encoded once for all of them (docs/operations.md, "
        "\"Subscriptions at scale\"). Off: each subscription executes on its own."))
    websocket_send_queue: int = field(default=256, metadata=_help(
        "Shared-subscription frames a socket may have waiting once its connection's buffers are "
        "full; a socket that falls further behind is closed with 4413 SLOW_CONSUMER."))
    websocket_compression: bool = field(default=False, metadata=_help(
        "Offer per-message compression (permessage-deflate) on WebSockets (`alphintra serve`): "
        "smaller frames for 40-60 % more CPU per frame sent."))
    environment: str = field(default="development", metadata=_help(
        "development or production. Production logs start-up warnings for insecure settings "
        "(GraphiQL, introspection, an unauthenticated /metrics, a wildcard CORS origin)."))
    metrics_token: str | None = field(default=None, repr=False, metadata=_help(
        "Bearer token /metrics requires (`Authorization: Bearer …`). Unset: /metrics is open "
        "(warned about in production).", secret=True))

    approval_window_hours: float = field(default=24.0, metadata=_help(
        "Separation of duties: a user made by someone (or given a key by them) within this window "
        "may not approve that person's strategy or role grant."))

    # Jobs and events.
    worker_threads: int = field(default=4, metadata=_help(
        "Job threads of a worker (and of the gateway's embedded worker)."))
    embedded_worker: str = field(default="auto", metadata=_help(
        "auto: worker threads inside the gateway without Redis, none with it; on/off force it."))
    default_region: str = field(default="americas", metadata=_help(
        "The queue (a region) the job actor is declared on; one of `regions`."))
    job_max_retries: int = field(default=3, metadata=_help(
        "Retries of a job that failed unexpectedly or lost its worker."))
    job_min_backoff_ms: int = field(default=500, metadata=_help("Shortest wait before a retry, ms."))
    job_max_backoff_ms: int = field(default=30_000, metadata=_help("Longest wait before a retry, ms."))
    job_time_limit_ms: int = field(default=3_600_000, metadata=_help("Longest a job may run, ms."))
    redis_heartbeat_timeout_ms: int = field(default=60_000, metadata=_help(
        "Dramatiq's Redis broker: a consumer silent this long is considered dead, ms."))
    redis_maintenance_chance: int = field(default=1_000, metadata=_help(
        "Dramatiq's Redis broker: one in this many operations also runs its maintenance."))
    redis_namespace: str = field(default="alphintra", metadata=_help(
        "Prefix of every Redis key, queue and channel (several deployments can share one Redis)."))
    # Nothing lost in outages (gateway/outbox.py, gateway/jobs/upkeep.py, docs/operations.md).
    job_lease_ms: int = field(default=30_000, metadata=_help(
        "A RUNNING job whose worker died (no heartbeat) is re-queued within this, ms; at least "
        "job_reaper_interval_ms + twice job_heartbeat_ms."))
    job_heartbeat_ms: int = field(default=5_000, metadata=_help(
        "Workers renew the lease of each job they run this often, ms."))
    job_reaper_interval_ms: int = field(default=2_000, metadata=_help(
        "How often the job reaper looks for expired leases and lost messages, ms."))
    job_redeliver_after_ms: int = field(default=5_000, metadata=_help(
        "A job QUEUED this long whose message the broker lost is sent again, ms."))
    orders_unsent_after_ms: int = field(default=60_000, metadata=_help(
        "An order claimed but not acknowledged by its venue for this long is taken for one whose "
        "process died between the claim and the send, and rejected ORDER_NOT_SENT by the venue "
        "clock's sweep, ms."))
    venue_url: str | None = field(default=None, metadata=_help(
        "Address of `alphintra venue serve` (tcp://host:port, e.g. tcp://127.0.0.1:7710): the "
        "built-in simulated venues (same names and MICs) are that one process's, which restores, "
        "clocks and applies their reports, instead of books in this process. Required with Redis "
        "(several processes), so an order placed through one process crosses one sent through "
        "another. Both ends prove they hold the same secret key."))
    outbox_poll_ms: int = field(default=500, metadata=_help(
        "Outbox dispatcher poll, ms (a local commit wakes it at once)."))
    outbox_retry_max_ms: int = field(default=5_000, metadata=_help(
        "Longest wait between outbox delivery attempts while the broker or bus is down, ms."))
    # The audit trail (gateway/audit/lanes.py).
    audit_lanes: int = field(default=4, metadata=_help(
        "Lanes of each tenant's audit trail, 1 to 16: hash chains its writers (gateway "
        "workers, the venue process) append to at once instead of taking turns on one; "
        "verification, checkpoints and exports cover every lane. PostgreSQL only: on SQLite, "
        "whose writers take turns anyway, always 1."))

    # Encryption at rest (plugin secrets, signing keys). gateway/secrets.py.
    secret_key: str | None = field(default=None, repr=False, metadata=_help(
        "Key that seals secrets at rest (plugin secrets, signing keys): 32 bytes, base64. With "
        "PostgreSQL or Redis configured, this or an absolute secret_key_file is required.",
        secret=True))
    secret_key_file: str = field(default=".alphintra-secret.key", metadata=_help(
        "File holding the secret key (base64). With SQLite and no Redis a relative path is made on "
        "first use (fine for `make run`); with PostgreSQL or Redis it must be an absolute path to "
        "an existing file."))
    secret_keys_previous: str = field(default="", repr=False, metadata=_help(
        "Earlier secret keys (base64, comma-separated), accepted for opening only: set while "
        "rotating, until `alphintra secrets reseal` has moved everything to the current key "
        "(docs/operations.md, Rotate keys).", secret=True))

    # Language models. No key: the offline provider answers (templates and a lexicon).
    anthropic_api_key: str | None = field(default=None, repr=False, metadata=_help(  # never logged
        "Anthropic API key for strategy synthesis and news analysis. Unset: the offline provider "
        "answers (templates and a lexicon), and every result says it is not an LLM.", secret=True))
    anthropic_models: tuple[str, ...] = field(
        default=("claude-sonnet-4-6", "claude-haiku-4-5"), metadata=_help(
            "Models to use, comma-separated; the first for synthesis."))
    anthropic_timeout_s: int = field(default=60, metadata=_help("Timeout of one model call, s."))
    anthropic_max_retries: int = field(default=2, metadata=_help("Retries of a failed model call."))
    llm_max_repairs: int = field(default=2, metadata=_help(
        "Answers fed back with their validation errors before giving up (0 to 10)."))

    # DeFi chains (gateway/defi/chain.py).
    defi_embedded: bool = field(default=True, metadata=_help(
        "Run the in-process EVM chain `embedded`, built and populated with the demo world on "
        "first use."))
    defi_chain_url: str | None = field(default=None, metadata=_help(
        "JSON-RPC URL of `alphintra chain serve` (e.g. http://127.0.0.1:8545): the embedded chain "
        "(same name and id) is that shared process instead of one in this process. Required with "
        "Redis while defi_embedded is on, so every replica and worker sees one chain."))
    defi_chains: str = field(default="", metadata=_help(
        "JSON-RPC chains: JSON, or `id:name:url[:explorer]` comma-separated "
        "(gateway/defi/chain.py)."))
    defi_health_factor_floor: str = field(default="1.2", metadata=_help(
        "A borrow or withdrawal that would leave the health factor under this floor is refused "
        "before anything is sent (a decimal, above 1)."))
    defi_event_poll_ms: int = field(default=500, metadata=_help("DeFi event poller's pace, ms."))

    warm_on_start: bool = field(default=True, metadata=_help(
        "Load calendars, train the pattern model and deploy the embedded chain's demo world in "
        "the background at start-up, so no request pays for it; /readyz answers 503 until done."))

    # Real market data (plugins/builtin/file_source.py has the layout).
    marketdata_files: tuple[str, ...] = field(default=(), metadata=_help(
        "CSV/Parquet files and directories (comma-separated) the built-in file source serves to "
        "every tenant instead of its bundled sample; their instruments win over the twin's."))
    marketdata_adjust: bool = field(default=False, metadata=_help(
        "Serve unadjusted rows with an `adjustment_factor` adjusted."))
    marketdata_tenant_dir: str = field(default="", metadata=_help(
        "Each tenant's own files: `<dir>/<tenant id>/` serves that tenant only (its data wins)."))

    # The plugin sandbox (gateway/marketplace/sandbox/).
    plugin_sandbox: str = field(default="required", metadata=_help(
        "required: marketplace plugins run only with the minimum isolation layers (a dedicated "
        "uid, Landlock, seccomp, rlimits); best-effort: with what the host has (logged)."))
    plugin_bwrap: bool = field(default=True, metadata=_help("Use bubblewrap where it works."))
    plugin_cgroups: bool = field(default=True, metadata=_help("Use cgroups where they work."))
    plugin_call_timeout_s: float = field(default=5.0, metadata=_help("Longest plugin call, s."))
    plugin_start_timeout_s: float = field(default=10.0, metadata=_help(
        "Longest a plugin worker may take to start, s."))
    plugin_idle_s: float = field(default=300.0, metadata=_help(
        "A plugin worker with no call for this long stops, s (not connectors or rule packs)."))
    plugin_memory_mb: int = field(default=512, metadata=_help("Memory limit of a plugin worker, MB."))
    plugin_cpu_fraction: float = field(default=0.5, metadata=_help(
        "CPU limit of a plugin worker, as a fraction of one core."))
    plugin_pids: int = field(default=64, metadata=_help("Process limit of a plugin worker."))
    plugin_quarantine_failures: int = field(default=5, metadata=_help(
        "Crashes or timeouts within 10 minutes that quarantine a plugin."))
    plugin_egress_allow_private: bool = field(default=False, metadata=_help(
        "Let the plugin egress proxy connect to loopback and private addresses (tests only)."))

    # Operations.
    log_level: str = field(default="INFO", metadata=_help("Python logging level."))
    log_json: bool = field(default=True, metadata=_help("Log one JSON object a line."))
    otel_exporter: str = field(default="none", metadata=_help(
        "OpenTelemetry span exporter: none, console or otlp (OTEL_EXPORTER_OTLP_* configure it)."))
    service_name: str = field(default="alphintra-gateway", metadata=_help(
        "service.name of traces."))
    regions: tuple[str, ...] = field(default=REGIONS, metadata=_help(
        "Job queue regions, comma-separated."))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read ALPHINTRA_<FIELD> for each field; explicit overrides win. A bad value raises
        SettingsError naming the variable."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(env_name(f.name))
            if raw is not None:
                values[f.name] = _parse(f, raw)
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
            raise SettingsError(f"default_region {self.default_region!r} not in {self.regions}")
        if self.jwt_algorithm not in {"HS256", "RS256"}:
            raise SettingsError("jwt_algorithm must be HS256 or RS256")
        if self.embedded_worker not in {"auto", "on", "off"}:
            raise SettingsError("embedded_worker must be auto, on or off")
        if self.otel_exporter not in {"none", "console", "otlp"}:
            raise SettingsError("otel_exporter must be none, console or otlp")
        if self.plugin_sandbox not in {"required", "best-effort"}:
            raise SettingsError("plugin_sandbox must be required or best-effort")
        if self.environment not in {"development", "production"}:
            raise SettingsError("environment must be development or production")
        if not min(self.rate_limit_key_per_second, self.rate_limit_tenant_per_second) >= 0 or \
                min(self.rate_limit_key_burst, self.rate_limit_tenant_burst) < 1:  # NaN fails
            raise SettingsError("rate limits must be >= 0 a second with a burst of at least 1")
        for origin in (*self.cors_origins, *self.websocket_origins):
            if origin != "*" and not _ORIGIN.match(origin):
                raise SettingsError(f"origin {origin!r} is not scheme://host[:port] (or *)")
        if self.request_threads < 1:
            raise SettingsError("request_threads must be >= 1")
        if self.max_response_bytes < 0 or self.apq_cache_size < 1:
            raise SettingsError("max_response_bytes must be >= 0 and apq_cache_size >= 1")
        if not min(self.auth_cache_seconds, self.auth_cache_size, self.policy_cache_size) >= 0:
            raise SettingsError("auth_cache_seconds, auth_cache_size and policy_cache_size must be >= 0")
        if self.execution not in {"compiled", "graphql-core", "verify"}:
            raise SettingsError("execution must be compiled, graphql-core or verify")
        if self.response_cache not in {"on", "off"}:
            raise SettingsError("response_cache must be on or off")
        if not self.response_cache_ttl_s > 0 or min(self.response_cache_entries,
                                                     self.response_cache_bytes) < 1:
            raise SettingsError("response_cache_ttl_s, _entries and _bytes must be positive")
        if self.websocket_recheck_seconds <= 0:
            raise SettingsError("websocket_recheck_seconds must be positive")
        if self.websocket_send_queue < 1:
            raise SettingsError("websocket_send_queue must be at least 1")
        if not 0 <= self.llm_max_repairs <= 10:
            raise SettingsError("llm_max_repairs must be 0 to 10")
        if not 1 <= self.audit_lanes <= 16:  # gateway/audit/lanes.py: MAX_LANES
            raise SettingsError(f"{env_name('audit_lanes')} must be 1 to 16, got {self.audit_lanes}")
        if min(self.job_heartbeat_ms, self.job_reaper_interval_ms, self.job_redeliver_after_ms,
               self.outbox_poll_ms, self.outbox_retry_max_ms, self.orders_unsent_after_ms) <= 0:
            raise SettingsError("job, outbox and unsent-order intervals must be positive")
        if 2 * self.job_heartbeat_ms > self.job_lease_ms - self.job_reaper_interval_ms:
            # a live worker must renew at least twice within the lease it writes
            raise SettingsError("job_lease_ms must be at least job_reaper_interval_ms + twice "
                                "job_heartbeat_ms")
        if self.secret_key:
            decode_key(self.secret_key, env_name("secret_key"))
        self.previous_secret_keys()
        if self.venue_url is not None and not _VENUE_URL.match(self.venue_url):
            raise SettingsError(f"{env_name('venue_url')} {self.venue_url!r} is not tcp://host:port")

    def previous_secret_keys(self) -> list[bytes]:
        name = env_name("secret_keys_previous")
        return [decode_key(part, f"{name} (key {i + 1})")
                for i, part in enumerate(p for p in self.secret_keys_previous.split(",") if p.strip())]

    def secret_key_problem(self) -> str | None:
        """Why these settings may not locate the secret key, or None. With a shared database or
        Redis, several processes (in different directories, on different hosts) must open what
        each sealed: a key file made on first use beside the working directory would silently
        differ per process, so the key must be given explicitly."""
        if self.secret_key or not (self.redis_url or not self.is_sqlite):
            return None
        name = env_name("secret_key_file")
        if not Path(self.secret_key_file).is_absolute():
            return (f"{env_name('secret_key')} or an absolute {name} is required with PostgreSQL "
                    f"or Redis (a relative key file differs per working directory)")
        if not Path(self.secret_key_file).is_file():
            return (f"{name}: {self.secret_key_file} does not exist (make it once with "
                    f"`head -c 32 /dev/urandom | base64 > {self.secret_key_file}`, then share it)")
        return None

    def chain_problem(self) -> str | None:
        """Why `serve`/`worker` must not start with these settings' chain, or None: beside Redis
        (several processes) an in-process chain would differ per process."""
        if self.redis_url and self.defi_embedded and not self.defi_chain_url:
            return (f"{env_name('redis_url')} is set but the DeFi chain would run inside this "
                    f"process (each replica its own): run `alphintra chain serve` and set "
                    f"{env_name('defi_chain_url')}=http://127.0.0.1:8545, or set "
                    f"{env_name('defi_embedded')}=false")
        return None

    def venue_problem(self) -> str | None:
        """Why a process that sends orders (`serve`) must not start with these settings, or
        None: beside Redis (several processes) venues in process would each keep their own
        books, so orders through one process would never meet orders through another."""
        if self.redis_url and not self.venue_url:
            return (f"{env_name('redis_url')} is set but the simulated venues would run inside this "
                    f"process (each process its own books): run `alphintra venue serve` and set "
                    f"{env_name('venue_url')}=tcp://127.0.0.1:7710")
        return None

    def startup_warnings(self) -> list[str]:
        """Insecure settings worth a warning in production (a wildcard CORS origin is warned about
        where CORS is set up, gateway/http/middleware.py)."""
        if self.environment != "production":
            return []
        warnings = []
        if self.graphiql:
            warnings.append("GraphiQL is served on GET /graphql (ALPHINTRA_GRAPHIQL=false to stop)")
        if self.introspection:
            warnings.append("introspection is on: anyone authenticated can read the whole schema "
                            "(ALPHINTRA_INTROSPECTION=false to stop)")
        if not self.metrics_token:
            warnings.append("/metrics is unauthenticated (set ALPHINTRA_METRICS_TOKEN, or keep the "
                            "port off the public network)")
        return warnings

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


def env_name(name: str) -> str:
    return f"{PREFIX}{name.upper()}"


def decode_key(value: str, where: str) -> bytes:
    """A base64 32-byte key, or SettingsError saying what is wrong with it (never the value)."""
    try:
        key = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SettingsError(f"{where}: expected 32 bytes in base64, got something that is not "
                            f"base64") from None
    if len(key) != 32:
        raise SettingsError(f"{where}: expected 32 bytes in base64, got {len(key)} bytes")
    return key


_EXPECTED = {bool: "true or false", int: "an integer", float: "a number"}


def _parse(f: Field[Any], raw: str) -> Any:
    default = f.default
    # bool before int: a bool is an int
    kind = next((t for t in (bool, int, float) if isinstance(default, t)), None)
    if kind is not None:
        try:
            return _bool(raw) if kind is bool else kind(raw.strip())
        except ValueError:
            shown = "***" if f.metadata.get("secret") else raw
            raise SettingsError(f'{env_name(f.name)}: expected {_EXPECTED[kind]}, '
                                f'got "{shown}"') from None
    if isinstance(default, tuple):
        return tuple(p.strip() for p in raw.split(",") if p.strip())
    return raw or None


class SettingInfo(NamedTuple):
    name: str
    env: str
    value: str       # as shown: secrets masked
    default: str
    source: str      # "default" or the variable it came from
    help: str


_URL_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")


def _shown(f: Field[Any], value: Any) -> str:
    if value is None:
        return ""
    if f.metadata.get("secret"):
        return "***"
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return _URL_PASSWORD.sub(r"\1***@", str(value))  # a password inside a URL


def describe(settings: Settings, environ: Mapping[str, str] | None = None) -> list[SettingInfo]:
    """Every setting with its value (secrets masked), where it came from, and its help."""
    environ = os.environ if environ is None else environ
    rows = []
    for f in fields(Settings):
        name = env_name(f.name)
        source = name if name in environ else "default"
        rows.append(SettingInfo(f.name, name, _shown(f, getattr(settings, f.name)),
                                _shown(f, f.default), source, f.metadata.get("help", "")))
    return rows


def markdown_reference() -> str:
    """docs/settings.md: every setting, its default and help (tests keep the file equal to this)."""
    lines = ["# Settings", "",
             "Generated by `alphintra config --markdown > docs/settings.md` from gateway/settings.py;",
             "tests/test_settings_config.py fails when this file is out of date.", "",
             "Every setting is read from its `ALPHINTRA_*` environment variable. Booleans take",
             "true/false (also 1/0, yes/no, on/off); lists are comma-separated. `alphintra config`",
             "prints the values in effect and where each came from (secrets masked). A bad value",
             "stops `alphintra` with one line on stderr and exit code 2.", "",
             "| Variable | Default | What |", "|---|---|---|"]
    for row in describe(Settings(), environ={}):
        default = f"`{row.default}`" if row.default else ""
        text = row.help.replace("|", "\\|")  # a pipe would end the table cell
        lines.append(f"| `{row.env}` | {default} | {text} |")
    return "\n".join(lines) + "\n"
