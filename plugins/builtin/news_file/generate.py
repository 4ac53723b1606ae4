"""Writes the shipped news file, `plugins/builtin/data/news/news.jsonl`: 200 items about the
market twin's instruments, deterministic (one seeded generator; run it again, get the same
bytes).

    .venv/bin/python -m plugins.builtin.news_file.generate

The items are written for the project (no third-party text): company events (results,
guidance, products, regulation, analyst views, deals) and a few macro items naming several
instruments, each with a tone (positive, negative, mixed or neutral) chosen by the seed, a UTC
timestamp between 2025-01-02 and 2026-10-30 inside a plausible news hour, and tickers as
instrument keys (SYMBOL.MIC) the twin knows.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

SEED = 20250102
COUNT = 200
START = datetime(2025, 1, 2, tzinfo=UTC)
END = datetime(2026, 10, 30, tzinfo=UTC)
OUT = Path(__file__).resolve().parent.parent / "data" / "news" / "news.jsonl"

# key, short name, sector noun, product noun, home-market hour (UTC) news usually lands
COMPANIES: tuple[tuple[str, str, str, str, int], ...] = (
    ("AAPL.XNAS", "Apple", "smartphone maker", "iPhone line-up", 13),
    ("MSFT.XNAS", "Microsoft", "software group", "cloud platform", 13),
    ("JPM.XNYS", "JPMorgan", "bank", "investment bank", 12),
    ("SHEL.XLON", "Shell", "energy major", "LNG portfolio", 7),
    ("SAP.XETR", "SAP", "business software maker", "cloud ERP suite", 6),
    ("7203.XTKS", "Toyota", "carmaker", "hybrid range", 5),
    ("0700.XHKG", "Tencent", "internet group", "gaming pipeline", 3),
    ("BHP.XASX", "BHP", "miner", "copper output", 23),
    ("BTC-USD.ALPX", "Bitcoin", "cryptocurrency", "network", 15),
    ("ETH-USD.ALPX", "Ether", "cryptocurrency", "network", 16),
)

POSITIVE = (
    ("{name} beats estimates as {product} demand surges",
     "{name} reported quarterly results that beat analyst estimates. Revenue growth was strong "
     "and the {sector} raised its full-year guidance, citing record demand for its {product}."),
    ("{name} upgraded to buy on improving margins",
     "Analysts upgraded {name} to buy, pointing to expanding margins and robust cash flow. The "
     "{sector} is expected to outperform peers over the coming year."),
    ("{name} announces buyback and dividend increase",
     "{name} announced a new share buyback and a higher dividend, signalling confidence in "
     "strong earnings. Investors welcomed the move and the {sector} rallied."),
    ("{name} wins approval for {product} expansion",
     "Regulators approved the expansion of the {product}, a milestone for {name}. Management "
     "said the approval would boost growth and support profit gains."),
)
NEGATIVE = (
    ("{name} misses forecasts and cuts guidance",
     "{name} missed revenue forecasts and cut its full-year guidance, blaming weak demand for "
     "its {product}. The {sector} warned that margins would decline further."),
    ("{name} downgraded amid slowing growth",
     "Analysts downgraded {name} to sell, citing slowing growth and rising costs. The {sector} "
     "faces pressure as demand weakens and competition intensifies."),
    ("{name} faces probe over {product}",
     "Regulators opened an investigation into the {product} at {name}. The {sector} could face "
     "a fine and a lawsuit, and shares fell sharply on the news."),
    ("{name} hit by outage and recall",
     "A serious outage disrupted the {product} at {name}, followed by a recall. The {sector} "
     "said losses from the disruption were not yet known and warned of further risk."),
)
MIXED = (
    ("{name} results: growth strong but margins weaken",
     "{name} posted strong revenue growth, but margins declined as costs rose. The {sector} "
     "kept its guidance unchanged, and analysts called the quarter mixed."),
)
NEUTRAL = (
    ("{name} to present at investor conference",
     "{name} will present at an investor conference next week. The {sector} is expected to "
     "discuss its {product} and capital plans; no new guidance is scheduled."),
    ("{name} names new board member",
     "{name} appointed a new independent director to its board. The {sector} said the change "
     "follows a routine review of governance."),
)
MACRO = (
    (("AAPL.XNAS", "MSFT.XNAS", "JPM.XNYS"), 1,
     "US stocks rally as inflation cools",
     "Inflation data came in below forecasts and Treasury yields fell. Technology and bank shares "
     "rallied as investors bet on rate cuts and stronger growth."),
    (("AAPL.XNAS", "MSFT.XNAS", "JPM.XNYS"), -1,
     "Wall Street slumps on recession fears",
     "Stocks fell sharply as weak jobs data raised recession fears. Banks and technology shares "
     "led the decline amid rising volatility."),
    (("SHEL.XLON", "BHP.XASX"), 1,
     "Commodities climb on supply worries",
     "Oil and copper prices climbed as supply disruptions tightened markets, lifting energy and "
     "mining shares to strong gains."),
    (("SHEL.XLON", "BHP.XASX"), -1,
     "Commodities slump as demand weakens",
     "Oil and copper prices dropped on weak demand from China, hurting energy producers and "
     "miners; analysts warned of further losses."),
    (("BTC-USD.ALPX", "ETH-USD.ALPX"), 1,
     "Crypto rallies after ETF inflows",
     "Bitcoin and ether rallied after record inflows into exchange-traded funds, with traders "
     "citing strong institutional demand."),
    (("BTC-USD.ALPX", "ETH-USD.ALPX"), -1,
     "Crypto tumbles after exchange hack",
     "Bitcoin and ether tumbled after a major exchange reported a hack and losses of customer "
     "funds, reviving fears of fraud and tighter regulation."),
    (("7203.XTKS", "0700.XHKG", "BHP.XASX"), 0,
     "Asian markets steady ahead of central bank meeting",
     "Asian shares were little changed as investors waited for the central bank decision. "
     "Trading volumes were light."),
)


def build(seed: int = SEED, count: int = COUNT) -> list[dict[str, object]]:
    rng = np.random.default_rng(seed)
    span_days = (END - START).days
    items: list[dict[str, object]] = []
    for n in range(count):
        day = START + timedelta(days=int(rng.integers(0, span_days)))
        if rng.random() < 0.15:
            tickers, _, headline, text = MACRO[int(rng.integers(len(MACRO)))]
            hour = 14
        else:
            key, name, sector, product, hour = COMPANIES[int(rng.integers(len(COMPANIES)))]
            tone = rng.choice(["positive", "negative", "mixed", "neutral"], p=[0.4, 0.35, 0.1, 0.15])
            pool = {"positive": POSITIVE, "negative": NEGATIVE, "mixed": MIXED,
                    "neutral": NEUTRAL}[str(tone)]
            head_t, text_t = pool[int(rng.integers(len(pool)))]
            fields = {"name": name, "sector": sector, "product": product}
            headline, text, tickers = head_t.format(**fields), text_t.format(**fields), (key,)
        at = day + timedelta(hours=hour % 24, minutes=int(rng.integers(0, 60)))
        items.append({"id": f"nf-{n + 1:04d}", "published_at": at.isoformat().replace("+00:00", "Z"),
                      "headline": headline, "text": text, "tickers": list(tickers),
                      "source": "alphintra-newswire"})
    items.sort(key=lambda i: (str(i["published_at"]), str(i["id"])))
    return items


def main() -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w", encoding="utf-8") as f:
        for item in build():
            f.write(json.dumps(item, sort_keys=True) + "\n")
    print(f"wrote {COUNT} items to {OUT}")


if __name__ == "__main__":
    main()
