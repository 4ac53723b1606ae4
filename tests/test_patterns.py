"""The spiking pattern recogniser: synthetic data, spike encoding, the LIF neuron against its
closed form, accuracy on a held-out set next to the nearest-neighbour baseline, and the GraphQL
query and subscription over a live server and a real websocket."""

import asyncio
import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import pytest

from gateway.errors import DomainError
from gateway.marketdata import MarketDataService
from gateway.patterns import MAX_WINDOW, MIN_WINDOW, PATTERNS, PatternService
from gateway.patterns.baseline import NearestTemplate
from gateway.patterns.encoding import Encoder
from gateway.patterns.snn import TRAINED_LENGTHS, Config, LIFPopulation, SpikingRecogniser, firing_steps
from gateway.patterns.synthetic import generate
from plugins import hookimpl
from plugins.host import PluginHost
from plugins.sdk import Bar, Instrument
from schema.patterns import ChartPattern
from tests.support import TransportWS, error_codes


def utc(*args):
    return datetime(*args, tzinfo=UTC)


@pytest.fixture(scope="module")
def model(runtime):
    # The runtime's own network: trained once for the whole run, and the one GraphQL answers with.
    return runtime.patterns.model()


@pytest.fixture(scope="module")
def held_out():
    # A seed the model never trained on, at the lengths the service accepts.
    return generate(100, seed=424242, lengths=TRAINED_LENGTHS)


@pytest.fixture(scope="module")
def crypto(runtime):
    mic = next(v.mic for v in runtime.markets.directory.venues() if v.always_open)
    return f"BTC-USD.{mic}"


# -- synthetic windows -------------------------------------------------------------------------

def test_generator_is_reproducible_balanced_and_varied():
    first, again, other = generate(40, seed=5), generate(40, seed=5), generate(40, seed=6)
    assert len(first) == 240 and np.array_equal(first.labels, again.labels)
    assert all(np.array_equal(a, b) for a, b in zip(first.windows, again.windows, strict=True))
    assert not np.array_equal(first.labels, other.labels)
    assert np.bincount(first.labels, minlength=len(PATTERNS)).tolist() == [40] * len(PATTERNS)
    assert len(set(first.labels[:12].tolist())) > 2  # shuffled, not in blocks

    lengths = np.array([len(w) for w in first.windows])
    assert lengths.min() >= 40 and lengths.max() <= 200 and len(set(lengths.tolist())) > 50
    assert all(np.all(w > 0) and np.all(np.isfinite(w)) for w in first.windows)
    levels = np.array([np.median(w) for w in first.windows])
    assert levels.max() / levels.min() > 20  # random price scales

    noisy = generate(40, seed=5, noise=3.0)
    assert np.array_equal(noisy.labels, first.labels)
    roughness = [np.mean([np.std(np.diff(w)) / np.ptp(w) for w in s.windows]) for s in (first, noisy)]
    assert roughness[1] > 1.5 * roughness[0]


def test_generated_shapes_have_their_defining_features():
    data = generate(30, seed=11, noise=0.0)  # no wander, no tick noise: the skeletons (tilted)
    enc = Encoder(steps=48)
    for label, prices in zip(data.labels, data.windows, strict=True):
        shape = enc.shapes([prices])[0]
        name = PATTERNS[label]
        if name == "DOUBLE_TOP":  # the highest point is in the middle 80 %, the end well below it
            assert 0.1 * 48 < shape.argmax() < 0.9 * 48 and shape[-1] < 0.8
        elif name == "DOUBLE_BOTTOM":
            assert 0.1 * 48 < shape.argmin() < 0.9 * 48 and shape[-1] > 0.2
        elif name == "HEAD_AND_SHOULDERS":  # the head is the top, near the middle
            assert 0.3 * 48 < shape.argmax() < 0.7 * 48
        elif name == "BREAKOUT":  # the last point is an extreme of the window
            assert shape[-1] in (0.0, 1.0) or min(shape[-1], 1 - shape[-1]) < 0.05


# -- encoding ----------------------------------------------------------------------------------

