"""The Flower App (ServerApp and ClientApp) for real deployments: one SuperLink, one SuperNode
per participating institution, each SuperNode training only on its own tenant's data.

Flower loads `server_app` in the SuperLink's `flwr-serverapp` process and `client_app` in each
SuperNode's `flwr-clientapp` processes, from a Flower App bundle (FAB). `write_flower_app`
writes that bundle's directory (a pyproject.toml declaring the components and the run
configuration, and a one-line module pointing here); the code itself stays in the installed
`alphintra` package, which the SuperLink's and SuperNodes' Python must have.

Starting a run, with flwr 1.41:

    alphintra fl superlink --port 9092                       # the SuperLink (HTTP API)
    alphintra fl supernode --tenant bank-a --superlink 127.0.0.1:9092 --port 9094
    alphintra fl supernode --tenant bank-b --superlink 127.0.0.1:9092 --port 9095
    alphintra fl run --superlink 127.0.0.1:9092 --participants 2 --rounds 3 --result out.json

`alphintra fl run` is a thin wrapper over Flower's own CLI: it writes the app (as
`alphintra fl app DIR` does), a Flower configuration with a SuperLink connection in a private
FLWR_HOME,

    [superlink]
    default = "alphintra"
    [superlink.alphintra]
    address = "127.0.0.1:9092"
    insecure = true

and runs `flwr run DIR alphintra --run-config 'participants=2 rounds=3 …' --stream`, which
builds the FAB, submits it to the SuperLink's Control API and streams the run's log until it
ends. Any run-config key below can be overridden the same way.

The ServerApp waits up to `wait-seconds` for `participants` SuperNodes, then runs
`flower.orchestrate` (the same orchestration as the embedded simulation) and writes its JSON
report to `result-path` (on the SuperLink's machine) when one is given. Participants are
labelled by their tenant slug, which each SuperNode declares in its node config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from gateway.federated.data import FeatureSpec, Target
from gateway.federated.dp import DPConfig
from gateway.federated.flower import TrainingPlan, make_client_app, orchestrate

RUN_CONFIG: dict[str, Any] = {
    "participants": 2,
    "rounds": 3,
    "seed": 0,
    "dp-mode": "NONE",
    "clip-norm": 1.0,
    "noise-multiplier": 0.0,
    "delta": 1e-5,
    "secure-aggregation": True,
    "baselines": True,
    "target": "DIRECTION",
    "interval": "1d",
    "instruments": 3,
    "window-days": 730,
    "wait-seconds": 120,
    "result-path": "",
}

APP_MODULE = "alphintra_fl_app"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def write_flower_app(directory: Path) -> Path:
    """Write the Flower App's directory (what `flwr run` builds a FAB from); returns it."""
    directory.mkdir(parents=True, exist_ok=True)
    config = "\n".join(f"{key} = {_toml_value(value)}" for key, value in RUN_CONFIG.items())
    (directory / "pyproject.toml").write_text(f"""\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "alphintra-fl"
version = "1.0.0"
description = "Alphintra federated training: FedAvg with DP and SecAgg+ over tenants' own data"
license = "Apache-2.0"
# Empty on purpose: the code is the installed `alphintra` package, and nothing is installed at
# run time (SuperLinks run with --disable-runtime-dependency-installation).
dependencies = []

[tool.flwr.app]
publisher = "alphintra"

[tool.flwr.app.components]
serverapp = "{APP_MODULE}:server_app"
clientapp = "{APP_MODULE}:client_app"

[tool.flwr.app.config]
{config}
""")
    (directory / f"{APP_MODULE}.py").write_text(
        '"""Alphintra\'s Flower App: the code lives in the installed alphintra package."""\n\n'
        "from gateway.federated.flower_app import client_app, server_app\n\n"
        '__all__ = ["client_app", "server_app"]\n')
    return directory


def plan_from_run_config(config: dict[str, Any]) -> tuple[FeatureSpec, TrainingPlan]:
    spec = FeatureSpec(target=Target(str(config["target"]).upper()), interval=str(config["interval"]),
                       instruments=int(config["instruments"]), window_days=int(config["window-days"]))
    dp_raw: dict[str, Any] = {"mode": str(config["dp-mode"])}
    if dp_raw["mode"].upper() != "NONE":
        dp_raw |= {"clip_norm": float(config["clip-norm"]),
                   "noise_multiplier": float(config["noise-multiplier"]), "delta": float(config["delta"])}
    plan = TrainingPlan(rounds=int(config["rounds"]), dp=DPConfig.parse(dp_raw), seed=int(config["seed"]),
                        secure_aggregation=bool(config["secure-aggregation"]))
    return spec, plan


def _print_progress(fraction: float, message: str) -> None:
    print(f"[{fraction:4.0%}] {message}", flush=True)


server_app = ServerApp()


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    config = {**RUN_CONFIG, **dict(context.run_config)}
    spec, plan = plan_from_run_config(config)
    report = orchestrate(grid, context, spec, [plan], expected_nodes=int(config["participants"]),
                         baselines=bool(config["baselines"]), wait_s=float(config["wait-seconds"]),
                         progress=_print_progress)
    run = report["runs"][0]
    # The serverapp process's output is what `flwr run --stream` and `flwr log` show.
    print(f"federated accuracy {run['federated']['accuracy']:.4f} over {report['participants']} "
          "participants", flush=True)
    if config["result-path"]:
        Path(str(config["result-path"])).write_text(json.dumps(report, indent=2, default=float))


# A SuperNode names its tenant in its node config; the client functions read only that tenant's data.
client_app = make_client_app(None)
