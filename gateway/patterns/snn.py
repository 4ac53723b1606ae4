"""A spiking neural network of leaky integrate-and-fire neurons, in numpy, and the recogniser
built on it.

**The neuron** (discrete time, one step per resampled bar):

    v[t] = alpha * v[t-1] + I[t]          alpha = exp(-1 / tau), the leak per step
    spike at t when v[t] >= threshold; then v[t] = 0 (reset) and the neuron ignores its input
    and stays at 0 for `refractory` steps

With a constant input I from rest, v climbs as I (1 - alpha^k) / (1 - alpha): it fires after
k* = ceil(log(1 - threshold (1 - alpha) / I) / log(alpha)) steps, then every k* + refractory
steps; it never fires when I <= threshold (1 - alpha), the level where leak balances input.

**How it is simulated.** Numpy charges about a microsecond per call whatever the array size,
so a time loop costs calls per step; the state therefore carries no per-step leak. Within a
chunk of steps starting at t0 the variable s[t] = v[t] * alpha^-(t - t0 + 1) obeys
s[t] = s[t-1] + I[t] * alpha^-(t - t0 + 1), and the threshold scales the same way, so input
and threshold scales are precomputed for the whole chunk in one vectorised step and the
loop only adds, gates and compares. Chunks are short enough that alpha^-k stays below 1e12,
well inside float64 (relative error about 1e-16 either way). The reset is lazy: the state a
step leaves is not zeroed; the next step multiplies it by "did not spike" after adding its
input, which both resets and ignores that input (one refractory step) in one call; each
further refractory step is one more multiplication by an earlier step's flag. So a step is
three calls (add, multiply, compare), vectorised over neurons and over a batch of windows.

**The recogniser** is a fixed random spiking reservoir with a trained readout (the liquid
state machine recipe, in its feed-forward form):

- Input: the encoder's spike channels (gateway/patterns/encoding.py).
- Reservoir: N LIF neurons, each wired to a few random input channels with random signed
  weights, and with time constants spread from fast to slow (tau from 1.5 to 12 steps), so
  that the population holds both coincidences and longer histories of its inputs. Fixed, drawn
  from the seed, never trained.
- Readout: spike counts of every neuron in each of a few equal segments of the window
  (where in the window the neurons fired, coarsely; a pattern is an order of events), fed to a
  multinomial logistic regression (softmax) with L2 penalty, fitted by L-BFGS on standardised
  counts. Only the readout is trained, a convex problem, so training is deterministic and takes
  seconds on one core.
- Recurrence was left out: it would add a matrix product to every step of the time loop,
  which is most of the per-window latency, and with the segment readout it did not raise
  held-out accuracy (`bench/patterns.py --recurrence`; figures in docs/performance.md).

The trained model's parameters hash to its `version`, which the API reports, so an answer
names exactly the network that gave it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from gateway.patterns.encoding import Encoder
from gateway.patterns.synthetic import PATTERNS, SyntheticSet, generate

MAX_SCALE = 1e12  # alpha^-k within a chunk stays below this
ARCHITECTURE = "lif-reservoir-1"
# L-BFGS stops here: held-out accuracy stops moving by about 100 iterations, and each costs
# about 15 ms on the default training set.
MAX_ITERATIONS = 150
# Window lengths (in bars) the recogniser is trained on, and so the lengths the service accepts.
TRAINED_LENGTHS = (30, 400)


# -- the neuron --------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class _Chunk:
    start: int
    stop: int
    scale: np.ndarray  # (stop - start, N): alpha^-(t - start + 1)
    threshold: np.ndarray  # (stop - start, N): threshold scaled the same way
    carry: np.ndarray  # (N,): alpha^(stop - start), turns the final s back into v


def _chunks(steps: int, alpha: np.ndarray, threshold: np.ndarray) -> tuple[_Chunk, ...]:
    lowest = float(alpha.min())
    longest = steps if lowest >= 1.0 else max(1, int(np.log(MAX_SCALE) / -np.log(lowest)))
    out = []
    for start in range(0, steps, longest):
        stop = min(steps, start + longest)
        k = np.arange(1, stop - start + 1, dtype=np.float64)[:, None]
        scale = alpha[None, :] ** -k
        out.append(_Chunk(start, stop, scale, threshold[None, :] * scale, alpha ** float(stop - start)))
    return tuple(out)


@dataclass(frozen=True, eq=False)
class LIFPopulation:
    """N leaky integrate-and-fire neurons (the model in the module docstring)."""

    alpha: np.ndarray  # (N,) leak per step, in (0, 1]
    threshold: np.ndarray  # (N,) > 0
    refractory: int = 1  # steps
    _plans: dict[int, tuple[_Chunk, ...]] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if np.any(self.threshold <= 0):
            raise ValueError("thresholds must be positive (a neuron at rest must be below them)")
        if np.any((self.alpha <= 0) | (self.alpha > 1)):
            raise ValueError("alpha must lie in (0, 1]")
        if self.refractory < 0:
            raise ValueError("refractory must be >= 0")

    @classmethod
    def of(cls, tau: np.ndarray | float, threshold: np.ndarray | float = 1.0, refractory: int = 1,
           neurons: int | None = None) -> LIFPopulation:
        """From time constants in steps (alpha = exp(-1/tau); tau = inf means no leak)."""
        tau_arr = np.atleast_1d(np.asarray(tau, dtype=np.float64))
        size = neurons or max(len(tau_arr), len(np.atleast_1d(threshold)))
        alpha = np.broadcast_to(np.exp(-1.0 / tau_arr), (size,)).copy()
        theta = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (size,)).copy()
        return cls(alpha, theta, refractory)

    @property
    def size(self) -> int:
        return len(self.alpha)

    def plan(self, steps: int) -> tuple[_Chunk, ...]:
        # Cached per length on the instance: a dict write of an immutable value, so a race
        # between threads only computes the same plan twice.
        found = self._plans.get(steps)
        if found is None:
            found = self._plans[steps] = _chunks(steps, self.alpha, self.threshold)
        return found

    def run(self, currents: np.ndarray, *, potentials: bool = False
            ) -> tuple[np.ndarray, np.ndarray | None]:
        """Simulate from rest. `currents` is (steps, ..., N); returns spikes (bool, same shape)
        and, if asked, the membrane potential after each step (after reset; 0 while
        refractory)."""
        currents = np.asarray(currents, dtype=np.float64)
        steps, middle = currents.shape[0], (1,) * (currents.ndim - 2)
        r = self.refractory
        # quiet[r + t] is "did not spike at t"; the first r rows stand for the time before the
        # simulation, when nothing spiked. Rows are taken as views once, not indexed per step.
        quiet = np.ones((steps + r, *currents.shape[1:]), dtype=bool)
        rows = list(quiet)
        trace = np.empty(currents.shape) if potentials else None
        s = np.zeros(currents.shape[1:])
        add, multiply, less = np.add, np.multiply, np.less
        for chunk in self.plan(steps):
            n = chunk.stop - chunk.start
            scale, limit = chunk.scale, chunk.threshold
            if middle:
                scale, limit = scale.reshape((n, *middle, -1)), limit.reshape((n, *middle, -1))
            drive = currents[chunk.start:chunk.stop] * scale
            for k in range(n):
                t = r + chunk.start + k
                if r == 0:
                    multiply(s, rows[t - 1 if t else 0], out=s)  # the reset a spike left pending
                    add(s, drive[k], out=s)
                else:
                    add(s, drive[k], out=s)
                    for j in range(1, r + 1):  # reset, and hold at 0 while refractory
                        multiply(s, rows[t - j], out=s)
                less(s, limit[k], out=rows[t])
                if trace is not None:
                    trace[t - r] = s
            if trace is not None:
                k_ = np.arange(1, n + 1, dtype=np.float64)
                back = (self.alpha[None, :] ** k_[:, None]).reshape((n, *middle, -1))
                trace[chunk.start:chunk.stop] *= back * quiet[r + chunk.start:r + chunk.stop]
            # Back to v for the next chunk (a pending reset stays pending: quiet says so).
            multiply(s, chunk.carry, out=s)
        return ~quiet[r:], trace

    def run_one(self, currents: np.ndarray) -> np.ndarray:
        """`run` for one window, currents (steps, N), refractory 1 and one chunk: the loop
        reduced to its three calls per step. Returns "did not spike" (steps, N); `run` gives
        the same answer for any input (a test compares them)."""
        steps = len(currents)
        plan = self.plan(steps)
        if self.refractory != 1 or len(plan) != 1:
            return ~self.run(currents)[0]
        (chunk,) = plan
        quiet = np.ones((steps + 1, currents.shape[1]), dtype=bool)
        rows = list(quiet)
        s = np.zeros(currents.shape[1])
        add, multiply, less = np.add, np.multiply, np.less
        for drive, before, limit, after in zip(currents * chunk.scale, rows, chunk.threshold, rows[1:],
                                               strict=False):
            add(s, drive, out=s)
            multiply(s, before, out=s)
            less(s, limit, out=after)
        return quiet[1:]


def firing_steps(alpha: float, threshold: float, current: float) -> float:
    """Steps from rest to the first spike under a constant current (inf if it never fires)."""
    if current <= threshold * (1.0 - alpha):
        return float("inf")
    if alpha >= 1.0:
        return float(np.ceil(threshold / current))
    return float(np.ceil(np.log(1.0 - threshold * (1.0 - alpha) / current) / np.log(alpha)))


# -- the reservoir and readout ------------------------------------------------------------------

@dataclass(frozen=True)
class Config:
    neurons: int = 256
    fan_in: int = 4  # input channels per neuron
    tau: tuple[float, float] = (1.5, 12.0)  # steps, log-uniform
    threshold: float = 1.0
    refractory: int = 1
    weight: tuple[float, float] = (0.55, 0.45)  # mean and spread of an input weight
    inhibitory: float = 0.3  # share of input synapses that inhibit
    segments: int = 4  # readout bins along the window
    l2: float = 3e-3  # readout penalty, per window
    seed: int = 20240607
    train_per_class: int = 400
    train_lengths: tuple[int, int] = TRAINED_LENGTHS
    encoder: Encoder = field(default_factory=Encoder)


@dataclass(frozen=True, eq=False)
class Reservoir:
    weights: np.ndarray  # (channels, N)
    neurons: LIFPopulation

    @classmethod
    def draw(cls, config: Config) -> Reservoir:
        rng = np.random.default_rng([config.seed, 1])
        channels, n = config.encoder.channels, config.neurons
        weights = np.zeros((channels, n))
        mean, spread = config.weight
        for j in range(n):
            chosen = rng.choice(channels, size=config.fan_in, replace=False)
            w = np.abs(rng.normal(mean, spread, config.fan_in))
            sign = np.where(rng.random(config.fan_in) < config.inhibitory, -1.0, 1.0)
            weights[chosen, j] = w * sign
        low, high = np.log(config.tau[0]), np.log(config.tau[1])
        tau = np.exp(rng.uniform(low, high, n))
        return cls(weights, LIFPopulation.of(tau, config.threshold, config.refractory, n))

    def counts(self, spikes_in: np.ndarray, segments: int) -> np.ndarray:
        """(batch, segments * N) spike counts per segment, for input spikes (batch, steps, C)."""
        batch, steps, _ = spikes_in.shape
        out = np.empty((batch, segments * self.neurons.size))
        # In slices of windows: the (steps, batch, N) currents of a whole training set would
        # not fit comfortably in memory.
        for lo in range(0, batch, 512):
            part = spikes_in[lo:lo + 512]
            currents = np.einsum("btc,cn->tbn", part, self.weights)
            fired, _ = self.neurons.run(currents)
            per = fired.reshape(segments, steps // segments, len(part), -1).sum(axis=1)
            out[lo:lo + 512] = per.transpose(1, 0, 2).reshape(len(part), -1)
        return out


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def fit_softmax(x: np.ndarray, y: np.ndarray, classes: int, l2: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression: weights (features, classes) and biases, by L-BFGS from
    zero (convex and deterministic)."""
    # Imported here: scipy.optimize takes half a second to import, and only training needs it,
    # not every process that imports the gateway.
    from scipy.optimize import minimize

    n, d = x.shape
    onehot = np.eye(classes)[y]

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:d * classes].reshape(d, classes), theta[d * classes:]
        p = _softmax(x @ w + b)
        value = -np.log(np.maximum(p[np.arange(n), y], 1e-300)).mean() + 0.5 * l2 * (w * w).sum()
        g = (p - onehot) / n
        grad = np.concatenate([(x.T @ g + l2 * w).ravel(), g.sum(axis=0)])
        return float(value), grad

    result = minimize(loss, np.zeros(d * classes + classes), jac=True, method="L-BFGS-B",
                      options={"maxiter": MAX_ITERATIONS})
    theta = result.x
    return theta[:d * classes].reshape(d, classes), theta[d * classes:]


