"""Figures for the LLM side of the strategy lab (prints, never asserts):

- the offline lexicon scorer: news items per second over the shipped file;
- the anthropic provider's own overhead: one structured call through the real SDK on
  httpx2.MockTransport (a recorded answer), i.e. everything but the network and the model;
- the regime description of three instruments (365 daily bars each, the market twin);
- an offline synthesis without the database: regime, template, parse, backtest.

    .venv/bin/python bench/llm_news.py
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.marketdata import MarketDataService  # noqa: E402
from gateway.markets.service import MarketsService  # noqa: E402
from gateway.strategies.backtest import Costs, run_backtest  # noqa: E402
from gateway.strategies.dsl import STRATEGY_SCHEMA, parse_strategy  # noqa: E402
from gateway.strategies.regime import describe_regime  # noqa: E402
from plugins.builtin import BUILTINS  # noqa: E402
from plugins.builtin.llm_anthropic import AnthropicProvider  # noqa: E402
from plugins.builtin.llm_offline import lexicon, templates  # noqa: E402
from plugins.builtin.news_file import SHIPPED, NewsFile  # noqa: E402
from plugins.host import PluginHost  # noqa: E402
from plugins.sdk import LLMTurn, ToolSpec  # noqa: E402

UNIVERSE = ["AAPL.XNAS", "MSFT.XNAS", "JPM.XNYS"]
AS_OF = datetime(2026, 6, 1, tzinfo=UTC)


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    items = NewsFile.read(SHIPPED).items(tickers=None, start=None, end=None, text=None)
    payload = [{"id": i.id, "headline": i.headline, "text": i.text, "tickers": list(i.tickers)}
               for i in items]
    known = [{"key": k, "symbol": k.split(".")[0], "name": k.split(".")[0]} for k in UNIVERSE]
    runs = timed(lambda: [lexicon.analyse_item(p, known) for p in payload], 20)
    print(f"lexicon scorer: {len(payload) / statistics.median(runs):,.0f} items/s "
          f"(median of 20 passes over {len(payload)} items)")

    body = json.loads((ROOT / "tests/recordings/synth_good.json").read_text())["body"]
    client = httpx2.Client(transport=httpx2.MockTransport(lambda request: httpx2.Response(200, json=body)))
    provider = AnthropicProvider(api_key="bench", models=["claude-sonnet-4-6"], max_retries=0,
                                 http_client=client)
    tool = ToolSpec("propose_strategy", "bench", STRATEGY_SCHEMA)

    def call() -> None:
        provider.complete_structured(model="claude-sonnet-4-6", system="s", messages=[LLMTurn("user", "x")],
                                     tool=tool, max_tokens=1024, facts={})

    call()
    runs = timed(call, 200)
    print(f"anthropic SDK path without network: median {statistics.median(runs) * 1e3:.2f} ms per call, "
          f"p95 {sorted(runs)[int(0.95 * len(runs))] * 1e3:.2f} ms (200 calls, recorded answer)")

    markets = MarketsService()
    market_data = MarketDataService(PluginHost(BUILTINS), markets.directory)
    start = time.perf_counter()
    regime = describe_regime(market_data, UNIVERSE, AS_OF)
    print(f"regime of {len(UNIVERSE)} instruments over 365 days: {time.perf_counter() - start:.2f} s "
          f"(first call, bars simulated) -> {regime['trend']}, {regime['volatility']}")
    start = time.perf_counter()
    describe_regime(market_data, UNIVERSE, AS_OF)
    print(f"  again: {time.perf_counter() - start:.2f} s")

    start = time.perf_counter()
    doc, _ = templates.build("trend following", {}, UNIVERSE, regime)
    strategy = parse_strategy(doc)
    window = AS_OF - timedelta(days=730)
    bars = {k: market_data.bars(k, window, AS_OF, "1d") for k in UNIVERSE}
    loaded = time.perf_counter()
    result = run_backtest(strategy, bars, Costs(), "USD", sessions=markets.directory)
    done = time.perf_counter()
    print(f"offline synthesis core (template, parse, 730 days of bars, backtest): {done - start:.2f} s "
          f"(bars {loaded - start:.2f} s, backtest {done - loaded:.2f} s, {result.bars} bars, "
          f"Sharpe {result.metrics.get('sharpe')})")


if __name__ == "__main__":
    main()
