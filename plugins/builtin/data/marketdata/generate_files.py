"""Writes the file source's example dataset into `files/` beside this script.

    .venv/bin/python plugins/builtin/data/marketdata/generate_files.py [--out DIR]

Deterministic (seeded; trading days from exchange_calendars, as the gateway's), so running it again
gives the same files. Synthetic prices that look like real history, not real quotes: each
series is a chain of Brownian bridges between anchor levels loosely following the public
record, with intraday ranges, gaps and volumes drawn around it.

What it writes, in the layout of `plugins/builtin/file_source.py`:
- `daily_us.csv`: 2023-2024 daily bars (dates, unadjusted) of NVDA on XNAS, with its 10-for-1
  split of 10 June 2024 as `adjustment_factor` 0.1 before it, and KO on XNYS, with quarterly
  dividends as cumulative dividend factors. Instrument columns on each instrument's first row.
- `daily_asml.parquet`: the same two years of ASML on XAMS (EUR) and on XNAS (USD), already
  adjusted by their "provider" (`adjusted` true), dates as a Parquet date column, prices as
  decimals.
- `intraday_5m.csv`: 5-minute bars of NVDA.XNAS and ASML.XAMS for 14 June 2024, timestamps with
  the venues' local offsets; the daily bars of that day are exactly their aggregate.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

SEED = 20240614
FIRST, LAST = date(2023, 1, 2), date(2024, 12, 31)
INTRADAY_DAY = date(2024, 6, 14)
SPLIT_DAY, SPLIT_RATIO = date(2024, 6, 10), Decimal(10)  # NVDA: 10 new shares for 1
KO_DIVIDENDS = {  # ex-date: dividend per share, USD
    date(2023, 3, 14): Decimal("0.46"), date(2023, 6, 14): Decimal("0.46"),
    date(2023, 9, 14): Decimal("0.46"), date(2023, 11, 30): Decimal("0.46"),
    date(2024, 3, 14): Decimal("0.485"), date(2024, 6, 13): Decimal("0.485"),
    date(2024, 9, 13): Decimal("0.485"), date(2024, 11, 29): Decimal("0.485"),
}
OUT = Path(__file__).resolve().parent / "files"
HEADER = ["symbol", "mic", "start", "interval", "open", "high", "low", "close", "volume",
          "currency", "name", "isin", "asset_class", "lot_size", "tick_size", "adjusted",
          "adjustment_factor", "session"]


@dataclass(frozen=True)
class Listing:
    symbol: str
    mic: str
    currency: str
    name: str
    isin: str
    tick: Decimal
    volume: float  # typical daily volume, in the file's share count
    anchors: tuple[tuple[date, float], ...]  # adjusted closing levels the path passes through
    volatility: float  # annualised

    @property
    def key(self) -> str:
        return f"{self.symbol}.{self.mic}"


NVDA = Listing("NVDA", "XNAS", "USD", "NVIDIA Corporation", "US67066G1040", Decimal("0.01"),
               420e6, ((FIRST, 14.3), (date(2023, 6, 1), 39.8), (date(2024, 1, 2), 48.2),
                       (date(2024, 6, 7), 120.9), (LAST, 134.3)), 0.50)
KO = Listing("KO", "XNYS", "USD", "The Coca-Cola Company", "US1912161007", Decimal("0.01"),
             13e6, ((FIRST, 63.6), (date(2023, 10, 6), 52.4), (date(2024, 6, 14), 63.0),
                    (date(2024, 9, 13), 72.5), (LAST, 62.3)), 0.15)
ASML_AMS = Listing("ASML", "XAMS", "EUR", "ASML Holding N.V.", "NL0010273215", Decimal("0.1"),
                   650e3, ((FIRST, 510.0), (date(2023, 7, 17), 690.0), (date(2023, 10, 26), 520.0),
                           (date(2024, 3, 12), 910.0), (date(2024, 7, 11), 1010.0),
                           (LAST, 680.0)), 0.35)
ASML_NAS = Listing("ASML", "XNAS", "USD", "ASML Holding N.V.", "NL0010273215", Decimal("0.01"),
                   1.1e6, ASML_AMS.anchors, 0.35)  # priced from XAMS through EUR/USD
EURUSD = ((FIRST, 1.067), (date(2023, 7, 17), 1.123), (date(2023, 10, 3), 1.047),
          (date(2024, 6, 14), 1.070), (LAST, 1.035))


# -- calendars -------------------------------------------------------------------------------------
# exchange_calendars, the library behind the gateway's calendars for these venues (a plugin's
# files import no gateway code).

@cache
def calendar(mic: str) -> Any:
    import exchange_calendars as xc

    margin = timedelta(days=30)  # the library refuses a range starting on a closed day
    return xc.get_calendar(mic, start=(FIRST - margin).isoformat(), end=(LAST + margin).isoformat())


def sessions(mic: str, day_first: date, day_last: date) -> list[tuple[datetime, datetime]]:
    """The venue's session windows (UTC) over trading days [day_first, day_last]."""
    cal = calendar(mic)
    return [(cal.session_open(label).to_pydatetime(), cal.session_close(label).to_pydatetime())
            for label in cal.sessions_in_range(day_first.isoformat(), day_last.isoformat())]


