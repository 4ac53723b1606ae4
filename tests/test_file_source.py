"""The file data source (issue 13): the user's own CSV/Parquet history, with instruments on
any venue, adjusted or not as the file says, checked whole on load with stable codes; served
for every tenant through ALPHINTRA_MARKETDATA_FILES, winning over the twin; and the example
dataset the project generates itself."""

from __future__ import annotations

import csv
import sys
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gateway.app import create_app
from gateway.cli import migrate_database
from gateway.marketdata import MarketDataService
from gateway.markets.directory import CalendarVenueDirectory
from gateway.runtime import Runtime, build_runtime
from gateway.settings import Settings
from marketplace.conformance import compare_hooks, run_kit
from plugins.builtin import BUILTINS, file_source
from plugins.builtin.file_source import FileFormatError, FileSource
from plugins.host import PluginHost, default_context
from tests.support import GraphQLClient, LiveServer, onboard, wait_for

HEADER = ["symbol", "mic", "start", "interval", "open", "high", "low", "close", "volume"]
GENERATOR = file_source.SAMPLE / "generate_files.py"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def write_csv(path: Path, rows: Sequence[Sequence[object]], header: Sequence[str] = HEADER) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def directory() -> CalendarVenueDirectory:
    # Calendars load on first use, once for the module.
    return CalendarVenueDirectory()


# -- reading: CSV and Parquet, two venues ---------------------------------------------------------

@pytest.fixture
def two_venues(tmp_path: Path) -> Path:
    """Vodafone on London in CSV (out of order, intraday and daily by date), SAP on Xetra in
    Parquet (daily, timestamps with a zone)."""
    extra = ["currency", "name", "isin", "tick_size", "session"]
    write_csv(tmp_path / "london.csv", [
        ["VOD", "XLON", "2024-03-04T08:05:00+00:00", "5m", "0.7014", "0.7020", "0.7010", "0.7018",
         "95000", "", "", "", "", ""],
        ["VOD", "XLON", "2024-03-04T08:00:00Z", "5m", "0.7012", "0.7016", "0.7010", "0.7014",
         "120000", "GBP", "Vodafone Group plc", "GB00BH4HKS39", "0.0002", ""],
        ["VOD", "XLON", "2024-03-04T08:10:00Z", "5m", "0.7018", "0.7022", "0.7015", "0.7021",
         "80000", "gbp", "", "", "", ""],
        ["VOD", "XLON", "2024-03-05", "1d", "0.70", "0.7100", "0.69", "0.705", "31000000",
         "", "", "", "", "REGULAR"],
        ["VOD", "XLON", "2024-03-04", "1d", "0.69", "0.7050", "0.6850", "0.70", "30000000",
         "", "", "", "", "REGULAR"],
    ], HEADER + extra)
    pq.write_table(pa.table({
        "Symbol": ["SAP", "SAP"], "MIC": ["xetr", "XETR"],  # names and MICs in any case
        "start": pa.array([utc(2024, 3, 5, 8), utc(2024, 3, 4, 8)], pa.timestamp("us", tz="Europe/Berlin")),
        "interval": ["1d", "1d"],
        "open": pa.array([Decimal("180.10"), Decimal("178.00")], pa.decimal128(10, 2)),
        "high": [182.5, 180.3], "low": ["179.02", "177.5"], "close": [181.1, 180.0],
        "volume": [1_200_000, 1_000_000], "name": ["SAP SE", None]}), tmp_path / "xetra.parquet")
    return tmp_path


