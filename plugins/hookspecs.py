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
    ExchangeConnector,
    FxRateProvider,
    MarketDataSource,
    PluginContext,
    PortfolioOptimiser,
    RulePack,
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