def trading_days(mic: str) -> list[date]:
    return [label.date() for label in calendar(mic).sessions_in_range(FIRST.isoformat(), LAST.isoformat())]


# -- paths -----------------------------------------------------------------------------------------

def rng(*names: str) -> np.random.Generator:
    """A stream per purpose, so one series never depends on another's draws."""
    words = [SEED, *(int.from_bytes(n.encode()[:8].ljust(8, b"\0"), "big") for n in names)]
    return np.random.default_rng(np.random.SeedSequence(words))


def bridge_path(anchors: Sequence[tuple[date, float]], days: Sequence[date], volatility: float,
                random: np.random.Generator) -> np.ndarray:
    """Log levels on `days` through the anchors: a Brownian bridge between each pair."""
    out = np.empty(len(days))
    ordinals = np.array([d.toordinal() for d in days], dtype=float)
    for (d0, p0), (d1, p1) in itertools.pairwise(anchors):
        inside = np.nonzero((ordinals >= d0.toordinal()) & (ordinals <= d1.toordinal()))[0]
        t = (ordinals[inside] - d0.toordinal()) / 365.0
        span = (d1.toordinal() - d0.toordinal()) / 365.0
        walk = np.cumsum(random.normal(0.0, volatility * np.sqrt(np.diff(t, prepend=0.0))))
        walk -= walk[-1] * t / span if span else 0.0
        out[inside] = math.log(p0) + (math.log(p1) - math.log(p0)) * t / span + walk
    return out


def ticks(value: float, tick: Decimal, rounding: str = ROUND_HALF_EVEN) -> Decimal:
    return (Decimal(repr(float(value))) / tick).quantize(Decimal(1), rounding) * tick


@dataclass
class DailyBar:
    day: date
    open: float
    high: float
    low: float
    close: float
    volume: float


def daily_bars(listing: Listing, days: Sequence[date], log_close: np.ndarray,
               random: np.random.Generator) -> list[DailyBar]:
    """Opens gap from the previous close; highs and lows reach beyond open and close by a daily
    range of about the day's volatility; volumes are log-normal, larger on big moves."""
    day_vol = listing.volatility / math.sqrt(252)
    bars, previous = [], math.exp(log_close[0])
    for k, day in enumerate(days):
        close = math.exp(log_close[k])
        opened = previous * math.exp(random.normal(0.0, day_vol * 0.4))
        reach = np.abs(random.normal(0.0, day_vol * 0.6, size=2))
        high = max(opened, close) * math.exp(reach[0])
        low = min(opened, close) * math.exp(-reach[1])
        move = abs(math.log(close / previous)) / day_vol
        volume = listing.volume * math.exp(random.normal(0.0, 0.25) + 0.15 * move)
        bars.append(DailyBar(day, opened, high, low, close, volume))
        previous = close
    return bars


def intraday_bars(daily: DailyBar, windows: Sequence[tuple[datetime, datetime]], volatility: float,
                  random: np.random.Generator) -> list[tuple[datetime, float, float, float, float, float]]:
    """5-minute bars of one day: a bridge from the day's open to its close, U-shaped volume."""
    starts = [o + timedelta(minutes=5 * k) for o, c in windows
              for k in range(int((c - o) / timedelta(minutes=5)))]
    n = len(starts)
    step = volatility / math.sqrt(252 * n)
    walk = np.concatenate([[0.0], np.cumsum(random.normal(0.0, step, size=n))])
    walk -= walk[-1] * np.linspace(0.0, 1.0, n + 1)
    path = np.exp(np.log(daily.open) + (math.log(daily.close / daily.open)) * np.linspace(0, 1, n + 1)
                  + walk)
    x = (np.arange(n) + 0.5) / n
    shape = 1.0 + 3.0 * (x - 0.5) ** 2 * 4  # heavier at the open and the close
    volumes = daily.volume * shape / shape.sum() * np.exp(random.normal(0.0, 0.2, size=n))
    out = []
    for k, start in enumerate(starts):
        o, c = path[k], path[k + 1]
        reach = np.abs(random.normal(0.0, step * 0.5, size=2))
        out.append((start, o, max(o, c) * math.exp(reach[0]), min(o, c) * math.exp(-reach[1]), c,
                    volumes[k]))
    return out


# -- rows --------------------------------------------------------------------------------------------

