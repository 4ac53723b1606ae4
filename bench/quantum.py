"""QAOA against the exact classical optimum: time and approximation ratio per backend.

    .venv/bin/python bench/quantum.py [--sizes 8,10,12,14] [--seed 1] [--deadline 90]
                                      [--backends qiskit-qaoa,qiskit-qaoa+cvar,pennylane-xy-qaoa]

For each size n: a seeded random problem (mu ~ N(0.08, 0.12), Sigma = F F'/(n+4) with F
Gaussian scaled by 0.25, budget k = n/2, risk aversion 1), solved through
`PortfolioOptimisationService.optimise`, the same path a `portfolio.optimize` job takes, so the
exact reference (classical-exact) runs beside each backend and the figures are the job's own.
The built-in defaults are used (QAOA p=3, 4096 shots; qiskit COBYLA with at most 150
evaluations; pennylane L-BFGS-B with at most 60 iterations); `+cvar` is qiskit-qaoa with
cvar_alpha 0.1. Every run is capped by the deadline (the angle loop stops at 75% of it), so
the script ends by itself; at the defaults it takes about two to three minutes.

Columns: exact s (enumeration of all C(n,k) subsets), s (the backend's wall time), evals
(circuit evaluations; for pennylane, value-and-gradient evaluations), ratio (approximation ratio of the
returned bitstring, the best feasible one of the samples), p(opt) (probability the final
circuit puts on the optimum) next to 1/C(n,k) (what uniform sampling of feasible subsets
gives), p(feas) (probability of a feasible bitstring), E[ratio] (expected ratio of a feasible
sample), depth (qiskit: transpiled to cx, rz, rx, h, all-to-all; pennylane: its tape).

Threads are pinned to one (OpenBLAS, OpenMP, aer), as on the shared machine the gateway runs
on; the script re-executes itself once to set them before numpy loads.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
BACKENDS = ("qiskit-qaoa", "qiskit-qaoa+cvar", "pennylane-xy-qaoa")


def problem(n: int, seed: int, options: dict):
    import numpy as np

    from plugins.sdk import OptimisationProblem

    rng = np.random.default_rng(seed * 1000 + n)
    factors = rng.normal(size=(n, n + 4)) * 0.25
    return OptimisationProblem(tuple(f"A{i}" for i in range(n)), rng.normal(0.08, 0.12, size=n),
                               factors @ factors.T / (n + 4), n // 2, risk_aversion=1.0, seed=seed,
                               options=options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="8,10,12,14")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--deadline", type=float, default=90.0, help="seconds per backend run")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    args = parser.parse_args()
    if any(os.environ.get(v) != "1" for v in THREAD_VARIABLES):
        os.environ.update({v: "1" for v in THREAD_VARIABLES})
        os.execv(sys.executable, [sys.executable, *sys.argv])

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from gateway.quantum import PortfolioOptimisationService
    from plugins.builtin import BUILTINS
    from plugins.host import PluginHost

    service = PortfolioOptimisationService(PluginHost(BUILTINS), SimpleNamespace(now=None))  # type: ignore[arg-type]
    sizes = [int(s) for s in args.sizes.split(",")]
    backends = [b for b in args.backends.split(",") if b]
    print(f"# bench/quantum.py  python {platform.python_version()}  {platform.machine()}  "
          f"cpus {os.cpu_count()}  seed {args.seed}  deadline {args.deadline:g} s")
    header = ("| n | k | C(n,k) | exact s | backend | s | evals | ratio | p(opt) | 1/C(n,k) "
              "| p(feas) | E[ratio] | depth |")
    print(header)
    print("|" + "---:|" * 4 + "---|" + "---:|" * 8)
    started = time.perf_counter()
    for n in sizes:
        for backend in backends:
            name, options = backend, {}
            if backend.endswith("+cvar"):
                name, options = backend.removesuffix("+cvar"), {"cvar_alpha": 0.1}
            result = service.optimise(problem(n, args.seed, options), name, args.deadline)
            runs = {r["role"]: r for r in result["runs"]}
            exact, run = runs["reference"], runs["requested"]

            def cell(value: object, fmt: str = ".3f") -> str:
                return "-" if value is None else format(value, fmt)

            status = "" if run["status"] == "answered" else f" ({run['status']})"
            print(f"| {n} | {n // 2} | {math.comb(n, n // 2)} | {exact['runtime_s']:.4f} "
                  f"| {backend}{status} | {run['runtime_s']:.1f} | {run['iterations']} "
                  f"| {cell(run.get('approximation_ratio'))} "
                  f"| {cell(run.get('probability_of_optimum'), '.4f')} "
                  f"| {cell(run.get('uniform_probability_of_optimum'), '.4f')} "
                  f"| {cell(run.get('probability_feasible'))} "
                  f"| {cell(run.get('expected_ratio_of_feasible_sample'))} | {run['depth']} |",
                  flush=True)
    print(f"\ntotal {time.perf_counter() - started:.0f} s. No quantum advantage is claimed: "
          "the circuits ran on classical simulators.")


if __name__ == "__main__":
    main()
