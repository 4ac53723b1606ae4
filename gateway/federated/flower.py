"""Flower (flwr 1.41) integration: the ClientApp every participant runs, and the server side's
orchestration of a training run, shared by the simulation (gateway/federated/runner.py) and by
real SuperLink/SuperNode deployments (gateway/federated/app/, `alphintra fl …`).

This module imports flwr and is itself imported only when a federated run starts, never when
the gateway starts.

A run, as the server side drives it over Flower messages:
  0. `query.hello`      every node says which participant it is and how many samples it holds;
  1. `query.local`      each participant fits its local-only model (Newton, to the optimum) on
                        its training data and reports test accuracy: what it reaches alone;
  2. rounds 1..R        FedAvg: `train` messages (local SGD for E epochs from the global model),
                        through Flower's legacy fit workflow, with SecAgg+ (SecAggPlusWorkflow
                        and secaggplus_mod) when secure aggregation is on, and Flower's DP
                        wrappers (below); each participant first scores the global model it
                        received on its test data, so round r's accuracy arrives with round
                        r+1's updates (no extra exchange), and ε so far is accounted;
  3. `query.newton`     the centralised upper bound: Newton's method on the pooled objective,
                        each participant returning the gradient and Hessian sums of its own
                        data at the current weights, so the pooled model is computed exactly
                        without moving samples;
  4. `query.evaluate`   the final federated models and the centralised one on every test set.
Only weights, gradients/Hessians (step 3) and counts travel; samples never leave the client
function, which is the only caller of `build_participant_data`.

Differential privacy (gateway/federated/dp.py for the maths) uses Flower's own mechanisms:
  SERVER without secure aggregation: DifferentialPrivacyServerSideFixedClipping (the server
      clips each update to C, averages with equal weights, adds N(0, (zC/n)²));
  SERVER with secure aggregation: DifferentialPrivacyClientSideFixedClipping with
      fixedclipping_mod on the client (the server never sees an update to clip);
  CLIENT: LocalDpMod on every participant (clip to C, add N(0, (zC)²)), configured per run.
With DP on, every update is weighted equally (num_examples reported as 1): the sensitivity
C/n of the average holds only for equal weights.

Secure aggregation: Flower's SecAgg+ (Bell et al. 2020) on the legacy fit workflow, the only
place flwr 1.41 offers it (the Message-API strategies in flwr.serverapp have none). The server
learns only the weighted sum of the quantised parameters. In a simulation all virtual nodes
live in one process tree, so the protocol runs for real but protects nothing; its protection is
real with SuperNodes, one per institution. With two participants each can subtract its own
update from the aggregate and learn the other's: DP is what protects that case.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# Flower reads these when its modules are first imported (telemetry is a module constant), so
# they are set before the imports below. Nothing may call home from a gateway.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")

import flwr.compat.common.recorddict_compat as compat
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.client.mod import LocalDpMod, fixedclipping_mod, secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import (
    Code,
    FitRes,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.serverapp import Grid
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from gateway.federated.data import (
    FEATURES,
    DataInsufficient,
    FeatureSpec,
    build_participant_data,
    tenant_hash,
)
from gateway.federated.dp import DPConfig, DPMode
from gateway.federated.model import DEFAULT_L2, Evaluation, LogisticRegression

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]
MESSAGE_TIMEOUT_S = 600.0
NEWTON_MAX_ITER = 15
NEWTON_TOL = 1e-7
# SecAgg+ quantises parameters into [-range, range] on 2^22 levels: 8e-6 resolution, and room
# for weights of scale-free features plus local-DP noise.
SECAGG_CLIPPING_RANGE = 16.0


class FederatedRunError(RuntimeError):
    """A run could not complete: a participant failed, did not answer, or lacks data."""

    def __init__(self, message: str, code: str = "FEDERATED_RUN_FAILED") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class TrainingPlan:
    """One federated training: how many rounds, with what privacy, how each round trains."""

    rounds: int
    dp: DPConfig = field(default_factory=DPConfig)
    seed: int = 0
    secure_aggregation: bool = True
    local_epochs: int = 5
    learning_rate: float = 0.1
    batch_size: int = 32
    l2: float = DEFAULT_L2

    def describe(self) -> str:
        secure = "SecAgg+" if self.secure_aggregation else "plain"
        if not self.dp.enabled:
            return f"{self.rounds} rounds, no DP, {secure}"
        return (f"{self.rounds} rounds, DP {self.dp.mode.value} z={self.dp.noise_multiplier:g} "
                f"C={self.dp.clip_norm:g}, {secure}")


# -- the client side --------------------------------------------------------------------------

def _node(context: Context, participants: Sequence[str] | None) -> tuple[str, str]:
    """(label, tenant key) of the node running this client function. A SuperNode names its
    tenant in its node config (`alphintra fl supernode --tenant`); a simulated node has a
    partition id, which indexes the participants of the run."""
    tenant = context.node_config.get("tenant")
    if tenant:
        return str(tenant), str(tenant)
    if participants is None:
        raise FederatedRunError("this node has no tenant: start the SuperNode with --tenant")
    index = int(context.node_config["partition-id"])
    return str(index), participants[index]


def _config(content: RecordDict) -> dict[str, Any]:
    return dict(content.config_records["config"])


def _arrays(record: ArrayRecord) -> list[np.ndarray]:
    return [np.asarray(a, dtype=np.float64) for a in record.to_numpy_ndarrays()]


def _metrics(evaluation: Evaluation, prefix: str = "") -> dict[str, float | int]:
    return {f"{prefix}correct": evaluation.correct, f"{prefix}count": evaluation.count,
            f"{prefix}loss_sum": evaluation.loss_sum}


def _when(predicate: Callable[[Message], bool], mod: Callable[..., Message]) -> Callable[..., Message]:
    """A mod that applies `mod` only to messages `predicate` accepts, so one ClientApp serves
    runs with and without secure aggregation or DP (the server decides per run)."""

    def conditional(msg: Message, ctxt: Context, call_next: Callable[..., Message]) -> Message:
        return mod(msg, ctxt, call_next) if predicate(msg) else call_next(msg, ctxt)

    return conditional


def _fit_config(msg: Message) -> dict[str, Any]:
    record = msg.content.config_records.get("fitins.config")
    return dict(record) if record is not None else {}


def _is_secagg(msg: Message) -> bool:
    return RECORD_KEY_CONFIGS in msg.content.config_records


def _wants_clipping(msg: Message) -> bool:
    return KEY_CLIPPING_NORM in _fit_config(msg)


def _local_dp(msg: Message, ctxt: Context, call_next: Callable[..., Message]) -> Message:
    """Flower's LocalDpMod with this run's parameters. LocalDpMod calibrates its noise as
    sigma = sensitivity·√(2 ln(1.25/δ))/ε (the classical Gaussian mechanism); passing
    ε' = √(2 ln(1.25/δ))/z and sensitivity C makes sigma = z·C exactly, which is what the run
    asked for. ε' is not the privacy spent: gateway/federated/dp.py accounts for that."""
    cfg = _fit_config(msg)
    clip, z, delta = float(cfg["local_dp_clip"]), float(cfg["local_dp_noise"]), float(cfg["local_dp_delta"])
    mod = LocalDpMod(clipping_norm=clip, sensitivity=clip,
                     epsilon=float(np.sqrt(2 * np.log(1.25 / delta)) / z), delta=delta)
    return mod(msg, ctxt, call_next)


