"""The offline news analyser: a lexicon-based scorer, not a language model.

Lexicon. `POSITIVE` and `NEGATIVE` below map lower-case word stems to weights (1 = mild,
2 = strong: "beat", "upgraded", "record" against "miss", "probe", "hack"). A token matches a
stem when it starts with it ("downgrad" matches downgraded and downgrades).

Scoring, per item (headline counted twice: it carries the news):
1. Tokens are lower-case words. Each matching token adds its signed weight.
2. A negator ("not", "no", "never", "without", "little") flips the sign of the next matching
   token within three words ("not strong" is negative).
3. An intensifier ("sharply", "strongly", "surges", "significantly", "further") just before
   a match multiplies it by 1.5.
4. The raw sum s becomes a sentiment in (-1, 1) by s / sqrt(s² + 15) (VADER's normalisation:
   one strong word gives 0.46, three give 0.84).
5. Relevance per instrument: 1.0 when the instrument's symbol or name is in the headline, 0.7
   when only in the text, 0.5 when only tagged by the source. The item's relevance is the
   highest of its instruments'; affected instruments are the tagged ones plus any named.
6. The rationale lists the matched words with their signed contributions.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

POSITIVE: Mapping[str, float] = {
    "beat": 2, "upgrad": 2, "record": 1.5, "surg": 1.5, "rall": 1.5, "rais": 1, "strong": 1,
    "robust": 1, "growth": 1, "gain": 1, "outperform": 2, "approv": 1.5, "boost": 1,
    "buyback": 1, "confiden": 1, "climb": 1, "expand": 1, "improv": 1, "welcom": 1,
    "inflow": 1, "milestone": 1, "profit": 0.5, "cool": 0.5,
}
NEGATIVE: Mapping[str, float] = {
    "miss": 2, "downgrad": 2, "cut": 1.5, "weak": 1.5, "declin": 1, "fell": 1.5, "fall": 1.5,
    "slump": 2, "tumbl": 2, "drop": 1.5, "probe": 2, "investigat": 1.5, "fine": 1.5,
    "lawsuit": 1.5, "outage": 1.5, "recall": 1.5, "disrupt": 1, "loss": 1.5, "warn": 1.5,
    "risk": 0.5, "pressure": 1, "slow": 1, "recession": 2, "fear": 1.5, "hack": 2,
    "fraud": 2, "hurt": 1.5, "cost": 0.5, "volatil": 0.5, "sell": 1,
}
NEGATORS = frozenset({"not", "no", "never", "without", "little"})
INTENSIFIERS = frozenset({"sharply", "strongly", "surges", "significantly", "further"})
ALPHA = 15.0
WORD = re.compile(r"[a-z][a-z'-]*")


def _match(token: str) -> float:
    for stem, weight in POSITIVE.items():
        if token.startswith(stem):
            return weight
    for stem, weight in NEGATIVE.items():
        if token.startswith(stem):
            return -weight
    return 0.0


def score_text(text: str) -> tuple[float, list[tuple[str, float]]]:
    """The raw sum and each matched word's signed contribution."""
    tokens = WORD.findall(text.lower())
    total, matched, negate_left = 0.0, [], 0
    for i, token in enumerate(tokens):
        if token in NEGATORS:
            negate_left = 3
            continue
        weight = _match(token)
        if weight:
            if negate_left:
                weight, negate_left = -weight, 0
            if i > 0 and tokens[i - 1] in INTENSIFIERS:
                weight *= 1.5
            total += weight
            matched.append((token, weight))
        elif negate_left:
            negate_left -= 1
    return total, matched


def normalise(raw: float) -> float:
    return raw / math.sqrt(raw * raw + ALPHA)


def analyse_item(item: Mapping[str, Any], instruments: Sequence[Mapping[str, str]]
                 ) -> dict[str, Any]:
    """`item`: id, headline, text, tickers; `instruments`: key, symbol, name of those known."""
    headline, text = str(item.get("headline", "")), str(item.get("text", ""))
    raw_h, words_h = score_text(headline)
    raw_t, words_t = score_text(text)
    raw = 2 * raw_h + raw_t
    sentiment = normalise(raw)
    relevance: dict[str, float] = {key: 0.5 for key in item.get("tickers", ())}
    for inst in instruments:
        names = [n for n in (inst.get("symbol"), inst.get("name")) if n]
        short = [n.split()[0] for n in names]  # "Apple Inc." is "Apple" in a headline
        if any(_mentions(headline, n) for n in names + short):
            relevance[inst["key"]] = 1.0
        elif any(_mentions(text, n) for n in names + short):
            relevance[inst["key"]] = max(relevance.get(inst["key"], 0.0), 0.7)
    contributions = [(w, 2 * v) for w, v in words_h] + words_t
    listed = ", ".join(f"{w} ({v:+g})" for w, v in contributions) or "no lexicon words"
    return {
        "id": item.get("id"),
        "sentiment": round(sentiment, 4),
        "relevance": max(relevance.values(), default=0.0),
        "instruments": sorted(relevance),
        "rationale": f"lexicon score {raw:+g} -> {sentiment:+.3f}; matched: {listed}",
    }


def _mentions(text: str, name: str) -> bool:
    if len(name) < 3:
        return False
    return re.search(rf"(?<![A-Za-z0-9]){re.escape(name)}(?![A-Za-z0-9])", text) is not None
