"""Labelled synthetic price windows: the recogniser's training and test data.

Nothing is downloaded: every window is drawn here, from a seed, so a training set is
reproducible bit for bit (`generate(n, seed)` twice gives identical arrays).

Each pattern is a piecewise-linear skeleton through jittered key points (the textbook shape,
in units of the pattern's height), to which are added a random linear trend, a random-walk
wander and white noise, and which is then put on a random price scale and offset. Lengths vary
(40 to 200 points by default), so a recogniser cannot lean on the length or the price level.

Patterns (the classes, in this order):
- HEAD_AND_SHOULDERS: left shoulder, higher head, right shoulder about as high as the left,
  both troughs near one neckline, then a fall through it (the topping form).
- DOUBLE_TOP: two peaks of about equal height with a trough between, then a fall.
- DOUBLE_BOTTOM: its mirror image.
- BREAKOUT: a sideways range for most of the window, then a sharp move out of it, up or down.
- FLAG: a sharp move (the pole) early, then a long, shallow drift against it in a narrow
  channel (the flag), up or down.
- NONE: a random walk with drift: no pattern by construction (and any that a walk happens to
  draw is a rare label error, as in real data).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

PATTERNS: tuple[str, ...] = ("HEAD_AND_SHOULDERS", "DOUBLE_TOP", "DOUBLE_BOTTOM", "BREAKOUT", "FLAG",
                             "NONE")
DEFAULT_LENGTHS = (40, 200)
# Noise at `noise=1`, in units of the pattern's height: the random-walk wander's standard
# deviation over the whole window is at most WANDER; tick noise's per point is in TICK_NOISE.
WANDER = 0.25
TICK_NOISE = (0.02, 0.12)


@dataclass(frozen=True)
class SyntheticSet:
    """Windows of prices (1-D float arrays of varying length) and their class indices into
    PATTERNS."""

    windows: tuple[np.ndarray, ...]
    labels: np.ndarray  # int64, one per window

    def __len__(self) -> int:
        return len(self.windows)


def _head_and_shoulders(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    inner = np.array([0, 1, 1, 1, 1, 1, 0])  # the ends stay at 0 and 1
    x = np.array([0.0, 0.18, 0.33, 0.5, 0.67, 0.82, 1.0]) + rng.uniform(-0.03, 0.03, 7) * inner
    neck = rng.uniform(0.25, 0.4)
    shoulder = rng.uniform(0.55, 0.72)
    y = np.array([rng.uniform(0.0, 0.15), shoulder, neck + rng.uniform(-0.04, 0.04), 1.0,
                  neck + rng.uniform(-0.04, 0.04), shoulder + rng.uniform(-0.06, 0.06),
                  neck - rng.uniform(0.1, 0.3)])
    return x, y


def _double_top(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = np.array([0.0, 0.28, 0.5, 0.72, 1.0]) + rng.uniform(-0.05, 0.05, 5) * [0, 1, 1, 1, 0]
    trough = rng.uniform(0.35, 0.6)
    y = np.array([rng.uniform(0.0, 0.2), 1.0, trough, 1.0 + rng.uniform(-0.05, 0.05),
                  trough - rng.uniform(0.0, 0.25)])
    return x, y


def _double_bottom(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x, y = _double_top(rng)
    return x, 1.0 - y


def _breakout(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    # A range between 0.4 and 0.6 touched a few times, then the break, which ends the window.
    start = rng.uniform(0.6, 0.82)
    touches = int(rng.integers(3, 7))
    xs = np.concatenate([[0.0], np.sort(rng.uniform(0.04, start - 0.03, touches)), [start, 1.0]])
    ys = np.empty(len(xs))
    ys[0] = 0.5
    ys[1:-2] = np.where(np.arange(touches) % 2 == 0, 0.6, 0.4) + rng.uniform(-0.03, 0.03, touches)
    ys[-2] = 0.5
    ys[-1] = rng.uniform(1.1, 1.4)
    return xs, ys if rng.random() < 0.5 else 1.0 - ys


def _flag(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    # A short lead-in, the pole (a fast move of the full height), then the flag: a drift back
    # of 10-35 % of the pole in a zigzag channel until the end.
    lead = rng.uniform(0.0, 0.12)
    pole_end = lead + rng.uniform(0.15, 0.28)
    zigs = int(rng.integers(3, 7))
    flag_x = np.linspace(pole_end, 1.0, zigs + 2)[1:]
    back = rng.uniform(0.1, 0.35)
    channel = rng.uniform(0.05, 0.12)
    flag_y = 1.0 - back * (flag_x - pole_end) / (1.0 - pole_end)
    flag_y -= np.where(np.arange(len(flag_x)) % 2 == 0, channel, 0.0)
    xs = np.concatenate([[0.0, lead, pole_end], flag_x])
    ys = np.concatenate([[0.0, 0.0, 1.0], flag_y])
    if lead == 0.0:  # keep x strictly increasing
        xs, ys = xs[1:], ys[1:]
    return xs, ys if rng.random() < 0.5 else 1.0 - ys


SKELETONS: tuple[Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]], ...] = (
    _head_and_shoulders, _double_top, _double_bottom, _breakout, _flag)


def window(label: int, length: int, rng: np.random.Generator, noise: float = 1.0) -> np.ndarray:
    """One window of `length` prices of pattern PATTERNS[label]; `noise` scales the wander and
    the tick noise (1 is the training level)."""
    t = np.linspace(0.0, 1.0, length)
    if PATTERNS[label] == "NONE":
        steps = rng.normal(rng.normal(0.0, 0.5) / length, 1.0 / np.sqrt(length), length)
        shape = np.cumsum(steps)
        shape = (shape - shape.min()) / max(float(np.ptp(shape)), 1e-9)
    else:
        xs, ys = SKELETONS[label](rng)
        shape = np.interp(t, xs, ys)
    # Nuisances, in units of the pattern's height: a trend that tilts it, a slow random-walk
    # wander and tick noise. Kept below the height, or the label would stop being true.
    shape = shape + rng.uniform(-0.3, 0.3) * t
    shape = shape + np.cumsum(rng.normal(0.0, noise * rng.uniform(0.0, WANDER) / np.sqrt(length), length))
    shape = shape + rng.normal(0.0, noise * rng.uniform(*TICK_NOISE), length)
    # The price: a level from 5 to 2,000 (log-uniform), the pattern 1-20 % of it.
    level = float(np.exp(rng.uniform(np.log(5.0), np.log(2000.0))))
    height = rng.uniform(0.01, 0.2)
    return level * (1.0 + height * (shape - 0.5))


def generate(per_class: int, seed: int, lengths: tuple[int, int] = DEFAULT_LENGTHS, *,
             noise: float = 1.0) -> SyntheticSet:
    """`per_class` windows of every pattern (balanced), in a seeded random order, each of a
    length drawn uniformly from `lengths` (inclusive); `noise` as in `window`."""
    if per_class < 1:
        raise ValueError("per_class must be at least 1")
    low, high = lengths
    if not 8 <= low <= high:
        raise ValueError("lengths must satisfy 8 <= low <= high")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(len(PATTERNS)), per_class))
    sizes = rng.integers(low, high + 1, len(labels))
    windows = tuple(window(int(label), int(size), rng, noise)
                    for label, size in zip(labels, sizes, strict=True))
    return SyntheticSet(windows, labels.astype(np.int64))
