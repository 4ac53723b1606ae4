"""Federated learning: DP maths, the model, participants' data, a Flower simulation end to end,
the job through GraphQL on the live server, bad input, tenant isolation, and real SuperLink and
SuperNode processes on loopback."""

from __future__ import annotations

import functools
import itertools
import json
import math
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlmodel import func, select

from gateway.federated import data as fl_data
from gateway.federated import dp
from gateway.federated.data import FeatureSpec, Target, assign, build_participant_data, tenant_hash
from gateway.federated.model import LogisticRegression
from gateway.jobs.models import Job
from tests.support import error_codes, free_port, onboard, user_key, wait_for

SMALL = FeatureSpec(target=Target.VOLATILITY, window_days=240)  # a few hundred samples each

FEDERATION = ("id name createdByYou memberCount featureSpec { target windowDays features } "
              "membership { optedIn }")
CREATE = f"""mutation($name: String!, $key: String, $target: FederatedTarget! = VOLATILITY,
                      $days: Int! = 240) {{
  createFederation(input: {{name: $name, idempotencyKey: $key, target: $target, windowDays: $days}})
  {{ {FEDERATION} }} }}"""
JOIN = f"mutation($id: ID!) {{ joinFederation(id: $id) {{ {FEDERATION} }} }}"
LEAVE = "mutation($id: ID!) { leaveFederation(id: $id) { federationId optedIn leftAt } }"
GET = f"query($id: ID!) {{ federation(id: $id) {{ {FEDERATION} }} }}"
LIST = "{ federations(first: 50) { edges { node { id } } } }"
TRAIN = """mutation($id: ID!, $rounds: Int! = 2, $dp: DifferentialPrivacyInput, $seed: Int! = 0,
                    $secure: Boolean! = true, $baselines: Boolean! = true) {
  trainFederatedModel(federation: $id, rounds: $rounds, dp: $dp, seed: $seed,
                      secureAggregation: $secure, baselines: $baselines) { id kind status } }"""


# -- differential privacy maths ---------------------------------------------------------------

def test_clipping_bounds_every_update_and_keeps_small_ones():
    from flwr.supercore.differential_privacy import compute_clip_model_update

    rng = np.random.default_rng(1)
    for scale in (0.01, 0.5, 3.0, 100.0):
        update = [rng.normal(0, scale, 7), rng.normal(0, scale, (2, 3))]
        norm = dp.l2_norm(update)
        clipped, measured = dp.clip_update(update, 1.0)
        assert measured == pytest.approx(norm)
        assert dp.l2_norm(clipped) <= 1.0 + 1e-12
        if norm <= 1.0:
            assert all(np.array_equal(a, b) for a, b in zip(clipped, update, strict=True))
        else:  # scaled, not distorted: the same direction
            assert np.allclose(clipped[0] * norm, update[0]) and dp.l2_norm(clipped) == pytest.approx(1.0)
        # Flower's own clipping (used by the runs) obeys the same bound on new - old.
        old = [rng.normal(size=7), rng.normal(size=(2, 3))]
        new = [o + u for o, u in zip(old, update, strict=True)]
        compute_clip_model_update(new, old, 1.0)
        assert dp.l2_norm([n - o for n, o in zip(new, old, strict=True)]) <= 1.0 + 1e-9


def test_noise_has_the_calibrated_scale():
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.supercore.differential_privacy import (
        add_gaussian_noise_inplace,
        add_localdp_gaussian_noise_to_params,
        compute_stdv,
    )

    z, clip, n, delta = 1.3, 0.8, 4, 1e-5
    # Central: Flower's server-side noise on the average of n clipped updates is z*C/n.
    assert compute_stdv(z, clip, n) == pytest.approx(dp.central_noise_std(z, clip, n)) == z * clip / n
    arrays = [np.zeros(200_000)]
    add_gaussian_noise_inplace(arrays, compute_stdv(z, clip, n))
    assert np.std(arrays[0]) == pytest.approx(z * clip / n, rel=0.01)
    assert abs(np.mean(arrays[0])) < 5 * z * clip / n / math.sqrt(200_000)
    # Local: LocalDpMod calibrated as flower._local_dp does gives exactly z*C.
    eps_prime = math.sqrt(2 * math.log(1.25 / delta)) / z
    noised = parameters_to_ndarrays(add_localdp_gaussian_noise_to_params(
        ndarrays_to_parameters([np.zeros(200_000)]), clip, eps_prime, delta))[0]
    assert np.std(noised) == pytest.approx(dp.local_noise_std(z, clip), rel=0.01)
    ours = dp.gaussian_noise([np.zeros(200_000)], 0.5, np.random.default_rng(2))[0]
    assert np.std(ours) == pytest.approx(0.5, rel=0.01)


