"""Minimum weights of the chosen instruments: a chosen instrument is held.

The subset step picks `budget` instruments; continuous mean-variance on them alone may still
put a weight of 0 on some (one dominant expected return takes everything), which would hold
fewer instruments than the budget asked for. So each chosen asset i gets a floor
f_i = max(min_i, min(max_i, s/k)), s = `min_holding_share` of the equal weight 1/k (0 turns
the floor off), lowered where the constraints need it, keeping min_i:
- within a sector whose weight cap c is below the sum of its floors, the part above min_i is
  scaled so the sector's floors sum to c;
- then, if all floors sum above 1, the part above min_i is scaled so they sum to 1.
The subset is feasible (Σmin ≤ each cap and ≤ 1, Σmax ≥ 1), so the floors are too: they only
raise lower bounds within [min, max] and leave room under every cap and under Σw = 1.
"""

from __future__ import annotations

import numpy as np

from plugins.sdk import OptimisationProblem

DEFAULT_MIN_HOLDING_SHARE = 0.5


def holding_floors(problem: OptimisationProblem, share: float) -> np.ndarray:
    """The floors of every asset of `problem` (a chosen subset, all of it held)."""
    low = np.asarray(problem.min_weight, dtype=float)
    high = np.asarray(problem.max_weight, dtype=float)
    floors = np.maximum(low, np.minimum(high, share / problem.n))
    for sector, cap in problem.sector_caps.items():
        if cap.max_weight is None:
            continue
        member = np.array([problem.sector_of.get(a) == sector for a in problem.assets])
        floors[member] = _scaled(floors[member], low[member], float(cap.max_weight))
    return _scaled(floors, low, 1.0)


def _scaled(floors: np.ndarray, low: np.ndarray, total: float) -> np.ndarray:
    """`floors` with their part above `low` scaled down so they sum to at most `total`."""
    excess = float((floors - low).sum())
    if floors.sum() <= total or excess <= 0:
        return floors
    factor = max(0.0, (total - float(low.sum())) / excess)
    return low + (floors - low) * factor
