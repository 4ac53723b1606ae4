"""A market data source reading the user's own OHLCV history from CSV or Parquet files.

Config (built-in `file-source`; the same keys from settings or a tenant's plugin view):
- `paths`: a list of files and directories (a single string is one path). A directory is read
  without descending: its `.csv` and `.parquet` files, hidden files skipped. Without `paths`,
  the older `path` (one directory); without either, the sample in `data/marketdata/` beside
  this module. `ALPHINTRA_MARKETDATA_FILES` (comma-separated) fills `paths` for every tenant.
- `adjust` (default false; `ALPHINTRA_MARKETDATA_ADJUST`): serve unadjusted rows adjusted by
  their `adjustment_factor`.
- `root` (optional): relative paths are read from it and no path may lead outside it (for a
  tenant's own files, so one tenant cannot name another's or the gateway's).

The layout: one row per bar; column names are matched case-insensitively, unknown ones are
ignored, and a file (or a directory of files) may hold any instruments and venues.
- Required: `symbol`; `mic` (ISO 10383, 4 characters); `start`, the start of the bar:
  ISO 8601 with an offset (`2024-03-04T14:30:00Z`, `2024-03-04T09:30:00-05:00`) or, for daily
  bars only, a date (`2024-03-04`, the trading day); `interval` (1m, 5m, 15m, 1h, 1d); `open`,
  `high`, `low`, `close`, `volume`.
- Optional per instrument: `currency` (ISO 4217; default the venue's, when the venue directory
  knows the MIC), `name`, `isin`, `asset_class` (default EQUITY), `lot_size` (default 1),
  `tick_size` (default 0.01). Given on any row (the first of each instrument is enough); where
  given on several rows they must agree.
- Optional per row: `adjusted` (true/false, 1/0; default false), `adjustment_factor` (default
  1), `session` (default REGULAR).
- Parquet: `start` a timestamp with a time zone, a date (daily bars) or the text above;
  numbers decimal, integer, text or float (a float is read by its shortest repr, so 101.1
  stays 101.1). CSV numbers are decimal text, read exactly, never through a float.
- A file named `instruments*.csv|parquet` in a directory is that directory's instrument table
  (`symbol`, `mic`, `currency` required, the optional instrument columns above): the
  directory's bar files may then hold only the instruments it lists.

A daily bar given by a date starts at the venue's first session open that day (from the
venue directory), at midnight in the venue's zone when its calendar has no session that day,
and at midnight UTC when the venue is unknown to the directory.

Corporate actions, as the file says: rows with `adjusted=true` are served as they are (a
factor on them is ignored). Unadjusted rows (`adjusted` false or absent) are served raw,
unless the source is configured `adjust: true`; then their prices are multiplied by their
`adjustment_factor` (the number turning the raw price into the adjusted one: 0.5 on every bar
before a 2-for-1 split, 0.98 before a 2% dividend; it must be positive) and their volume
divided by it, so traded value is kept. Adjusted prices keep at most four decimals beyond the
tick (half-even), adjusted volumes the raw volume's decimals. One instrument's bars of one interval
are either all adjusted or all unadjusted.

The files are read once, when the plugin is activated, and checked whole: any problem fails
the whole source at activation (PLUGIN_FAILED for the plugin, with a `FileFormatError` naming
file, row and column, and a stable `code`, in the log), so a dataset is never served in part.
Rows are counted from 1 at the first data row (a CSV's header is not a row).

Served: instruments by key; bars for the intervals the files hold, nothing resampled. A quote
is the close of the latest finished bar (of the finest interval held) as both bid and ask,
with zero sizes: a file has no order book, so the quote is indicative only. The source's
`precedence` makes the market data service prefer it when another source (the twin) offers
the same instrument key: the file is the user's real data.
"""

from __future__ import annotations

import csv
import math
import re
from bisect import bisect_left
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from plugins.sdk import (
    Bar,
    Instrument,
    MarketDataSource,
    PluginContext,
    Quote,
    VenueDirectory,
    hookimpl,
)