def test_encoding_shape_and_sanity():
    enc = Encoder()
    data = generate(10, seed=3)
    spikes = enc.encode(data.windows)
    assert spikes.shape == (60, enc.steps, enc.channels) == (60, 24, 12)
    assert enc.channel_names[:4] == ("up_fine", "up_coarse", "down_fine", "down_coarse")
    assert np.all(spikes >= 0) and np.all(spikes == np.round(spikes))  # counts of events
    assert np.all(spikes[:, 0, :4] == 0)  # nothing to cross from at the first step
    assert np.all(spikes[:, :, 4:].sum(axis=2) == 1)  # the place code: one level per step
    assert not np.any((spikes[:, :, 0] > 0) & (spikes[:, :, 2] > 0))  # never up and down at once
    # Net fine crossings are the change of the grid index from first to last step.
    shapes = enc.shapes(data.windows)
    net = spikes[:, :, 0].sum(axis=1) - spikes[:, :, 2].sum(axis=1)
    assert np.array_equal(net, np.floor(shapes[:, -1] * 16) - np.floor(shapes[:, 0] * 16))

    ramp = enc.encode([np.linspace(10.0, 20.0, 96)])[0]  # rising straight through the grid
    assert ramp[:, 0].sum() == 16 and ramp[:, 1].sum() == 5 and ramp[:, 2:4].sum() == 0
    assert [int(np.argmax(row[4:])) for row in ramp] == sorted(int(np.argmax(row[4:])) for row in ramp)
    fall = enc.encode([np.linspace(20.0, 10.0, 96)])[0]
    assert fall[:, 2].sum() == 16 and fall[:, :2].sum() == 0
    flat = enc.encode([np.full(50, 7.0)])[0]
    assert flat[:, :4].sum() == 0 and np.all(flat[:, 4 + 4] == 1)  # mid-level, no change

    # Price level and pattern height drop out (x4 is exact in binary floating point).
    assert np.array_equal(enc.encode([data.windows[0] * 4.0]), enc.encode([data.windows[0]]))
    # Bin means: a 48-point window averages pairs; a short one repeats points.
    assert np.array_equal(enc.resample(np.arange(48.0)), np.arange(48.0).reshape(24, 2).mean(axis=1))
    assert len(enc.resample(np.arange(10.0))) == 24
    # The one-window path is the batch path, number for number.
    assert all(np.array_equal(enc.encode_one(w), spikes[i]) for i, w in enumerate(data.windows))


# -- the LIF neuron ----------------------------------------------------------------------------

def naive_lif(currents, alpha, threshold, refractory):
    """The textbook loop in v, step by step: the reference the simulator must match."""
    v = np.zeros(currents.shape[1:])
    hold = np.zeros(currents.shape[1:], dtype=int)
    spikes = np.zeros(currents.shape, dtype=bool)
    for t, current in enumerate(currents):
        v = np.where(hold > 0, 0.0, alpha * v + current)
        hold = np.maximum(hold - 1, 0)
        fired = v >= threshold
        v[fired] = 0.0
        hold[fired] = refractory
        spikes[t] = fired
    return spikes


def test_constant_input_fires_at_the_analytic_rate():
    alpha = np.array([0.9, 0.9, 0.8, 0.5, 0.95, 1.0, 0.7])
    current = np.array([0.3, 0.15, 0.45, 1.3, 0.06, 0.3, 2.5])
    refractory = 2
    steps = 400  # several simulation chunks for the leakiest neurons (alpha 0.5: 39 steps)
    neurons = LIFPopulation(alpha, np.ones(len(alpha)), refractory)
    assert len(neurons.plan(steps)) > 1
    spikes, _ = neurons.run(np.tile(current, (steps, 1)))
    for j in range(len(alpha)):
        k = firing_steps(alpha[j], 1.0, current[j])
        assert math.isfinite(k)
        expected = np.arange(k - 1, steps, k + refractory).astype(int)  # first after k steps
        assert np.flatnonzero(spikes[:, j]).tolist() == expected.tolist(), j
        rate = spikes[:, j].mean()
        assert rate == pytest.approx(1 / (k + refractory), abs=1 / steps)
    # The closed form itself: 0.3 into alpha 0.9 reaches 1 after ceil(log(1 - 1/3) / log 0.9) = 4.
    assert firing_steps(0.9, 1.0, 0.3) == 4 and firing_steps(1.0, 1.0, 0.3) == 4


def test_below_threshold_never_fires_and_the_leak_decays():
    alpha = np.array([0.9, 0.8, 0.5])
    below = 0.95 * (1 - alpha)  # the potential settles at 0.95 of threshold
    neurons = LIFPopulation(alpha, np.ones(3), 1)
    spikes, v = neurons.run(np.tile(below, (2000, 1)), potentials=True)
    assert not spikes.any()
    assert v[-1] == pytest.approx(below / (1 - alpha)) and np.all(v < 1.0)
    assert all(firing_steps(a, 1.0, i) == math.inf for a, i in zip(alpha, below, strict=True))

    # One pulse, then nothing: the potential decays as alpha^t, through chunk boundaries.
    pulse = np.zeros((120, 3))
    pulse[0] = 0.5
    _, v = neurons.run(pulse, potentials=True)
    t = np.arange(120)[:, None]
    assert np.allclose(v, 0.5 * alpha[None, :] ** t, rtol=1e-9, atol=1e-300)
    assert np.all(np.diff(v, axis=0) < 0)


