"""QAOA on qiskit's own primitives (qiskit-aer's EstimatorV2 and SamplerV2) and scipy.

The budget is a penalty (`qubo.build_qubo`, with the provable weight), so the mixer is the
standard transverse field and the start the uniform superposition over all 2^n subsets.

- Cost operator: the Ising form as a SparsePauliOp of Z and ZZ terms, divided by its largest
  coefficient so one set of angle scales serves every problem.
- Ansatz: `qiskit.circuit.library.qaoa_ansatz` (the function; the QAOAAnsatz class is
  deprecated since qiskit 2.1), transpiled once to {cx, rz, rx, h} without a coupling map,
  so `depth` is for all-to-all connectivity.
- Angles: COBYLA from a linear ramp. By default the objective is the exact expectation of the
  cost operator from aer's EstimatorV2 on the statevector method. With `cvar_alpha` it is the
  CVaR (mean of the lowest alpha share) of the energies of `cvar_shots` samples from aer's
  SamplerV2; the sampler's seed is fixed, so the same angles give the same samples and COBYLA
  sees a deterministic function.
- Answer: `shots` samples of the final circuit from SamplerV2; the best feasible sampled
  bitstring is returned. The probabilities reported are the simulator's exact ones.

qiskit and qiskit-aer are imported inside `solve`, so the gateway starts without them. aer
runs with one thread (`threads`): the machine is shared, and at 20 qubits or fewer the
statevector gains little from more.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from plugins.builtin.optimisers.qubo import bits_of, build_qubo, to_ising
from plugins.builtin.optimisers.sampling import AngleSearch, answer, cvar, option, ramp
from plugins.sdk import OptimisationAnswer, OptimisationProblem, OptimiserRefused

BASIS_GATES = ("cx", "rz", "rx", "h")


class QiskitQaoa:
    kind = "quantum"

    def __init__(self, name: str = "qiskit-qaoa", max_qubits: int = 20, layers: int = 3,
                 shots: int = 4096, maxiter: int = 150, cvar_alpha: float | None = None,
                 cvar_shots: int = 1024, threads: int = 1) -> None:
        self.name = name
        self.max_qubits = max_qubits
        self.max_assets = max_qubits  # one qubit per asset
        self.layers = layers
        self.shots = shots
        self.maxiter = maxiter
        self.cvar_alpha = cvar_alpha
        self.cvar_shots = cvar_shots
        self.threads = threads

    def solve(self, problem: OptimisationProblem, deadline_s: float) -> OptimisationAnswer:
        started = time.perf_counter()
        n = problem.n
        if n > self.max_qubits:
            raise OptimiserRefused(f"the problem needs {n} qubits; {self.name} takes at most "
                                   f"{self.max_qubits}")
        layers = option(problem, "layers", self.layers, int, 1, 10)
        shots = option(problem, "shots", self.shots, int, 16, 1_000_000)
        maxiter = option(problem, "maxiter", self.maxiter, int, 1, 10_000)
        alpha = option(problem, "cvar_alpha", self.cvar_alpha, float, 1e-3, 1.0)
        seed = problem.seed if problem.seed is not None else int(np.random.SeedSequence().entropy % 2**31)

        from qiskit import transpile
        from qiskit.circuit.library import qaoa_ansatz
        from qiskit.quantum_info import SparsePauliOp
        from qiskit_aer import AerSimulator
        from qiskit_aer.primitives import EstimatorV2, SamplerV2

        qubo = build_qubo(problem)
        ising = to_ising(qubo)
        terms = ising.terms()
        scale = max((abs(c) for _, _, c in terms), default=1.0) or 1.0
        cost = SparsePauliOp.from_sparse_list([(label, qubits, c / scale) for label, qubits, c in terms]
                                              or [("", [], 0.0)], num_qubits=n)
        circuit = transpile(qaoa_ansatz(cost, reps=layers), basis_gates=list(BASIS_GATES),
                            optimization_level=1, seed_transpiler=seed)
        measured = circuit.copy()
        measured.measure_all()
        backend_options = {"method": "statevector", "max_parallel_threads": self.threads}
        sampler = SamplerV2(seed=seed, options={"backend_options": backend_options})
        bind = _binder(circuit, layers)

        if alpha is None:
            estimator = EstimatorV2(options={"backend_options": backend_options,
                                             "default_precision": 0.0})

            def objective(angles: np.ndarray) -> float:
                return float(estimator.run([(circuit, cost, bind(angles))]).result()[0].data.evs)
            method_options: dict[str, Any] = {"maxiter": maxiter, "rhobeg": 0.2}
        else:
            def objective(angles: np.ndarray) -> float:
                counts = sampler.run([(measured, bind(angles))], shots=self.cvar_shots
                                     ).result()[0].data.meas.get_int_counts()
                states = np.fromiter(counts.keys(), dtype=np.int64)
                weights = np.fromiter(counts.values(), dtype=np.float64)
                return cvar(qubo.energy(bits_of(states, n)), weights, alpha)
            # The sampled CVaR is piecewise flat in the angles; a wider first step keeps
            # COBYLA from shrinking its trust region on a plateau (measured on 12 assets).
            method_options = {"maxiter": maxiter, "rhobeg": 0.5}

        search = AngleSearch(started, deadline_s)
        angles = search.run(objective, ramp(layers, 0.5), "COBYLA", method_options)

        counts = sampler.run([(measured, bind(angles))], shots=shots).result()[0].data.meas.get_int_counts()
        exact = circuit.assign_parameters(bind(angles))
        exact.save_probabilities()
        simulator = AerSimulator(**backend_options)
        probabilities = np.asarray(simulator.run(exact).result().data(0)["probabilities"])
        notes = [f"QAOA p={layers}, penalty lambda={qubo.penalty:.6g} (provable bound), "
                 f"{'CVaR alpha=' + format(alpha, 'g') if alpha is not None else 'expectation'} "
                 "objective, aer statevector simulator"]
        return answer(problem, optimiser=self.name, probabilities=probabilities,
                      counts={int(k): int(v) for k, v in counts.items()}, started=started,
                      qubits=n, depth=int(circuit.depth()), shots=shots, search=search, notes=notes,
                      details={"layers": layers, "penalty": qubo.penalty, "cvar_alpha": alpha,
                               "angles": [float(a) for a in angles], "seed": seed,
                               "basis_gates": list(BASIS_GATES)})


def _binder(circuit: Any, layers: int) -> Any:
    """Angles [gamma..., beta...] → the circuit's parameter values, matched by name
    (qaoa_ansatz names them gamma[l] and beta[l] in Greek letters), so parameter order never
    matters."""
    slots: list[int] = []
    for parameter in circuit.parameters:
        name = parameter.name
        layer = int(name[name.index("[") + 1:-1])
        slots.append(layers + layer if name.startswith("β") else layer)
    index = np.array(slots, dtype=np.intp)

    def bind(angles: np.ndarray) -> np.ndarray:
        return np.asarray(angles, dtype=np.float64)[index]
    return bind