def test_epsilon_against_known_values():
    delta = 1e-5
    # RDP with the classical conversion has a closed form: R/(2z^2) + sqrt(2 R log(1/delta))/z.
    for rounds, z in ((1, 1.0), (10, 2.0), (50, 4.0)):
        closed = rounds / (2 * z * z) + math.sqrt(2 * rounds * math.log(1 / delta)) / z
        assert dp.rdp_epsilon(rounds, z, delta, improved=False) == pytest.approx(closed, rel=1e-6)
    assert dp.rdp_epsilon(1, 1.0, delta, improved=False) == pytest.approx(5.2985, abs=1e-4)
    # Balle & Wang (2018): the analytic Gaussian mechanism needs sigma ~ 3.73 for eps = 1 at
    # delta = 1e-5, where the classical bound asks for sqrt(2 ln(1.25/delta)) = 4.84.
    assert dp.epsilon(1, 3.73, delta) == pytest.approx(1.0, abs=2e-3)
    assert dp.epsilon(1, math.sqrt(2 * math.log(1.25 / delta)), delta) < 1.0
    # The exact value solves delta(eps) = delta, and every bound is looser.
    for rounds, z in ((1, 1.0), (3, 0.7), (20, 1.5)):
        exact = dp.epsilon(rounds, z, delta)
        assert dp.gdp_delta(exact, math.sqrt(rounds) / z) == pytest.approx(delta, rel=1e-6)
        assert exact < dp.rdp_epsilon(rounds, z, delta) < dp.rdp_epsilon(rounds, z, delta, improved=False)
    # R rounds at z compose like one round at z / sqrt(R) (full participation).
    assert dp.epsilon(16, 2.0, delta) == pytest.approx(dp.epsilon(1, 0.5, delta), rel=1e-9)


def test_epsilon_grows_with_rounds_and_falls_with_noise():
    eps = [dp.epsilon(r, 1.1, 1e-5) for r in range(0, 31)]
    assert eps[0] == 0 and all(a < b for a, b in itertools.pairwise(eps))
    rdp = [dp.rdp_epsilon(r, 1.1, 1e-5) for r in range(1, 31)]
    assert all(a < b for a, b in itertools.pairwise(rdp))
    by_noise = [dp.epsilon(5, z, 1e-5) for z in (0.5, 1, 2, 4, 8)]
    assert all(a > b for a, b in itertools.pairwise(by_noise))
    assert dp.epsilon(5, 1.0, 1e-8) > dp.epsilon(5, 1.0, 1e-5)  # a smaller delta costs epsilon
    local = dp.DPConfig(dp.DPMode.CLIENT, 1.0, 2.0, 1e-5)
    assert local.epsilon_after(3) == pytest.approx(dp.epsilon(3, 1.0, 1e-5))  # sensitivity 2C


def test_dp_parameters_are_checked():
    ok = dp.DPConfig.parse({"mode": "server", "clip_norm": 0.5, "noise_multiplier": 1.0, "delta": 1e-6})
    assert ok.mode is dp.DPMode.SERVER and ok.enabled
    assert dp.DPConfig.parse(None) == dp.DPConfig.parse({"mode": "NONE"}) == dp.DPConfig()
    for bad in ({"mode": "MAYBE"}, {"mode": "SERVER", "noise_multiplier": 0},
                {"mode": "SERVER", "noise_multiplier": 1, "clip_norm": -1},
                {"mode": "CLIENT", "noise_multiplier": 1, "delta": 0.5},
                {"mode": "CLIENT", "noise_multiplier": float("nan")},
                {"mode": "NONE", "noise_multiplier": 1.0}, {"mode": "SERVER", "sigma": 1}, "SERVER"):
        with pytest.raises(dp.DPInvalid) as refused:
            dp.DPConfig.parse(bad)
        assert refused.value.code == "DP_INVALID"


# -- the model and the data -------------------------------------------------------------------

