"""The `federated.train` job kind: a Flower simulation of one federation's training.

Checks happen twice, because a job kind's `validate` sees only the parameters, not who asks:
- `validate` (when the job is requested, before anything is queued): ROUNDS_INVALID,
  DP_INVALID, SEED_INVALID, JOB_PARAMS_INVALID, and FEDERATION_NOT_FOUND for a missing id;
- `FederationService.check_trainable`, called by the resolver before it starts the job (so bad
  input never reaches a queue): FEDERATION_NOT_FOUND when the federation is unknown or the
  caller's tenant is not an opted-in member, FEDERATION_TOO_SMALL with fewer than two members;
- `run` reads the members again when the job runs (members may leave in between) and fails the
  job with those codes.

The result names no other tenant: participants are numbered in joining order and the caller's
own row says `you: true`. It holds the federated model's weights (the federation's product)
but not the centralised model's, which is fitted on everyone's data without DP.
"""

from __future__ import annotations

from typing import Any

from gateway.errors import InvalidInput
from gateway.federated.dp import DPConfig
from gateway.federated.errors import FederationNotFound, RoundsInvalid, SeedInvalid
from gateway.jobs.kinds import JobKind, Params
from gateway.jobs.runner import JobContext, JobFailed

KIND = "federated.train"
MAX_ROUNDS = 50
DEFAULT_ROUNDS = 5
PARAMS = {"federation_id", "rounds", "dp", "seed", "secure_aggregation", "baselines"}


def validate(params: Params) -> Params:
    unknown = set(params) - PARAMS
    if unknown:
        raise InvalidInput(f"unknown federated.train parameters: {sorted(unknown)}",
                           code="JOB_PARAMS_INVALID")
    federation_id = params.get("federation_id")
    if not isinstance(federation_id, str) or not 1 <= len(federation_id) <= 36:
        raise FederationNotFound("name a federation by its id")
    rounds = params.get("rounds", DEFAULT_ROUNDS)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or not 1 <= rounds <= MAX_ROUNDS:
        raise RoundsInvalid(f"rounds must be an integer from 1 to {MAX_ROUNDS}")
    dp = DPConfig.parse(params.get("dp"))
    seed = params.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
        raise SeedInvalid("seed must be an integer from 0 to 2^31 - 1")
    flags = {}
    for flag in ("secure_aggregation", "baselines"):
        value = params.get(flag, True)
        if not isinstance(value, bool):
            raise InvalidInput(f"{flag} must be true or false", code="JOB_PARAMS_INVALID")
        flags[flag] = value
    return {"federation_id": federation_id, "rounds": rounds, "dp": dp.to_params(), "seed": seed, **flags}


def run(ctx: JobContext, params: Params) -> dict[str, Any]:
    from gateway.federated.data import FeatureSpec
    from gateway.federated.flower import FederatedRunError
    from gateway.federated.runner import FederationPlan, train_federated
    from gateway.federated.service import FederationService

    federation, members = FederationService(ctx.db).participants(ctx.tenant_id, params["federation_id"])
    ctx.progress(0.01, f"{len(members)} participants; starting the simulation")
    plan = FederationPlan(FeatureSpec.from_dict(federation.feature_spec),
                          tuple(m.slug for m in members), federation.name)
    try:
        result = train_federated(plan, params["rounds"], DPConfig.parse(params["dp"]), params["seed"],
                                 progress=ctx.progress, secure_aggregation=params["secure_aggregation"],
                                 baselines=params["baselines"])
    except FederatedRunError as exc:
        raise JobFailed(exc.code, exc.message) from exc
    result["federation"] = {"id": federation.id, "name": federation.name}
    # The centralised model is fitted on everyone's data without DP: its accuracy is reported,
    # its weights are not handed to the requesting tenant.
    for key in ("weights", "bias"):
        result.get("centralised", {}).pop(key, None)
    for row in result["participants"]:
        index = int(row.pop("label"))
        row["participant"] = index + 1
        row["you"] = members[index].tenant_id == ctx.tenant_id
    return result


FEDERATED_TRAIN = JobKind(
    name=KIND,
    description="Trains a federation's model with Flower (a simulation, one client per member), "
                "with differential privacy and secure aggregation, against local-only and "
                "centralised baselines.",
    run=run,
    validate=validate,
    permission="federation",
)