def test_reset_and_refractory():
    # A huge input fires every step without a refractory period, every 1 + r steps with one,
    # and the potential is 0 after each spike and while refractory.
    for r in (0, 1, 3):
        spikes, v = LIFPopulation(np.array([0.9]), np.array([1.0]), r).run(np.full((20, 1), 50.0),
                                                                           potentials=True)
        assert np.flatnonzero(spikes[:, 0]).tolist() == list(range(0, 20, 1 + r))
        assert np.all(v[:, 0] == 0.0)


def test_simulator_matches_the_textbook_loop():
    rng = np.random.default_rng(1)
    for refractory in (0, 1, 2):
        alpha = rng.uniform(0.45, 1.0, 64)
        threshold = rng.uniform(0.5, 1.5, 64)
        currents = rng.normal(0.25, 0.6, (150, 8, 64))  # (steps, batch, neurons)
        neurons = LIFPopulation(alpha, threshold, refractory)
        spikes, _ = neurons.run(currents)
        assert spikes.any() and not spikes.all()
        assert np.array_equal(spikes, naive_lif(currents, alpha, threshold, refractory))
        if refractory == 1:
            short = currents[:24, 0]
            assert np.array_equal(~neurons.run_one(short), naive_lif(short, alpha, threshold, 1))


# -- the recogniser against the baseline -------------------------------------------------------

def test_training_is_deterministic_by_seed():
    small = Config(neurons=64, train_per_class=30)
    first, again = SpikingRecogniser.train(small), SpikingRecogniser.train(small)
    assert first.version == again.version and np.array_equal(first.readout, again.readout)
    other = SpikingRecogniser.train(Config(neurons=64, train_per_class=30, seed=small.seed + 1))
    assert other.version != first.version
    assert first.version.startswith("lif-reservoir-1+")


def test_recogniser_beats_chance_by_far_next_to_the_baseline(runtime, model, held_out, record_property):
    snn = model.predict(held_out.windows)
    baseline = runtime.patterns.baseline().predict(held_out.windows)
    snn_accuracy = float((snn == held_out.labels).mean())
    baseline_accuracy = float((baseline == held_out.labels).mean())
    per_class = {PATTERNS[c]: float((snn[held_out.labels == c] == c).mean()) for c in range(len(PATTERNS))}
    record_property("snn_accuracy", snn_accuracy)
    record_property("baseline_accuracy", baseline_accuracy)
    print(f"\nheld-out accuracy ({len(held_out)} windows, chance 1/6): spiking {snn_accuracy:.3f}, "
          f"nearest neighbour {baseline_accuracy:.3f}; spiking per class {per_class}")
    assert snn_accuracy >= 0.8 and baseline_accuracy >= 0.8  # chance is 0.17
    assert min(per_class.values()) >= 0.6
    # Harder than anything it trained on (twice the noise): worse, still far above chance.
    noisy = generate(50, seed=424243, lengths=TRAINED_LENGTHS, noise=2.0)
    assert (model.predict(noisy.windows) == noisy.labels).mean() >= 0.6

    # One window at a time is the batch answer, and probabilities are a distribution.
    batch = model.probabilities(held_out.windows[:50])
    one = np.array([model.probabilities_one(w) for w in held_out.windows[:50]])
    assert np.allclose(one, batch, atol=1e-9) and np.allclose(one.sum(axis=1), 1.0)
    nearest = runtime.patterns.baseline()
    assert [nearest.predict_one(w) for w in held_out.windows[:50]] == baseline[:50].tolist()


def test_the_model_is_trained_once_per_service(runtime, model):
    assert runtime.patterns.model() is model
    assert runtime.patterns.baseline() is runtime.patterns.baseline()
    assert isinstance(runtime.patterns.baseline(), NearestTemplate)
    assert tuple(p.value for p in ChartPattern) == PATTERNS


# -- the service on bars -----------------------------------------------------------------------

T0 = utc(2024, 3, 5, 15, 0)  # a Tuesday, inside a Nasdaq session