NAME = "files"
SAMPLE = Path(__file__).resolve().parent / "data" / "marketdata"
EXAMPLES = SAMPLE / "files"  # the example dataset `generate_files.py` writes
PRECEDENCE = 10  # above the twin's default 0: the user's own data wins a shared key
INTERVALS: Mapping[str, timedelta] = {
    "1m": timedelta(minutes=1), "5m": timedelta(minutes=5), "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1), "1d": timedelta(days=1),
}
SUFFIXES = (".csv", ".parquet")
BAR_COLUMNS = ("symbol", "mic", "start", "interval", "open", "high", "low", "close", "volume")
TABLE_COLUMNS = ("symbol", "mic", "currency")
INSTRUMENT_COLUMNS = ("currency", "name", "isin", "asset_class", "lot_size", "tick_size")
EXTRA_PLACES = 4  # decimals beyond the tick kept in adjusted prices
TRUE, FALSE = frozenset({"true", "1", "yes"}), frozenset({"false", "0", "no"})
MIC = re.compile(r"[A-Z0-9]{4}")
CURRENCY = re.compile(r"[A-Z]{3}")

# Stable codes of FileFormatError, one per kind of problem.
PATH_INVALID = "MARKETDATA_PATH_INVALID"  # missing, not CSV/Parquet, outside `root`, empty
FILE_UNREADABLE = "MARKETDATA_FILE_UNREADABLE"  # not parseable as CSV/Parquet, ragged rows
COLUMN_MISSING = "MARKETDATA_COLUMN_MISSING"  # a required column or value is absent
VALUE_INVALID = "MARKETDATA_VALUE_INVALID"  # a MIC, currency or flag of the wrong form
NUMBER_INVALID = "MARKETDATA_NUMBER_INVALID"  # not a finite number, or out of its range
PRICES_INCONSISTENT = "MARKETDATA_PRICES_INCONSISTENT"  # not 0 < low <= open, close <= high
INTERVAL_UNKNOWN = "MARKETDATA_INTERVAL_UNKNOWN"
INSTANT_INVALID = "MARKETDATA_INSTANT_INVALID"  # not ISO 8601, or a date on an intraday bar
INSTANT_NOT_AWARE = "MARKETDATA_INSTANT_NOT_AWARE"  # a timestamp without offset or zone
BAR_DUPLICATE = "MARKETDATA_BAR_DUPLICATE"  # a second bar of (symbol, mic, start, interval)
INSTRUMENT_CONFLICT = "MARKETDATA_INSTRUMENT_CONFLICT"  # instrument columns disagree
INSTRUMENT_UNLISTED = "MARKETDATA_INSTRUMENT_UNLISTED"  # not in the directory's table
ADJUSTMENT_MIXED = "MARKETDATA_ADJUSTMENT_MIXED"  # adjusted and unadjusted rows in one series
CODES = (PATH_INVALID, FILE_UNREADABLE, COLUMN_MISSING, VALUE_INVALID, NUMBER_INVALID,
         PRICES_INCONSISTENT, INTERVAL_UNKNOWN, INSTANT_INVALID, INSTANT_NOT_AWARE, BAR_DUPLICATE,
         INSTRUMENT_CONFLICT, INSTRUMENT_UNLISTED, ADJUSTMENT_MIXED)


class FileFormatError(ValueError):
    """A file breaks the layout. `code` is stable; `file`, `row` (from 1, None for the file as a
    whole) and `column` say where, so the owner of the file can fix it."""

    def __init__(self, file: Path, row: int | None, message: str, *, column: str | None = None,
                 code: str = VALUE_INVALID) -> None:
        where = ", ".join([str(file), *([f"row {row}"] if row is not None else []),
                           *([f"column {column!r}"] if column else [])])
        super().__init__(f"{where}: {message} [{code}]")
        self.file, self.row, self.column, self.code = file, row, column, code
        self.problem = message


@dataclass(frozen=True)
class _Series:
    starts: tuple[datetime, ...]
    bars: tuple[Bar, ...]