def test_logistic_regression_learns_and_pooled_newton_is_centralised():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(600, 4))
    truth = np.array([2.0, -1.0, 0.5, 0.0])
    y = (rng.random(600) < 1 / (1 + np.exp(-(x @ truth + 0.3)))).astype(float)
    newton = LogisticRegression(4)
    assert newton.fit_newton(x, y) < 10
    grad, _, _ = newton.grad_hess(x, y)
    penalty = np.append(newton.l2 * newton.w, 0.0)
    assert np.linalg.norm(grad / len(y) + penalty) < 1e-8  # the optimum
    assert newton.evaluate(x, y).accuracy > 0.75
    assert np.allclose(newton.w, truth, atol=0.4)
    sgd = LogisticRegression(4)
    sgd.fit(x, y, epochs=30, lr=0.1, batch_size=32, rng=np.random.default_rng(0))
    assert sgd.objective(x, y) == pytest.approx(newton.objective(x, y), abs=5e-3)
    # Newton from per-participant sums is Newton on the pooled data.
    pooled = LogisticRegression(4)
    for _ in range(10):
        parts = [pooled.grad_hess(x[a:b], y[a:b]) for a, b in ((0, 100), (100, 350), (350, 600))]
        pooled.newton_step(sum(p[0] for p in parts), sum(p[1] for p in parts), 600)
    assert np.allclose(pooled.theta, newton.theta, atol=1e-9)
    copy = LogisticRegression(4)
    copy.set_weights(newton.get_weights())
    assert np.array_equal(copy.theta, newton.theta)


def test_participant_data_is_deterministic_non_iid_and_split_by_time():
    a, b = build_participant_data(SMALL, "bank-a"), build_participant_data(SMALL, "bank-b")
    fl_data._build.cache_clear()
    again = build_participant_data(SMALL, "bank-a")
    assert np.array_equal(a.x_train, again.x_train) and np.array_equal(a.y_test, again.y_test)
    assert a.assignment != b.assignment  # different instruments and window
    for d in (a, b):
        assert 200 < len(d.y_train) < 600 and 60 < len(d.y_test) < 300
        assert d.x_train.shape[1] == len(fl_data.FEATURES) and np.isfinite(d.x_train).all()
        assert set(np.unique(d.y_train)) <= {0.0, 1.0}
        assert d.assignment.end - d.assignment.start == timedelta(days=240)
    assert assign(SMALL, "bank-a") == a.assignment
    # Direction is a different label on the same bars.
    direction = build_participant_data(FeatureSpec(window_days=240), "bank-a")
    assert direction.x_train.shape == a.x_train.shape and not np.array_equal(direction.y_train, a.y_train)


def test_supernode_cache_gives_the_same_data(tmp_path):
    first = build_participant_data(SMALL, "bank-c", cache_dir=str(tmp_path))
    assert len(list(tmp_path.glob("*.npz"))) == 1
    cached = build_participant_data(SMALL, "bank-c", cache_dir=str(tmp_path))
    assert np.array_equal(first.x_train, cached.x_train) and cached.assignment == first.assignment


# -- a Flower simulation end to end ------------------------------------------------------------

def _not_here(*args, **kwargs):
    raise AssertionError("the server side read a participant's data")