class _PatternSource:
    """One instrument whose 1m bars draw a given price path, ending just before T0."""

    name = "pattern-source"

    def __init__(self, prices):
        self.prices = prices

    def instruments(self):
        return [Instrument("PAT", "XNAS", "USD")]

    def bars(self, instrument, start, end, interval):
        out = []
        for k, price in enumerate(self.prices):
            at = T0 - timedelta(minutes=len(self.prices) - k)
            if start <= at < end and interval == "1m":
                p = Decimal(f"{price:.4f}")
                out.append(Bar("PAT", "XNAS", at, "1m", p, p, p, p, Decimal(100)))
        return out

    def quote(self, instrument, at):
        return None


def test_the_service_reads_bars_and_finds_their_pattern(runtime, model):
    # A double top the network recognises on its own, served as 1m bars by a data-source plugin.
    data = generate(5, seed=8, lengths=(120, 120))
    label = PATTERNS.index("DOUBLE_TOP")
    tops = [w for w, y in zip(data.windows, data.labels, strict=True) if y == label]
    prices = next(w for w in tops if model.predict([w])[0] == label)

    class Plugin:
        @hookimpl
        def alphintra_market_data_sources(self, context):
            return [_PatternSource(prices)]

    host = PluginHost()
    host.register("pattern-source", Plugin())
    market_data = MarketDataService(host, runtime.markets.directory, now=lambda: T0 + timedelta(hours=1))
    service = PatternService(market_data, model=model)  # the trained network, not a second training

    found = service.detect("pat.xnas", 120, "1m", at=T0)
    assert found.instrument == "PAT.XNAS" and found.pattern == "DOUBLE_TOP"
    assert found.window == 120 and found.window_end == T0
    assert found.window_start == T0 - timedelta(minutes=120)
    assert found.confidence == max(p for _, p in found.probabilities)
    assert [name for name, _ in found.probabilities] == list(PATTERNS)
    assert found.model == model.version and 0 < found.latency_ms < 50
    closes = np.array([float(Decimal(f"{p:.4f}")) for p in prices])  # what the bars carried
    assert np.allclose([p for _, p in found.probabilities], model.probabilities_one(closes), atol=1e-6)

    # A bar still running at `at` does not count: 30 s into the next minute changes nothing,
    # and the window ending a minute earlier is a different one.
    assert service.detect("PAT.XNAS", 120, "1m", at=T0 + timedelta(seconds=30)).window_end == T0
    earlier = service.detect("PAT.XNAS", 100, "1m", at=T0 - timedelta(minutes=1))
    assert earlier.window_end == T0 - timedelta(minutes=1)

    with pytest.raises(DomainError) as no_data:
        service.detect("PAT.XNAS", 121, "1m", at=T0)  # the source holds 120 bars
    assert no_data.value.code == "NO_DATA" and no_data.value.details == {"found": 120, "window": 121}
    with pytest.raises(DomainError) as future:
        service.detect("PAT.XNAS", 60, "1m", at=T0 + timedelta(hours=2))
    assert future.value.code == "INSTANT_IN_FUTURE"


@pytest.mark.parametrize("key, window, interval, code", [
    ("AAPL.XNAS", MIN_WINDOW - 1, "1m", "WINDOW_TOO_SHORT"),
    ("AAPL.XNAS", MAX_WINDOW + 1, "1m", "WINDOW_TOO_LONG"),
    ("NOPE.XNAS", 60, "1m", "INSTRUMENT_UNKNOWN"),
    ("AAPL.XNAS", 60, "2h", "INTERVAL_INVALID"),
    ("RY.XTSE", 60, "15m", "NO_DATA"),  # the bundled file sample ends in 2024
])
def test_bad_input_has_stable_codes(runtime, key, window, interval, code):
    with pytest.raises(DomainError) as refused:
        runtime.patterns.detect(key, window, interval)
    assert refused.value.code == code


# -- GraphQL -----------------------------------------------------------------------------------

DETECT = """query($i: String!, $w: Int!, $n: String, $at: DateTime) {
  detectPatterns(instrument: $i, window: $w, interval: $n, at: $at) {
    instrument pattern confidence probabilities { pattern probability } at interval window
    windowStart windowEnd latencyMs model } }"""


