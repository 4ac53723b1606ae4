"""The simulated exchange as a plugin: one `SimulatedExchange` for every venue of
`context.venues`, fed by its own market twin.

Config: `seed` (the twin's seed, default 7: the same as the market-data twin's, so the
books trade around the prices clients see in quotes and bars), `liquidity` (false: no twin,
books of client orders alone, any symbol), `depth` (synthetic levels a side, default 5),
`fees` (per MIC `{"maker_bps": "…", "taker_bps": "…"}`, over the illustrative defaults).
"""

from __future__ import annotations

from plugins.builtin.market_twin import DEFAULT_SEED, MarketTwin
from plugins.builtin.sim_exchange.connector import DEFAULT_DEPTH, SimulatedExchange, parse_fees
from plugins.sdk import ExchangeConnector, MarketDataSource, PluginContext, hookimpl


@hookimpl
def alphintra_exchange_connectors(context: PluginContext) -> list[ExchangeConnector]:
    if context.venues is None:
        raise RuntimeError("the simulated exchange needs a venue directory for sessions and rules")
    config = context.config
    sources: list[MarketDataSource] = []
    if config.get("liquidity", True):
        sources.append(MarketTwin(context.venues, seed=int(config.get("seed", DEFAULT_SEED)),
                                  logger=context.logger))
    return [SimulatedExchange(context.venues, sources=sources, fees=parse_fees(config.get("fees", {})),
                              depth=int(config.get("depth", DEFAULT_DEPTH)), logger=context.logger)]