def test_simulated_federation_end_to_end(tmp_path, monkeypatch, flower_deployment):
    """Three tenants, three rounds, run three ways in one simulation (Ray starts once): plain
    FedAvg, the same with SecAgg+, and central DP with SecAgg+. (`flower_deployment` only
    starts the real processes' run early, to overlap with this one.)"""
    from gateway.federated.flower import TrainingPlan
    from gateway.federated.runner import FederationPlan, simulate

    # The driver process is the server side (the job); data may be read only in client
    # functions. (The data module's internal is patched, not build_participant_data itself:
    # the ClientApp is pickled to the Ray workers and must take the real builder along.)
    monkeypatch.setattr(fl_data, "_build", _not_here)
    tenants = ("bank-a", "bank-b", "bank-c")
    central = dp.DPConfig(dp.DPMode.SERVER, clip_norm=1.0, noise_multiplier=0.8, delta=1e-5)
    plans = [TrainingPlan(rounds=3, seed=1, secure_aggregation=False),
             TrainingPlan(rounds=3, seed=1, secure_aggregation=True),
             TrainingPlan(rounds=3, seed=1, secure_aggregation=True, dp=central)]
    progress: list[tuple[float, str]] = []
    report = simulate(FederationPlan(SMALL, tenants, "e2e"), plans, audit_dir=str(tmp_path),
                      progress=lambda f, m: progress.append((f, m)))
    monkeypatch.undo()
    plain, secure, private = report["runs"]

    assert report["participants"] == 3 and report["engine"]["ray_cpus"] == 2
    for run in report["runs"]:
        rows = run["participants"]
        assert [r["label"] for r in rows] == ["0", "1", "2"]
        assert all(200 < r["n_train"] < 600 for r in rows)
        history = run["federated"]["rounds"]
        assert [h["round"] for h in history] == [1, 2, 3]
        assert all(0.3 < h["accuracy"] < 0.8 for h in history)
        assert history[-1]["accuracy"] == run["federated"]["accuracy"]
        for key in ("federated", "local_only", "centralised"):
            assert 0.4 < run[key]["accuracy"] < 0.8 and run[key]["stderr"] < 0.03
    print("\nfederated / local-only / centralised accuracy:",
          {run["dp"]["mode"] + ("+SecAgg" if run["secure_aggregation"]["enabled"] else ""):
           (round(run["federated"]["accuracy"], 3), round(run["local_only"]["accuracy"], 3),
            round(run["centralised"]["accuracy"], 3)) for run in report["runs"]})

    # No DP: epsilon is not reported; SecAgg+ aggregates exactly (up to its quantisation).
    assert all(h["epsilon"] is None for h in plain["federated"]["rounds"])
    assert np.allclose(plain["model"]["weights"], secure["model"]["weights"], atol=1e-3)
    assert plain["federated"]["accuracy"] == pytest.approx(secure["federated"]["accuracy"], abs=0.01)
    # Federation helps here: it beats what the participants reach alone, pooled, and comes
    # within noise of the centralised model (the usual upper bound).
    assert plain["federated"]["accuracy"] > plain["local_only"]["accuracy"]
    gap = abs(plain["federated"]["accuracy"] - plain["centralised"]["accuracy"])
    assert gap < 3 * plain["federated"]["stderr"]
    # Central DP: epsilon per round from the accountant, growing.
    eps = [h["epsilon"] for h in private["federated"]["rounds"]]
    assert eps == pytest.approx([dp.epsilon(r, 0.8, 1e-5) for r in (1, 2, 3)])
    assert eps[0] < eps[1] < eps[2] and private["dp"]["epsilon"] == pytest.approx(eps[-1])
    assert all(h["epsilon_rdp"] > h["epsilon"] for h in private["federated"]["rounds"])

    # FedAvg, replayed here from the same data and seeds: the plain run is exactly it, and
    # SecAgg+ reproduces it up to its quantisation.
    fl_data._build.cache_clear()
    parts = [fl_data._build(SMALL, t) for t in tenants]
    weights = LogisticRegression(SMALL.n_features).get_weights()
    for server_round in (1, 2, 3):
        updates = []
        for tenant_key, part in zip(tenants, parts, strict=True):
            local = LogisticRegression(SMALL.n_features)
            local.set_weights(weights)
            seeds = np.random.SeedSequence(1, spawn_key=(server_round, tenant_hash(tenant_key)))
            rng = np.random.default_rng(seeds)
            local.fit(part.x_train, part.y_train, epochs=5, lr=0.1, batch_size=32, rng=rng)
            updates.append((len(part.y_train), local.get_weights()))
        total = sum(n for n, _ in updates)
        weights = [sum(n * w[i] for n, w in updates) / total for i in (0, 1)]
    assert np.allclose(plain["model"]["weights"], weights[0], atol=1e-9)
    assert plain["model"]["bias"] == pytest.approx(float(weights[1][0]), abs=1e-9)
    assert np.allclose(secure["model"]["weights"], weights[0], atol=1e-3)

    # The centralised model is the pooled-data optimum: computed here from the same data.
    pooled = LogisticRegression(SMALL.n_features)
    pooled.fit_newton(np.concatenate([p.x_train for p in parts]),
                      np.concatenate([p.y_train for p in parts]))
    assert np.allclose(plain["centralised"]["weights"], pooled.w, atol=1e-6)

    # Every data access happened in a client function, in a Ray worker, for that node's tenant.
    accesses = [json.loads(line) for line in (tmp_path / "data-access.jsonl").read_text().splitlines()]
    assert {(a["node"], a["tenant"]) for a in accesses} == {("0", "bank-a"), ("1", "bank-b"), ("2", "bank-c")}
    assert os.getpid() not in {a["pid"] for a in accesses}
    assert [f for f, _ in progress] == sorted(f for f, _ in progress) and progress[-1][0] == 1.0


