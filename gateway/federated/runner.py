"""Federated training in the embedded default: a Flower simulation, one virtual SuperNode per
participating tenant, run inside a job (or by the bench and tests directly).

`train_federated` builds the ServerApp (whose main is `flower.orchestrate`) and the ClientApp
(`flower.make_client_app`) and runs them with `flwr.simulation.run_simulation` on Ray. Ray is
capped: `cpus` CPUs (two by default, one per client actor, so two participants train at a time
and the rest queue), the smallest object store Ray accepts, no dashboard, no usage reporting,
workers' output kept out of the gateway's log. flwr's Ray backend shuts Ray down at the end of
every simulation, so each run pays Ray's start-up (some seconds); `simulate` runs several
training plans in one simulation for callers that compare settings (the bench, the tests).

One simulation at a time per process: flwr keeps run identity in class attributes and Ray is
process-global, so `_ENGINE` serialises them (a second job waits for the first).

At scale the same ServerApp logic and ClientApp run on Flower's SuperLink and one SuperNode per
institution instead: gateway/federated/app/ and `alphintra fl superlink|supernode`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.federated.data import FeatureSpec
from gateway.federated.dp import DPConfig

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]
DEFAULT_CPUS = 2
OBJECT_STORE_BYTES = 80 * 1024 * 1024  # Ray's minimum is 75 MiB; weights are a few hundred bytes
_ENGINE = threading.Lock()  # see the module docstring: one simulation per process at a time


@dataclass(frozen=True)
class FederationPlan:
    """Who trains on what: the federation's feature spec and its participants' tenant keys
    (tenant slugs), one simulated SuperNode each, in this order."""

    spec: FeatureSpec
    participants: tuple[str, ...]
    name: str = ""


def quiet_environment() -> None:
    """Defaults that keep Flower and Ray from calling home or flooding the log; set before
    either is imported (both read some of them at import)."""
    for key, value in {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
                       "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
                       "RAY_USAGE_STATS_ENABLED": "0", "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
                       "RAY_DEDUP_LOGS": "0"}.items():
        os.environ.setdefault(key, value)


def backend_config(cpus: int) -> dict[str, Any]:
    return {
        "init_args": {"num_cpus": cpus, "num_gpus": 0, "object_store_memory": OBJECT_STORE_BYTES,
                      "include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"},
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
    }


def simulate(federation: FederationPlan, plans: Sequence[Any], *, baselines: bool = True,
             progress: Progress | None = None, audit_dir: str | None = None,
             cpus: int = DEFAULT_CPUS, verbose: bool = False) -> dict[str, Any]:
    """Run `plans` (flower.TrainingPlan) in one Flower simulation; `flower.orchestrate`'s report."""
    if len(federation.participants) < 2:
        raise ValueError("a federation needs at least two participants")
    quiet_environment()
    from flwr.app import Context
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation

    from gateway.federated import flower

    if not verbose:
        # flwr logs every round and every mechanism at INFO on its own handler.
        logging.getLogger("flwr").setLevel(logging.WARNING)
    outcome: dict[str, Any] = {}
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        outcome["report"] = flower.orchestrate(
            grid, context, federation.spec, plans, expected_nodes=len(federation.participants),
            baselines=baselines, progress=progress)

    client = flower.make_client_app(federation.participants, audit_dir=audit_dir)
    started = time.perf_counter()
    with _ENGINE:
        waited = time.perf_counter() - started
        run_simulation(server_app=server, client_app=client, num_supernodes=len(federation.participants),
                       backend_config=backend_config(cpus), verbose_logging=verbose)
    if "report" not in outcome:
        raise flower.FederatedRunError("the simulation ended without a result")
    report = outcome["report"]
    report["engine"] = engine_summary(cpus, time.perf_counter() - started - waited)
    return report


def engine_summary(cpus: int, seconds: float) -> dict[str, Any]:
    from importlib.metadata import version

    return {"kind": "flower-simulation", "flwr": version("flwr"), "ray": version("ray"),
            "ray_cpus": cpus, "client_cpus": 1, "seconds": round(seconds, 3)}


def train_federated(federation: FederationPlan, rounds: int, dp: DPConfig, seed: int,
                    progress: Progress | None = None, *, secure_aggregation: bool = True,
                    baselines: bool = True, audit_dir: str | None = None,
                    cpus: int = DEFAULT_CPUS) -> dict[str, Any]:
    """Train the federation's model for `rounds` FedAvg rounds under `dp`, in a simulation.

    Returns per-round accuracy and ε, the final federated model, and (with `baselines`) each
    participant's local-only accuracy and the centralised model's (the upper bound), all on the
    participants' own test data. `progress(fraction, message)` is called from the simulation's
    server thread; an exception it raises (a cancelled job) ends the run.
    """
    from gateway.federated.flower import TrainingPlan

    plan = TrainingPlan(rounds=rounds, dp=dp, seed=seed, secure_aggregation=secure_aggregation)
    report = simulate(federation, [plan], baselines=baselines, progress=progress,
                      audit_dir=audit_dir, cpus=cpus)
    run = report["runs"][0]
    return {"federation": federation.name, "spec": report["spec"],
            "participant_count": report["participants"], **run, "engine": report["engine"]}
