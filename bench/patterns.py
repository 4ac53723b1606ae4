"""The spiking pattern recogniser: latency per window and accuracy, next to the baseline.

    .venv/bin/python bench/patterns.py [--per-class N] [--calls M] [--recurrence]

What it does, in one run (about 30 s; with --recurrence about a minute more):

1. Trains the recogniser as the gateway does on first use (default Config, its seed), timing it,
   and fits the baseline (nearest neighbour under z-normalised distance) on the same windows.
2. Accuracy on a held-out synthetic set (N windows per pattern, a seed never trained on, the
   lengths the service accepts), overall and per pattern, for both; and on a set with twice the
   training noise.
3. Latency per window: M single-window calls after 300 of warm-up, each timed on its own
   (perf_counter_ns; garbage collector on, as in the gateway), cycling over held-out windows of
   every length. The spiking path is `SpikingRecogniser.probabilities_one` (encode, simulate,
   read out: what the service times as `latencyMs`), with its stages timed separately; the
   baseline is `NearestTemplate.predict_one`.
4. The service end to end: `PatternService.detect` on 60 one-minute bars of the twin's
   BTC-USD (reading the bars, which the twin simulates, plus the recogniser), at fixed instants.
5. With --recurrence: the same reservoir with recurrent synapses (sparse random, spectral
   radius 0.5, 0.9, 1.2), simulated by a plain loop, readout trained the same way: held-out
   accuracy, to show what recurrence would buy.

Prints figures; never passes or fails on time.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.patterns.baseline import NearestTemplate
from gateway.patterns.snn import TRAINED_LENGTHS, Config, Reservoir, SpikingRecogniser, fit_softmax
from gateway.patterns.synthetic import PATTERNS, SyntheticSet, generate

HELD_OUT_SEED = 777


def timed(fn: Callable[[Any], object], items: Sequence[Any], calls: int, warmup: int = 300) -> np.ndarray:
    """Microseconds of `calls` single calls, cycling over `items`, after `warmup` calls."""
    for k in range(warmup):
        fn(items[k % len(items)])
    out = np.empty(calls)
    clock = time.perf_counter_ns
    for k in range(calls):
        item = items[k % len(items)]
        began = clock()
        fn(item)
        out[k] = clock() - began
    return out / 1000


def summary(us: np.ndarray) -> str:
    p50, p90, p99 = np.percentile(us, [50, 90, 99])
    return f"p50 {p50:7.1f}  p90 {p90:7.1f}  p99 {p99:7.1f}  mean {us.mean():7.1f} µs"


def accuracy(predicted: np.ndarray, data: SyntheticSet) -> tuple[float, dict[str, float]]:
    per = {PATTERNS[c]: float((predicted[data.labels == c] == c).mean()) for c in range(len(PATTERNS))}
    return float((predicted == data.labels).mean()), per


def recurrent_accuracy(config: Config, train: SyntheticSet, test: SyntheticSet, radius: float) -> float:
    """Held-out accuracy of the reservoir with recurrent synapses added (step-by-step loop)."""
    reservoir = Reservoir.draw(config)
    n = config.neurons
    rng = np.random.default_rng([config.seed, 2])
    w_rec = rng.normal(0.0, 1.0, (n, n)) * (rng.random((n, n)) < 0.05)
    np.fill_diagonal(w_rec, 0.0)
    w_rec *= radius / np.abs(np.linalg.eigvals(w_rec)).max()
    alpha, theta, r = reservoir.neurons.alpha, reservoir.neurons.threshold, config.refractory

    def features(data: SyntheticSet) -> np.ndarray:
        x = config.encoder.encode(data.windows)
        currents = np.einsum("btc,cn->tbn", x, reservoir.weights)
        steps, batch, _ = currents.shape
        v, hold, last = np.zeros((batch, n)), np.zeros((batch, n), int), np.zeros((batch, n))
        fired = np.zeros((steps, batch, n), bool)
        for t in range(steps):
            v = np.where(hold > 0, 0.0, alpha * v + currents[t] + last @ w_rec)
            hold = np.maximum(hold - 1, 0)
            spikes = v >= theta
            v[spikes], hold[spikes] = 0.0, r
            fired[t], last = spikes, spikes.astype(float)
        per = fired.reshape(config.segments, steps // config.segments, batch, n).sum(axis=1)
        return per.transpose(1, 0, 2).reshape(batch, -1).astype(float)

    f_train, f_test = features(train), features(test)
    mean, std = f_train.mean(axis=0), f_train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    w, b = fit_softmax((f_train - mean) / std, train.labels, len(PATTERNS), config.l2)
    return float(((((f_test - mean) / std) @ w + b).argmax(axis=1) == test.labels).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-class", type=int, default=200, help="held-out windows per pattern")
    parser.add_argument("--calls", type=int, default=5000, help="timed single-window calls")
    parser.add_argument("--recurrence", action="store_true", help="also try a recurrent reservoir")
    args = parser.parse_args()

    print(f"python {platform.python_version()} numpy {np.__version__} on {platform.machine()}, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")
    config = Config()
    began = time.perf_counter()
    model = SpikingRecogniser.train(config)
    train_s = time.perf_counter() - began
    began = time.perf_counter()
    train = generate(config.train_per_class, config.seed, config.train_lengths)
    baseline = NearestTemplate.fit(train, steps=config.encoder.steps)
    baseline_s = time.perf_counter() - began
    print(f"model {model.version}: {config.neurons} LIF neurons, {config.encoder.steps} steps, "
          f"{config.encoder.channels} input channels, readout {model.readout.shape[0]} x "
          f"{model.readout.shape[1]}")
    print(f"training on {len(train)} windows: spiking {train_s:.1f} s (generate, encode, simulate, "
          f"fit), baseline {baseline_s:.1f} s (generate, resample)")

    held_out = generate(args.per_class, HELD_OUT_SEED, TRAINED_LENGTHS)
    noisy = generate(args.per_class, HELD_OUT_SEED + 1, TRAINED_LENGTHS, noise=2.0)
    print(f"\naccuracy on {len(held_out)} held-out windows (seed {HELD_OUT_SEED}, lengths "
          f"{TRAINED_LENGTHS[0]}-{TRAINED_LENGTHS[1]}; chance {1 / len(PATTERNS):.3f})")
    for name, predict in (("spiking", model.predict), ("baseline", baseline.predict)):
        overall, per = accuracy(predict(held_out.windows), held_out)
        noisy_overall, _ = accuracy(predict(noisy.windows), noisy)
        classes = "  ".join(f"{k.lower()} {v:.3f}" for k, v in per.items())
        print(f"  {name:9s} {overall:.3f}   (2x noise: {noisy_overall:.3f})   {classes}")

    windows = list(held_out.windows)
    encoder, neurons = config.encoder, model.reservoir.neurons
    spikes = [encoder.encode_one(w) for w in windows]
    currents = [s @ model.reservoir.weights for s in spikes]
    print(f"\nlatency per window, {args.calls} single calls after warm-up")
    rows = [
        ("spiking: whole", model.probabilities_one, windows),
        ("  encode", encoder.encode_one, windows),
        ("  input weights", lambda s: s @ model.reservoir.weights, spikes),
        ("  LIF, 24 steps", neurons.run_one, currents),
        ("baseline 1-NN", baseline.predict_one, windows),
    ]
    for name, fn, items in rows:
        print(f"  {name:16s} {summary(timed(fn, items, args.calls))}")

    from gateway.marketdata import MarketDataService
    from gateway.markets.service import MarketsService
    from gateway.patterns import PatternService
    from plugins.builtin import BUILTINS
    from plugins.host import PluginHost

    markets = MarketsService()
    service = PatternService(MarketDataService(PluginHost(BUILTINS), markets.directory, now=markets.now),
                             model=model)
    crypto = next(i.key for i in service.market_data.instruments() if i.asset_class == "CRYPTO")
    start = datetime(2026, 3, 2, tzinfo=UTC)
    instants = [start + timedelta(minutes=7 * k) for k in range(200)]
    service.detect(crypto, 60, "1m", at=instants[0])
    us = timed(lambda at: service.detect(crypto, 60, "1m", at=at), instants, 200, warmup=20)
    print(f"  {'detect (service)':16s} {summary(us)}   ({crypto}, 60 x 1m bars from the twin)")

    if args.recurrence:
        small_test = generate(150, HELD_OUT_SEED, TRAINED_LENGTHS)
        print(f"\nrecurrent reservoir, {len(small_test)} held-out windows "
              f"(feed-forward, as shipped: {accuracy(model.predict(small_test.windows), small_test)[0]:.3f})")
        for radius in (0.5, 0.9, 1.2):
            print(f"  spectral radius {radius}: {recurrent_accuracy(config, train, small_test, radius):.3f}",
                  flush=True)


if __name__ == "__main__":
    main()