@dataclass(frozen=True, eq=False)
class SpikingRecogniser:
    """The trained network: encoder → reservoir → softmax readout over PATTERNS."""

    config: Config
    reservoir: Reservoir
    readout: np.ndarray  # (segments * N, classes), standardisation folded in
    bias: np.ndarray  # (classes,)
    version: str
    # The one-window path reads out "quiet" (non-spiking) steps per segment: counts = segment
    # length - quiet counts, so logits = bias + per * readout.sum(0) - quiet_counts @ readout.
    # Transposed and contiguous, the product is a third faster on 1,024 x 6.
    quiet_bias: np.ndarray = field(init=False, repr=False)
    readout_t: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        per = self.config.encoder.steps // self.config.segments
        object.__setattr__(self, "quiet_bias", self.bias + per * self.readout.sum(axis=0))
        object.__setattr__(self, "readout_t", np.ascontiguousarray(self.readout.T))

    @classmethod
    def train(cls, config: Config | None = None, data: SyntheticSet | None = None) -> SpikingRecogniser:
        """Draw the reservoir and fit the readout on synthetic windows (by default
        `config.train_per_class` of each pattern from the config's seed)."""
        config = config or Config()
        if config.encoder.steps % config.segments:
            raise ValueError("segments must divide the encoder's steps")
        data = data or generate(config.train_per_class, config.seed, config.train_lengths)
        reservoir = Reservoir.draw(config)
        features = reservoir.counts(config.encoder.encode(data.windows), config.segments)
        mean = features.mean(axis=0)
        std = features.std(axis=0)
        std = np.where(std > 0, std, 1.0)  # a silent neuron-segment: weight stays 0
        w, b = fit_softmax((features - mean) / std, data.labels, len(PATTERNS), config.l2)
        # Standardisation folded into the readout: one product per window at inference.
        readout = w / std[:, None]
        bias = b - mean @ readout
        digest = hashlib.sha256()
        for array in (reservoir.weights, reservoir.neurons.alpha, reservoir.neurons.threshold,
                      readout, bias):
            digest.update(np.ascontiguousarray(array, dtype=np.float64).tobytes())
        digest.update(repr(config).encode())
        return cls(config, reservoir, readout, bias, f"{ARCHITECTURE}+{digest.hexdigest()[:12]}")

    def probabilities(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        """(batch, classes) for a batch of price windows."""
        features = self.reservoir.counts(self.config.encoder.encode(windows), self.config.segments)
        return _softmax(features @ self.readout + self.bias)

    def probabilities_one(self, prices: np.ndarray) -> np.ndarray:
        """(classes,) for one window: the batch path without its batch axis, on the
        latency-critical path."""
        spikes_in = self.config.encoder.encode_one(prices)
        quiet = self.reservoir.neurons.run_one(spikes_in @ self.reservoir.weights)
        # Spike counts per segment are (segment length - quiet steps); the constant part is
        # folded into `quiet_bias`, so the readout takes the quiet counts directly.
        quiet_counts = np.add.reduce(quiet.reshape(self.config.segments, -1, quiet.shape[-1]), axis=1,
                                     dtype=np.float64).ravel()
        logits = self.quiet_bias - self.readout_t @ quiet_counts
        logits -= logits.max()
        np.exp(logits, out=logits)
        return logits / logits.sum()

    def predict(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        return self.probabilities(windows).argmax(axis=1)
