"""A market data source reading instruments and bars from CSV or Parquet files.

Config: `path`, a directory (default: the sample shipped in `data/marketdata/` beside this
module). The files are read once, when the plugin is activated; a file that breaks the rules
below fails the whole source at activation (reported as PLUGIN_FAILED), rather than serving
part of it.

In the directory:
- `instruments.csv` or `instruments.parquet`, one row per instrument. Columns: `symbol`, `mic`
  (ISO 10383), `currency` (ISO 4217) required; `name`, `isin`, `asset_class` (default EQUITY),
  `lot_size` (default 1), `tick_size` (default 0.01) optional.
- Any number of `bars*.csv` / `bars*.parquet` files. Columns: `symbol`, `mic`, `start`,
  `interval` (1m, 5m, 15m, 1h, 1d), `open`, `high`, `low`, `close`, `volume` required;
  `session` (default REGULAR) optional. `start` is the start of the bar and must carry its zone:
  ISO 8601 with an offset in CSV (`2024-03-04T14:30:00Z`), a timestamp with a time zone in
  Parquet. Prices and volumes are decimal text in CSV (read exactly, never through float); in
  Parquet a decimal, integer, string or float column (floats are read by their shortest
  repr, so 101.1 stays 101.1).

Bars are served for the intervals the files hold; nothing is resampled. A quote is the close of
the latest finished bar (of the finest interval held) as both bid and ask, with zero sizes: a
file has no order book, so the quote is indicative only.
"""

from __future__ import annotations

import csv
import math
from bisect import bisect_left
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from plugins.sdk import Bar, Instrument, MarketDataSource, PluginContext, Quote, hookimpl

NAME = "files"
SAMPLE = Path(__file__).resolve().parent / "data" / "marketdata"
INTERVALS: Mapping[str, timedelta] = {
    "1m": timedelta(minutes=1), "5m": timedelta(minutes=5), "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1), "1d": timedelta(days=1),
}
SUFFIXES = (".csv", ".parquet")


class FileFormatError(ValueError):
    def __init__(self, file: Path, row: int | None, message: str) -> None:
        where = f"{file.name}" + (f", row {row}" if row is not None else "")
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class _Series:
    starts: tuple[datetime, ...]
    bars: tuple[Bar, ...]


class FileSource:
    """`MarketDataSource` over the files of one directory."""

    def __init__(self, path: Path | str, name: str = NAME) -> None:
        self.name = name
        self.path = Path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(f"market data directory {self.path} does not exist")
        self._instruments = _read_instruments(self.path)
        self._series = _read_bars(self.path, self._instruments)

    def instruments(self) -> list[Instrument]:
        return list(self._instruments.values())

    def bars(self, instrument: Instrument, start: datetime, end: datetime, interval: str) -> list[Bar]:
        if interval not in INTERVALS:
            raise ValueError(f"interval must be one of {sorted(INTERVALS)}")
        series = self._series.get((instrument.key, interval))
        if series is None:
            return []
        lo, hi = bisect_left(series.starts, start), bisect_left(series.starts, end)
        return list(series.bars[lo:hi])

    def quote(self, instrument: Instrument, at: datetime) -> Quote | None:
        for interval in INTERVALS:  # finest first
            series = self._series.get((instrument.key, interval))
            if series is None:
                continue
            # The latest bar that had finished by `at`.
            k = bisect_left(series.starts, at - INTERVALS[interval] + timedelta(microseconds=1)) - 1
            if k < 0:
                return None
            close = series.bars[k].close
            return Quote(symbol=instrument.symbol, mic=instrument.mic, at=at, bid=close, ask=close,
                         bid_size=Decimal(0), ask_size=Decimal(0))
        return None


def _files(directory: Path, stem: str) -> list[Path]:
    return sorted(p for p in directory.iterdir()
                  if p.is_file() and p.suffix.lower() in SUFFIXES and p.stem.startswith(stem))


