"""Federated learning: accuracy of the federated model against each participant's local-only
model and a centralised model on pooled data, with the privacy budget ε, for a few settings.

    .venv/bin/python bench/federated.py [--participants N] [--rounds R]

What it does (three Flower simulations, about two minutes on two cores):

1. Scarce data. N participants (tenants "bench-0" … "bench-{N-1}"), each with its own slice of
   the market twin (gateway/federated/data.py: 3 instruments, 240 calendar days, its own
   period; some 350 training samples each), target VOLATILITY (is the next move larger than
   the median move at the current volatility?). One simulation trains, on the same
   participants and the same baselines: no DP without and with SecAgg+; central DP (SERVER)
   at noise multipliers 1, 2 and 4 with SecAgg+ (client-side clipping, server noise); local
   DP (CLIENT) at z = 1 and 4 with SecAgg+. Clipping norm 1, δ = 1e-5, R rounds of 5 local
   epochs of SGD.
2. Plenty of data: the same with 730 days each (some 1,100 training samples each), no DP and
   central DP at z = 1.
3. Target DIRECTION (the sign of the next return), scarce data, no DP and central DP at
   z = 1. The twin's prices are a martingale up to a small regime drift, so every model should
   score about 50% there.

Printed per setting: ε after R rounds (exact, and the Rényi-DP bound), the federated model's
accuracy on all participants' test data (± its binomial standard error), the local-only models'
(each on its own test data, pooled), the centralised model's, predicting each participant's
majority training class (the trivial baseline), and the seconds the rounds took. Differences
within about two standard errors are noise. ε is client-level (one participant's whole
update) and covers the training updates only (gateway/federated/dp.py).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.federated.data import FeatureSpec, Target
from gateway.federated.dp import DPConfig, DPMode


def plan(rounds: int, dp: DPConfig | None = None, secure: bool = True) -> object:
    from gateway.federated.flower import TrainingPlan

    return TrainingPlan(rounds=rounds, dp=dp or DPConfig(), seed=11, secure_aggregation=secure)


def central(z: float) -> DPConfig:
    return DPConfig(DPMode.SERVER, clip_norm=1.0, noise_multiplier=z, delta=1e-5)


def local(z: float) -> DPConfig:
    return DPConfig(DPMode.CLIENT, clip_norm=1.0, noise_multiplier=z, delta=1e-5)


def table(title: str, labelled: list[tuple[str, object]], report: dict) -> None:
    first = report["runs"][0]
    print(f"\n{title}: {report['participants']} participants, "
          f"{sum(r['n_train'] for r in first['participants'])} training and "
          f"{sum(r['n_test'] for r in first['participants'])} test samples, "
          f"simulation {report['engine']['seconds']:.1f} s; majority class "
          f"{first['majority_class']['accuracy']:.3f}")
    print(f"{'setting':<26} {'eps':>6} {'eps_rdp':>7} {'federated':>15} {'local-only':>10} "
          f"{'centralised':>11} {'rounds s':>8}")
    for (name, _), run in zip(labelled, report["runs"], strict=True):
        eps, rdp = run["dp"].get("epsilon"), run["dp"].get("epsilon_rdp")
        fed = run["federated"]
        seconds = sum(h["seconds"] for h in fed["rounds"])
        eps_text = "-" if eps is None else f"{eps:.2f}"
        rdp_text = "-" if rdp is None else f"{rdp:.2f}"
        print(f"{name:<26} {eps_text:>6} {rdp_text:>7} {fed['accuracy']:8.3f} ± {fed['stderr']:.3f} "
              f"{run['local_only']['accuracy']:10.3f} {run['centralised']['accuracy']:11.3f} {seconds:8.1f}")
    print("  per participant, no DP: n_train, local-only / federated / centralised / majority class")
    for row in first["participants"]:
        print(f"  {row['label']:>3} {row['n_train']:6d}  {row['local_accuracy']:.3f} / "
              f"{row['federated_accuracy']:.3f} / {row['centralised_accuracy']:.3f} / "
              f"{row['majority_class_accuracy']:.3f}")
    by_round = " ".join(f"{h['accuracy']:.3f}" for h in first["federated"]["rounds"])
    print("  accuracy by round, no DP:", by_round)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--participants", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    logging.basicConfig(level=logging.ERROR)

    from gateway.federated.runner import FederationPlan, simulate

    r = args.rounds
    tenants = tuple(f"bench-{k}" for k in range(args.participants))
    started = time.perf_counter()
    scarce = FeatureSpec(target=Target.VOLATILITY, window_days=240)
    plenty = FeatureSpec(target=Target.VOLATILITY, window_days=730)
    direction = FeatureSpec(target=Target.DIRECTION, window_days=240)
    pair = [("no DP, plain FedAvg", plan(r, secure=False)),
            ("central DP z=1, SecAgg+", plan(r, central(1.0)))]
    runs = [
        ("VOLATILITY, scarce data (240 days each)", scarce, [
            ("no DP, plain FedAvg", plan(r, secure=False)), ("no DP, SecAgg+", plan(r)),
            *((f"central DP z={z:g}, SecAgg+", plan(r, central(z))) for z in (1.0, 2.0, 4.0)),
            *((f"local DP z={z:g}, SecAgg+", plan(r, local(z))) for z in (1.0, 4.0))]),
        ("VOLATILITY, plenty of data (730 days each)", plenty, pair),
        ("DIRECTION, scarce data (240 days each)", direction, pair),
    ]
    for title, spec, labelled in runs:
        table(title, labelled, simulate(FederationPlan(spec, tenants), [p for _, p in labelled]))
    print(f"\nall done in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
