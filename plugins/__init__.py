"""The plugin contract: what a plugin imports, and nothing of the gateway's internals.

    from plugins import hookimpl, PluginContext, Instrument, Bar, Quote, FxRate

`plugins.hookspecs` documents every hook; `plugins.host` is the gateway's side of the contract;
`plugins.builtin` holds the project's own providers, written on the same contract as a
partner's. Publishing, signing and the marketplace come with issue 5.
"""

from plugins.sdk import (
    Bar,
    FxRate,
    FxRateProvider,
    Instrument,
    MarketDataSource,
    PluginContext,
    Quote,
    SessionWindow,
    Trade,
    VenueDirectory,
    VenueInfo,
    hookimpl,
)

__all__ = [
    "Bar",
    "FxRate",
    "FxRateProvider",
    "Instrument",
    "MarketDataSource",
    "PluginContext",
    "Quote",
    "SessionWindow",
    "Trade",
    "VenueDirectory",
    "VenueInfo",
    "hookimpl",
]
