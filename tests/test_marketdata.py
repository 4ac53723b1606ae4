"""Market data: the twin's reproducibility, sessions and statistics, the file source, the
service's codes and failure isolation, and the GraphQL surface over a live server."""

import asyncio
import math
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gateway.errors import DomainError
from gateway.marketdata import MarketDataService
from plugins import hookimpl
from plugins.builtin import BUILTINS, file_source, market_twin
from plugins.builtin.file_source import FileFormatError, FileSource
from plugins.builtin.market_twin import MarketTwin
from plugins.host import PluginHost
from plugins.sdk import Bar, Instrument
from tests.support import TransportWS, error_codes


def utc(*args):
    return datetime(*args, tzinfo=UTC)


@pytest.fixture(scope="module")
def directory(runtime):
    # The runtime's own directory: its calendars are loaded once for the whole suite.
    return runtime.markets.directory


@pytest.fixture(scope="module")
def twin(directory):
    return MarketTwin(directory, seed=7)


@pytest.fixture(scope="module")
def insts(twin):
    return {i.key: i for i in twin.instruments()}


@pytest.fixture(scope="module")
def crypto(directory):
    mic = next(v.mic for v in directory.venues() if v.always_open)
    return f"BTC-USD.{mic}"


def windows(directory, mic, start, end):
    return [(w.opens_at, w.closes_at) for w in directory.sessions(mic, start, end)]


# -- the twin: reproducible by seed ----------------------------------------------------------

def test_same_seed_same_bars_whatever_the_order(directory, insts):
    march = (utc(2024, 3, 4), utc(2024, 3, 9))
    first = MarketTwin(directory, seed=7)
    expected = {k: first.bars(insts[k], *march, "15m") for k in ("AAPL.XNAS", "7203.XTKS", "SHEL.XLON")}

    # A fresh twin with the same seed, warmed up in another order and on other dates.
    second = MarketTwin(directory, seed=7)
    second.bars(insts["SHEL.XLON"], utc(2026, 6, 2), utc(2026, 6, 4), "1h")
    second.bars(insts["7203.XTKS"], utc(2010, 5, 7), utc(2010, 5, 12), "1d")
    second.quote(insts["MSFT.XNAS"], utc(2024, 3, 5, 15))
    for key in ("SHEL.XLON", "7203.XTKS", "AAPL.XNAS"):
        assert second.bars(insts[key], *march, "15m") == expected[key]

    # A range asked in two halves gives the same bars as asked at once.
    middle = utc(2024, 3, 6, 17, 45)
    halves = first.bars(insts["AAPL.XNAS"], march[0], middle, "15m") + \
        first.bars(insts["AAPL.XNAS"], middle, march[1], "15m")
    assert halves == expected["AAPL.XNAS"]

    other = MarketTwin(directory, seed=8).bars(insts["AAPL.XNAS"], *march, "15m")
    assert [b.start for b in other] == [b.start for b in expected["AAPL.XNAS"]]
    assert [b.close for b in other] != [b.close for b in expected["AAPL.XNAS"]]


def test_seed_comes_from_plugin_config(directory):
    def bars(seed):
        service = MarketDataService(PluginHost(BUILTINS), directory,
                                    configs={"market-twin": {"seed": seed}})
        return service.bars("AAPL.XNAS", utc(2024, 3, 4), utc(2024, 3, 5), "1h")

    assert bars(3) == bars(3) != bars(4)


# -- sessions ----------------------------------------------------------------------------------

