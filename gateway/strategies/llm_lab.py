"""The LLM side of the strategy lab, assembled from settings: the provider registry (with the
anthropic plugin's config), the news service, and the synthesis service with its job kinds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from gateway.db import Database
from gateway.marketdata import MarketDataService
from gateway.settings import Settings
from gateway.strategies.llm import ANTHROPIC_PLUGIN, LLMProviders
from gateway.strategies.news import NewsService
from gateway.strategies.service import StrategyService
from gateway.strategies.synthesis import SynthesisService
from plugins.host import PluginHost


@dataclass
class LLMLab:
    providers: LLMProviders
    news: NewsService
    synthesis: SynthesisService


def build_llm_lab(
    settings: Settings,
    db: Database,
    plugins: PluginHost,
    market_data: MarketDataService,
    strategies: StrategyService,
    now: Callable[[], datetime],
) -> LLMLab:
    providers = LLMProviders(
        plugins,
        {
            ANTHROPIC_PLUGIN: {
                "api_key": settings.anthropic_api_key,
                "models": list(settings.anthropic_models),
                "timeout_s": settings.anthropic_timeout_s,
                "max_retries": settings.anthropic_max_retries,
            }
        },
    )
    news = NewsService(db, plugins, providers, market_data, max_page_size=settings.max_page_size)
    synthesis = SynthesisService(
        providers, strategies, market_data, news, max_repairs=settings.llm_max_repairs, now=now
    )
    return LLMLab(providers, news, synthesis)