def price_row(o: float, h: float, lo: float, c: float, tick: Decimal, scale: Decimal = Decimal(1)
              ) -> list[Decimal]:
    """Open, high, low, close on the tick grid; the high rounded up and the low down, so the
    rounded bar still holds its open and close."""
    op, cl = ticks(o * float(scale), tick), ticks(c * float(scale), tick)
    hi = max(ticks(h * float(scale), tick, ROUND_CEILING), op, cl)
    low = min(ticks(lo * float(scale), tick, ROUND_FLOOR), op, cl)
    return [op, hi, max(low, tick), cl]


def instrument_columns(listing: Listing) -> list[str]:
    return [listing.currency, listing.name, listing.isin, "EQUITY", "1", str(listing.tick)]


def split_factor(day: date) -> Decimal:
    return Decimal(1) / SPLIT_RATIO if day < SPLIT_DAY else Decimal(1)


def dividend_factors(raw_closes: dict[date, Decimal]) -> dict[date, Decimal]:
    """CRSP-style cumulative factors: before each ex-date e, prices are multiplied by
    1 - dividend / (close the day before e); factors multiply back from the latest ex-date."""
    days = sorted(raw_closes)
    steps = {}
    for ex, dividend in KO_DIVIDENDS.items():
        before = max(d for d in days if d < ex)
        steps[ex] = 1 - dividend / raw_closes[before]
    out, factor = {}, Decimal(1)
    for day in reversed(days):
        out[day] = factor.quantize(Decimal("0.000001"), ROUND_HALF_EVEN)
        if day in steps:
            factor *= steps[day]
    return out


def nvda_rows(bars: Sequence[DailyBar]) -> Iterator[list[object]]:
    for k, bar in enumerate(bars):
        factor = split_factor(bar.day)
        prices = price_row(bar.open, bar.high, bar.low, bar.close, NVDA.tick, 1 / factor)
        volume = round(bar.volume * float(factor))
        extra = instrument_columns(NVDA) if k == 0 else [""] * 6
        yield [NVDA.symbol, NVDA.mic, bar.day.isoformat(), "1d", *prices, volume, *extra, "false",
               str(factor.normalize()), "REGULAR"]


def ko_rows(bars: Sequence[DailyBar]) -> Iterator[list[object]]:
    """KO's path is unadjusted already: the level drops by the dividend on each ex-date."""
    priced = [(bar, price_row(bar.open, bar.high, bar.low, bar.close, KO.tick)) for bar in bars]
    factors = dividend_factors({bar.day: prices[3] for bar, prices in priced})
    for k, (bar, prices) in enumerate(priced):
        extra = instrument_columns(KO) if k == 0 else [""] * 6
        yield [KO.symbol, KO.mic, bar.day.isoformat(), "1d", *prices, round(bar.volume), *extra,
               "false", str(factors[bar.day]), "REGULAR"]


def ko_raw_path(days: Sequence[date], log_adjusted: np.ndarray) -> np.ndarray:
    """Unadjusted log closes: each dividend leaves the price lower from its ex-date on."""
    level = np.exp(log_adjusted)
    for ex, dividend in KO_DIVIDENDS.items():
        level = np.where(np.array([d >= ex for d in days]), level - float(dividend), level)
    return np.log(level)


def with_intraday(bars: list[DailyBar], five: Sequence[tuple[datetime, float, float, float, float, float]]
                  ) -> None:
    """The daily bar of INTRADAY_DAY becomes the aggregate of its 5-minute bars."""
    k = next(i for i, b in enumerate(bars) if b.day == INTRADAY_DAY)
    bars[k] = DailyBar(INTRADAY_DAY, five[0][1], max(f[2] for f in five), min(f[3] for f in five),
                       five[-1][4], sum(f[5] for f in five))


def five_minute_rows(listing: Listing, five: Sequence[tuple[datetime, float, float, float, float, float]],
                     zone: str, adjusted: bool) -> list[list[object]]:
    rows = []
    for start, o, h, lo, c, v in five:
        prices = price_row(o, h, lo, c, listing.tick)
        rows.append([listing.symbol, listing.mic, start.astimezone(ZoneInfo(zone)).isoformat(), "5m",
                     *prices, round(v), *[""] * 6, str(adjusted).lower(), "", "REGULAR"])
    return rows


def aggregate(rows: Sequence[list[object]]) -> list[object]:
    """Open, high, low, close and volume of rounded 5-minute rows: what the daily row must hold."""
    return [rows[0][4], max(r[5] for r in rows), min(r[6] for r in rows), rows[-1][7],  # type: ignore[type-var]
            sum(r[8] for r in rows)]  # type: ignore[misc]


# -- writing -------------------------------------------------------------------------------------------