@dataclass(slots=True)
class _Row:
    """A checked bar row, before its start is resolved and its prices adjusted."""

    file: Path
    n: int
    symbol: str
    mic: str
    when: datetime | date  # a date only for daily bars
    interval: str
    prices: tuple[Decimal, Decimal, Decimal, Decimal]  # open, high, low, close
    volume: Decimal
    session: str
    adjusted: bool
    factor: Decimal
    start: datetime | None = None

    @property
    def key(self) -> str:
        return f"{self.symbol}.{self.mic}"


@dataclass
class _Group:
    """The files read together: one directory (with its instrument table, if any) or one file."""

    tables: list[Path] = field(default_factory=list)
    bars: list[Path] = field(default_factory=list)


class FileSource:
    """`MarketDataSource` over a set of files and directories, loaded and checked whole."""

    precedence = PRECEDENCE

    def __init__(self, paths: Path | str | Sequence[Path | str], *, adjust: bool = False,
                 venues: VenueDirectory | None = None, root: Path | str | None = None,
                 name: str = NAME) -> None:
        self.name = name
        self.adjust = adjust
        base = Path(root).resolve() if root is not None else None
        self.paths = _resolve(paths, base)
        self._instruments, self._series = _Loader(venues, adjust).load(_groups(self.paths, base))

    def instruments(self) -> list[Instrument]:
        return list(self._instruments.values())

    @property
    def bar_count(self) -> int:
        return sum(len(series.bars) for series in self._series.values())

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


# -- paths ---------------------------------------------------------------------------------------

def _resolve(paths: Path | str | Sequence[Path | str], base: Path | None) -> list[Path]:
    """Absolute paths, each once, in the order given; inside `base` (the root) when one is set."""
    items = [paths] if isinstance(paths, str | Path) else list(paths)
    out: list[Path] = []
    for item in items:
        path = Path(item)
        path = (base / path if base is not None else path).resolve()
        if base is not None and not path.is_relative_to(base):
            raise FileFormatError(Path(item), None, f"is outside the source's root {base}",
                                  code=PATH_INVALID)
        if not path.exists():
            raise FileFormatError(path, None, "does not exist", code=PATH_INVALID)
        if path.is_file() and path.suffix.lower() not in SUFFIXES:
            raise FileFormatError(path, None, "is neither .csv nor .parquet", code=PATH_INVALID)
        if path not in out:
            out.append(path)
    return out


def _is_table(file: Path) -> bool:
    return file.stem.lower().startswith("instruments")


def _groups(paths: Sequence[Path], base: Path | None) -> list[_Group]:
    groups = []
    for path in paths:
        files = [path] if path.is_file() else sorted(
            p for p in path.iterdir()
            if p.is_file() and p.suffix.lower() in SUFFIXES and not p.name.startswith("."))
        if not files:
            raise FileFormatError(path, None, "holds no .csv or .parquet file", code=PATH_INVALID)
        for file in files:  # a link inside the root may point out of it
            if base is not None and not file.resolve().is_relative_to(base):
                raise FileFormatError(file, None, f"leads outside the source's root {base}",
                                      code=PATH_INVALID)
        groups.append(_Group(tables=[f for f in files if _is_table(f)],
                             bars=[f for f in files if not _is_table(f)]))
    return groups


# -- reading rows --------------------------------------------------------------------------------

