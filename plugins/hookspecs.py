"""The plugin contract: every hook the gateway calls.

Conventions for every hook:
- Hooks are named `alphintra_<what>` and take keyword arguments only (pluggy's rule).
- A hook returning providers returns a list (possibly empty); the gateway collects the lists
  of all plugins, built-ins first. No hook here is `firstresult` unless it says so.
- The gateway calls each plugin's implementation separately: one that raises, or returns the
  wrong shape, fails only itself (logged, and reported as PLUGIN_FAILED where a request
  depended on it); the others are still used.
"""

from __future__ import annotations

import pluggy

from plugins.sdk import (
    PROJECT,
    DefiProtocol,
    ExchangeConnector,
    FxRateProvider,
    LLMProvider,
    MarketDataSource,
    NewsSource,
    PluginContext,
    PortfolioOptimiser,
    RulePack,
    SchemaExtension,
    Theme,
)

hookspec = pluggy.HookspecMarker(PROJECT)


@hookspec
def alphintra_market_data_sources(context: PluginContext) -> list[MarketDataSource]:
    """Market and alternative data sources this plugin offers.

    Args:
        context: the plugin's configuration and logger; `context.venues` answers venue facts
            and trading sessions, so a source can respect them.

    Returns:
        A list of objects following `plugins.sdk.MarketDataSource`: `instruments()` lists what
        it covers (normalised `Instrument`s), `bars(...)` and `quote(...)` answer for those.

    When: once when the plugin is activated for the gateway (the result is kept); the sources
    are then called on requests for bars and quotes of their instruments.
    """


@hookspec
def alphintra_fx_rate_providers(context: PluginContext) -> list[FxRateProvider]:
    """FX rate providers this plugin offers.

    Args:
        context: as for `alphintra_market_data_sources`.

    Returns:
        A list of objects following `plugins.sdk.FxRateProvider`: spot `rate(base, quote, at)`,
        `history(...)` for hedge-ratio estimation, and `interest_rate(currency, at)` for
        forward pricing by covered interest parity. A provider answers None for what it does
        not cover; the gateway asks the next one.

    When: once at activation; the providers are then called whenever exposure is valued or a
    hedge is priced.
    """


@hookspec
def alphintra_portfolio_optimisers(context: PluginContext) -> list[PortfolioOptimiser]:
    """Portfolio optimisers this plugin offers: subset selectors for `OptimisationProblem`.

    Args:
        context: the plugin's configuration and logger (`context.venues` is not needed here
            and may be None). The built-ins read their defaults from `context.config`.

    Returns:
        A list of objects following `plugins.sdk.PortfolioOptimiser`: a `name` unique across
        plugins (clients choose a backend by it; when two plugins offer one name the first
        collected wins, and built-ins come first), `kind` "quantum" or "classical",
        `max_assets` and `max_qubits` (None for classical), and `solve(problem, deadline_s)`
        returning an `OptimisationAnswer`. `solve` raises `OptimiserRefused` for a problem it
        cannot take (its message is shown to clients), `OptimiserTimedOut` when it cannot answer
        by the deadline, and `NoFeasiblePortfolio` when no subset satisfies the constraints;
        anything else counts as the optimiser failing.

    When: once when the plugin is activated (the list is kept); `solve` is then called by
    `portfolio.optimize` jobs on worker threads, possibly several at once, so an optimiser keeps
    no per-call state on itself. The gateway checks every answer (it recomputes the objective
    and feasibility from `selected`) and falls back to a classical optimiser when a quantum one
    fails, refuses, exceeds its qubit cap or its deadline, or answers an infeasible subset.
    """


@hookspec
def alphintra_exchange_connectors(context: PluginContext) -> list[ExchangeConnector]:
    """Exchange connectors this plugin offers: the ways orders reach venues.

    Args:
        context: the plugin's configuration and logger; `context.venues` answers venue facts,
            trading sessions and each venue's lot and tick sizes, which a connector needs to
            accept, queue or reject orders as the venue would.

    Returns:
        A list of objects following `plugins.sdk.ExchangeConnector`: a `name` unique across
        plugins, `mics()` (the ISO 10383 venues it reaches), `submit(order)`,
        `cancel(client_order_id, mic)` and `replace(client_order_id, mic, quantity,
        limit_price)` answering FIX-shaped `ExecutionReport`s, `quote_for(order)` (a
        `VenueQuote` for smart order routing, None for an instrument it does not trade), and
        `on_clock(at)` for time-driven events (DAY and GTD expiry, queued orders reaching the
        open, fills as the market moves). A connector reports a venue's refusal as a REJECTED
        report with a stable `reject_code`; it raises only when it is broken.

    When: once when the plugin is activated (the list is kept for the process). The gateway's
    router asks every connector reaching a candidate venue for `quote_for`, then submits to
    the chosen one; `on_clock` is called as the gateway's clock advances. A connector is
    called by one thread at a time. Isolation: a plugin whose hook raises or answers the wrong
    shape is left out and logged; the other plugins' connectors are still used. A connector
    that raises while answering fails only the order that needed it (PLUGIN_FAILED naming the
    plugin), and a router's quote request leaves it out of that decision.
    """