def _wants_local_dp(msg: Message) -> bool:
    return float(_fit_config(msg).get("local_dp_noise", 0.0)) > 0


def make_client_app(participants: Sequence[str] | None = None, *,
                    audit_dir: str | None = None) -> ClientApp:
    """The ClientApp of a participant. `participants` maps a simulated node's partition id to
    its tenant; a SuperNode names its tenant itself. `audit_dir`, when given, receives a line
    per data access (process, node, tenant): tests use it to show where data are read."""
    app = ClientApp()
    participants = list(participants) if participants is not None else None

    def data(context: Context, spec_json: str) -> Any:
        label, tenant = _node(context, participants)
        if audit_dir is not None:
            with open(Path(audit_dir) / "data-access.jsonl", "a") as out:
                out.write(json.dumps({"pid": os.getpid(), "node": label, "tenant": tenant}) + "\n")
        cache = context.node_config.get("cache-dir")  # a SuperNode's, on its own machine
        return build_participant_data(FeatureSpec.from_json(spec_json), tenant,
                                      cache_dir=str(cache) if cache else None)

    def reply(msg: Message, **records: Any) -> Message:
        return Message(RecordDict(records), reply_to=msg)

    @app.query("hello")
    def hello(msg: Message, context: Context) -> Message:
        cfg = _config(msg.content)
        label, _ = _node(context, participants)
        try:
            own = data(context, cfg["spec"])
        except DataInsufficient as exc:
            return reply(msg, node=ConfigRecord({"label": label, "error": exc.code, "message": exc.message}))
        # The majority class of its training labels, scored on its test labels: the trivial
        # baseline any model has to beat.
        majority = int(np.sum(own.y_test == float(own.positive_rate >= 0.5)))
        return reply(msg, node=ConfigRecord({"label": label}),
                     sizes=MetricRecord({"n_train": len(own.y_train), "n_test": len(own.y_test),
                                         "majority_correct": majority}))

    @app.query("local")
    def local(msg: Message, context: Context) -> Message:
        cfg = _config(msg.content)
        own = data(context, cfg["spec"])
        model = LogisticRegression(own.x_train.shape[1], l2=float(cfg["l2"]))
        iterations = model.fit_newton(own.x_train, own.y_train)
        return reply(msg, local=MetricRecord({**_metrics(model.evaluate(own.x_test, own.y_test)),
                                              "iterations": iterations}))

    @app.query("newton")
    def newton(msg: Message, context: Context) -> Message:
        cfg = _config(msg.content)
        own = data(context, cfg["spec"])
        model = LogisticRegression(own.x_train.shape[1], l2=float(cfg["l2"]))
        model.set_weights(_arrays(msg.content.array_records["model"]))
        grad, hess, loss_sum = model.grad_hess(own.x_train, own.y_train)
        return reply(msg, stats=ArrayRecord([grad, hess]),
                     sums=MetricRecord({"count": len(own.y_train), "loss_sum": loss_sum}))

    @app.query("evaluate")
    def evaluate(msg: Message, context: Context) -> Message:
        cfg = _config(msg.content)
        own = data(context, cfg["spec"])
        out: dict[str, float | int] = {}
        for key, record in msg.content.array_records.items():
            model = LogisticRegression(own.x_test.shape[1])
            model.set_weights(_arrays(record))
            out.update(_metrics(model.evaluate(own.x_test, own.y_test), f"{key}."))
        return reply(msg, evaluation=MetricRecord(out))

    # Outermost first: SecAgg+ masks what the inner mods produced (clipped, or noised) updates.
    @app.train(mods=[_when(_is_secagg, secaggplus_mod), _when(_wants_clipping, fixedclipping_mod),
                     _when(_wants_local_dp, _local_dp)])
    def train(msg: Message, context: Context) -> Message:
        fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
        cfg = fitins.config
        own = data(context, str(cfg["spec"]))
        _, tenant = _node(context, participants)
        model = LogisticRegression(own.x_train.shape[1], l2=float(cfg["l2"]))
        model.set_weights(parameters_to_ndarrays(fitins.parameters))
        # The global model as received, on this participant's test data: the previous round's
        # accuracy travels with this round's update instead of costing an exchange of its own
        # (on SuperNodes every exchange costs seconds of polling).
        before = model.evaluate(own.x_test, own.y_test)
        # Shuffling is reproducible from the run's seed; it carries no privacy role (DP noise
        # never comes from this generator).
        rng = np.random.default_rng(np.random.SeedSequence(
            int(cfg["seed"]), spawn_key=(int(cfg["round"]), tenant_hash(tenant))))
        loss = model.fit(own.x_train, own.y_train, epochs=int(cfg["epochs"]), lr=float(cfg["lr"]),
                         batch_size=int(cfg["batch_size"]), rng=rng)
        weight = 1 if bool(cfg["uniform"]) else len(own.y_train)
        res = FitRes(status=Status(code=Code.OK, message="ok"),
                     parameters=ndarrays_to_parameters(model.get_weights()),
                     num_examples=weight, metrics={"train_loss": loss, **_metrics(before, "global_")})
        return Message(compat.fitres_to_recorddict(res, keep_input=True), reply_to=msg)

    return app