def test_csv_and_parquet_with_instruments_on_two_venues(two_venues, directory):
    source = FileSource([two_venues / "london.csv", two_venues / "xetra.parquet"], venues=directory)
    instruments = {i.key: i for i in source.instruments()}
    assert list(instruments) == ["SAP.XETR", "VOD.XLON"]
    vod, sap = instruments["VOD.XLON"], instruments["SAP.XETR"]
    assert (vod.currency, vod.name, vod.isin, vod.tick_size, vod.lot_size, vod.asset_class) == \
        ("GBP", "Vodafone Group plc", "GB00BH4HKS39", Decimal("0.0002"), 1, "EQUITY")
    # SAP's currency is its venue's.
    assert (sap.currency, sap.name, sap.tick_size) == ("EUR", "SAP SE", Decimal("0.01"))

    five = source.bars(vod, utc(2024, 3, 4), utc(2024, 3, 5), "5m")
    assert [b.start for b in five] == [utc(2024, 3, 4, 8), utc(2024, 3, 4, 8, 5), utc(2024, 3, 4, 8, 10)]
    assert all(b.start.utcoffset().total_seconds() == 0 and b.interval == "5m" for b in five)
    assert five[0].open == Decimal("0.7012") and five[0].volume == Decimal("120000")
    assert all(isinstance(v, Decimal) for b in five for v in (b.open, b.high, b.low, b.close, b.volume))
    # [start, end): the bar starting at `end` is left out.
    assert [b.start for b in source.bars(vod, utc(2024, 3, 4, 8, 5), utc(2024, 3, 4, 8, 10), "5m")] == \
        [utc(2024, 3, 4, 8, 5)]
    assert source.bars(vod, utc(2024, 3, 4), utc(2024, 3, 5), "1m") == []

    # A date is the trading day: the bar starts at London's open (08:00 UTC in March).
    daily = source.bars(vod, utc(2024, 3, 1), utc(2024, 3, 9), "1d")
    assert [(b.start, b.close) for b in daily] == [(utc(2024, 3, 4, 8), Decimal("0.70")),
                                                   (utc(2024, 3, 5, 8), Decimal("0.705"))]
    sap_daily = source.bars(sap, utc(2024, 3, 1), utc(2024, 3, 9), "1d")
    assert [b.start for b in sap_daily] == [utc(2024, 3, 4, 8), utc(2024, 3, 5, 8)]  # instants as given
    assert (sap_daily[0].open, sap_daily[0].high, sap_daily[0].low) == \
        (Decimal("178.00"), Decimal("180.3"), Decimal("177.5"))  # floats by their repr, text exactly

    quote = source.quote(vod, utc(2024, 3, 4, 8, 12))
    assert quote.bid == quote.ask == Decimal("0.7018") and quote.bid_size == 0  # the 08:05 bar


def test_a_directory_is_read_whole_and_a_date_without_a_calendar_is_utc_midnight(two_venues, directory):
    assert [i.key for i in FileSource(two_venues, venues=directory).instruments()] == ["SAP.XETR", "VOD.XLON"]
    source = FileSource(two_venues / "london.csv")  # no venue directory
    (vod,) = source.instruments()
    assert [b.start for b in source.bars(vod, utc(2024, 3, 1), utc(2024, 3, 9), "1d")] == \
        [utc(2024, 3, 4), utc(2024, 3, 5)]
    with pytest.raises(FileFormatError) as raised:
        FileSource(two_venues)  # SAP has no currency column, and no directory to ask
    assert (raised.value.code, raised.value.file.name, raised.value.row, raised.value.column) == \
        ("MARKETDATA_COLUMN_MISSING", "xetra.parquet", 1, "currency")


# -- corporate actions -----------------------------------------------------------------------------

ACTIONS = [*HEADER, "currency", "adjusted", "adjustment_factor"]


@pytest.fixture
def actions(tmp_path: Path) -> Path:
    """ACME split 2-for-1 on 6 March (raw rows, factor 0.5 before); BETA already adjusted by its
    provider (its factor column is ignored)."""
    return write_csv(tmp_path / "actions.csv", [
        ["ACME", "XNYS", "2024-03-04T14:30:00Z", "1d", "100.00", "102.01", "99.00", "101.00", "1001", "USD",
         "false", "0.5"],
        ["ACME", "XNYS", "2024-03-05T14:30:00Z", "1d", "101.00", "104.00", "100.00", "103.00", "1000", "USD",
         "false", "0.5"],
        ["ACME", "XNYS", "2024-03-06T14:30:00Z", "1d", "51.50", "52.00", "51.00", "51.75", "2000", "USD",
         "false", ""],
        ["BETA", "XNYS", "2024-03-04T14:30:00Z", "1d", "10.00", "10.50", "9.50", "10.25", "500", "USD",
         "true", "0.9"],
    ], ACTIONS)