@hookspec
def alphintra_compliance_rule_packs(context: PluginContext) -> list[RulePack]:
    """Pre-trade compliance rule packs this plugin offers, usually one per jurisdiction.

    Args:
        context: the plugin's configuration and logger. Rules get everything else from the
            `CheckContext` of each order, never from I/O.

    Returns:
        A list of objects following `plugins.sdk.RulePack`: `jurisdiction` (a code: US, EU,
        UK, JP, HK, SG, AU, or any other a plugin covers), `regulators`, `applies(
        venue_country, client_domicile)` (pure: the gateway caches its answer per pair) and
        `check(ctx)` answering a list of `Denial`s, each with a stable code and the limit and
        value that tripped it; an empty list passes. `plugins.sdk.RuleSetPack` builds one
        from named `ComplianceRule`s and also reports each rule's time.

    When: once when the plugin is activated (the list is kept); `check` is then called for
    every order, before it reaches a venue, possibly from several threads at once, so a pack
    keeps no per-call state. It must answer in microseconds.

    The gateway decides which jurisdictions an order falls under (its venue's and its
    client's, gateway/compliance/jurisdictions.py) and runs every pack that applies; all must
    pass. It fails closed: a pack that raises or answers the wrong shape denies the order
    with COMPLIANCE_PACK_FAILED naming the plugin (the other packs still run and their
    denials are kept), and an order under a jurisdiction no pack covers is denied with
    COMPLIANCE_NO_RULE_PACK. A plugin whose hook raises is left out and logged.
    """


@hookspec
def alphintra_llm_providers(context: PluginContext) -> list[LLMProvider]:
    """Language-model providers this plugin offers (strategy synthesis, news analysis).

    Args:
        context: the plugin's configuration and logger. The built-in anthropic provider reads
            `api_key`, `models`, `timeout_s`, `max_retries` and an optional `http_client` (an
            `httpx2.Client`; tests pass one on a mock transport) from `context.config`.

    Returns:
        A list of objects following `plugins.sdk.LLMProvider`: a `name` unique across plugins,
        `models` (the first is the default), `is_llm` (False for rule-based providers, and
        every result built on them says so), and `complete_structured(model, system, messages,
        tool, max_tokens, facts)` answering a `StructuredAnswer`: the input of a forced call
        of `tool` (its `input_schema` is the gateway's JSON Schema, e.g. the strategy DSL), or
        the refusal text. It raises `LLMTimeout`, `LLMRateLimited` or `LLMUnavailable` when
        it cannot answer; anything else counts as LLM_UNAVAILABLE. A provider without
        credentials returns an empty list rather than failing later.

    When: once when the plugin is activated (the list is kept); calls then come from job
    workers, possibly several at once, so a provider keeps no per-call state. The gateway
    validates every answer itself (it never trusts a tool input) and feeds validation errors
    back for a bounded number of repairs.
    """


@hookspec
def alphintra_news_sources(context: PluginContext) -> list[NewsSource]:
    """News sources this plugin offers.

    Args:
        context: the plugin's configuration and logger (the built-in `news-file` reads `path`).

    Returns:
        A list of objects following `plugins.sdk.NewsSource`: a `name` and `items(tickers,
        start, end, text)` answering `NewsItem`s (UTC timestamps, tickers as instrument keys
        SYMBOL.MIC) filtered by any ticker in `tickers`, `start <= published_at < end` and a
        case-insensitive `text` match in headline or body; None means no filter.

    When: once at activation (the list is kept); `items` is called on `newsItems` and
    `analyzeNews` requests. A source that raises fails only itself (logged, PLUGIN_FAILED when
    a request needed it).
    """


