"""Differential privacy for federated training: clipping, Gaussian noise, and privacy accounting.

The unit of privacy is the participant (an institution): one DP release per round, of the
participants' clipped model updates. Two modes:

- SERVER (central DP, DP-FedAvg of McMahan et al. 2018): each update Δ_i is clipped to L2 norm
  C (by the server, or by the participant when secure aggregation hides individual updates),
  the server averages the n clipped updates and adds N(0, (z·C/n)²) per coordinate, i.e.
  N(0, (z·C)²) on the sum. Neighbouring federations differ by adding or removing one
  participant, which moves the sum by at most C, so each round is a Gaussian mechanism with
  noise multiplier z. Protects against whoever sees the model (other participants, users of
  the model); the server itself sees clipped updates unless secure aggregation is on.
- CLIENT (local DP): each participant clips its own update to C and adds N(0, (z·C)²) before
  sending it, so even the server sees only noised updates. Two possible updates of one
  participant differ by up to 2C (both lie in the C-ball), so against the server each round
  is a Gaussian mechanism with effective noise multiplier z/2 for that participant.

What ε covers: the model updates of the federated rounds. It does not cover the evaluation
metrics the participants report, nor the baseline phases (the local-only models' accuracies
and the centralised upper bound, which exchanges exact gradients and Hessians): runs that need
the guarantee end to end switch baselines off.

Accounting. No participant is sampled out (all take part every round), so there is no
amplification by subsampling and the composition of R Gaussian rounds is again exactly a
Gaussian mechanism:

- `epsilon` (the one reported): exact. R rounds with noise multiplier z are μ-GDP with
  μ = √R / z (Dong, Roth & Su, "Gaussian differential privacy", JRSS-B 2022, Cor. 3.3), and
  a μ-GDP mechanism is (ε, δ)-DP exactly when
      δ(ε) = Φ(-ε/μ + μ/2) - e^ε · Φ(-ε/μ - μ/2)
  (Balle & Wang, "Improving the Gaussian mechanism for differential privacy", ICML 2018,
  Thm. 8). ε(δ) is the root of that equation; it is tight.
- `rdp_epsilon`: the Rényi-DP bound most libraries print (Opacus, TF Privacy, dp-accounting).
  RDP of the Gaussian mechanism is alpha/(2z²) at order alpha (Mironov, "Rényi differential
  privacy", CSF 2017, Prop. 7) and adds over rounds; converted with
      ε = R·alpha/(2z²) + log((alpha-1)/alpha) - (log δ + log alpha)/(alpha-1)
  (Canonne, Kamath & Steinke 2020, Prop. 12; Balle et al. 2020), minimised over alpha > 1. With
  `improved=False` the classical conversion ε = R·alpha/(2z²) + log(1/δ)/(alpha-1) (Mironov Prop. 3),
  whose minimum has the closed form R/(2z²) + √(2R·log(1/δ))/z.
  Always at least the exact ε: a cross-check, and what to quote to someone who uses RDP.

Noise. Flower's DP wrappers (which the federated run uses) draw noise from numpy's global
generator; `gaussian_noise` here defaults to a freshly OS-seeded generator. Never seed DP noise
from a value a caller chose: anyone who knows the seed can subtract the noise. A production
deployment should draw it from a cryptographically secure generator.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gateway.errors import InvalidInput

MAX_NOISE_MULTIPLIER = 100.0
MAX_CLIP_NORM = 1_000.0
MIN_DELTA = 1e-12
MAX_DELTA = 1e-2  # δ is a failure probability: anything larger is not a meaningful guarantee


class DPMode(enum.StrEnum):
    NONE = "NONE"
    SERVER = "SERVER"  # central DP: noise added to the aggregate
    CLIENT = "CLIENT"  # local DP: each participant noises its own update


class DPInvalid(InvalidInput):
    code = "DP_INVALID"


@dataclass(frozen=True)
class DPConfig:
    mode: DPMode = DPMode.NONE
    clip_norm: float = 1.0
    noise_multiplier: float = 0.0
    delta: float = 1e-5

    @property
    def enabled(self) -> bool:
        return self.mode is not DPMode.NONE

    @property
    def effective_noise_multiplier(self) -> float:
        """The z of the Gaussian mechanism each round amounts to (see the module docstring)."""
        return self.noise_multiplier / 2 if self.mode is DPMode.CLIENT else self.noise_multiplier

    def epsilon_after(self, rounds: int) -> float | None:
        return epsilon(rounds, self.effective_noise_multiplier, self.delta) if self.enabled else None

    def rdp_epsilon_after(self, rounds: int) -> float | None:
        if not self.enabled:
            return None
        return rdp_epsilon(rounds, self.effective_noise_multiplier, self.delta)

    def to_params(self) -> dict[str, object]:
        return {"mode": self.mode.value, "clip_norm": self.clip_norm,
                "noise_multiplier": self.noise_multiplier, "delta": self.delta}

    @classmethod
    def parse(cls, raw: object) -> DPConfig:
        """From job parameters (or None: no DP); raises DP_INVALID on anything unusable."""
        if raw is None:
            return cls()
        if not isinstance(raw, dict):
            raise DPInvalid("dp must be an object with mode, clip_norm, noise_multiplier, delta")
        unknown = set(raw) - {"mode", "clip_norm", "noise_multiplier", "delta"}
        if unknown:
            raise DPInvalid(f"unknown dp parameters: {sorted(unknown)}")
        try:
            mode = DPMode(str(raw.get("mode", "NONE")).upper())
        except ValueError:
            raise DPInvalid("dp mode must be NONE, SERVER or CLIENT") from None
        if mode is DPMode.NONE:
            # Refusing noise settings without a mode keeps anyone from believing a run was
            # private when it was not.
            if raw.get("noise_multiplier") not in (None, 0, 0.0) or raw.get("clip_norm") is not None:
                raise DPInvalid("clip_norm and noise_multiplier need mode SERVER or CLIENT")
            return cls()
        clip, noise, delta = raw.get("clip_norm", 1.0), raw.get("noise_multiplier"), \
            raw.get("delta", 1e-5)
        if not _number(clip) or not 0 < clip <= MAX_CLIP_NORM:
            raise DPInvalid(f"clip_norm must be above 0 and at most {MAX_CLIP_NORM:g}")
        if not _number(noise) or not 0 < noise <= MAX_NOISE_MULTIPLIER:
            raise DPInvalid(f"noise_multiplier must be above 0 and at most {MAX_NOISE_MULTIPLIER:g} "
                            "(without noise there is no privacy guarantee; use mode NONE)")
        if not _number(delta) or not MIN_DELTA <= delta <= MAX_DELTA:
            raise DPInvalid(f"delta must be from {MIN_DELTA:g} to {MAX_DELTA:g}")
        return cls(mode, float(clip), float(noise), float(delta))


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# -- the mechanism --------------------------------------------------------------------------

def l2_norm(arrays: Sequence[np.ndarray]) -> float:
    return float(math.sqrt(sum(float(np.sum(np.square(a, dtype=np.float64))) for a in arrays)))


def clip_update(update: Sequence[np.ndarray], clip_norm: float) -> tuple[list[np.ndarray], float]:
    """The update scaled to L2 norm at most `clip_norm` (all arrays together, "flat clipping",
    McMahan et al. 2018), and the norm it had."""
    if clip_norm <= 0:
        raise ValueError("clip_norm must be positive")
    norm = l2_norm(update)
    scale = min(1.0, clip_norm / norm) if norm > 0 else 1.0
    return [np.asarray(a, dtype=np.float64) * scale for a in update], norm


def central_noise_std(noise_multiplier: float, clip_norm: float, participants: int) -> float:
    """Noise std on the average of `participants` clipped updates (z·C on their sum)."""
    return noise_multiplier * clip_norm / participants


def local_noise_std(noise_multiplier: float, clip_norm: float) -> float:
    return noise_multiplier * clip_norm


def gaussian_noise(arrays: Sequence[np.ndarray], std: float,
                   rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """`arrays` plus independent N(0, std²) per coordinate; by default from fresh OS entropy."""
    rng = rng if rng is not None else np.random.default_rng()
    return [np.asarray(a, dtype=np.float64) + rng.normal(0.0, std, np.shape(a)) for a in arrays]


# -- accounting -----------------------------------------------------------------------------

def _check(rounds: int, noise_multiplier: float, delta: float) -> None:
    if rounds < 0:
        raise ValueError("rounds must be non-negative")
    if noise_multiplier <= 0:
        raise ValueError("noise_multiplier must be positive")
    if not 0 < delta < 1:
        raise ValueError("delta must be in (0, 1)")


def gdp_delta(eps: float, mu: float) -> float:
    """δ(ε) of a μ-GDP mechanism (Balle & Wang 2018, Thm. 8), in log space where e^ε is huge."""
    from scipy.special import log_ndtr, ndtr  # scipy only when accounting, not at gateway start

    a = ndtr(-eps / mu + mu / 2)
    b = math.exp(eps + float(log_ndtr(-eps / mu - mu / 2)))
    return float(max(a - b, 0.0))


def epsilon(rounds: int, noise_multiplier: float, delta: float) -> float:
    """Exact ε after `rounds` Gaussian rounds with noise multiplier z at δ (module docstring)."""
    from scipy.optimize import brentq

    _check(rounds, noise_multiplier, delta)
    if rounds == 0:
        return 0.0
    mu = math.sqrt(rounds) / noise_multiplier
    if gdp_delta(0.0, mu) <= delta:
        return 0.0
    hi = 1.0
    while gdp_delta(hi, mu) > delta:
        hi *= 2
        if hi > 1e6:
            return math.inf
    return float(brentq(lambda e: gdp_delta(e, mu) - delta, 0.0, hi, xtol=1e-12, rtol=1e-12))


def rdp_epsilon(rounds: int, noise_multiplier: float, delta: float, *, improved: bool = True) -> float:
    """ε from Rényi DP, optimised over the order alpha > 1 (module docstring)."""
    from scipy.optimize import minimize_scalar

    _check(rounds, noise_multiplier, delta)
    if rounds == 0:
        return 0.0
    rho = rounds / (2 * noise_multiplier**2)  # RDP at order alpha is rho·alpha

    def eps_at(log_beta: float) -> float:
        alpha = 1.0 + math.exp(log_beta)
        if improved:
            return rho * alpha + math.log1p(-1 / alpha) - (math.log(delta) + math.log(alpha)) / (alpha - 1)
        return rho * alpha + math.log(1 / delta) / (alpha - 1)

    best = minimize_scalar(eps_at, bounds=(-12.0, 12.0), method="bounded",
                           options={"xatol": 1e-10})
    return float(max(best.fun, 0.0))


def classical_gaussian_epsilon(noise_multiplier: float, delta: float) -> float:
    """The textbook single-release bound sigma = Δ·√(2 ln(1.25/δ))/ε (Dwork & Roth, Thm. A.1),
    valid only where it gives ε < 1; for comparison in tests, not for reporting."""
    return math.sqrt(2 * math.log(1.25 / delta)) / noise_multiplier
