"""The LLM side of the strategy lab: synthesis and self-improvement jobs, news and its analysis,
and the language-model providers on offer.

Permissions: `synthesizeStrategy` and `improveStrategy` need "strategy"/"write" (they store
versions); `llmProviders` "strategy"/"read"; `newsItems` "news"/"read"; `analyzeNews`
"news"/"analyze" (it calls the configured models; admin and trader). Synthesis and improvement
are Jobs (kinds `strategy.synthesize`, `strategy.improve`); their results are described in
docs/design/strategy-lab.md and always say `provider` and `is_llm`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from gateway.errors import InvalidInput
from gateway.strategies.news import ItemAnalysis, NewsAnalysisResult, encode_news_cursor
from gateway.strategies.synthesis import IMPROVE, SYNTHESIZE
from plugins.sdk import NewsItem as SdkNewsItem
from schema.common import DEFAULT_PAGE, Edge, PageInfo, ctx
from schema.jobs import Job


@strawberry.type(description="A language-model provider plugin. isLlm false: rule-based (offline).")
class LLMProvider:
    name: str
    plugin: str
    models: list[str]
    is_llm: bool


@strawberry.input(description="Risk limits the strategy must respect (fractions of equity).")
class StrategyConstraintsInput:
    max_position: float | None = strawberry.field(default=None, description="(0, 1].")
    stop_loss: float | None = strawberry.field(default=None, description="(0, 1).")
    max_drawdown: float | None = strawberry.field(default=None, description="(0, 1).")


@strawberry.input
class SynthesizeStrategyInput:
    objective: str = strawberry.field(description="What the strategy should do, in plain words; "
                                                  "1 to 2,000 characters.")
    constraints: StrategyConstraintsInput | None = None
    universe: list[str] | None = strawberry.field(
        default=None, description="Instrument keys (SYMBOL.MIC), 1 to 20; default AAPL, MSFT, JPM.")
    as_of: datetime | None = strawberry.field(default=None, description="End of the regime window and "
                                                                        "backtest; default today, UTC.")
    backtest_days: int = strawberry.field(default=730, description="180 to 3650.")
    provider: str | None = strawberry.field(default=None, description="The LLM provider to ask, by "
                                            "name (llmProviders); default: the first LLM serving you.")
    region: str | None = None
    idempotency_key: str | None = None

    def params(self) -> dict[str, Any]:
        c = self.constraints
        constraints = ({k: v for k, v in (("max_position", c.max_position), ("stop_loss", c.stop_loss),
                                          ("max_drawdown", c.max_drawdown)) if v is not None} if c else {})
        return {"objective": self.objective, "constraints": constraints,
                "universe": list(self.universe) if self.universe else None,
                "as_of": self.as_of.isoformat() if self.as_of else None, "backtest_days": self.backtest_days,
                "provider": self.provider}


@strawberry.input
class ImproveStrategyInput:
    strategy_id: strawberry.ID
    trials: int = strawberry.field(default=3, description="Revisions to try, 1 to 10.")
    train_fraction: float = strawberry.field(default=0.7, description="In-sample share, 0.5 to 0.9.")
    as_of: datetime | None = None
    backtest_days: int = 730
    region: str | None = None
    idempotency_key: str | None = None


@strawberry.input
class NewsItemInput:
    headline: str
    text: str = ""
    published_at: datetime
    tickers: list[str] = strawberry.field(default_factory=list)
    id: str | None = None


@strawberry.input(description="Items of the news sources: any of tickers, [from, to), text.")
class NewsQueryInput:
    tickers: list[str] | None = None
    from_: datetime | None = strawberry.field(default=None, name="from")
    to: datetime | None = None
    text: str | None = None


@strawberry.input(description="Either items or query.")
class AnalyzeNewsInput:
    items: list[NewsItemInput] | None = None
    query: NewsQueryInput | None = None


@strawberry.type
class NewsItem:
    ref: str = strawberry.field(description="<source>:<id>, or inline:<id>.")
    id: str
    published_at: datetime
    headline: str
    text: str
    tickers: list[str]
    source: str

    @classmethod
    def of(cls, ref: str, item: SdkNewsItem) -> NewsItem:
        return cls(ref=ref, id=item.id, published_at=item.published_at, headline=item.headline,
                   text=item.text, tickers=list(item.tickers), source=item.source)


@strawberry.type
class NewsItemConnection:
    edges: list[Edge[NewsItem]]
    page_info: PageInfo


@strawberry.type
class ModelNewsAnalysis:
    provider: str
    model: str
    is_llm: bool
    sentiment: float = strawberry.field(description="-1 .. 1.")
    relevance: float = strawberry.field(description="0 .. 1.")
    instruments: list[str]
    rationale: str
    cached: bool


@strawberry.type
class InstrumentShare:
    instrument: str
    share: float = strawberry.field(description="Share of the models naming it.")


@strawberry.type(description="Across models: relevance-weighted sentiment; confidence = 1 - dispersion "
                             "(population std of the sentiments) with 2+ models, 0.5 with one.")
class NewsConsensus:
    sentiment: float
    dispersion: float
    confidence: float
    relevance: float
    models: int
    instruments: list[InstrumentShare]


@strawberry.type
class AnalyzedNewsItem:
    item: NewsItem
    analyses: list[ModelNewsAnalysis]
    consensus: NewsConsensus | None

    @classmethod
    def of(cls, entry: ItemAnalysis) -> AnalyzedNewsItem:
        c = entry.consensus
        return cls(
            item=NewsItem.of(entry.ref, entry.item),
            analyses=[ModelNewsAnalysis(provider=a.provider, model=a.model, is_llm=a.is_llm,
                                        sentiment=a.sentiment, relevance=a.relevance,
                                        instruments=list(a.instruments), rationale=a.rationale,
                                        cached=a.cached)
                      for a in entry.analyses],
            consensus=None if c is None else NewsConsensus(
                sentiment=c.sentiment, dispersion=c.dispersion, confidence=c.confidence,
                relevance=c.relevance,
                models=c.models, instruments=[InstrumentShare(instrument=k, share=v)
                                              for k, v in c.instruments.items()]))


@strawberry.type
class SignalPoint:
    at: datetime
    value: float


@strawberry.type(description="A series for the DSL's news_sentiment indicator: consensus sentiment x "
                             "confidence x share of models naming the instrument, per item.")
class NewsSignal:
    instrument: str
    points: list[SignalPoint]


@strawberry.type
class NewsModel:
    provider: str
    model: str
    is_llm: bool


@strawberry.type
class NewsAnalysis:
    provider: str = strawberry.field(description="The first provider used; 'offline' without an LLM.")
    is_llm: bool
    models: list[NewsModel]
    items: list[AnalyzedNewsItem]
    signals: list[NewsSignal]
    failures: JSON = strawberry.field(description="Models that could not answer: provider, model, code.")

    @classmethod
    def of(cls, result: NewsAnalysisResult) -> NewsAnalysis:
        return cls(provider=result.models[0].provider if result.models else "", is_llm=result.is_llm,
                   models=[NewsModel(provider=m.provider, model=m.model, is_llm=m.is_llm)
                           for m in result.models],
                   items=[AnalyzedNewsItem.of(e) for e in result.items],
                   signals=[NewsSignal(instrument=k, points=[SignalPoint(at=t, value=v) for t, v in points])
                            for k, points in sorted(result.signals.items())],
                   failures=result.failures)


@strawberry.type
class Query:
    @strawberry.field(description="Language-model providers, built-ins first (offline among them).")
    def llm_providers(self, info: Info) -> list[LLMProvider]:
        c = ctx(info)
        c.require("strategy", "read")
        return [LLMProvider(name=e.name, plugin=e.plugin, models=list(e.provider.models), is_llm=e.is_llm)
                for e in c.runtime.strategy_ai.providers.entries()]

    @strawberry.field(description="News from the news-source plugins, newest first.")
    def news_items(self, info: Info, tickers: list[str] | None = None,
                   from_: Annotated[datetime | None, strawberry.argument(name="from")] = None,
                   to: datetime | None = None, text: str | None = None, first: int = DEFAULT_PAGE,
                   after: str | None = None) -> NewsItemConnection:
        c = ctx(info)
        c.require("news", "read")
        items, has_next = c.runtime.strategy_ai.news.page(tickers=tickers, start=from_, end=to, text=text,
                                                          first=first, after=after)
        edges = [Edge(cursor=encode_news_cursor(ref, item), node=NewsItem.of(ref, item))
                 for ref, item in items]
        return NewsItemConnection(edges=edges, page_info=PageInfo(
            has_next_page=has_next, end_cursor=edges[-1].cursor if edges else None))


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Start a strategy synthesis job (kind strategy.synthesize).")
    def synthesize_strategy(self, info: Info, input: SynthesizeStrategyInput) -> Job:
        c = ctx(info)
        me = c.require("strategy", "write")
        return Job.from_row(c.runtime.jobs.start(me, SYNTHESIZE, input.params(), region=input.region,
                                                 idempotency_key=input.idempotency_key))

    @strawberry.mutation(description="Start a self-improvement job (kind strategy.improve) on a strategy's "
                                     "latest version.")
    def improve_strategy(self, info: Info, input: ImproveStrategyInput) -> Job:
        c = ctx(info)
        me = c.require("strategy", "write")
        c.runtime.strategies.strategy(me.tenant_id, str(input.strategy_id))  # STRATEGY_NOT_FOUND
        params = {"strategy_id": str(input.strategy_id), "trials": input.trials,
                  "train_fraction": input.train_fraction,
                  "as_of": input.as_of.isoformat() if input.as_of else None,
                  "backtest_days": input.backtest_days}
        return Job.from_row(c.runtime.jobs.start(me, IMPROVE, params, region=input.region,
                                                 idempotency_key=input.idempotency_key))

    @strawberry.mutation(description="Analyse news items (given, or found by a query; at most 50) with every "
                                     "configured model; per-model analyses, consensus and DSL signals.")
    def analyze_news(self, info: Info, input: AnalyzeNewsInput) -> NewsAnalysis:
        c = ctx(info)
        me = c.require("news", "analyze")
        news = c.runtime.strategy_ai.news
        if (input.items is None) == (input.query is None):
            raise InvalidInput("give either items or query", code="NEWS_INVALID")
        if input.items is not None:
            items = [SdkNewsItem(id=i.id or f"item-{n + 1}", published_at=i.published_at, headline=i.headline,
                                 text=i.text, tickers=tuple(i.tickers), source="inline")
                     for n, i in enumerate(input.items)]
            news.check_inline(items)
            pairs = [(f"inline:{i.id}", i) for i in items]
        else:
            q = input.query
            assert q is not None
            pairs = news.items(tickers=q.tickers, start=q.from_, end=q.to, text=q.text)
        return NewsAnalysis.of(news.analyze(me.tenant_id, pairs))