@hookspec
def alphintra_schema_extensions(context: PluginContext) -> list[SchemaExtension]:
    """GraphQL this plugin adds to the schema of every tenant that installed it.

    Args:
        context: the installing tenant's context of the plugin (its configuration, logger and
            declared capabilities).

    Returns:
        A list of `plugins.sdk.SchemaExtension`: strawberry types whose fields join Query,
        Mutation and Subscription, and extra types. A plugin imports strawberry and
        `plugins.sdk`, never the gateway; its resolvers reach the calling tenant's own context
        with `plugins.sdk.current_context()`. The types returned are shared by every tenant
        that installed the same versions with the same configuration, so a resolver must read
        the tenant (its id, its data) from `current_context()` when it runs, never from the
        `context` captured here.

    When: at install, upgrade, rollback and configuration, in the service call and off the
    request path; the tenant's schema (core + built-ins + every installed extension) is composed
    then, cached by the installed set and a keyed digest of each plugin's configuration, and
    swapped atomically. All results are used (not
    firstresult). A type or field name that collides with the core schema or another
    installed plugin refuses the install with PLUGIN_SCHEMA_CONFLICT; a hook that raises or
    answers the wrong shape refuses it with PLUGIN_FAILED. At request time each root field a
    plugin contributes runs with a timeout, and its failure is PLUGIN_FAILED naming the
    plugin, for that field only.
    """


@hookspec
def alphintra_white_label(context: PluginContext) -> Theme | None:
    """The white-label theme this plugin gives its tenant.

    Args:
        context: the tenant's context of the plugin (its configuration may choose colours).

    Returns:
        A `plugins.sdk.Theme`, or None to leave branding to others.

    When: when the tenant's branding is read (`whiteLabel`), for the tenant's installed
    plugins, most recently installed first. First result wins (firstresult per tenant: the
    first non-None answer is the tenant's theme); with none, `plugins.sdk.DEFAULT_THEME`. A
    plugin that raises, hangs or answers something other than a Theme is skipped and logged.
    """


@hookspec
def alphintra_feature_flags(context: PluginContext) -> dict[str, bool]:
    """Feature flags this plugin switches for its tenant.

    Args:
        context: the tenant's context of the plugin.

    Returns:
        A dict of flag name to bool.

    When: when the tenant's flags are read (`marketplace { featureFlags }`). All results are
    merged (not firstresult); when two plugins set one flag, the most recently installed
    wins. A plugin that raises or answers another shape is skipped and logged.
    """


@hookspec
def alphintra_activated(context: PluginContext) -> None:
    """The plugin was activated for a tenant (installed, upgraded to, or rolled back to).

    Args:
        context: the tenant's context of the plugin.

    Returns:
        Nothing (a return value is ignored).

    When: after the tenant's new schema is composed and before the installation is
    committed; raising (or exceeding the call timeout) refuses the install with
    PLUGIN_FAILED and nothing is kept. All implementations run (not firstresult).
    """


@hookspec
def alphintra_deactivated(context: PluginContext) -> None:
    """The plugin stopped serving a tenant: uninstalled, replaced by an upgrade or rollback,
    or delisted by the platform (then for every tenant at once).

    Args:
        context: the tenant's context of the plugin (the version being deactivated).

    Returns:
        Nothing (a return value is ignored).

    When: after the change is committed. A plugin that raises or hangs here is logged and
    deactivated all the same. All implementations run (not firstresult).
    """


@hookspec
def alphintra_defi_protocols(context: PluginContext) -> list[DefiProtocol]:
    """DeFi pool protocols this plugin offers (constant product, stable swap, ...).

    Args:
        context: the plugin's configuration and logger. A protocol gets each chain as a
            `plugins.sdk.DefiChainView` when it is asked for pools, never from the context.

    Returns:
        A list of objects following `plugins.sdk.DefiProtocol`: a `name` unique across plugins
        (the key of `DefiChainView.directory`), `pools(chain)` listing its pools on a chain
        with a snapshot of their state read through `chain.web3`, `refresh(chain, pool)`,
        `quote(pool, token_in, token_out, amount_in)` off-chain in integers (no I/O; it must
        equal the contract's own view, `onchain_quote`), `mid_price` for price impact, and
        `swap_call(...)` building a swap transaction that reverts under `min_out` or past
        `deadline`.

    When: once when the plugin is activated (the list is kept). `pools` is called when a
    chain's pool set is loaded and `refresh` before a swap; `quote` is called many times per
    route search, from several threads at once, so a protocol keeps no per-call state. A
    protocol whose `pools` raises is left out of that chain (logged); one whose `quote` raises
    anything but `DefiQuoteRefused` leaves that pool out of the route search.
    """