# -- GraphQL, the job, bad input, isolation ------------------------------------------------------

def _federation(gql, owner, *members, name="desk", **variables):
    created = gql.data(CREATE, {"name": name, **variables}, key=owner.key)["createFederation"]
    for member in members:
        gql.data(JOIN, {"id": created["id"]}, key=member.key)
    return created


def _jobs(runtime, tenant):
    with runtime.db.tenant_session(tenant.id) as session:
        return session.exec(select(func.count()).select_from(Job)).one()


def test_train_federated_model_job_end_to_end(gql, runtime, tenant, other_tenant, tmp_path, monkeypatch):
    from gateway.federated import runner

    audited = functools.partial(runner.train_federated, audit_dir=str(tmp_path))
    monkeypatch.setattr(runner, "train_federated", audited)
    monkeypatch.setattr(fl_data, "_build", _not_here)  # the job's process never reads data
    outsider = onboard(runtime)  # a member of another federation only
    _federation(gql, outsider, name="theirs")
    created = _federation(gql, tenant, other_tenant)
    assert created["createdByYou"] and created["featureSpec"]["target"] == "VOLATILITY"
    assert gql.data(GET, {"id": created["id"]}, key=other_tenant.key)["federation"]["memberCount"] == 2

    dp_in = {"mode": "CLIENT", "clipNorm": 1.0, "noiseMultiplier": 1.0, "delta": 1e-5}
    job = gql.data(TRAIN, {"id": created["id"], "dp": dp_in, "seed": 3},
                   key=tenant.key)["trainFederatedModel"]
    assert job["kind"] == "federated.train" and job["status"] == "QUEUED"
    done = wait_for(lambda: (j := runtime.jobs.get(tenant.id, job["id"])).finished_at and j, timeout=150)
    assert done.status == "SUCCEEDED", (done.error_code, done.error_message)
    result = done.result
    assert result["federation"] == {"id": created["id"], "name": "desk"} and result["participant_count"] == 2
    rows = result["participants"]
    assert [r["participant"] for r in rows] == [1, 2] and [r["you"] for r in rows] == [True, False]
    assert all(0 <= r[k] <= 1 for r in rows for k in ("federated_accuracy", "local_accuracy",
                                                      "centralised_accuracy"))
    assert result["dp"]["mode"] == "CLIENT" and result["secure_aggregation"]["enabled"]
    assert len(result["model"]["weights"]) == len(fl_data.FEATURES) and "weights" not in result["centralised"]
    eps = [h["epsilon"] for h in result["federated"]["rounds"]]
    assert eps == pytest.approx([dp.epsilon(r, 0.5, 1e-5) for r in (1, 2)])  # local: z/2
    text = json.dumps(result)
    for someone in (tenant, other_tenant, outsider):  # no tenant is named in the result
        assert someone.slug not in text and someone.id not in text
    # Only the two members' data were read, each in its own client function, none by the job.
    accesses = [json.loads(line) for line in (tmp_path / "data-access.jsonl").read_text().splitlines()]
    assert {(a["node"], a["tenant"]) for a in accesses} == {("0", tenant.slug), ("1", other_tenant.slug)}
    assert os.getpid() not in {a["pid"] for a in accesses}
    # The participant's view of the job, by GraphQL.
    seen = gql.data("query($id: ID!) { job(id: $id) { status progress result } }", {"id": job["id"]},
                    key=tenant.key)["job"]
    assert seen["status"] == "SUCCEEDED" and seen["progress"] == 1
    assert "federated.train" in gql.data("{ jobKinds }", key=tenant.key)["jobKinds"]