def _rows(file: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row number, row) pairs; row numbers count data rows from 1."""
    if file.suffix.lower() == ".csv":
        with file.open(newline="", encoding="utf-8") as handle:
            yield from enumerate(csv.DictReader(handle), start=1)
    else:
        # Imported here: pyarrow is heavy, and only a Parquet directory needs it.
        import pyarrow.parquet as pq

        yield from enumerate(pq.read_table(file).to_pylist(), start=1)


def _text(row: dict[str, Any], column: str, file: Path, n: int, default: str | None = None) -> str:
    value = row.get(column)
    if value is None or (isinstance(value, str) and not value.strip()):
        if default is None:
            raise FileFormatError(file, n, f"column {column!r} is required")
        return default
    return str(value).strip()


def _decimal(row: dict[str, Any], column: str, file: Path, n: int, default: str | None = None
             ) -> Decimal:
    value = row.get(column)
    if value is None or (isinstance(value, str) and not value.strip()):
        if default is None:
            raise FileFormatError(file, n, f"column {column!r} is required")
        value = default
    try:
        if isinstance(value, float):
            if not math.isfinite(value):
                raise InvalidOperation
            number = Decimal(repr(value))
        else:
            number = Decimal(value) if isinstance(value, Decimal | int) else Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise FileFormatError(file, n, f"{column} {value!r} is not a number") from None
    if not number.is_finite():
        raise FileFormatError(file, n, f"{column} {value!r} is not a finite number")
    return number


def _instant(row: dict[str, Any], column: str, file: Path, n: int) -> datetime:
    value = row.get(column)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise FileFormatError(file, n, f"{column} {value!r} is not ISO 8601") from None
    if not isinstance(value, datetime):
        raise FileFormatError(file, n, f"column {column!r} must be a timestamp")
    if value.tzinfo is None or value.utcoffset() is None:
        raise FileFormatError(file, n, f"{column} {value.isoformat()} has no time zone")
    return value.astimezone(UTC)


def _read_instruments(directory: Path) -> dict[str, Instrument]:
    files = _files(directory, "instruments")
    if len(files) != 1:
        raise FileNotFoundError(f"{directory} needs exactly one instruments.csv or instruments.parquet")
    file = files[0]
    instruments: dict[str, Instrument] = {}
    for n, row in _rows(file):
        lot = _decimal(row, "lot_size", file, n, "1")
        tick = _decimal(row, "tick_size", file, n, "0.01")
        if lot <= 0 or lot != lot.to_integral_value():
            raise FileFormatError(file, n, "lot_size must be a positive whole number")
        if tick <= 0:
            raise FileFormatError(file, n, "tick_size must be positive")
        isin = row.get("isin")
        instrument = Instrument(
            symbol=_text(row, "symbol", file, n), mic=_text(row, "mic", file, n).upper(),
            currency=_text(row, "currency", file, n).upper(), name=_text(row, "name", file, n, ""),
            isin=str(isin).strip() if isin not in (None, "") else None,
            asset_class=_text(row, "asset_class", file, n, "EQUITY").upper(),
            lot_size=int(lot), tick_size=tick)
        if instrument.key in instruments:
            raise FileFormatError(file, n, f"{instrument.key} is listed twice")
        instruments[instrument.key] = instrument
    return instruments


def _read_bars(directory: Path, instruments: Mapping[str, Instrument]
               ) -> dict[tuple[str, str], _Series]:
    collected: dict[tuple[str, str], dict[datetime, Bar]] = {}
    for file in _files(directory, "bars"):
        for n, row in _rows(file):
            symbol, mic = _text(row, "symbol", file, n), _text(row, "mic", file, n).upper()
            key = f"{symbol}.{mic}"
            if key not in instruments:
                raise FileFormatError(file, n, f"{key} is not in the instruments file")
            interval = _text(row, "interval", file, n)
            if interval not in INTERVALS:
                raise FileFormatError(file, n, f"interval {interval!r} is not one of {sorted(INTERVALS)}")
            o, h, lo, c = (_decimal(row, col, file, n) for col in ("open", "high", "low", "close"))
            volume = _decimal(row, "volume", file, n)
            if not (lo <= min(o, c) and max(o, c) <= h) or lo <= 0:
                raise FileFormatError(file, n, "prices must satisfy 0 < low <= open, close <= high")
            if volume < 0:
                raise FileFormatError(file, n, "volume must not be negative")
            start = _instant(row, "start", file, n)
            bar = Bar(symbol=symbol, mic=mic, start=start, interval=interval, open=o, high=h,
                      low=lo, close=c, volume=volume,
                      session=_text(row, "session", file, n, "REGULAR"))
            series = collected.setdefault((key, interval), {})
            if start in series:
                raise FileFormatError(file, n, f"a second {interval} bar of {key} at {start.isoformat()}")
            series[start] = bar
    out = {}
    for series_key, by_start in collected.items():
        ordered = [by_start[s] for s in sorted(by_start)]
        out[series_key] = _Series(tuple(b.start for b in ordered), tuple(ordered))
    return out


@hookimpl
def alphintra_market_data_sources(context: PluginContext) -> list[MarketDataSource]:
    """Config: `path`, the directory holding the files (default: the bundled sample)."""
    return [FileSource(Path(context.config.get("path") or SAMPLE))]
