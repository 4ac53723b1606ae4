"""The built-in news source (`news-file`): news items from a JSON Lines file.

One item per line: `id`, `published_at` (ISO 8601 with a zone; kept in UTC), `headline`,
`text`, `tickers` (instrument keys, SYMBOL.MIC) and optional `source`. Config: `path` (default
the shipped `plugins/builtin/data/news/news.jsonl`, written by `generate.py` beside this file).
The file is read once, when the plugin is activated; a malformed line fails the plugin with
the line's number.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from plugins.sdk import NewsItem, NewsSource, PluginContext, hookimpl

SHIPPED = Path(__file__).resolve().parent.parent / "data" / "news" / "news.jsonl"


class NewsFile:
    def __init__(self, items: Sequence[NewsItem], name: str = "news-file") -> None:
        self.name = name
        self._items = sorted(items, key=lambda i: (i.published_at, i.id))

    @classmethod
    def read(cls, path: Path) -> NewsFile:
        items: list[NewsItem] = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                published = datetime.fromisoformat(raw["published_at"].replace("Z", "+00:00"))
                if published.tzinfo is None:
                    raise ValueError("published_at has no zone")
                items.append(NewsItem(id=str(raw["id"]), published_at=published.astimezone(UTC),
                                      headline=str(raw["headline"]), text=str(raw["text"]),
                                      tickers=tuple(str(t) for t in raw["tickers"]),
                                      source=str(raw.get("source", ""))))
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{path.name} line {number}: {exc}") from exc
        return cls(items)

    def items(self, *, tickers: Sequence[str] | None, start: datetime | None,
              end: datetime | None, text: str | None) -> list[NewsItem]:
        wanted = set(tickers) if tickers else None
        needle = text.lower() if text else None
        return [i for i in self._items
                if (wanted is None or wanted.intersection(i.tickers))
                and (start is None or i.published_at >= start)
                and (end is None or i.published_at < end)
                and (needle is None or needle in i.headline.lower() or needle in i.text.lower())]


@hookimpl
def alphintra_news_sources(context: PluginContext) -> list[NewsSource]:
    path = Path(context.config["path"]) if "path" in context.config else SHIPPED
    return [NewsFile.read(path)]