def test_bad_input_has_codes_and_queues_nothing(gql, runtime, tenant, other_tenant):
    alone = _federation(gql, tenant, name="solo")
    pair = _federation(gql, tenant, other_tenant, name="pair")
    before = _jobs(runtime, tenant)
    cases = [
        ({"id": alone["id"]}, "FEDERATION_TOO_SMALL"),
        ({"id": "00000000-0000-0000-0000-000000000000"}, "FEDERATION_NOT_FOUND"),
        ({"id": pair["id"], "rounds": 0}, "ROUNDS_INVALID"),
        ({"id": pair["id"], "rounds": 51}, "ROUNDS_INVALID"),
        ({"id": pair["id"], "seed": -1}, "SEED_INVALID"),
        ({"id": pair["id"], "dp": {"mode": "SERVER", "noiseMultiplier": 0.0}}, "DP_INVALID"),
        ({"id": pair["id"], "dp": {"mode": "SERVER", "noiseMultiplier": 1.0, "clipNorm": -1.0}},
         "DP_INVALID"),
        ({"id": pair["id"], "dp": {"mode": "CLIENT", "noiseMultiplier": 1.0, "delta": 0.5}}, "DP_INVALID"),
        ({"id": pair["id"], "dp": {"mode": "NONE", "noiseMultiplier": 1.0}}, "DP_INVALID"),
    ]
    for variables, code in cases:
        assert error_codes(gql(TRAIN, variables, key=tenant.key)) == [code], variables
    assert _jobs(runtime, tenant) == before
    assert error_codes(gql(CREATE, {"name": " "}, key=tenant.key)) == ["FEDERATION_NAME_INVALID"]
    assert error_codes(gql(CREATE, {"name": "x", "days": 10}, key=tenant.key)) == ["FEATURE_SPEC_INVALID"]
    # A member that left makes the federation too small again, and it is no longer theirs.
    gql.data(LEAVE, {"id": pair["id"]}, key=other_tenant.key)
    assert error_codes(gql(TRAIN, {"id": pair["id"]}, key=tenant.key)) == ["FEDERATION_TOO_SMALL"]


def test_federations_are_visible_to_members_only(gql, runtime, tenant, other_tenant):
    mine = _federation(gql, tenant, name="private desk", key="fed-1")
    theirs_view = gql(GET, {"id": mine["id"]}, key=other_tenant.key)
    assert error_codes(theirs_view) == ["FEDERATION_NOT_FOUND"]
    listed = gql.data(LIST, key=other_tenant.key)["federations"]["edges"]
    assert mine["id"] not in {e["node"]["id"] for e in listed}
    assert error_codes(gql(LEAVE, {"id": mine["id"]}, key=other_tenant.key)) == ["FEDERATION_NOT_FOUND"]
    # Idempotency keys are per tenant; a key reused for another request is refused.
    again = gql.data(CREATE, {"name": "private desk", "key": "fed-1"}, key=tenant.key)["createFederation"]
    assert again["id"] == mine["id"]
    reused = gql(CREATE, {"name": "other", "key": "fed-1"}, key=tenant.key)
    assert error_codes(reused) == ["IDEMPOTENCY_KEY_REUSED"]
    own = gql.data(CREATE, {"name": "b desk", "key": "fed-1"}, key=other_tenant.key)["createFederation"]
    assert own["id"] != mine["id"]
    # The id is the invitation: joining opts in, leaving opts out, and visibility follows.
    joined = gql.data(JOIN, {"id": mine["id"]}, key=other_tenant.key)["joinFederation"]
    assert joined["memberCount"] == 2 and not joined["createdByYou"] and joined["membership"]["optedIn"]
    listed = gql.data(LIST, key=other_tenant.key)["federations"]["edges"]
    assert mine["id"] in {e["node"]["id"] for e in listed}
    left = gql.data(LEAVE, {"id": mine["id"]}, key=other_tenant.key)["leaveFederation"]
    assert left["optedIn"] is False and left["leftAt"]
    assert error_codes(gql(GET, {"id": mine["id"]}, key=other_tenant.key)) == ["FEDERATION_NOT_FOUND"]
    assert gql.data(GET, {"id": mine["id"]}, key=tenant.key)["federation"]["memberCount"] == 1
    unknown = gql(JOIN, {"id": "no-such-federation"}, key=other_tenant.key)
    assert error_codes(unknown) == ["FEDERATION_NOT_FOUND"]


def test_training_another_tenants_federation_is_not_found(gql, runtime, tenant, other_tenant):
    third = onboard(runtime)
    theirs = _federation(gql, other_tenant, third, name="not yours")
    before = _jobs(runtime, tenant)
    assert error_codes(gql(TRAIN, {"id": theirs["id"]}, key=tenant.key)) == ["FEDERATION_NOT_FOUND"]
    assert _jobs(runtime, tenant) == before