@pytest.mark.parametrize("key, start, end, holiday", [
    # Tokyo: lunch break 11:30-12:30 local; 20 March 2024 is Vernal Equinox Day.
    ("7203.XTKS", utc(2024, 3, 17), utc(2024, 3, 23), date(2024, 3, 20)),
    # Hong Kong: lunch break 12:00-13:00 local; Good Friday and Easter Monday 2024.
    ("0700.XHKG", utc(2024, 3, 27), utc(2024, 4, 3), date(2024, 3, 29)),
    # Nasdaq: 3 July 2024 closes early (13:00 New York); 4 July is a holiday.
    ("AAPL.XNAS", utc(2024, 7, 1), utc(2024, 7, 6), date(2024, 7, 4)),
])
def test_bars_only_inside_sessions(directory, twin, insts, key, start, end, holiday):
    instrument = insts[key]
    tz = ZoneInfo(directory.venue(instrument.mic).timezone)
    sessions = windows(directory, instrument.mic, start, end)
    minutes = twin.bars(instrument, start, end, "1m")
    # Every bar lies inside a session window, and every session minute has its bar.
    expected = {o + timedelta(minutes=k) for o, c in sessions
                for k in range(int((c - o).total_seconds() // 60)) if start <= o + timedelta(minutes=k) < end}
    assert {b.start for b in minutes} == expected and len(minutes) == len(expected)
    assert holiday not in {b.start.astimezone(tz).date() for b in minutes}
    if instrument.mic in ("XTKS", "XHKG"):  # two windows a day: the lunch break is empty
        per_day = {}
        for o, _ in sessions:
            per_day.setdefault(o.astimezone(tz).date(), []).append(o)
        assert all(len(v) == 2 for v in per_day.values())

    hours = twin.bars(instrument, start, end, "1h")
    for bar in hours:  # aligned on the window's open, and never running past its close
        o, c = next((o, c) for o, c in sessions if o <= bar.start < c)
        assert (bar.start - o) % timedelta(hours=1) == timedelta(0)
        inside = [m for m in minutes if bar.start <= m.start < min(bar.start + timedelta(hours=1), c)]
        assert bar.volume == sum(m.volume for m in inside) and bar.close == inside[-1].close
    first_opens: dict[date, datetime] = {}
    for o, _ in sessions:
        first_opens.setdefault(o.astimezone(tz).date(), o)
    days = twin.bars(instrument, start, end, "1d")
    assert [d.start for d in days] == [o for o in first_opens.values() if start <= o < end]
    if key == "AAPL.XNAS":  # the half day before Independence Day ends at 13:00 in New York
        assert max(b.start for b in minutes if b.start.date() == date(2024, 7, 3)) == utc(2024, 7, 3, 16, 59)


def test_coarser_bars_are_made_of_finer_ones(twin, insts):
    instrument = insts["7203.XTKS"]
    start, end = utc(2024, 3, 4), utc(2024, 3, 6)
    minutes = twin.bars(instrument, start, end, "1m")
    for coarse in twin.bars(instrument, start, end, "1h") + twin.bars(instrument, start, end, "1d"):
        span = timedelta(days=1) if coarse.interval == "1d" else timedelta(hours=1)
        parts = [m for m in minutes if coarse.start <= m.start < coarse.start + span]
        if coarse.interval == "1d":  # a day is both windows, whatever lies between
            day = coarse.start.date()
            parts = [m for m in minutes if m.start.date() == day]
        assert coarse.open == parts[0].open and coarse.close == parts[-1].close
        assert coarse.high == max(m.high for m in parts) and coarse.low == min(m.low for m in parts)
        assert coarse.volume == sum(m.volume for m in parts)


def test_quotes_inside_and_outside_sessions(directory, twin, insts, crypto):
    instrument = insts["7203.XTKS"]
    open_at = utc(2024, 3, 5, 1, 17, 30)  # 10:17:30 in Tokyo
    assert directory.is_open("XTKS", open_at)
    quote = twin.quote(instrument, open_at)
    assert quote.bid < quote.ask and quote.bid_size > 0 and quote.ask_size > 0
    minute = twin.bars(instrument, utc(2024, 3, 5, 1, 17), utc(2024, 3, 5, 1, 18), "1m")[0]
    assert minute.low - 2 * instrument.tick_size <= quote.bid <= minute.high + instrument.tick_size

    lunch = utc(2024, 3, 5, 2, 45)  # 11:45 in Tokyo
    assert not directory.is_open("XTKS", lunch)
    morning_close = twin.bars(instrument, utc(2024, 3, 5), lunch, "1m")[-1].close
    indicative = twin.quote(instrument, lunch)
    assert indicative.bid == indicative.ask == morning_close
    assert indicative.bid_size == indicative.ask_size == 0
    holiday = twin.quote(instrument, utc(2024, 3, 20, 3))  # the last close is the day before's
    assert holiday.bid == twin.bars(instrument, utc(2024, 3, 19), utc(2024, 3, 20), "1d")[-1].close
    assert twin.quote(instrument, utc(1985, 1, 1)) is None

    weekend = twin.quote(insts[crypto], utc(2024, 3, 9, 12))
    assert weekend.bid < weekend.ask and weekend.bid_size > 0  # the 24/7 venue never closes


# -- statistics --------------------------------------------------------------------------------

def test_realised_correlation_matches_the_model(twin, insts, crypto):
    keys = ["AAPL.XNAS", "MSFT.XNAS", "SHEL.XLON", "7203.XTKS", crypto]
    chosen = [insts[k] for k in keys]
    returns = np.array([np.diff(twin.daily_log_levels(i, date(1995, 1, 1), date(2030, 12, 31)))
                        for i in chosen])
    realised, model = np.corrcoef(returns), twin.correlation(chosen)
    assert model[0, 1] == pytest.approx(0.505)  # two Nasdaq names: global and americas factors
    assert np.abs(realised - model).max() < 0.05  # ~13,000 days: standard error under 0.01

    # The same from bars: close-to-close over two years of daily bars of the two Nasdaq names.
    closes = [[math.log(b.close) for b in twin.bars(insts[k], utc(2023, 1, 1), utc(2025, 1, 1), "1d")]
              for k in ("AAPL.XNAS", "MSFT.XNAS")]
    assert len(closes[0]) == len(closes[1]) > 490
    from_bars = np.corrcoef(np.diff(closes[0]), np.diff(closes[1]))[0, 1]
    assert abs(from_bars - model[0, 1]) < 0.15  # 500 days: standard error about 0.03


def test_regimes_switch_and_show_in_volatility(twin, insts):
    first, last = date(1990, 1, 1), date(2060, 12, 31)
    returns = np.diff(twin.daily_log_levels(insts["AAPL.XNAS"], first, last))
    regimes = np.array([twin.regime_on(first + timedelta(days=k)) for k in range(len(returns))])
    switches = int((regimes[1:] != regimes[:-1]).sum())
    assert 50 < switches < 2000  # it switches, and spells last (a chain of iid days would not)
    shares = {r.name: float((regimes == r.name).mean()) for r in market_twin.REGIMES}
    assert shares["calm"] > 0.5 and shares["crisis"] > 0.01
    vol = {r.name: returns[regimes == r.name].std() for r in market_twin.REGIMES}
    calm_vol = 0.25 / math.sqrt(365)
    assert vol["calm"] == pytest.approx(calm_vol, rel=0.05)
    assert vol["volatile"] / vol["calm"] == pytest.approx(1.8, rel=0.1)
    assert vol["crisis"] / vol["calm"] == pytest.approx(3.5, rel=0.15)


def test_prices_are_decimals_on_the_tick_and_volumes_in_lots(twin, insts, crypto):
    for key, instrument in insts.items():
        spec = next(s for s in market_twin.UNIVERSE if s.sid == instrument.symbol)
        assert instrument.isin == spec.isin and instrument.lot_size == spec.lot_size
        bars = twin.bars(instrument, utc(2024, 3, 4), utc(2024, 3, 6), "15m")
        assert bars, key
        tick, step = instrument.tick_size, spec.quantity_step
        for bar in bars:
            for price in (bar.open, bar.high, bar.low, bar.close):
                assert isinstance(price, Decimal) and price % tick == 0 and price > 0, (key, price)
                assert price.as_tuple().exponent == tick.as_tuple().exponent
            assert bar.low <= min(bar.open, bar.close) <= max(bar.open, bar.close) <= bar.high
            assert bar.volume % step == 0 and bar.volume >= 0
        quote = twin.quote(instrument, bars[len(bars) // 2].start + timedelta(seconds=20))
        assert quote.bid % tick == 0 and quote.ask % tick == 0 and quote.ask > quote.bid
        assert quote.bid_size % step == 0 and quote.bid_size > 0
    assert insts["7203.XTKS"].tick_size == Decimal("0.5") and insts["7203.XTKS"].lot_size == 100
    assert insts["SHEL.XLON"].tick_size == Decimal("0.005")
    assert insts[crypto].isin is None and insts[crypto].asset_class == "CRYPTO"


def test_intraday_volume_is_u_shaped(twin, insts):
    bars = twin.bars(insts["AAPL.XNAS"], utc(2024, 4, 1), utc(2024, 4, 27), "5m")
    by_slot: dict[timedelta, list[float]] = {}
    opens: dict[date, datetime] = {}
    for bar in bars:
        opens.setdefault(bar.start.date(), bar.start)
        by_slot.setdefault(bar.start - opens[bar.start.date()], []).append(float(bar.volume))
    curve = [np.mean(by_slot[k]) for k in sorted(by_slot)]
    assert len(curve) == 78  # 6.5 hours of five-minute bars
    midday = np.mean(curve[30:48])
    assert curve[0] > 2 * midday and curve[-1] > 2 * midday  # busy open, busiest close
    assert curve[-1] > curve[0]

    # Tokyo: a U in each of the two sessions around lunch.
    tokyo = twin.bars(insts["7203.XTKS"], utc(2024, 4, 1), utc(2024, 4, 27), "15m")
    slots: dict[str, list[float]] = {}
    for bar in tokyo:
        slots.setdefault(bar.start.strftime("%H:%M"), []).append(float(bar.volume))
    mean = {k: np.mean(v) for k, v in slots.items()}
    assert mean["00:00"] > 1.5 * mean["01:00"] and mean["02:15"] > 1.5 * mean["01:00"]
    assert mean["03:30"] > 1.5 * mean["04:30"] and mean["05:45"] > 1.5 * mean["04:30"]


# -- the file source ---------------------------------------------------------------------------

def test_file_source_reads_the_bundled_csv_sample():
    source = FileSource(file_source.SAMPLE)
    instruments = {i.key: i for i in source.instruments()}
    assert set(instruments) == {"RY.XTSE", "MC.XPAR"}
    assert instruments["MC.XPAR"].tick_size == Decimal("0.1")
    assert instruments["RY.XTSE"].isin == "CA7800871021"
    day = source.bars(instruments["RY.XTSE"], utc(2024, 3, 4), utc(2024, 3, 5), "15m")
    assert len(day) == 26 and day[0].start == utc(2024, 3, 4, 14, 30)
    assert all(isinstance(b.close, Decimal) for b in day)
    assert source.bars(instruments["RY.XTSE"], utc(2024, 3, 4), utc(2024, 3, 5), "1m") == []
    quote = source.quote(instruments["RY.XTSE"], utc(2024, 3, 4, 15, 1))
    assert quote.bid == quote.ask == day[1].close and quote.bid_size == 0  # 14:45 bar, finished
    assert source.quote(instruments["RY.XTSE"], utc(2023, 1, 1)) is None


def test_file_source_reads_parquet(tmp_path):
    pq.write_table(pa.table({
        "symbol": ["VOD"], "mic": ["XLON"], "currency": ["GBP"], "name": ["Vodafone Group plc"],
        "isin": ["GB00BH4HKS39"], "lot_size": [1],
        "tick_size": pa.array([Decimal("0.0002")], pa.decimal128(10, 4))}), tmp_path / "instruments.parquet")
    starts = [utc(2024, 3, 4, 8), utc(2024, 3, 4, 8, 1)]
    pq.write_table(pa.table({
        "symbol": ["VOD", "VOD"], "mic": ["XLON", "XLON"],
        "start": pa.array(starts, pa.timestamp("us", tz="UTC")), "interval": ["1m", "1m"],
        "open": pa.array([Decimal("0.7012"), Decimal("0.7014")], pa.decimal128(10, 4)),
        "high": [0.7016, 0.7018], "low": ["0.7010", "0.7012"], "close": [0.7014, 0.7016],
        "volume": [120000, 95000]}), tmp_path / "bars_vod.parquet")
    source = FileSource(tmp_path)
    (vod,) = source.instruments()
    assert vod.key == "VOD.XLON" and vod.tick_size == Decimal("0.0002")
    bars = source.bars(vod, utc(2024, 3, 4), utc(2024, 3, 5), "1m")
    assert [b.start for b in bars] == starts
    assert bars[0] == Bar("VOD", "XLON", starts[0], "1m", Decimal("0.7012"), Decimal("0.7016"),
                          Decimal("0.7010"), Decimal("0.7014"), Decimal("120000"))

    # Through the service, configured with that directory.
    service = MarketDataService(PluginHost(BUILTINS), _NoVenues(),
                                configs={"file-source": {"path": str(tmp_path)}})
    assert [i.key for i in service.instruments()] == ["VOD.XLON"]  # the twin has no venue to trade on
    assert service.bars("VOD.XLON", utc(2024, 3, 4), utc(2024, 3, 5), "1m") == bars
    assert service.failures() == ()


@pytest.mark.parametrize("row, message", [
    ("VOD,XLON,2024-03-04T08:00:00,1m,1,1,1,1,10", "no time zone"),
    ("VOD,XLON,2024-03-04T08:00:00Z,1m,1,1,2,1,10", "low <="),
    ("VOD,XLON,2024-03-04T08:00:00Z,2m,1,1,1,1,10", "interval"),
    ("VOD,XLON,2024-03-04T08:00:00Z,1m,1,1,1,abc,10", "not a number"),
    ("BP,XLON,2024-03-04T08:00:00Z,1m,1,1,1,1,10", "not in the instruments file"),
])
def test_file_source_refuses_bad_rows(tmp_path, row, message):
    (tmp_path / "instruments.csv").write_text("symbol,mic,currency\nVOD,XLON,GBP\n")
    (tmp_path / "bars.csv").write_text("symbol,mic,start,interval,open,high,low,close,volume\n" + row + "\n")
    with pytest.raises(FileFormatError, match=message):
        FileSource(tmp_path)


# -- the service: codes and failures -----------------------------------------------------------

class _NoVenues:
    """A directory that knows no venue (the twin then has nowhere to trade)."""

    def venues(self):
        return []

    def venue(self, mic):
        raise DomainError(f"no venue {mic}", code="VENUE_UNKNOWN")

    def is_open(self, mic, at):
        return False

    def sessions(self, mic, start, end):
        return []


class _BrokenHook:
    @hookimpl
    def alphintra_market_data_sources(self, context):
        raise RuntimeError("cannot reach vendor at 10.0.0.7 with key s3cret")


class _NotAList:
    @hookimpl
    def alphintra_market_data_sources(self, context):
        return "sources"


class _FlakySource:
    name = "flaky"

    def instruments(self):
        return [Instrument("FLK", "XNAS", "USD")]

    def bars(self, instrument, start, end, interval):
        raise RuntimeError("secret stack detail")

    def quote(self, instrument, at):
        raise RuntimeError("secret stack detail")


class _FlakyPlugin:
    @hookimpl
    def alphintra_market_data_sources(self, context):
        return [_FlakySource()]


def test_a_failing_plugin_fails_alone(directory):
    host = PluginHost(BUILTINS)
    host.register("broken-hook", _BrokenHook())
    host.register("not-a-list", _NotAList())
    host.register("flaky", _FlakyPlugin())
    service = MarketDataService(host, directory)
    keys = {i.key for i in service.instruments()}
    assert {"AAPL.XNAS", "RY.XTSE", "FLK.XNAS"} <= keys
    assert {f.plugin for f in service.failures()} == {"broken-hook", "not-a-list"}

    with pytest.raises(DomainError) as failed:
        service.bars("FLK.XNAS", utc(2024, 3, 4), utc(2024, 3, 5), "1h")
    assert failed.value.code == "PLUGIN_FAILED" and failed.value.details["plugin"] == "flaky"
    assert "flaky" in failed.value.message and "secret" not in failed.value.message
    assert service.bars("AAPL.XNAS", utc(2024, 3, 4), utc(2024, 3, 5), "1h")  # the others serve
    quotes = service.quotes(["FLK.XNAS", "RY.XTSE"], utc(2024, 3, 5))
    assert [q.symbol for q in quotes] == ["RY"]


@pytest.mark.parametrize("key, start, end, interval, code", [
    ("NOPE.XNAS", utc(2024, 3, 4), utc(2024, 3, 5), "1h", "INSTRUMENT_UNKNOWN"),
    ("AAPL.XNAS", utc(2024, 3, 4), utc(2024, 3, 5), "2h", "INTERVAL_INVALID"),
    ("AAPL.XNAS", utc(2024, 3, 5), utc(2024, 3, 5), "1h", "RANGE_INVALID"),
    ("AAPL.XNAS", utc(2024, 3, 5), utc(2024, 3, 4), "1h", "RANGE_INVALID"),
    ("AAPL.XNAS", utc(2024, 1, 1), utc(2024, 3, 1), "1m", "RANGE_INVALID"),  # 15,000 session minutes
    ("AAPL.XNAS", utc(2000, 1, 1), utc(2024, 3, 1), "1m", "RANGE_INVALID"),  # refused at once
    ("AAPL.XNAS", datetime(2024, 3, 4), utc(2024, 3, 5), "1h", "INSTANT_NOT_AWARE"),
])
def test_bad_input_has_stable_codes(runtime, key, start, end, interval, code):
    with pytest.raises(DomainError) as refused:
        runtime.market_data.bars(key, start, end, interval)
    assert refused.value.code == code


def test_the_cap_counts_trading_time_only(runtime):
    # 24 calendar days hold 34,560 minutes but only 16 Nasdaq sessions: 6,240 bars.
    bars = runtime.market_data.bars("AAPL.XNAS", utc(2024, 1, 1), utc(2024, 1, 25), "1m")
    assert len(bars) == 16 * 390


# -- GraphQL -----------------------------------------------------------------------------------

INSTRUMENTS = """query($mic: String, $search: String, $first: Int!, $after: String) {
  instruments(mic: $mic, search: $search, first: $first, after: $after) {
    edges { cursor node { key symbol mic currency isin lotSize tickSize assetClass source } }
    pageInfo { hasNextPage endCursor } } }"""
BARS = """query($i: String!, $s: DateTime!, $e: DateTime!, $n: String!) {
  bars(instrument: $i, start: $s, end: $e, interval: $n) {
    symbol mic start interval open high low close volume session } }"""


def test_instruments_and_bars_over_graphql(gql, runtime, tenant):
    seen, after = [], None
    while True:
        page = gql.data(INSTRUMENTS, {"first": 5, "after": after}, key=tenant.key)["instruments"]
        seen += [e["node"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert [n["key"] for n in seen] == [i.key for i in runtime.market_data.instruments()]
    toyota = next(n for n in seen if n["key"] == "7203.XTKS")
    assert toyota == {"key": "7203.XTKS", "symbol": "7203", "mic": "XTKS", "currency": "JPY",
                      "isin": "JP3633400001", "lotSize": 100, "tickSize": "0.5",
                      "assetClass": "EQUITY", "source": "market-twin"}
    assert {n["source"] for n in seen} == {"market-twin", "files"}

    tokyo = gql.data(INSTRUMENTS, {"mic": "xtks", "first": 50}, key=tenant.key)["instruments"]
    assert [e["node"]["key"] for e in tokyo["edges"]] == ["7203.XTKS"]
    found = gql.data(INSTRUMENTS, {"search": "royal bank", "first": 50}, key=tenant.key)["instruments"]
    assert [e["node"]["key"] for e in found["edges"]] == ["RY.XTSE"]
    assert error_codes(gql(INSTRUMENTS, {"mic": "XXXX", "first": 5}, key=tenant.key)) == ["VENUE_UNKNOWN"]
    assert error_codes(gql(INSTRUMENTS, {"first": 5, "after": "bad!"}, key=tenant.key)) == ["CURSOR_INVALID"]

    one = gql.data('{ instrument(key: "shel.xlon") { key tickSize currency } }', key=tenant.key)
    assert one["instrument"] == {"key": "SHEL.XLON", "tickSize": "0.005", "currency": "GBP"}

    bars = gql.data(BARS, {"i": "7203.XTKS", "s": "2024-03-05T00:00:00Z", "e": "2024-03-06T00:00:00+00:00",
                           "n": "1h"}, key=tenant.key)["bars"]
    assert [b["start"] for b in bars] == ["2024-03-05T00:00:00+00:00", "2024-03-05T01:00:00+00:00",
                                          "2024-03-05T02:00:00+00:00", "2024-03-05T03:30:00+00:00",
                                          "2024-03-05T04:30:00+00:00", "2024-03-05T05:30:00+00:00"]
    direct = runtime.market_data.bars("7203.XTKS", utc(2024, 3, 5), utc(2024, 3, 6), "1h")
    assert [b["close"] for b in bars] == [str(b.close) for b in direct]  # strings, exactly
    assert all(Decimal(b["volume"]) % 100 == 0 and b["session"] == "REGULAR" for b in bars)

    files = gql.data(BARS, {"i": "MC.XPAR", "s": "2024-03-01T00:00:00Z", "e": "2024-04-01T00:00:00Z",
                            "n": "1d"}, key=tenant.key)["bars"]
    assert len(files) == 20 and files[0]["mic"] == "XPAR"

    quote = gql.data('{ quote(instrument: "7203.XTKS", at: "2024-03-05T01:17:30Z") '
                     "{ instrument bid ask bidSize at } }", key=tenant.key)["quote"]
    assert quote["instrument"] == "7203.XTKS" and Decimal(quote["bid"]) < Decimal(quote["ask"])


def test_bad_input_over_graphql(gql, tenant):
    def codes(**variables):
        args = {"i": "AAPL.XNAS", "s": "2024-03-04T00:00:00Z", "e": "2024-03-05T00:00:00Z", "n": "1h"}
        return error_codes(gql(BARS, {**args, **variables}, key=tenant.key))

    assert codes(i="AAPL.XXXX") == ["INSTRUMENT_UNKNOWN"]
    assert codes(n="1w") == ["INTERVAL_INVALID"]
    assert codes(e="2024-03-03T00:00:00Z") == ["RANGE_INVALID"]
    assert codes(s="2024-03-04T00:00:00") == ["INSTANT_NOT_AWARE"]
    assert codes(n="1m", s="2023-01-01T00:00:00Z") == ["RANGE_INVALID"]
    assert error_codes(gql('{ instrument(key: "nope") { key } }', key=tenant.key)) == ["INSTRUMENT_UNKNOWN"]
    response = gql.post('{ instruments { edges { cursor } } }')  # no credentials
    assert response.status_code == 401


def test_quotes_stream_over_a_real_websocket(server, tenant, crypto):
    subscription = ("subscription($i: [String!]!, $ms: Int!) { quotes(instruments: $i, intervalMs: $ms) "
                    "{ instrument at bid ask bidSize askSize } }")

    async def scenario():
        async with TransportWS(server.ws_url, tenant.key) as ws:
            await ws.subscribe("q", subscription, {"i": [crypto, "AAPL.XNAS"], "ms": 250})
            rounds = [await ws.next(op_id="q") for _ in range(3)]
            await ws.ws.send('{"id": "q", "type": "complete"}')
            await ws.subscribe("many", subscription, {"i": ["AAPL.XNAS"] * 51, "ms": 1000})
            many = await ws.next(op_id="many")
            await ws.subscribe("fast", subscription, {"i": [crypto], "ms": 10})
            fast = await ws.next(op_id="fast")
            await ws.subscribe("unknown", subscription, {"i": ["NOPE.XNAS"], "ms": 1000})
            unknown = await ws.next(op_id="unknown")
            return rounds, many, fast, unknown

    rounds, many, fast, unknown = asyncio.run(scenario())
    assert [r["type"] for r in rounds] == ["next"] * 3
    quotes = [r["payload"]["data"]["quotes"] for r in rounds]
    btc = [next(q for q in qs if q["instrument"] == crypto) for qs in quotes]
    assert all(Decimal(q["bid"]) < Decimal(q["ask"]) and Decimal(q["bidSize"]) > 0 for q in btc)
    stamps = [datetime.fromisoformat(q["at"]) for q in btc]
    assert stamps[0] < stamps[1] < stamps[2]  # fresh each round
    assert all(len(qs) == 2 for qs in quotes)  # Nasdaq closed: the last close, zero size

    def codes(message):
        errors = message["payload"]["errors"] if message["type"] == "next" else message["payload"]
        return [e["extensions"]["code"] for e in errors]

    assert codes(many) == ["INSTRUMENTS_TOO_MANY"]
    assert codes(fast) == ["INTERVAL_INVALID"]
    assert codes(unknown) == ["INSTRUMENT_UNKNOWN"]