def test_unadjusted_rows_are_served_raw_unless_the_source_adjusts(actions):
    def closes(source: FileSource, symbol: str) -> list[tuple[Decimal, ...]]:
        inst = next(i for i in source.instruments() if i.symbol == symbol)
        return [(b.open, b.high, b.low, b.close, b.volume)
                for b in source.bars(inst, utc(2024, 3, 1), utc(2024, 3, 9), "1d")]

    raw = FileSource(actions)
    assert closes(raw, "ACME")[0] == tuple(Decimal(x) for x in ("100.00", "102.01", "99.00", "101.00",
                                                                 "1001"))
    # Through the hook, as a tenant's plugin view configures it: `paths` and `adjust`.
    (adjusted,) = file_source.alphintra_market_data_sources(
        default_context("file-source", config={"paths": [str(actions)], "adjust": "true"}))
    assert closes(adjusted, "ACME") == [
        # prices x 0.5 (the tick's decimals kept, four more at most), volume / 0.5 (whole, half-even)
        (Decimal("50.00"), Decimal("51.005"), Decimal("49.50"), Decimal("50.50"), Decimal("2002")),
        (Decimal("50.50"), Decimal("52.00"), Decimal("50.00"), Decimal("51.50"), Decimal("2000")),
        (Decimal("51.50"), Decimal("52.00"), Decimal("51.00"), Decimal("51.75"), Decimal("2000")),  # factor 1
    ]
    # Rows the file says are adjusted are served as they are, whatever the source is told.
    assert closes(raw, "BETA") == closes(adjusted, "BETA") == [
        tuple(Decimal(x) for x in ("10.00", "10.50", "9.50", "10.25", "500"))]


# -- validation: file, row, column and a stable code; nothing served from a bad set ---------------

GOOD = ["VOD", "XLON", "2024-03-04T08:00:00Z", "1m", "1", "2", "1", "1.5", "10"]


def bad(column: str, value: str) -> list[str]:
    row = list(GOOD)
    row[HEADER.index(column)] = value
    return row


@pytest.mark.parametrize("rows, code, row, column", [
    ([GOOD, bad("close", "abc")], "MARKETDATA_NUMBER_INVALID", 2, "close"),
    ([bad("volume", "NaN")], "MARKETDATA_NUMBER_INVALID", 1, "volume"),
    ([bad("volume", "-1")], "MARKETDATA_NUMBER_INVALID", 1, "volume"),
    ([bad("high", "0.5")], "MARKETDATA_PRICES_INCONSISTENT", 1, "high"),  # high < low
    ([bad("close", "2.5")], "MARKETDATA_PRICES_INCONSISTENT", 1, "close"),
    ([GOOD, GOOD], "MARKETDATA_BAR_DUPLICATE", 2, "start"),
    # 09:00+01:00 is 08:00Z: the same instant written another way.
    ([GOOD, bad("start", "2024-03-04T09:00:00+01:00")], "MARKETDATA_BAR_DUPLICATE", 2, "start"),
    ([bad("interval", "2m")], "MARKETDATA_INTERVAL_UNKNOWN", 1, "interval"),
    ([bad("start", "2024-03-04T08:00:00")], "MARKETDATA_INSTANT_NOT_AWARE", 1, "start"),
    ([bad("start", "2024-03-04")], "MARKETDATA_INSTANT_INVALID", 1, "start"),  # a date on a 1m bar
    ([bad("start", "4 March 2024")], "MARKETDATA_INSTANT_INVALID", 1, "start"),
    ([bad("mic", "LSE")], "MARKETDATA_VALUE_INVALID", 1, "mic"),
    ([bad("symbol", "")], "MARKETDATA_COLUMN_MISSING", 1, "symbol"),
    ([[*GOOD, "extra"]], "MARKETDATA_FILE_UNREADABLE", 1, None),
])
def test_each_problem_names_file_row_and_column(tmp_path, rows, code, row, column):
    path = write_csv(tmp_path / "bars.csv", rows)
    with pytest.raises(FileFormatError) as raised:
        FileSource(path)
    error = raised.value
    assert (error.code, error.file, error.row, error.column) == (code, path, row, column)
    assert str(error).startswith(f"{path}, row {row}") and f"[{code}]" in str(error)


