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

from plugins.sdk import PROJECT, FxRateProvider, MarketDataSource, PluginContext

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