def test_roles_read_and_write_federations(gql, runtime, tenant):
    _, viewer = user_key(runtime, tenant, "viewer")
    _, trader = user_key(runtime, tenant, "trader")
    _, compliance = user_key(runtime, tenant, "compliance_officer")
    created = gql.data(CREATE, {"name": "by a trader"}, key=trader)["createFederation"]
    for key in (viewer, compliance):
        assert gql.data(GET, {"id": created["id"]}, key=key)["federation"]["name"] == "by a trader"
        assert error_codes(gql(CREATE, {"name": "nope"}, key=key)) == ["FORBIDDEN"]
        assert error_codes(gql(TRAIN, {"id": created["id"]}, key=key)) == ["FORBIDDEN"]


# -- real SuperLink and SuperNode processes --------------------------------------------------

def _flower_process(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`alphintra fl …` in its own session (so the Flower processes it starts end with it)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("ALPHINTRA_")} | env
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "gateway", "fl", *args], env=full, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _stop(process: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        if process.poll() is not None:
            break
        try:
            os.killpg(process.pid, sig)  # the session this test started, by its id
            process.wait(wait)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            continue


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Deployment:
    run: subprocess.Popen[bytes]
    report: Path
    output: Path
    cache: Path


@pytest.fixture(scope="module")
def flower_deployment(tmp_path_factory):
    """Flower's SuperLink and one SuperNode per tenant as real processes on loopback, and a run
    started on them with `flwr run` (through `alphintra fl run`): two rounds, local DP.

    Module-scoped and also requested by the simulation test, so this run, which spends most of
    its time in Flower's fixed 3-second polls, overlaps the simulations instead of adding to
    the file's time. Every process is ended at module teardown, by the sessions started here."""
    tmp = tmp_path_factory.mktemp("flower")
    env = {"FLWR_HOME": str(tmp / "flwr-home"), "ALPHINTRA_LOG_LEVEL": "WARNING"}
    link_port = free_port()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        processes.append(_flower_process(["superlink", "--port", str(link_port)], tmp / "link.log", env))
        wait_for(lambda: _listening(link_port) or processes[0].poll() is not None, timeout=60, interval=0.2)
        assert processes[0].poll() is None, (tmp / "link.log").read_text()[-2000:]
        for slug in ("bank-a", "bank-b"):
            processes.append(_flower_process(
                ["supernode", "--tenant", slug, "--superlink", f"127.0.0.1:{link_port}",
                 "--port", str(free_port()), "--cache-dir", str(tmp / "cache" / slug)],
                tmp / f"{slug}.log", env))
        report = tmp / "report.json"
        processes.append(_flower_process(
            ["run", "--superlink", f"127.0.0.1:{link_port}", "--participants", "2", "--rounds", "2",
             "--no-baselines", "--no-secure-aggregation", "--dp-mode", "CLIENT", "--clip-norm", "1.0",
             "--noise-multiplier", "0.5", "--target", "VOLATILITY", "--window-days", "240",
             "--result", str(report), "--timeout", "170"], tmp / "run.log", env))
        yield Deployment(processes[-1], report, tmp / "run.log", tmp / "cache")
    finally:
        for process in reversed(processes):
            _stop(process)


@pytest.mark.slow
def test_real_superlink_and_two_supernodes(flower_deployment):
    try:
        code = flower_deployment.run.wait(timeout=180)
    except subprocess.TimeoutExpired:
        pytest.fail("the run on the SuperLink did not finish in 180 s")
    assert code == 0, flower_deployment.output.read_text()[-3000:]
    report = json.loads(flower_deployment.report.read_text())
    assert report["participants"] == 2
    (only,) = report["runs"]
    assert sorted(r["label"] for r in only["participants"]) == ["bank-a", "bank-b"]  # from node config
    assert [h["round"] for h in only["federated"]["rounds"]] == [1, 2]
    assert 0.3 < only["federated"]["accuracy"] < 0.8
    assert only["dp"]["epsilon"] == pytest.approx(dp.epsilon(2, 0.25, 1e-5))
    # Each SuperNode cached only its own tenant's features, on its own side.
    for slug in ("bank-a", "bank-b"):
        assert len(list((flower_deployment.cache / slug).glob("*.npz"))) == 1