@pytest.mark.parametrize("header, rows, code, row, column", [
    (HEADER[:-1], [GOOD[:-1]], "MARKETDATA_COLUMN_MISSING", None, "volume"),
    ([*HEADER, "adjusted"], [[*GOOD, "true"], [*bad("start", "2024-03-04T08:01:00Z"), "false"]],
     "MARKETDATA_ADJUSTMENT_MIXED", 2, "adjusted"),
    ([*HEADER, "adjusted"], [[*GOOD, "maybe"]], "MARKETDATA_VALUE_INVALID", 1, "adjusted"),
    ([*HEADER, "adjustment_factor"], [[*GOOD, "0"]], "MARKETDATA_NUMBER_INVALID", 1, "adjustment_factor"),
    ([*HEADER, "currency"], [[*GOOD, "GBP"], [*bad("start", "2024-03-04T08:01:00Z"), "EUR"]],
     "MARKETDATA_INSTRUMENT_CONFLICT", 2, "currency"),
    ([*HEADER, "tick_size"], [[*GOOD, "-0.01"]], "MARKETDATA_NUMBER_INVALID", 1, "tick_size"),
])
def test_header_adjustment_and_instrument_problems(tmp_path, header, rows, code, row, column):
    path = write_csv(tmp_path / "bars.csv", rows, header)
    with pytest.raises(FileFormatError) as raised:
        FileSource(path)
    assert (raised.value.code, raised.value.row, raised.value.column) == (code, row, column)


def test_parquet_problems_name_their_row(tmp_path):
    path = tmp_path / "bars.parquet"
    pq.write_table(pa.table({
        "symbol": ["VOD", "VOD"], "mic": ["XLON", "XLON"],
        "start": pa.array([datetime(2024, 3, 4, 8), datetime(2024, 3, 4, 8, 1)], pa.timestamp("us")),
        "interval": ["1m", "1m"], "open": [1.0, 1.0], "high": [1.0, 1.0], "low": [1.0, 1.0],
        "close": [1.0, 1.0], "volume": [1, 1]}), path)
    with pytest.raises(FileFormatError) as raised:
        FileSource(path)
    assert (raised.value.code, raised.value.row, raised.value.column) == \
        ("MARKETDATA_INSTANT_NOT_AWARE", 1, "start")
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(FileFormatError) as raised:
        FileSource(tmp_path / "broken.parquet")
    assert raised.value.code == "MARKETDATA_FILE_UNREADABLE"


def test_paths_are_checked_and_confined_to_a_root(tmp_path, directory):
    with pytest.raises(FileFormatError) as raised:
        FileSource(tmp_path / "missing.csv")
    assert raised.value.code == "MARKETDATA_PATH_INVALID"
    (tmp_path / "tenant").mkdir()
    write_csv(tmp_path / "other.csv", [GOOD])
    write_csv(tmp_path / "tenant" / "mine.csv", [GOOD])
    mine = FileSource(["mine.csv"], root=tmp_path / "tenant", venues=directory)
    assert mine.paths == [tmp_path / "tenant" / "mine.csv"] and mine.instruments()[0].currency == "GBP"
    for outside in ("../other.csv", str(tmp_path / "other.csv")):
        with pytest.raises(FileFormatError, match="outside the source's root") as raised:
            FileSource([outside], root=tmp_path / "tenant")
        assert raised.value.code == "MARKETDATA_PATH_INVALID"
    (tmp_path / "tenant" / "link.csv").symlink_to(tmp_path / "other.csv")
    with pytest.raises(FileFormatError, match="outside the source's root"):
        FileSource(["."], root=tmp_path / "tenant", venues=directory)


