"""News: items from news-source plugins, and their analysis by every configured model.

`NewsService.items(...)` merges the sources' items (newest first). `analyze(...)` asks each
model chosen by `LLMProviders.for_news()` (every Claude model configured, models of other
LLM plugins, or, without any, the offline lexicon scorer) for every item, in batches of
`BATCH` items per call through the forced tool `analyze_news` (schema `NEWS_ANALYSIS_SCHEMA`).
Answers are checked (schema, one analysis per item, instruments among the known ones) and
cached per tenant, item digest and model (news_models.NewsAnalysis), so an item is analysed
once per model.

Consensus, per item, over the models that analysed it:
- sentiment: the mean of the models' sentiments weighted by their relevance (plain mean when
  every relevance is 0);
- dispersion sigma: the population standard deviation of the models' sentiments. On [-1, 1] it is
  at most 1 (half the models at -1, half at +1), so it is already normalised;
- confidence = 1 - sigma with two or more models: 1 when they agree exactly, 0 when they split
  to the extremes. With one model there is no second opinion to measure and confidence is 0.5;
- instruments: those any model named, each with its share of models naming it; relevance:
  the mean of the models' relevances.

Signals, the series the DSL's `news_sentiment` indicator reads: per instrument, one point per
item at its publication time, value = consensus sentiment * confidence * share of models
naming that instrument (so a disputed or marginal item moves the signal little). Points are
sorted by time; a tenant's backtest passes them as `news={key: [(time, value), ...]}`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jsonschema import Draft202012Validator
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from gateway.db import Database
from gateway.errors import DomainError, InvalidInput
from gateway.marketdata import MarketDataService
from gateway.pagination import check_page_size
from gateway.scope import current_tenant
from gateway.strategies.llm import LLMFailed, LLMProviders, ModelChoice
from gateway.strategies.news_models import NewsAnalysis
from plugins.host import PluginFailed, PluginHost, default_context
from plugins.sdk import LLMTurn, NewsItem, NewsSource, ToolSpec

log = logging.getLogger(__name__)
HOOK = "alphintra_news_sources"
MAX_ITEMS = 50  # per analyzeNews request
BATCH = 10  # items per model call
MAX_TEXT = 4_000
MAX_HEADLINE = 300

NEWS_ANALYSIS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["analyses"],
    "additionalProperties": False,
    "properties": {
        "analyses": {
            "type": "array",
            "minItems": 1,
            "maxItems": BATCH,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["id", "sentiment", "relevance", "instruments", "rationale"],
                "properties": {
                    "id": {"type": "string", "description": "the item's label, e.g. item-1"},
                    "sentiment": {
                        "type": "number",
                        "minimum": -1,
                        "maximum": 1,
                        "description": "-1 very negative .. +1 very positive for the instruments",
                    },
                    "relevance": {
                        "type": "number",
                        "minimum": 0,
                        "maximum": 1,
                        "description": "how much the item matters to their price",
                    },
                    "instruments": {
                        "type": "array",
                        "maxItems": 20,
                        "items": {"type": "string"},
                        "description": "affected instrument keys, SYMBOL.MIC, from the list given",
                    },
                    "rationale": {"type": "string", "maxLength": 1000},
                },
            },
        }
    },
}
NEWS_TOOL = ToolSpec(
    "analyze_news", "Record the analysis of each news item for trading.", NEWS_ANALYSIS_SCHEMA
)
_VALIDATOR = Draft202012Validator(NEWS_ANALYSIS_SCHEMA)
SYSTEM = (
    "You are a sell-side news analyst. For each news item, judge its sentiment for the "
    "affected instruments' prices (-1..1), its relevance (0..1), which of the listed "
    "instruments it affects, and give a one-sentence rationale. Judge only from the text. "
    "Answer only through the analyze_news tool, one analysis per item, using its label."
)


class NewsInvalid(InvalidInput):
    code = "NEWS_INVALID"


def digest(item: NewsItem) -> str:
    text = json.dumps(
        [item.published_at.isoformat(), item.headline, item.text, sorted(item.tickers)], ensure_ascii=False
    )
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class ModelAnalysis:
    provider: str
    model: str
    is_llm: bool
    sentiment: float
    relevance: float
    instruments: tuple[str, ...]
    rationale: str
    cached: bool


@dataclass(frozen=True)
class Consensus:
    sentiment: float
    dispersion: float
    confidence: float
    relevance: float
    models: int
    instruments: dict[str, float]  # key -> share of models naming it


@dataclass(frozen=True)
class ItemAnalysis:
    item: NewsItem
    ref: str
    analyses: tuple[ModelAnalysis, ...]
    consensus: Consensus | None  # None when no model answered for it


@dataclass
class NewsAnalysisResult:
    items: list[ItemAnalysis]
    signals: dict[str, list[tuple[datetime, float]]]
    models: list[ModelChoice]
    failures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def is_llm(self) -> bool:
        return any(m.is_llm for m in self.models)


def consensus(analyses: Sequence[ModelAnalysis]) -> Consensus | None:
    if not analyses:
        return None
    n = len(analyses)
    sentiments = [a.sentiment for a in analyses]
    weights = [a.relevance for a in analyses]
    total = sum(weights)
    mean = (
        sum(s * w for s, w in zip(sentiments, weights, strict=True)) / total
        if total > 0
        else sum(sentiments) / n
    )
    plain = sum(sentiments) / n
    sigma = math.sqrt(sum((s - plain) ** 2 for s in sentiments) / n)
    confidence = 0.5 if n == 1 else max(0.0, 1.0 - sigma)
    named: dict[str, int] = {}
    for a in analyses:
        for key in set(a.instruments):
            named[key] = named.get(key, 0) + 1
    return Consensus(
        sentiment=round(mean, 6),
        dispersion=round(sigma, 6),
        confidence=round(confidence, 6),
        relevance=round(sum(weights) / n, 6),
        models=n,
        instruments={k: round(v / n, 6) for k, v in sorted(named.items())},
    )


def signals_of(items: Sequence[ItemAnalysis]) -> dict[str, list[tuple[datetime, float]]]:
    out: dict[str, list[tuple[datetime, float]]] = {}
    for entry in items:
        c = entry.consensus
        if c is None:
            continue
        for key, share in c.instruments.items():
            value = max(-1.0, min(1.0, c.sentiment * c.confidence * share))
            out.setdefault(key, []).append((entry.item.published_at, round(value, 6)))
    for points in out.values():
        points.sort(key=lambda p: p[0])
    return out


class NewsService:
    def __init__(
        self,
        db: Database,
        plugins: PluginHost,
        llm: LLMProviders,
        market_data: MarketDataService,
        *,
        configs: Mapping[str, Mapping[str, Any]] | None = None,
        max_page_size: int = 200,
    ) -> None:
        self.db = db
        self.plugins = plugins
        self.llm = llm
        self.market_data = market_data
        self.configs = {k: dict(v) for k, v in (configs or {}).items()}
        self.max_page_size = max_page_size
        self._lock = threading.Lock()
        self._sources: tuple[list[tuple[str, NewsSource]], list[PluginFailed]] | None = None
        self._installed: Callable[[str], Sequence[tuple[str, NewsSource]]] | None = None
        self._disabled: Callable[[str], frozenset[str]] | None = None

    def bind_installed(self, installed: Callable[[str], Sequence[tuple[str, NewsSource]]],
                       disabled: Callable[[str], frozenset[str]] | None = None) -> None:
        """A tenant's installed news sources join the built-ins for that tenant (less the
        built-ins it switched off)."""
        self._installed = installed
        self._disabled = disabled

    # -- items ------------------------------------------------------------------------------
    def sources(self) -> list[tuple[str, NewsSource]]:
        with self._lock:
            if self._sources is None:
                found, failures = self.plugins.collect(
                    HOOK,
                    lambda name: default_context(name, config=self.configs.get(name, {})),
                    expect=NewsSource,
                )
                self._sources = ([(c.plugin, c.value) for c in found], failures)
            builtins = self._sources[0]
        tenant = current_tenant()
        installed = self._installed(tenant) if tenant is not None and self._installed else ()
        if tenant is not None and self._disabled is not None:
            off = self._disabled(tenant)
            builtins = [(plugin, source) for plugin, source in builtins if plugin not in off]
        return [*builtins, *installed]

    def items(
        self,
        *,
        tickers: Sequence[str] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        text: str | None = None,
    ) -> list[tuple[str, NewsItem]]:
        """(ref, item) newest first; ref is "<source>:<id>"."""
        self._check_query(tickers, start, end, text)
        out: list[tuple[str, NewsItem]] = []
        for plugin, source in self.sources():
            try:
                found = source.items(
                    tickers=list(tickers) if tickers else None, start=start, end=end, text=text or None
                )
            except Exception:
                log.exception("news source failed", extra={"plugin": plugin})
                raise DomainError(
                    f"news source {source.name} failed", code="PLUGIN_FAILED", details={"plugin": plugin}
                ) from None
            out.extend((f"{source.name}:{i.id}", i) for i in found)
        out.sort(key=lambda p: (p[1].published_at, p[0]), reverse=True)
        return out

    def page(
        self,
        *,
        tickers: Sequence[str] | None,
        start: datetime | None,
        end: datetime | None,
        text: str | None,
        first: int,
        after: str | None,
    ) -> tuple[list[tuple[str, NewsItem]], bool]:
        check_page_size(first, self.max_page_size)
        found = self.items(tickers=tickers, start=start, end=end, text=text)
        if after is not None:
            last = decode_news_cursor(after)
            found = [p for p in found if (p[1].published_at.isoformat(), p[0]) < last]
        return found[:first], len(found) > first

    @staticmethod
    def _check_query(
        tickers: Sequence[str] | None, start: datetime | None, end: datetime | None, text: str | None
    ) -> None:
        for at in (start, end):
            if at is not None and at.tzinfo is None:
                raise InvalidInput("from and to must carry a time zone", code="INSTANT_NOT_AWARE")
        if start is not None and end is not None and end <= start:
            raise InvalidInput("to must be after from", code="RANGE_INVALID")
        if tickers is not None and len(tickers) > 50:
            raise NewsInvalid("at most 50 tickers")
        if text is not None and len(text) > 200:
            raise NewsInvalid("text is at most 200 characters")

    # -- analysis ---------------------------------------------------------------------------
    def check_inline(self, items: Sequence[NewsItem]) -> None:
        if not items:
            raise NewsInvalid("no news items to analyse")
        if len(items) > MAX_ITEMS:
            raise NewsInvalid(f"at most {MAX_ITEMS} items per request", code="NEWS_TOO_MANY_ITEMS")
        for n, item in enumerate(items):
            if not item.headline.strip() or len(item.headline) > MAX_HEADLINE:
                raise NewsInvalid(f"item {n}: headline must be 1 to {MAX_HEADLINE} characters")
            if len(item.text) > MAX_TEXT:
                raise NewsInvalid(f"item {n}: text is at most {MAX_TEXT} characters")
            if item.published_at.tzinfo is None:
                raise InvalidInput(f"item {n}: publishedAt must carry a time zone", code="INSTANT_NOT_AWARE")
            if len(item.tickers) > 20:
                raise NewsInvalid(f"item {n}: at most 20 tickers")

    def analyze(
        self,
        tenant_id: str,
        pairs: Sequence[tuple[str, NewsItem]],
        progress: Callable[[float, str], None] | None = None,
    ) -> NewsAnalysisResult:
        """Analyse (ref, item) pairs with every news model; cached answers are reused."""
        if len(pairs) > MAX_ITEMS:
            raise NewsInvalid(
                f"the query matches {len(pairs)} items; at most {MAX_ITEMS} are analysed "
                "per request (narrow tickers, from/to or text)",
                code="NEWS_TOO_MANY_ITEMS",
            )
        self.check_inline([item for _, item in pairs])
        choices = self.llm.for_news()
        digests = [digest(item) for _, item in pairs]
        by_digest = dict(zip(digests, pairs, strict=True))
        with self.db.tenant_session(tenant_id) as session:
            rows = session.exec(select(NewsAnalysis).where(col(NewsAnalysis.item_digest).in_(digests))).all()
        cached: dict[tuple[str, str, str], NewsAnalysis] = {
            (r.item_digest, r.provider, r.model): r for r in rows
        }
        known = {i.key: i for i in self.market_data.instruments()}
        fresh: list[NewsAnalysis] = []
        failures: list[dict[str, Any]] = []
        answered = 0
        for c_index, choice in enumerate(choices):
            missing = [d for d in dict.fromkeys(digests) if (d, choice.provider, choice.model) not in cached]
            ok = True
            for start in range(0, len(missing), BATCH):
                batch = missing[start : start + BATCH]
                try:
                    fresh.extend(self._ask(tenant_id, choice, [(d, *by_digest[d]) for d in batch], known))
                except (LLMFailed, NewsAnswerInvalid) as exc:
                    ok = False
                    failures.append(
                        {
                            "provider": choice.provider,
                            "model": choice.model,
                            "code": exc.code,
                            "message": exc.message,
                        }
                    )
                    break
                if progress is not None:
                    progress(
                        (c_index + (start + len(batch)) / max(len(missing), 1)) / len(choices),
                        f"{choice.model}: {start + len(batch)} of {len(missing)} items",
                    )
            answered += ok
        if not answered:
            first = failures[0]
            raise LLMFailed(
                f"no model could analyse the news: {first['message']}",
                code=first["code"],
                details={"failures": failures},
            )
        if fresh:
            try:
                with self.db.tenant_transaction(tenant_id) as session:
                    for row in fresh:
                        exists = session.exec(
                            select(NewsAnalysis).where(
                                NewsAnalysis.item_digest == row.item_digest,
                                NewsAnalysis.provider == row.provider,
                                NewsAnalysis.model == row.model,
                            )
                        ).first()
                        if exists is None:  # a concurrent request may have stored it meanwhile
                            session.add(row)
            except IntegrityError:
                # A concurrent request stored the same analyses first; its rows serve the next
                # request and this answer stands as computed.
                log.info("news analyses stored concurrently", extra={"tenant_id": tenant_id})
        for row in fresh:
            cached.setdefault((row.item_digest, row.provider, row.model), row)
        fresh_ids = {id(r) for r in fresh}
        items: list[ItemAnalysis] = []
        for d, (ref, item) in zip(digests, pairs, strict=True):
            analyses = tuple(
                ModelAnalysis(
                    provider=r.provider,
                    model=r.model,
                    is_llm=r.is_llm,
                    sentiment=r.sentiment,
                    relevance=r.relevance,
                    instruments=tuple(r.instruments),
                    rationale=r.rationale,
                    cached=id(r) not in fresh_ids,
                )
                for ch in choices
                if (r := cached.get((d, ch.provider, ch.model))) is not None
            )
            items.append(ItemAnalysis(item=item, ref=ref, analyses=analyses, consensus=consensus(analyses)))
        return NewsAnalysisResult(
            items=items, signals=signals_of(items), models=list(choices), failures=failures
        )

    def signals_for(
        self, tenant_id: str, keys: Sequence[str], start: datetime, end: datetime
    ) -> dict[str, list[tuple[datetime, float]]]:
        """The `news_sentiment` series of `keys` over [start, end): the analysis (cached) of the
        sources' items there, the most recent MAX_ITEMS of them; {} when there are none."""
        pairs = self.items(tickers=list(keys), start=start, end=end)[:MAX_ITEMS]
        if not pairs:
            return {}
        signals = self.analyze(tenant_id, pairs).signals
        return {k: v for k, v in signals.items() if k in set(keys)}

    def _ask(
        self,
        tenant_id: str,
        choice: ModelChoice,
        batch: Sequence[tuple[str, str, NewsItem]],
        known: Mapping[str, Any],
    ) -> list[NewsAnalysis]:
        labels = {f"item-{n + 1}": entry for n, entry in enumerate(batch)}
        mentioned = sorted({t for _, _, item in batch for t in item.tickers if t in known})
        instruments = [
            {"key": k, "symbol": known[k].symbol, "name": known[k].name} for k in (mentioned or sorted(known))
        ]
        lines = []
        for label, (_, _, item) in labels.items():
            tickers = ", ".join(item.tickers) or "-"
            lines.append(
                f"[{label}] {item.published_at.isoformat()} tickers: {tickers}\n"
                f"Headline: {item.headline}\n{item.text}"
            )
        prompt = (
            "Instruments you may name: "
            + ", ".join(f"{i['key']} ({i['name']})" for i in instruments)
            + "\n\nNews items:\n\n"
            + "\n\n".join(lines)
        )
        facts = {
            "task": "news.analyze",
            "instruments": instruments,
            "items": [
                {
                    "id": label,
                    "headline": item.headline,
                    "text": item.text,
                    "tickers": list(item.tickers),
                    "published_at": item.published_at.isoformat(),
                }
                for label, (_, _, item) in labels.items()
            ],
        }
        answer = self.llm.ask(
            choice,
            system=SYSTEM,
            messages=[LLMTurn("user", prompt)],
            tool=NEWS_TOOL,
            max_tokens=400 * len(batch) + 200,
            facts=facts,
        )
        payload = dict(answer.tool_input or {})
        errors = sorted(e.message for e in _VALIDATOR.iter_errors(payload))
        if errors:
            raise NewsAnswerInvalid(f"{choice.model} answered outside the schema: {errors[0][:200]}")
        rows: list[NewsAnalysis] = []
        by_label = {a["id"]: a for a in payload["analyses"]}
        for label, (d, ref, item) in labels.items():
            a = by_label.get(label)
            if a is None:
                raise NewsAnswerInvalid(f"{choice.model} gave no analysis for {label}")
            named = [k for k in a["instruments"] if k in known]
            rows.append(
                NewsAnalysis(
                    tenant_id=tenant_id,
                    item_digest=d,
                    item_ref=ref[:200],
                    published_at=item.published_at,
                    provider=choice.provider,
                    model=choice.model,
                    is_llm=choice.is_llm,
                    sentiment=float(a["sentiment"]),
                    relevance=float(a["relevance"]),
                    instruments=sorted(set(named)),
                    rationale=str(a["rationale"])[:1000],
                )
            )
        return rows


class NewsAnswerInvalid(DomainError):
    code = "LLM_ANSWER_INVALID"


def encode_news_cursor(ref: str, item: NewsItem) -> str:
    return base64.urlsafe_b64encode(f"n|{item.published_at.isoformat()}|{ref}".encode()).decode()


def decode_news_cursor(cursor: str) -> tuple[str, str]:
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
        tag, stamp, ref = text.split("|", 2)
        if tag != "n":
            raise ValueError(tag)
        return stamp, ref
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("cursor is not one this API returned", code="CURSOR_INVALID") from None
