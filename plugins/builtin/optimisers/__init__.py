"""Built-in portfolio optimisers, on the same contract as a partner's
(`alphintra_portfolio_optimisers`, `plugins.sdk.PortfolioOptimiser`).

| name               | kind      | what                                                        |
|--------------------|-----------|-------------------------------------------------------------|
| classical-exact    | classical | every k-subset, vectorised; up to 25 assets                 |
| classical-sa       | classical | simulated annealing with budget-keeping swaps; large n      |
| classical-mv       | classical | continuous mean-variance (SLSQP), relax-and-round subsets   |
| qiskit-qaoa        | quantum   | penalty QUBO, X mixer, aer Estimator/Sampler V2, opt. CVaR  |
| pennylane-xy-qaoa  | quantum   | XY mixer from a Dicke state: the budget needs no penalty    |

Modules: `qubo` (formulation, penalty bound, Ising form), `classical`, `meanvariance`,
`sampling` (what the QAOA backends share), `qiskit_qaoa`, `pennylane_qaoa`. qiskit and
pennylane are imported only when a quantum optimiser solves something.

Config: a mapping per optimiser name with its constructor's keyword arguments, e.g.
{"qiskit-qaoa": {"layers": 4, "max_qubits": 16}}.
"""

from __future__ import annotations

from plugins.builtin.optimisers.classical import ExactEnumeration, SimulatedAnnealing
from plugins.builtin.optimisers.meanvariance import MeanVariance
from plugins.builtin.optimisers.pennylane_qaoa import PennylaneXyQaoa
from plugins.builtin.optimisers.qiskit_qaoa import QiskitQaoa
from plugins.sdk import PluginContext, PortfolioOptimiser, hookimpl

FACTORIES = {
    "classical-exact": ExactEnumeration,
    "classical-sa": SimulatedAnnealing,
    "classical-mv": MeanVariance,
    "qiskit-qaoa": QiskitQaoa,
    "pennylane-xy-qaoa": PennylaneXyQaoa,
}


@hookimpl
def alphintra_portfolio_optimisers(context: PluginContext) -> list[PortfolioOptimiser]:
    return [factory(name=name, **dict(context.config.get(name, {})))
            for name, factory in FACTORIES.items()]