def test_a_bad_file_fails_the_whole_source_and_only_it(tmp_path, directory):
    good = write_csv(tmp_path / "good.csv",
                     [["ACME", "XNYS", "2024-03-04", "1d", "1", "2", "1", "1.5", "10"]])
    broken = write_csv(tmp_path / "broken.csv", [GOOD, bad("high", "0.5")])
    service = MarketDataService(PluginHost(BUILTINS), directory,
                                configs={"file-source": {"paths": [str(good), str(broken)]}})
    keys = {i.key for i in service.instruments()}
    assert "ACME.XNYS" not in keys and "VOD.XLON" not in keys  # not half of it
    assert "AAPL.XNAS" in keys  # the twin serves on
    (failure,) = service.failures()
    assert failure.plugin == "file-source" and "MARKETDATA_PRICES_INCONSISTENT" in failure.message
    assert "broken.csv, row 2, column 'high'" in failure.message


# -- precedence over the twin ---------------------------------------------------------------------

def test_the_file_wins_over_the_twin_for_the_same_key(tmp_path, directory):
    mine = write_csv(tmp_path / "aapl.csv", [
        ["AAPL", "XNAS", "2024-03-04", "1d", "170.00", "171.50", "169.00", "171.00", "50000000",
         "USD", "Apple Inc. (my vendor)"]], [*HEADER, "currency", "name"])
    service = MarketDataService(PluginHost(BUILTINS), directory,
                                configs={"file-source": {"paths": [str(mine)]}})
    assert service.source_of("AAPL.XNAS").plugin == "file-source"
    assert service.instrument("AAPL.XNAS").name == "Apple Inc. (my vendor)"
    (bar,) = service.bars("AAPL.XNAS", utc(2024, 3, 1), utc(2024, 3, 9), "1d")
    assert (bar.start, bar.close) == (utc(2024, 3, 4, 14, 30), Decimal("171.00"))  # Nasdaq's open
    assert service.bars("AAPL.XNAS", utc(2024, 3, 4), utc(2024, 3, 5), "1h") == []  # all of the key
    assert service.source_of("MSFT.XNAS").plugin == "market-twin"  # the rest is the twin's


# -- the shipped example dataset ------------------------------------------------------------------

def test_the_example_dataset_is_what_its_script_writes_and_passes_the_conformance_kit(tmp_path, monkeypatch):
    from importlib.util import module_from_spec, spec_from_file_location

    spec = spec_from_file_location("generate_files", GENERATOR)
    assert spec is not None and spec.loader is not None
    generator = module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, generator)  # its dataclasses look themselves up
    spec.loader.exec_module(generator)
    written = generator.generate(tmp_path)
    for path in written:
        shipped = file_source.EXAMPLES / path.name
        if path.suffix == ".csv":
            assert path.read_bytes() == shipped.read_bytes(), path.name
        else:
            assert pq.read_table(path).equals(pq.read_table(shipped)), path.name
    assert sum(p.stat().st_size for p in file_source.EXAMPLES.iterdir()) < 300_000

    manifest = {"id": "alphintra.files", "version": "1.0.0", "category": "data-source",
                "capabilities": [], "hooks": ["alphintra_market_data_sources"],
                "conformance": {"config": {"paths": [str(file_source.EXAMPLES)], "adjust": True}}}
    manager, implemented, problems = compare_hooks(file_source, manifest["id"], manifest["hooks"])
    assert implemented == manifest["hooks"] and problems == []
    outcome = run_kit(manifest, manager, manifest["id"])
    assert outcome.failures == [] and "files: 4 instruments" in outcome.checks