def write_csv(path: Path, rows: Sequence[Sequence[object]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(HEADER)
        writer.writerows(rows)


def write_parquet(path: Path, rows: Sequence[Sequence[object]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = list(zip(*rows, strict=True))
    price = pa.decimal128(12, 2)
    table = pa.table({
        "symbol": pa.array(columns[0], pa.string()), "mic": pa.array(columns[1], pa.string()),
        "start": pa.array([date.fromisoformat(str(d)) for d in columns[2]], pa.date32()),
        "interval": pa.array(columns[3], pa.string()),
        **{name: pa.array(columns[i], price) for i, name in enumerate(("open", "high", "low", "close"), 4)},
        "volume": pa.array(columns[8], pa.int64()),
        "currency": pa.array(columns[9], pa.string()), "name": pa.array(columns[10], pa.string()),
        "isin": pa.array(columns[11], pa.string()), "asset_class": pa.array(columns[12], pa.string()),
        "lot_size": pa.array([int(x) for x in columns[13]], pa.int32()),
        "tick_size": pa.array([str(x) for x in columns[14]], pa.string()),  # text: "0.1" stays 0.1
        "adjusted": pa.array([True] * len(rows), pa.bool_()),
    })
    pq.write_table(table, path, compression="zstd")


def asml_rows(listing: Listing, bars: Sequence[DailyBar]) -> list[list[object]]:
    return [[listing.symbol, listing.mic, bar.day.isoformat(), "1d",
             *price_row(bar.open, bar.high, bar.low, bar.close, listing.tick), round(bar.volume),
             *instrument_columns(listing)] for bar in bars]


def generate(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    us_days, ams_days = trading_days("XNAS"), trading_days("XAMS")
    ko_days = trading_days("XNYS")

    nvda = daily_bars(NVDA, us_days, bridge_path(NVDA.anchors, us_days, NVDA.volatility, rng("nvda")),
                      rng("nvda-bars"))
    ko_log = ko_raw_path(ko_days, bridge_path(KO.anchors, ko_days, KO.volatility, rng("ko")))
    ko = daily_bars(KO, ko_days, ko_log, rng("ko-bars"))

    all_days = sorted(set(us_days) | set(ams_days))
    asml_log = dict(zip(all_days, bridge_path(ASML_AMS.anchors, all_days, ASML_AMS.volatility,
                                              rng("asml")), strict=True))
    fx_log = dict(zip(all_days, bridge_path(EURUSD, all_days, 0.07, rng("eurusd")), strict=True))
    asml_ams = daily_bars(ASML_AMS, ams_days, np.array([asml_log[d] for d in ams_days]),
                          rng("asml-ams-bars"))
    asml_nas = daily_bars(ASML_NAS, us_days, np.array([asml_log[d] + fx_log[d] for d in us_days]),
                          rng("asml-nas-bars"))

    # One day of 5-minute bars; the day's daily bars are their aggregate, to the tick.
    day = (INTRADAY_DAY, INTRADAY_DAY)
    nvda_day = next(b for b in nvda if b.day == INTRADAY_DAY)
    nvda_five = intraday_bars(nvda_day, sessions("XNAS", *day), NVDA.volatility, rng("nvda-5m"))
    ams_day = next(b for b in asml_ams if b.day == INTRADAY_DAY)
    ams_five = intraday_bars(ams_day, sessions("XAMS", *day), ASML_AMS.volatility, rng("asml-5m"))
    with_intraday(nvda, nvda_five)
    with_intraday(asml_ams, ams_five)
    five_rows = (five_minute_rows(NVDA, nvda_five, "America/New_York", adjusted=False)
                 + five_minute_rows(ASML_AMS, ams_five, "Europe/Amsterdam", adjusted=True))

    us_rows = [*nvda_rows(nvda), *ko_rows(ko)]
    parquet_rows = [*asml_rows(ASML_AMS, asml_ams), *asml_rows(ASML_NAS, asml_nas)]
    _align(us_rows, five_rows, NVDA)
    _align(parquet_rows, five_rows, ASML_AMS)

    paths = [out / "daily_us.csv", out / "daily_asml.parquet", out / "intraday_5m.csv"]
    write_csv(paths[0], us_rows)
    write_parquet(paths[1], parquet_rows)
    write_csv(paths[2], five_rows)
    return paths


def _align(daily_rows: list[list[object]], five_rows: Sequence[list[object]], listing: Listing) -> None:
    """Rounding apart, the daily row of INTRADAY_DAY already is the aggregate; make it exact."""
    mine = [r for r in five_rows if r[0] == listing.symbol and r[1] == listing.mic]
    row = next(r for r in daily_rows if r[0] == listing.symbol and r[1] == listing.mic
               and r[2] == INTRADAY_DAY.isoformat())
    row[4:9] = aggregate(mine)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"directory (default {OUT})")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(f"{path}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
