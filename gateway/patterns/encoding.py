"""Price windows → spike trains.

Three steps, each chosen for what a chart pattern is (a shape, whatever its price, length
and scale) and for what a time-stepped spiking network can use cheaply:

1. Resample to `steps` time steps by bin means (integer bin edges). Patterns are defined
   on the window's own time axis, so a 40-point and a 200-point double top must look alike;
   averaging within a bin, rather than picking points, also damps tick noise, which would
   otherwise alias into spurious spikes on long windows.
2. Normalise to [0, 1] by the window's own range (min-max), so price level and pattern height
   drop out; a flat window (no range) becomes all 0.5.
3. Encode in two channel groups:
   - Level crossing (send-on-delta on a fixed grid) at two resolutions: an UP spike each time
     the normalised price crosses a grid line of spacing delta upwards, a DOWN spike for each
     crossing downwards. Spikes mark change, as send-on-delta sensors do: a steady drift
     spikes steadily, a sharp move (the pole of a flag, a breakout) spikes densely. With a
     fixed grid the encoder needs no per-step state, so it is one vectorised expression for a
     whole batch; the price of that is chatter (up, down, up) when the price sits on a grid
     line, which the bin means and the coarse grid keep rare. A move across several lines in
     one step sends that many spikes in the step (the count of events in the bin, as when an
     event stream is binned).
   - Level (a place code): `levels` channels tile [0, 1]; at each step exactly the channel of
     the current level spikes. Change alone loses the levels the patterns are defined by
     (are the two peaks equal? is the head higher than the shoulders?), and a leaky neuron
     cannot integrate changes back into levels over a whole window.

Rate or latency codes were not chosen: a rate code needs many steps per value (or random
spikes, making the answer noisy), and a latency code gives one spike per input, losing the
time course a pattern is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Encoder:
    steps: int = 24  # time steps per window (32 was no more accurate, and costs a third more)
    fine: float = 1.0 / 16  # grid spacing of the fine level-crossing pair
    coarse: float = 1.0 / 5  # and of the coarse pair
    levels: int = 8  # place-code channels
    # Bin starts and sizes per window length, computed once per length: on the one-window path
    # building them costs more than the bin means themselves. Writes of immutable values only,
    # so threads racing on a length compute it twice at worst.
    _bins: dict[int, tuple[np.ndarray, np.ndarray]] = field(
        default_factory=dict, init=False, repr=False, compare=False)
    deltas: np.ndarray = field(init=False, repr=False, compare=False)  # (2, 1): fine, coarse

    def __post_init__(self) -> None:
        if self.steps < 2 or self.levels < 1 or not 0 < self.fine <= 1 or not 0 < self.coarse <= 1:
            raise ValueError("steps >= 2, levels >= 1 and grid spacings in (0, 1] are needed")
        object.__setattr__(self, "deltas", np.array([[self.fine], [self.coarse]]))

    @property
    def channels(self) -> int:
        return 4 + self.levels

    @property
    def channel_names(self) -> tuple[str, ...]:
        return ("up_fine", "up_coarse", "down_fine", "down_coarse",
                *(f"level_{k}" for k in range(self.levels)))

    def bins(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Start index and size of each of the `steps` bins of an n-point window."""
        found = self._bins.get(n)
        if found is None:
            bounds = (np.arange(self.steps + 1) * n) // self.steps
            found = self._bins[n] = (bounds[:-1], np.diff(bounds).astype(np.float64))
        return found

    def resample(self, prices: np.ndarray) -> np.ndarray:
        """Bin means of `prices` over `steps` bins with integer edges (a window shorter than
        `steps` repeats its points)."""
        prices = np.asarray(prices, dtype=np.float64)
        n = len(prices)
        if n < self.steps:
            if n == 0:
                raise ValueError("an empty window has no shape")
            return prices[(np.arange(self.steps) * n) // self.steps]
        starts, sizes = self.bins(n)
        return np.add.reduceat(prices, starts) / sizes

    def normalise(self, shapes: np.ndarray) -> np.ndarray:
        """Min-max to [0, 1] along the last axis; a flat row becomes all 0.5."""
        low = shapes.min(axis=-1, keepdims=True)
        span = shapes.max(axis=-1, keepdims=True) - low
        flat = span <= 1e-12 * np.maximum(np.abs(low), 1.0)
        return np.where(flat, 0.5, (shapes - low) / np.where(flat, 1.0, span))

    def shapes(self, windows: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """(batch, steps): the windows resampled and normalised."""
        return self.normalise(np.stack([self.resample(w) for w in windows]))

    def spikes(self, shapes: np.ndarray) -> np.ndarray:
        """(batch, steps, channels) spike counts from normalised shapes (batch, steps). Step 0
        sends no change spikes (there is no earlier level to cross from)."""
        batch, steps = shapes.shape
        out = np.zeros((batch, steps, self.channels))
        # Grid-line index at each step (per resolution); its difference counts lines crossed.
        grid = np.floor(shapes[:, None, :] / self.deltas[None])
        crossed = grid[..., 1:] - grid[..., :-1]
        out[:, 1:, :4] = np.maximum(np.concatenate((crossed, -crossed), axis=1), 0.0).transpose(0, 2, 1)
        level = np.minimum((shapes * self.levels).astype(np.int64), self.levels - 1)
        b, t = np.indices((batch, steps))
        out[b, t, 4 + level] = 1.0
        return out

    def encode(self, windows: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """(batch, steps, channels) spike counts for a batch of price windows."""
        return self.spikes(self.shapes(windows))

    def encode_one(self, prices: np.ndarray) -> np.ndarray:
        """(steps, channels) for one window, equal to `encode([prices])[0]` (the same
        arithmetic, element by element), with fewer numpy calls: this is the latency-critical
        path, where each call costs about a microsecond whatever its size."""
        shape = self.resample(prices)
        low = shape.min()
        span = shape.max() - low
        flat = span <= 1e-12 * max(abs(low), 1.0)
        shape = np.full(self.steps, 0.5) if flat else (shape - low) / span
        out = np.zeros((self.steps, self.channels))
        grid = np.floor(shape / self.deltas)
        crossed = grid[:, 1:] - grid[:, :-1]
        out[1:, :4] = np.maximum(np.concatenate((crossed, -crossed)), 0.0).T
        level = (shape * self.levels).astype(np.int64)
        np.minimum(level, self.levels - 1, out=level)
        level += 4
        out[np.arange(self.steps), level] = 1.0
        return out