def test_the_example_dataset_split_and_dividends(directory):
    raw, adjusted = (FileSource(file_source.EXAMPLES, venues=directory, adjust=a) for a in (False, True))
    nvda = next(i for i in raw.instruments() if i.key == "NVDA.XNAS")
    ko = next(i for i in raw.instruments() if i.key == "KO.XNYS")
    june = (utc(2024, 6, 6), utc(2024, 6, 12), "1d")
    before, after = (s.bars(nvda, *june) for s in (raw, adjusted))
    assert [b.start.date() for b in before] == [date(2024, 6, 6), date(2024, 6, 7), date(2024, 6, 10),
                                                date(2024, 6, 11)]
    assert before[1].close / before[2].close > 9  # the raw split gap
    assert after[1].close == before[1].close / 10 and after[1].volume == before[1].volume * 10
    assert after[2:] == before[2:]  # from the split on, raw is adjusted
    first_ko = (utc(2023, 1, 1), utc(2023, 1, 5), "1d")
    assert adjusted.bars(ko, *first_ko)[0].close < raw.bars(ko, *first_ko)[0].close  # dividends
    five = raw.bars(nvda, utc(2024, 6, 14), utc(2024, 6, 15), "5m")
    (day,) = raw.bars(nvda, utc(2024, 6, 14), utc(2024, 6, 15), "1d")
    assert len(five) == 78 and day.start == five[0].start == utc(2024, 6, 14, 13, 30)
    assert (day.open, day.high, day.low, day.close, day.volume) == (
        five[0].open, max(b.high for b in five), min(b.low for b in five), five[-1].close,
        sum(b.volume for b in five))


# -- for every tenant by settings, through GraphQL, with a backtest -------------------------------

BARS = """query($i: String!, $s: DateTime!, $e: DateTime!, $n: String!) {
  bars(instrument: $i, start: $s, end: $e, interval: $n) { symbol mic start interval open close volume } }"""
CREATE = """mutation($doc: JSON!) { createStrategy(input: {document: $doc}) { versions { id } } }"""
BACKTEST = """mutation($v: ID!, $start: DateTime!, $end: DateTime!) {
  backtest(strategyVersionId: $v, start: $start, end: $end) { id status } }"""
TREND: dict[str, Any] = {
    "name": "NVDA trend on my own data", "interval": "1d",
    "universe": {"instruments": ["NVDA.XNAS"]},
    "signals": [{"name": "fast", "indicator": "sma", "window": 5},
                {"name": "slow", "indicator": "sma", "window": 20}],
    "entry": {"op": "gt", "left": "fast", "right": "slow"},
    "exit": {"op": "lt", "left": "fast", "right": "slow"},
    "sizing": {"method": "fixed_fraction", "fraction": 0.5},
    "risk": {"max_position": 0.6},
}