def _rows(file: Path, required: Sequence[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row number, row) pairs, column names lower-cased; row numbers count data rows from 1."""
    try:
        if file.suffix.lower() == ".csv":
            yield from _csv_rows(file, required)
        else:
            yield from _parquet_rows(file, required)
    except FileFormatError:
        raise
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as exc:
        # pyarrow's errors (ArrowInvalid) are ValueErrors too.
        raise FileFormatError(file, None, f"cannot be read: {exc}", code=FILE_UNREADABLE) from None


def _header(file: Path, names: Sequence[Any], required: Sequence[str]) -> list[str]:
    header = [str(h).strip().lower() for h in names]
    twice = sorted({h for h in header if header.count(h) > 1})
    if twice:
        raise FileFormatError(file, None, "the header names it twice", column=twice[0],
                              code=FILE_UNREADABLE)
    for column in required:
        if column not in header:
            raise FileFormatError(file, None, "the required column is missing", column=column,
                                  code=COLUMN_MISSING)
    return header


def _csv_rows(file: Path, required: Sequence[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    with file.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        first = next(reader, None)
        header = _header(file, first or [], required)
        for n, values in enumerate(reader, start=1):
            if not values:
                continue  # a blank line
            if len(values) != len(header):
                raise FileFormatError(file, n, f"has {len(values)} fields, the header {len(header)}",
                                      code=FILE_UNREADABLE)
            yield n, dict(zip(header, values, strict=True))


def _parquet_rows(file: Path, required: Sequence[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    # Imported here: pyarrow is heavy, and only Parquet files need it.
    import pyarrow.parquet as pq

    table = pq.read_table(file)
    table = table.rename_columns(_header(file, table.column_names, required))
    yield from enumerate(table.to_pylist(), start=1)


# -- reading values ------------------------------------------------------------------------------

def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _text(row: Mapping[str, Any], column: str, file: Path, n: int, default: str | None = None) -> str:
    value = row.get(column)
    if _empty(value):
        if default is None:
            raise FileFormatError(file, n, "a value is required", column=column, code=COLUMN_MISSING)
        return default
    return str(value).strip()


def _coded(row: Mapping[str, Any], column: str, file: Path, n: int, pattern: re.Pattern[str],
           what: str) -> str:
    value = _text(row, column, file, n).upper()
    if not pattern.fullmatch(value):
        raise FileFormatError(file, n, f"{value!r} is not {what}", column=column, code=VALUE_INVALID)
    return value


def _decimal(row: Mapping[str, Any], column: str, file: Path, n: int, default: str | None = None
             ) -> Decimal:
    value = row.get(column)
    if _empty(value):
        if default is None:
            raise FileFormatError(file, n, "a value is required", column=column, code=COLUMN_MISSING)
        value = default
    try:
        if isinstance(value, bool):
            raise InvalidOperation
        if isinstance(value, float):
            if not math.isfinite(value):
                raise InvalidOperation
            number = Decimal(repr(value))
        else:
            number = Decimal(value) if isinstance(value, Decimal | int) else Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise FileFormatError(file, n, f"{value!r} is not a number", column=column,
                              code=NUMBER_INVALID) from None
    if not number.is_finite():
        raise FileFormatError(file, n, f"{value!r} is not a finite number", column=column,
                              code=NUMBER_INVALID)
    return number


def _flag(row: Mapping[str, Any], column: str, file: Path, n: int) -> bool:
    value = row.get(column)
    if _empty(value):
        return False
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in TRUE | FALSE:
        raise FileFormatError(file, n, f"{value!r} is neither true nor false", column=column,
                              code=VALUE_INVALID)
    return text in TRUE


def _when(row: Mapping[str, Any], interval: str, file: Path, n: int) -> datetime | date:
    """The bar's start as the file gives it: an aware instant in UTC, or a daily bar's date."""
    value = row.get("start")
    if _empty(value):
        raise FileFormatError(file, n, "a value is required", column="start", code=COLUMN_MISSING)
    if hasattr(value, "to_pydatetime"):  # a pandas Timestamp (nanosecond Parquet columns)
        value = value.to_pydatetime()
    if isinstance(value, str):
        text = value.strip()
        try:
            value = date.fromisoformat(text) if len(text) <= 10 else datetime.fromisoformat(text)
        except ValueError:
            raise FileFormatError(file, n, f"{text!r} is not ISO 8601", column="start",
                                  code=INSTANT_INVALID) from None
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise FileFormatError(file, n, f"{value.isoformat()} has no time zone; give an offset "
                                  "such as Z", column="start", code=INSTANT_NOT_AWARE)
        return value.astimezone(UTC)
    if isinstance(value, date):
        if interval != "1d":
            raise FileFormatError(file, n, f"a date without a time ({value}) starts only 1d bars",
                                  column="start", code=INSTANT_INVALID)
        return value
    raise FileFormatError(file, n, f"a {type(value).__name__} is not a timestamp", column="start",
                          code=INSTANT_INVALID)


def _check_prices(o: Decimal, h: Decimal, lo: Decimal, c: Decimal, file: Path, n: int) -> None:
    rule = "prices must satisfy 0 < low <= open, close <= high"
    if h < lo:
        raise FileFormatError(file, n, f"high {h} is below low {lo}; {rule}", column="high",
                              code=PRICES_INCONSISTENT)
    for column, bad in (("low", lo <= 0), ("open", not lo <= o <= h), ("close", not lo <= c <= h)):
        if bad:
            raise FileFormatError(file, n, rule, column=column, code=PRICES_INCONSISTENT)


def _bar_row(row: Mapping[str, Any], file: Path, n: int) -> _Row:
    symbol = _text(row, "symbol", file, n)
    mic = _coded(row, "mic", file, n, MIC, "a 4-character MIC")
    interval = _text(row, "interval", file, n)
    if interval not in INTERVALS:
        raise FileFormatError(file, n, f"{interval!r} is not one of {', '.join(INTERVALS)}",
                              column="interval", code=INTERVAL_UNKNOWN)
    when = _when(row, interval, file, n)
    o, h, lo, c = (_decimal(row, column, file, n) for column in ("open", "high", "low", "close"))
    _check_prices(o, h, lo, c, file, n)
    volume = _decimal(row, "volume", file, n)
    if volume < 0:
        raise FileFormatError(file, n, f"{volume} is negative", column="volume", code=NUMBER_INVALID)
    factor = _decimal(row, "adjustment_factor", file, n, "1")
    if factor <= 0:
        raise FileFormatError(file, n, f"{factor} is not positive", column="adjustment_factor",
                              code=NUMBER_INVALID)
    return _Row(file, n, symbol, mic, when, interval, (o, h, lo, c), volume,
                _text(row, "session", file, n, "REGULAR"),
                _flag(row, "adjusted", file, n), factor)


def _instrument_values(row: Mapping[str, Any], file: Path, n: int) -> dict[str, Any]:
    """The instrument columns this row gives, normalised (so "usd" and "USD" agree)."""
    out: dict[str, Any] = {}
    for column in INSTRUMENT_COLUMNS:
        if _empty(row.get(column)):
            continue
        if column == "currency":
            out[column] = _coded(row, column, file, n, CURRENCY, "an ISO 4217 currency")
        elif column == "lot_size":
            lot = _decimal(row, column, file, n)
            if lot <= 0 or lot != lot.to_integral_value():
                raise FileFormatError(file, n, f"{lot} is not a positive whole number",
                                      column=column, code=NUMBER_INVALID)
            out[column] = int(lot)
        elif column == "tick_size":
            tick = _decimal(row, column, file, n)
            if tick <= 0:
                raise FileFormatError(file, n, f"{tick} is not positive", column=column,
                                      code=NUMBER_INVALID)
            out[column] = tick
        else:
            text = _text(row, column, file, n)
            out[column] = text.upper() if column == "asset_class" else text
    return out


# -- loading -------------------------------------------------------------------------------------

class _Loader:
    """Reads every group, then checks and assembles the whole: nothing is served from a set of
    files with a problem anywhere in it."""

    def __init__(self, venues: VenueDirectory | None, adjust: bool) -> None:
        self.venues = venues
        self.adjust = adjust
        # key -> column -> (value, file, row where first given)
        self.given: dict[str, dict[str, tuple[Any, Path, int]]] = {}
        self.first_row: dict[str, tuple[Path, int]] = {}
        self.rows: list[_Row] = []

    def load(self, groups: Sequence[_Group]
             ) -> tuple[dict[str, Instrument], dict[tuple[str, str], _Series]]:
        for group in groups:
            listed = self._read_tables(group.tables)
            for file in group.bars:
                self._read_bars(file, listed if group.tables else None)
        self._resolve_dates()
        by_series = self._checked_series()  # row problems first: they name the row to fix
        instruments = self._instruments()
        return instruments, {series_key: self._assemble(rows, instruments[series_key[0]].tick_size)
                             for series_key, rows in by_series.items()}

    def _note(self, key: str, values: Mapping[str, Any], file: Path, n: int) -> None:
        given = self.given.setdefault(key, {})
        self.first_row.setdefault(key, (file, n))
        for column, value in values.items():
            if column not in given:
                given[column] = (value, file, n)
            elif given[column][0] != value:
                old, old_file, old_n = given[column]
                raise FileFormatError(file, n, f"{value!r} differs from {old!r} given for {key} in "
                                      f"{old_file}, row {old_n}", column=column,
                                      code=INSTRUMENT_CONFLICT)

    def _read_tables(self, tables: Sequence[Path]) -> set[str]:
        listed: set[str] = set()
        for file in tables:
            for n, row in _rows(file, TABLE_COLUMNS):
                symbol = _text(row, "symbol", file, n)
                key = f"{symbol}.{_coded(row, 'mic', file, n, MIC, 'a 4-character MIC')}"
                if key in listed:
                    raise FileFormatError(file, n, f"{key} is listed twice", column="symbol",
                                          code=INSTRUMENT_CONFLICT)
                listed.add(key)
                _text(row, "currency", file, n)  # required in a table
                self._note(key, _instrument_values(row, file, n), file, n)
        return listed

    def _read_bars(self, file: Path, listed: set[str] | None) -> None:
        for n, row in _rows(file, BAR_COLUMNS):
            parsed = _bar_row(row, file, n)
            if listed is not None and parsed.key not in listed:
                raise FileFormatError(file, n, f"{parsed.key} is not in the instruments file",
                                      column="symbol", code=INSTRUMENT_UNLISTED)
            self._note(parsed.key, _instrument_values(row, file, n), file, n)
            self.rows.append(parsed)

    def _resolve_dates(self) -> None:
        """Give every row its UTC start; dates become the venue's session open that day."""
        dates: dict[str, set[date]] = {}
        for row in self.rows:
            if isinstance(row.when, datetime):
                row.start = row.when
            else:
                dates.setdefault(row.mic, set()).add(row.when)
        opens = {mic: _day_starts(self.venues, mic, days) for mic, days in dates.items()}
        for row in self.rows:
            if row.start is None:
                assert isinstance(row.when, date)
                row.start = opens[row.mic][row.when]

    def _instruments(self) -> dict[str, Instrument]:
        out: dict[str, Instrument] = {}
        for key in sorted(self.given):
            values = {column: value for column, (value, _, _) in self.given[key].items()}
            symbol, mic = key.rsplit(".", 1)
            currency = values.pop("currency", None) or _venue_currency(self.venues, mic)
            if currency is None:
                file, n = self.first_row[key]
                raise FileFormatError(file, n, f"no currency for {key}, and the venue directory does "
                                      f"not know {mic}", column="currency", code=COLUMN_MISSING)
            out[key] = Instrument(symbol=symbol, mic=mic, currency=currency, **values)
        return out

    def _checked_series(self) -> dict[tuple[str, str], dict[datetime, _Row]]:
        """Rows by (key, interval) and start: no duplicate, and adjusted or not throughout."""
        collected: dict[tuple[str, str], dict[datetime, _Row]] = {}
        for row in self.rows:
            series = collected.setdefault((row.key, row.interval), {})
            first = next(iter(series.values()), row)
            if first.adjusted != row.adjusted:
                raise FileFormatError(row.file, row.n, f"adjusted={str(row.adjusted).lower()}, but the "
                                      f"{row.interval} bars of {row.key} in {first.file}, row "
                                      f"{first.n} are adjusted={str(first.adjusted).lower()}",
                                      column="adjusted", code=ADJUSTMENT_MIXED)
            assert row.start is not None
            if row.start in series:
                raise FileFormatError(row.file, row.n, f"a second {row.interval} bar of {row.key} at "
                                      f"{row.start.isoformat()}", column="start", code=BAR_DUPLICATE)
            series[row.start] = row
        return collected

    def _assemble(self, rows: Mapping[datetime, _Row], tick: Decimal) -> _Series:
        ordered = [self._bar(rows[start], tick) for start in sorted(rows)]
        return _Series(tuple(b.start for b in ordered), tuple(ordered))

    def _bar(self, row: _Row, tick: Decimal) -> Bar:
        o, h, lo, c = row.prices
        volume = row.volume
        if self.adjust and not row.adjusted and row.factor != 1:
            o, h, lo, c = (_scaled(p * row.factor, _places(tick)) for p in row.prices)
            volume = (volume / row.factor).quantize(Decimal(1).scaleb(-_places(volume)), ROUND_HALF_EVEN)
            if lo <= 0:
                raise FileFormatError(row.file, row.n, f"the adjusted low rounds to {lo}",
                                      column="adjustment_factor", code=NUMBER_INVALID)
        assert row.start is not None
        return Bar(symbol=row.symbol, mic=row.mic, start=row.start, interval=row.interval, open=o,
                   high=h, low=lo, close=c, volume=volume, session=row.session)


def _places(value: Decimal) -> int:
    """Decimals a number is written with (0 for whole numbers, however written)."""
    exponent = value.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def _scaled(value: Decimal, tick_places: int) -> Decimal:
    """`value` rounded half-even to EXTRA_PLACES decimals beyond the tick, then written with as
    few decimals as it needs but no fewer than the tick has (95.000000 is 95.00, not 9.5E+1)."""
    rounded = value.quantize(Decimal(1).scaleb(-(tick_places + EXTRA_PLACES)), ROUND_HALF_EVEN)
    return rounded.quantize(Decimal(1).scaleb(-max(tick_places, _places(rounded))))


def _venue_currency(venues: VenueDirectory | None, mic: str) -> str | None:
    if venues is None:
        return None
    try:
        return venues.venue(mic).currency
    except Exception:  # the directory's "unknown venue" error: a file may hold any MIC
        return None


def _day_starts(venues: VenueDirectory | None, mic: str, days: set[date]) -> dict[date, datetime]:
    """Each trading day's bar start: the venue's first session open that day, else midnight in
    the venue's zone, else (venue unknown) midnight UTC. One calendar read per venue."""
    zone: ZoneInfo | None = None
    opens: dict[date, datetime] = {}
    if venues is not None:
        try:
            zone = ZoneInfo(venues.venue(mic).timezone)
        except Exception:  # unknown to the directory: UTC midnights
            zone = None
    if venues is not None and zone is not None:
        start = datetime.combine(min(days), time(), zone)
        end = datetime.combine(max(days) + timedelta(days=1), time(), zone)
        try:
            windows = venues.sessions(mic, start, end)
        except Exception:  # the calendar does not reach those years: local midnights
            windows = []
        for window in windows:
            opens.setdefault(window.opens_at.astimezone(zone).date(), window.opens_at.astimezone(UTC))
    tz = zone or UTC
    return {d: opens.get(d) or datetime.combine(d, time(), tz).astimezone(UTC) for d in days}


# -- the hook ------------------------------------------------------------------------------------

def _paths(config: Mapping[str, Any]) -> list[Path | str]:
    paths = config.get("paths")
    if paths is None:
        return [config.get("path") or SAMPLE]
    return [paths] if isinstance(paths, str | Path) else list(paths)


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in TRUE
    return bool(value)


@hookimpl
def alphintra_market_data_sources(context: PluginContext) -> list[MarketDataSource]:
    """Config: `paths` (files and directories), `adjust`, `root`; see the module docstring."""
    config = context.config
    return [FileSource(_paths(config), adjust=_truthy(config.get("adjust", False)),
                       venues=context.venues, root=config.get("root"))]