# -- the server side --------------------------------------------------------------------------

@dataclass
class _Node:
    node_id: int
    label: str
    n_train: int
    n_test: int
    majority_correct: int


def _round_metrics(history: Any, server_round: int) -> dict[str, Any]:
    """The fit metrics the strategy aggregated for one round (flwr's legacy History)."""
    return {key: value for key, series in history.metrics_distributed_fit.items()
            for r, value in series if r == server_round}


def _label_order(node: _Node) -> tuple[bool, int, str]:
    """Simulated nodes are labelled by partition number: order them numerically."""
    numeric = node.label.isdigit()
    return (not numeric, int(node.label) if numeric else 0, node.label)


def _pooled(parts: Sequence[Evaluation]) -> dict[str, float]:
    """Accuracy over all participants' test samples, with its binomial standard error: on a
    few hundred samples two accuracies within about two standard errors are not different."""
    total = Evaluation(sum(p.correct for p in parts), sum(p.count for p in parts),
                       sum(p.loss_sum for p in parts))
    acc = total.accuracy
    stderr = float(np.sqrt(acc * (1 - acc) / total.count)) if total.count else float("nan")
    return {"accuracy": acc, "stderr": stderr, "loss": total.loss, "samples": total.count}


def _fit_metrics(results: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
    """Training loss (weighted mean) and the received global model's test counts (summed)."""
    total = sum(n for n, _ in results)
    out: dict[str, Any] = {key: sum(int(m[key]) for _, m in results)
                           for key in ("global_correct", "global_count")}
    out["global_loss_sum"] = sum(float(m["global_loss_sum"]) for _, m in results)
    if total:
        out["train_loss"] = sum(n * float(m["train_loss"]) for n, m in results) / total
    return out


def _stats(metrics: dict[str, Any], prefix: str = "") -> Evaluation:
    return Evaluation(int(metrics[f"{prefix}correct"]), int(metrics[f"{prefix}count"]),
                      float(metrics[f"{prefix}loss_sum"]))


class PollingGrid:
    """A Grid whose send_and_receive pulls replies every `interval` seconds. flwr 1.41's HTTP
    grid (the SuperLink's) sleeps 3 s between pulls, which a SecAgg+ round (four exchanges)
    pays four times; the push and pull calls are the Grid's own public API."""

    def __init__(self, grid: Grid, interval: float = 0.1) -> None:
        self._grid = grid
        self._interval = interval

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> list[Message]:
        pending = set(self._grid.push_messages(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while pending and (deadline is None or time.monotonic() < deadline):
            pulled = list(self._grid.pull_messages(pending))
            replies.extend(pulled)
            pending -= {m.metadata.reply_to_message_id for m in pulled}
            if pending:
                time.sleep(self._interval)
        return replies


class Orchestrator:
    """Drives a run over a Flower Grid (in-memory in a simulation, the SuperLink's otherwise)."""

    def __init__(self, grid: Grid, context: Context, spec: FeatureSpec, *, expected_nodes: int,
                 progress: Progress | None = None, wait_s: float = 120.0) -> None:
        self.grid: Any = PollingGrid(grid)
        self.context = context
        self.spec = spec
        self.expected = expected_nodes
        self.progress = progress or (lambda fraction, message: None)
        self.wait_s = wait_s
        self.nodes: list[_Node] = []

    # -- messaging ------------------------------------------------------------------------
    def _base_config(self, l2: float = DEFAULT_L2) -> ConfigRecord:
        return ConfigRecord({"spec": self.spec.to_json(), "l2": l2})

    def _ask(self, action: str, content: Callable[[int], RecordDict]) -> dict[int, Message]:
        """Send `query.<action>` to every node; every node must answer without an error."""
        node_ids = [n.node_id for n in self.nodes] or list(self.grid.get_node_ids())
        messages = [Message(content(node_id), dst_node_id=node_id, message_type=f"query.{action}")
                    for node_id in node_ids]
        replies = {m.metadata.src_node_id: m
                   for m in self.grid.send_and_receive(messages, timeout=MESSAGE_TIMEOUT_S)}
        missing = set(node_ids) - set(replies)
        if missing:
            raise FederatedRunError(f"{len(missing)} participant(s) did not answer {action}",
                                    code="FEDERATED_PARTICIPANT_MISSING")
        failed = [m for m in replies.values() if m.has_error()]
        if failed:
            # The reason stays in the log: it may quote a participant's internals.
            log.error("participant failed in %s: %s", action, failed[0].error.reason)
            raise FederatedRunError(f"a participant failed in {action}", code="FEDERATED_PARTICIPANT_FAILED")
        return replies

    def connect(self) -> list[_Node]:
        deadline = time.monotonic() + self.wait_s
        while len(list(self.grid.get_node_ids())) < self.expected:
            if time.monotonic() > deadline:
                raise FederatedRunError(f"only {len(list(self.grid.get_node_ids()))} of "
                                        f"{self.expected} participants connected",
                                        code="FEDERATED_PARTICIPANT_MISSING")
            time.sleep(0.2)
        config = self._base_config()
        replies = self._ask("hello", lambda _: RecordDict({"config": config}))
        for m in replies.values():
            node = m.content.config_records["node"]
            if "error" in node:
                raise FederatedRunError(str(node["message"]), code=str(node["error"]))
        self.nodes = sorted((_Node(node_id, str(m.content.config_records["node"]["label"]),
                                   int(m.content.metric_records["sizes"]["n_train"]),
                                   int(m.content.metric_records["sizes"]["n_test"]),
                                   int(m.content.metric_records["sizes"]["majority_correct"]))
                             for node_id, m in replies.items()), key=_label_order)
        return self.nodes

    # -- baselines ------------------------------------------------------------------------
    def local_only(self, l2: float = DEFAULT_L2) -> dict[str, Evaluation]:
        config = self._base_config(l2)
        replies = self._ask("local", lambda _: RecordDict({"config": config}))
        return {n.label: _stats(replies[n.node_id].content.metric_records["local"]) for n in self.nodes}

    def centralised(self, l2: float = DEFAULT_L2) -> tuple[list[np.ndarray], int]:
        """Newton's method on the pooled objective from the participants' summed statistics."""
        model = LogisticRegression(self.spec.n_features, l2=l2)
        config = self._base_config(l2)
        for iteration in range(1, NEWTON_MAX_ITER + 1):
            weights = ArrayRecord(model.get_weights())
            replies = self._ask("newton", lambda _, w=weights: RecordDict({"config": config, "model": w}))
            grad = np.zeros(self.spec.n_features + 1)
            hess = np.zeros((self.spec.n_features + 1,) * 2)
            count = 0
            for m in replies.values():
                g, h = _arrays(m.content.array_records["stats"])
                grad, hess = grad + g, hess + h
                count += int(m.content.metric_records["sums"]["count"])
            if model.newton_step(grad, hess, count) < NEWTON_TOL:
                return model.get_weights(), iteration
        return model.get_weights(), NEWTON_MAX_ITER

    def evaluate(self, models: dict[str, list[np.ndarray]]) -> dict[str, dict[str, Evaluation]]:
        """{model name: {participant label: evaluation on its test data}}."""
        config = self._base_config()
        records = {name: ArrayRecord(weights) for name, weights in models.items()}
        replies = self._ask("evaluate", lambda _: RecordDict({"config": config, **records}))
        return {name: {n.label: _stats(replies[n.node_id].content.metric_records["evaluation"], f"{name}.")
                       for n in self.nodes} for name in models}

    # -- federated training ---------------------------------------------------------------
    def federated(self, plan: TrainingPlan, *, on_round: Callable[[int, dict[str, Any]], None] | None = None
                  ) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
        """FedAvg for plan.rounds rounds; returns the final weights and per-round metrics."""
        from flwr.server import ServerConfig
        from flwr.server.client_manager import SimpleClientManager
        from flwr.server.compat.grid_client_proxy import GridClientProxy
        from flwr.server.compat.legacy_context import LegacyContext
        from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key

        n = len(self.nodes)
        strategy = self._strategy(plan, n)
        legacy = LegacyContext(context=self.context, config=ServerConfig(num_rounds=plan.rounds),
                               strategy=strategy, client_manager=SimpleClientManager())
        for node in self.nodes:
            legacy.client_manager.register(GridClientProxy(node.node_id, self.grid, self.grid.run.run_id))
        # SecAgg+ scales each update by weight/max_weight before quantising: max_weight must be
        # the largest weight actually reported, or precision is lost to unused range.
        workflow = self._fit_workflow(plan, 1 if plan.dp.enabled else max(n.n_train for n in self.nodes))

        weights = LogisticRegression(self.spec.n_features, l2=plan.l2).get_weights()
        history: list[dict[str, Any]] = []
        for server_round in range(1, plan.rounds + 1):
            legacy.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord(
                {Key.CURRENT_ROUND: server_round, Key.START_TIME: time.time()})
            before = compat.parameters_to_arrayrecord(ndarrays_to_parameters(weights), keep_input=True)
            legacy.state.array_records[MAIN_PARAMS_RECORD] = before
            started = time.perf_counter()
            workflow(self.grid, legacy)
            after = legacy.state.array_records[MAIN_PARAMS_RECORD]
            if after is before:  # the strategy refused to aggregate: some participant failed
                raise FederatedRunError(f"round {server_round}: aggregation failed (a participant "
                                        "failed or dropped out)", code="FEDERATED_PARTICIPANT_FAILED")
            weights = [np.asarray(a, dtype=np.float64)
                       for a in parameters_to_ndarrays(compat.arrayrecord_to_parameters(after, True))]
            if history:  # this round's participants scored the previous round's model first
                history[-1].update(_pooled([_stats(_round_metrics(legacy.history, server_round), "global_")]))
            entry: dict[str, Any] = {
                "round": server_round, "epsilon": plan.dp.epsilon_after(server_round),
                "epsilon_rdp": plan.dp.rdp_epsilon_after(server_round),
                "train_loss": _round_metrics(legacy.history, server_round).get("train_loss"),
                "seconds": round(time.perf_counter() - started, 3)}
            history.append(entry)
            if on_round is not None:
                on_round(server_round, history)
        return weights, history

    def _strategy(self, plan: TrainingPlan, n: int) -> Any:
        from flwr.server.strategy import (
            DifferentialPrivacyClientSideFixedClipping,
            DifferentialPrivacyServerSideFixedClipping,
            FedAvg,
        )

        spec_json = self.spec.to_json()
        dp = plan.dp

        def fit_config(server_round: int) -> dict[str, Any]:
            config: dict[str, Any] = {
                "spec": spec_json, "epochs": plan.local_epochs, "lr": plan.learning_rate,
                "batch_size": plan.batch_size, "l2": plan.l2, "seed": plan.seed,
                "round": server_round, "uniform": dp.enabled}
            if dp.mode is DPMode.CLIENT:
                config |= {"local_dp_clip": dp.clip_norm, "local_dp_noise": dp.noise_multiplier,
                           "local_dp_delta": dp.delta}
            return config

        # Everyone takes part in every round (no sampling, hence no amplification in the
        # accounting), and a failed participant fails the round rather than shrinking it.
        fedavg = FedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n,
                        min_evaluate_clients=0, min_available_clients=n, accept_failures=False,
                        on_fit_config_fn=fit_config, fit_metrics_aggregation_fn=_fit_metrics)
        if dp.mode is DPMode.SERVER:
            wrapper = (DifferentialPrivacyClientSideFixedClipping if plan.secure_aggregation
                       else DifferentialPrivacyServerSideFixedClipping)
            return wrapper(fedavg, noise_multiplier=dp.noise_multiplier, clipping_norm=dp.clip_norm,
                           num_sampled_clients=n)
        return fedavg

    @staticmethod
    def _fit_workflow(plan: TrainingPlan, max_examples: int) -> Callable[[Grid, Any], None]:
        from flwr.server.workflow import SecAggPlusWorkflow
        from flwr.server.workflow.default_workflows import default_fit_workflow

        if not plan.secure_aggregation:
            return default_fit_workflow
        # Every participant holds a share of every other's secrets (federations are small);
        # two thirds of the shares reconstruct a dropped participant's mask.
        return SecAggPlusWorkflow(num_shares=1.0, reconstruction_threshold=0.67,
                                  max_weight=float(max(max_examples, 1)),
                                  clipping_range=SECAGG_CLIPPING_RANGE, timeout=MESSAGE_TIMEOUT_S)


def secure_aggregation_summary(plan: TrainingPlan, n: int) -> dict[str, Any]:
    if not plan.secure_aggregation:
        return {"enabled": False}
    shares = n
    threshold = max(round(0.67 * shares), 2)
    return {"enabled": True, "protocol": "SecAgg+ (flwr SecAggPlusWorkflow + secaggplus_mod)",
            "num_shares": shares, "reconstruction_threshold": threshold,
            "quantisation": {"clipping_range": SECAGG_CLIPPING_RANGE, "levels": 2**22}}


def dp_summary(plan: TrainingPlan) -> dict[str, Any]:
    dp = plan.dp
    if not dp.enabled:
        return {"mode": DPMode.NONE.value}
    return {
        "mode": dp.mode.value, "clip_norm": dp.clip_norm, "noise_multiplier": dp.noise_multiplier,
        "delta": dp.delta, "epsilon": dp.epsilon_after(plan.rounds),
        "epsilon_rdp": dp.rdp_epsilon_after(plan.rounds),
        "effective_noise_multiplier": dp.effective_noise_multiplier,
        "unit": "participant (client-level DP)",
        "neighbouring": ("add or remove one participant" if dp.mode is DPMode.SERVER
                         else "replace one participant's update (sensitivity 2C)"),
        "accountant": "exact: composition of Gaussian mechanisms as mu-GDP (Dong, Roth & Su 2022), "
                      "(eps, delta) by Balle & Wang 2018; epsilon_rdp: Renyi DP (Mironov 2017)",
        "covers": "the model updates of the federated rounds, not evaluation metrics or baselines",
    }


def orchestrate(grid: Grid, context: Context, spec: FeatureSpec, plans: Sequence[TrainingPlan], *,
                expected_nodes: int, baselines: bool = True, progress: Progress | None = None,
                wait_s: float = 120.0) -> dict[str, Any]:
    """A whole run: baselines once, then each plan's federated training, then the final
    comparison. Several plans share one set of baselines (the bench compares DP settings)."""
    report = progress or (lambda fraction, message: None)
    orchestrator = Orchestrator(grid, context, spec, expected_nodes=expected_nodes,
                                progress=progress, wait_s=wait_s)
    started = time.perf_counter()
    nodes = orchestrator.connect()
    report(0.05, f"{len(nodes)} participants connected")
    total_rounds = sum(p.rounds for p in plans)
    done_rounds = 0
    local: dict[str, Evaluation] = {}
    if baselines:
        local = orchestrator.local_only(plans[0].l2)
        report(0.1, "local-only models fitted")
    runs = []
    for plan in plans:
        def on_round(server_round: int, history: list[dict[str, Any]], plan: TrainingPlan = plan) -> None:
            nonlocal done_rounds
            done_rounds += 1
            entry = history[-1]
            eps = f", epsilon {entry['epsilon']:.3g}" if entry["epsilon"] is not None else ""
            previous = (f", round {server_round - 1} model accuracy {history[-2]['accuracy']:.3f}"
                        if len(history) > 1 else "")
            report(0.1 + 0.75 * done_rounds / total_rounds,
                   f"round {server_round} of {plan.rounds} done{eps}{previous}")

        weights, history = orchestrator.federated(plan, on_round=on_round)
        runs.append((plan, weights, history))
    centralised: list[np.ndarray] | None = None
    newton_iterations = 0
    if baselines:
        centralised, newton_iterations = orchestrator.centralised(plans[0].l2)
        report(0.9, "centralised model fitted")
    models = {f"federated{k}": w for k, (_, w, _) in enumerate(runs)}
    if centralised is not None:
        models["centralised"] = centralised
    final = orchestrator.evaluate(models)
    labels = [n.label for n in nodes]

    def per_participant(k: int) -> list[dict[str, Any]]:
        rows = []
        for node in nodes:
            row: dict[str, Any] = {"label": node.label, "n_train": node.n_train, "n_test": node.n_test,
                                   "majority_class_accuracy": node.majority_correct / node.n_test,
                                   "federated_accuracy": final[f"federated{k}"][node.label].accuracy}
            if baselines:
                row["local_accuracy"] = local[node.label].accuracy
                row["centralised_accuracy"] = final["centralised"][node.label].accuracy
            rows.append(row)
        return rows

    results = []
    for k, (plan, weights, history) in enumerate(runs):
        history[-1].update(_pooled(list(final[f"federated{k}"].values())))  # the last round's model
        result: dict[str, Any] = {
            "plan": {"rounds": plan.rounds, "seed": plan.seed, "local_epochs": plan.local_epochs,
                     "learning_rate": plan.learning_rate, "batch_size": plan.batch_size, "l2": plan.l2},
            "federated": {**_pooled(list(final[f"federated{k}"].values())), "rounds": history},
            "dp": dp_summary(plan),
            "secure_aggregation": secure_aggregation_summary(plan, len(nodes)),
            "participants": per_participant(k),
            "majority_class": {key: value for key, value in _pooled(
                [Evaluation(n.majority_correct, n.n_test, 0.0) for n in nodes]).items() if key != "loss"},
            "model": {"kind": "logistic_regression", "features": list(FEATURES),
                      "weights": [float(v) for v in weights[0]], "bias": float(weights[1][0])},
        }
        if baselines:
            mean_local = float(np.mean([local[label].accuracy for label in labels]))
            result["local_only"] = {**_pooled([local[label] for label in labels]),
                                    "mean_accuracy": mean_local}
            assert centralised is not None
            result["centralised"] = {**_pooled(list(final["centralised"].values())),
                                     "newton_iterations": newton_iterations,
                                     "weights": [float(v) for v in centralised[0]],
                                     "bias": float(centralised[1][0])}
        results.append(result)
    report(1.0, "done")
    return {"spec": spec.to_dict(), "participants": len(nodes), "runs": results,
            "seconds": round(time.perf_counter() - started, 3)}