@pytest.fixture(scope="module")
def files_runtime(migrated: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    """A second runtime whose settings name the example dataset and a file of the user's own
    AAPL bars (the shared runtime keeps the bundled sample). It has a database and broker of its
    own: on the suite's database the shared runtime's dispatcher or reaper may take its backtest's
    job message and run it without these files (replicas of one deployment share settings)."""
    mine = write_csv(tmp_path_factory.mktemp("mine") / "aapl.csv", [
        ["AAPL", "XNAS", "2024-03-04", "1d", "170.00", "171.50", "169.00", "171.00", "50000000"]])
    env = Settings.from_env({"ALPHINTRA_MARKETDATA_FILES": f"{file_source.EXAMPLES}, {mine}",
                             "ALPHINTRA_MARKETDATA_ADJUST": "true"})
    assert env.marketdata_files == (str(file_source.EXAMPLES), str(mine)) and env.marketdata_adjust
    own = migrated.with_(database_url=f"sqlite:///{tmp_path_factory.mktemp('files-db') / 'f.db'}",
                         redis_url=None, marketdata_files=env.marketdata_files, marketdata_adjust=True,
                         redis_namespace=f"alphintra-files-{uuid.uuid4().hex[:8]}")
    migrate_database(own)
    rt = build_runtime(own)
    yield rt
    rt.close()


def test_settings_serve_the_files_to_every_tenant_and_a_backtest_runs(files_runtime):
    rt = files_runtime
    with LiveServer(create_app(runtime=rt)) as live:
        gql = GraphQLClient(live.url)
        tenant = onboard(rt)
        bars = gql.data(BARS, {"i": "NVDA.XNAS", "s": "2024-06-06T00:00:00Z", "e": "2024-06-11T00:00:00Z",
                               "n": "1d"}, key=tenant.key)["bars"]
        assert [(b["start"], b["close"]) for b in bars] == [
            ("2024-06-06T13:30:00+00:00", "118.955"),  # 1189.55 before the 10-for-1 split, adjusted
            ("2024-06-07T13:30:00+00:00", "120.90"),
            ("2024-06-10T13:30:00+00:00", "114.25")]
        one = gql.data('{ a: instrument(key: "aapl.xnas") { source currency } '
                       'b: instrument(key: "ASML.XAMS") { source currency tickSize } }', key=tenant.key)
        assert one == {"a": {"source": "files", "currency": "USD"},  # the user's file over the twin
                       "b": {"source": "files", "currency": "EUR", "tickSize": "0.1"}}
        assert gql.data(BARS, {"i": "KO.XNYS", "s": "2024-06-14T00:00:00Z", "e": "2024-06-15T00:00:00Z",
                               "n": "1d"}, key=tenant.key)["bars"][0]["mic"] == "XNYS"

        version = gql.data(CREATE, {"doc": TREND}, key=tenant.key)["createStrategy"]["versions"][0]
        job = gql.data(BACKTEST, {"v": version["id"], "start": "2023-03-01T00:00:00Z",
                                  "end": "2024-12-31T00:00:00Z"}, key=tenant.key)["backtest"]
        done = wait_for(lambda: (j := rt.jobs.get(tenant.id, job["id"])).status in ("SUCCEEDED", "FAILED")
                        and j, timeout=120)
        assert done.status == "SUCCEEDED", (done.error_code, done.error_message)
        result = gql.data("query($id: ID!) { backtestResult(id: $id) { metrics trades } }",
                          {"id": done.result["backtest_id"]}, key=tenant.key)["backtestResult"]
        served = rt.market_data.bars("NVDA.XNAS", utc(2023, 3, 1), utc(2024, 12, 31), "1d")
        assert result["metrics"]["bars"] == len(served) > 400
        assert result["trades"]  # the trend strategy traded on the file's history


def test_a_tenants_own_files_serve_that_tenant_only_and_win(runtime, tmp_path):
    from gateway.errors import DomainError
    from gateway.marketdata.tenant_files import TenantFiles
    from gateway.scope import tenant_scope

    own = tmp_path / "tenant-a"
    own.mkdir()
    (own / "bars.csv").write_text(
        "symbol,mic,start,interval,open,high,low,close,volume\n"
        "AAPL,XNAS,2024-03-04,1d,10,11,9,10.5,1000\n"
        "AAPL,XNAS,2024-03-05,1d,10.5,12,10,11.5,1200\n"
        "OWNCO,XNAS,2024-03-04,1d,5,5.5,4.5,5.25,300\n")
    service = MarketDataService(runtime.plugins, runtime.markets.directory)
    service.bind_installed(TenantFiles(str(tmp_path), runtime.markets.directory).sources)
    start, end = datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 8, tzinfo=UTC)
    with tenant_scope("tenant-a"):
        assert service.source_of("AAPL.XNAS").plugin == "file-source"
        assert [b.close for b in service.bars("AAPL.XNAS", start, end, "1d")] == [Decimal("10.5"),
                                                                                  Decimal("11.5")]
        assert service.instrument("OWNCO.XNAS").key == "OWNCO.XNAS"
    with tenant_scope("tenant-b"):
        assert service.source_of("AAPL.XNAS").plugin == "market-twin"
        with pytest.raises(DomainError):
            service.instrument("OWNCO.XNAS")
    with tenant_scope("../tenant-a"):  # a tenant id never walks out of the folder
        assert service.source_of("AAPL.XNAS").plugin == "market-twin"