def test_detect_patterns_over_graphql(gql, runtime, tenant, crypto, model):
    at = "2026-03-04T12:00:30Z"
    answer = gql.data(DETECT, {"i": crypto.lower(), "w": 60, "at": at}, key=tenant.key)["detectPatterns"]
    assert answer["instrument"] == crypto and answer["interval"] == "1m" and answer["window"] == 60
    assert answer["pattern"] in PATTERNS and answer["model"] == model.version
    assert [p["pattern"] for p in answer["probabilities"]] == list(PATTERNS)
    assert sum(p["probability"] for p in answer["probabilities"]) == pytest.approx(1.0, abs=1e-5)
    assert answer["confidence"] == max(p["probability"] for p in answer["probabilities"])
    assert answer["windowEnd"] == "2026-03-04T12:00:00+00:00"  # the running minute is left out
    assert answer["windowStart"] == "2026-03-04T11:00:00+00:00"
    assert answer["at"] == "2026-03-04T12:00:30+00:00" and 0 < answer["latencyMs"] < 50
    direct = runtime.patterns.detect(crypto, 60, "1m", at=utc(2026, 3, 4, 12, 0, 30))
    assert (direct.pattern, direct.probabilities) == (answer["pattern"], tuple(
        (p["pattern"], p["probability"]) for p in answer["probabilities"]))

    # Now (the markets clock), on another venue and interval.
    hourly = gql.data(DETECT, {"i": "AAPL.XNAS", "w": 40, "n": "1h"}, key=tenant.key)["detectPatterns"]
    assert hourly["window"] == 40 and hourly["interval"] == "1h"
    now = datetime.now(UTC)
    assert datetime.fromisoformat(hourly["windowEnd"]) <= datetime.fromisoformat(hourly["at"]) <= now
    assert now - datetime.fromisoformat(hourly["at"]) < timedelta(minutes=1)


def test_bad_input_over_graphql(gql, tenant):
    def codes(**variables):
        return error_codes(gql(DETECT, {"i": "AAPL.XNAS", "w": 60, **variables}, key=tenant.key))

    assert codes(w=10) == ["WINDOW_TOO_SHORT"]
    assert codes(w=5000) == ["WINDOW_TOO_LONG"]
    assert codes(i="NOPE.XNAS") == ["INSTRUMENT_UNKNOWN"]
    assert codes(n="2h") == ["INTERVAL_INVALID"]
    assert codes(i="MC.XPAR", n="1d") == ["NO_DATA"]
    assert codes(at="2026-03-04T12:00:00") == ["INSTANT_NOT_AWARE"]
    assert codes(at="2100-01-01T00:00:00Z") == ["INSTANT_IN_FUTURE"]
    body = gql(DETECT, {"i": "AAPL.XNAS", "w": 10}, key=tenant.key)
    assert body["errors"][0]["extensions"]["min"] == MIN_WINDOW
    assert gql.post(DETECT, {"i": "AAPL.XNAS", "w": 60}).status_code == 401  # no credentials


STREAM = """subscription($i: [String!]!, $w: Int, $ms: Int) {
  patternDetections(instruments: $i, window: $w, intervalMs: $ms) {
    instrument pattern confidence at windowEnd model } }"""


def test_pattern_detections_stream_over_a_real_websocket(server, tenant, crypto, model):
    async def scenario():
        async with TransportWS(server.ws_url, tenant.key) as ws:
            await ws.subscribe("p", STREAM, {"i": [crypto, "AAPL.XNAS", crypto], "w": 30, "ms": 1000})
            rounds = [await ws.next(op_id="p") for _ in range(2)]
            await ws.ws.send('{"id": "p", "type": "complete"}')
            refused = {}
            for name, variables in {
                "many": {"i": ["AAPL.XNAS"] * 21},
                "none": {"i": []},
                "fast": {"i": [crypto], "ms": 100},
                "short": {"i": [crypto], "w": 5},
                "unknown": {"i": ["NOPE.XNAS"]},
            }.items():
                await ws.subscribe(name, STREAM, variables)
                refused[name] = await ws.next(op_id=name)
            return rounds, refused

    rounds, refused = asyncio.run(scenario())
    assert [r["type"] for r in rounds] == ["next", "next"]
    detections = [r["payload"]["data"]["patternDetections"] for r in rounds]
    assert all([d["instrument"] for d in ds] == [crypto, "AAPL.XNAS"] for ds in detections)
    assert all(d["pattern"] in PATTERNS and d["model"] == model.version for ds in detections for d in ds)
    stamps = [datetime.fromisoformat(ds[0]["at"]) for ds in detections]
    assert stamps[1] - stamps[0] >= timedelta(seconds=0.9)  # a fresh detection each round

    def codes(message):
        errors = message["payload"]["errors"] if message["type"] == "next" else message["payload"]
        return [e["extensions"]["code"] for e in errors]

    assert {name: codes(m) for name, m in refused.items()} == {
        "many": ["INSTRUMENTS_TOO_MANY"], "none": ["INSTRUMENTS_EMPTY"], "fast": ["INTERVAL_INVALID"],
        "short": ["WINDOW_TOO_SHORT"], "unknown": ["INSTRUMENT_UNKNOWN"]}
