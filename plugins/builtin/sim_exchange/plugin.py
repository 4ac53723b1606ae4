"""The simulated exchange as a plugin: one `SimulatedExchange` for every venue of
`context.venues`, fed by its own market twin.

Config: `seed` (the twin's seed, default 7: the same as the market-data twin's, so the
books trade around the prices clients see in quotes and bars), `liquidity` (false: no twin,
books of client orders alone, any symbol), `depth` (synthetic levels a side, default 5),
`fees` (per MIC `{"maker_bps": "…", "taker_bps": "…"}`, over the illustrative defaults), and
the liquidity law (liquidity.py): `law_depth` (levels a side, default 12), `impact_coefficient`
(Y, default 1), `participation_rate` (default 0.1), `participation_window_minutes` (default 15),
`impact_half_life_seconds` (default 300).
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from plugins.builtin.market_twin import DEFAULT_SEED, MarketTwin
from plugins.builtin.sim_exchange.connector import DEFAULT_DEPTH, SimulatedExchange, parse_fees
from plugins.builtin.sim_exchange.liquidity import DEFAULT_LAW_DEPTH, LiquiditySettings
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
    defaults = LiquiditySettings()
    liquidity = LiquiditySettings(
        impact_coefficient=Decimal(str(config.get("impact_coefficient", defaults.impact_coefficient))),
        participation_rate=Decimal(str(config.get("participation_rate", defaults.participation_rate))),
        participation_window=timedelta(minutes=float(config.get(
            "participation_window_minutes", defaults.participation_window.total_seconds() / 60))),
        half_life=timedelta(seconds=float(config.get(
            "impact_half_life_seconds", defaults.half_life.total_seconds()))))
    return [SimulatedExchange(context.venues, sources=sources, fees=parse_fees(config.get("fees", {})),
                              depth=int(config.get("depth", DEFAULT_DEPTH)), logger=context.logger,
                              liquidity=liquidity,
                              law_depth=int(config.get("law_depth", DEFAULT_LAW_DEPTH)))]
