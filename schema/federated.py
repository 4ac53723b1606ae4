"""Federated learning across institutions: federations, membership (opt-in), training jobs.

A tenant sees a federation only while it is an opted-in member (FEDERATION_NOT_FOUND
otherwise, the same as an unknown id); it learns the number of members, never who they are.
`joinFederation` takes the federation's id, which a member hands out as the invitation.
Permissions (casbin object "federation"): read for the queries, write to create, join, leave
and train. Training is a Job (kind `federated.train`); its result compares the federated model
with each participant's local-only model and a centralised one, with ε per round.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated, Any

import strawberry
from strawberry.types import Info

from gateway.federated import models
from gateway.federated.data import FEATURES, FeatureSpec, Target
from gateway.federated.kind import DEFAULT_ROUNDS, KIND
from gateway.federated.service import FederationService
from gateway.http.context import RequestContext
from schema.common import DEFAULT_PAGE, Connection, ctx
from schema.jobs import Job


def _service(info: Info, act: str) -> tuple[RequestContext, FederationService]:
    c = ctx(info)
    c.require("federation", act)
    return c, FederationService(c.runtime.db, c.runtime.settings.max_page_size)


@strawberry.enum
class FederatedTarget(enum.Enum):
    DIRECTION = "DIRECTION"
    VOLATILITY = "VOLATILITY"


@strawberry.enum(description="NONE: no differential privacy. SERVER: central DP, the server "
                             "clips updates and adds Gaussian noise to their average. CLIENT: "
                             "local DP, each participant clips and noises its own update.")
class DifferentialPrivacyMode(enum.Enum):
    NONE = "NONE"
    SERVER = "SERVER"
    CLIENT = "CLIENT"


@strawberry.type(description="What every participant computes from its own data.")
class FeatureSpecification:
    target: FederatedTarget = strawberry.field(
        description="DIRECTION: sign of the next return. VOLATILITY: whether the next move "
                    "exceeds the median move at the current volatility.")
    interval: str = strawberry.field(description="Bar interval: 1d or 1h.")
    instruments_per_participant: int
    window_days: int = strawberry.field(description="Calendar days of history each participant holds.")
    test_fraction: float = strawberry.field(description="The latest share of the window held out.")
    features: list[str]

    @classmethod
    def of(cls, data: dict[str, Any]) -> FeatureSpecification:
        spec = FeatureSpec.from_dict(data)
        return cls(target=FederatedTarget(spec.target.value), interval=spec.interval,
                   instruments_per_participant=spec.instruments, window_days=spec.window_days,
                   test_fraction=spec.test_fraction, features=list(FEATURES))


@strawberry.type(description="The caller's own membership of a federation.")
class FederationMember:
    federation_id: strawberry.ID
    opted_in: bool
    joined_at: datetime
    left_at: datetime | None

    @classmethod
    def of(cls, row: models.FederationMember) -> FederationMember:
        return cls(federation_id=strawberry.ID(row.federation_id), opted_in=row.opted_in,
                   joined_at=row.joined_at, left_at=row.left_at)


@strawberry.type
class Federation:
    id: strawberry.ID = strawberry.field(description="Also the invitation: another tenant joins with it.")
    name: str
    feature_spec: FeatureSpecification
    created_at: datetime
    created_by_you: bool

    @strawberry.field(description="Opted-in members, the caller included.")
    def member_count(self, info: Info) -> int:
        c, service = _service(info, "read")
        counts = c.loader("federation.counts", lambda ids: service.member_counts(c.tenant_id, ids))
        return int(counts.load(str(self.id)) or 0)

    @strawberry.field
    def membership(self, info: Info) -> FederationMember | None:
        c, service = _service(info, "read")
        row = c.loader("federation.membership",
                       lambda ids: service.memberships(c.tenant_id, ids)).load(str(self.id))
        return FederationMember.of(row) if row is not None else None

    @classmethod
    def of(cls, row: models.Federation, tenant_id: str) -> Federation:
        return cls(id=strawberry.ID(row.id), name=row.name,
                   feature_spec=FeatureSpecification.of(row.feature_spec), created_at=row.created_at,
                   created_by_you=row.created_by_tenant_id == tenant_id)


@strawberry.input
class CreateFederationInput:
    name: str
    idempotency_key: str | None = None
    target: FederatedTarget = FederatedTarget.DIRECTION
    interval: str = "1d"
    instruments_per_participant: int = 3
    window_days: int = 730


@strawberry.input(description="Clipping bound C, noise multiplier z (noise std z·C on the sum of "
                              "updates), and δ of the (ε, δ) guarantee.")
class DifferentialPrivacyInput:
    mode: DifferentialPrivacyMode = DifferentialPrivacyMode.NONE
    clip_norm: float | None = None
    noise_multiplier: float | None = None
    delta: float | None = None

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mode": self.mode.value}
        for key, value in (("clip_norm", self.clip_norm), ("noise_multiplier", self.noise_multiplier),
                           ("delta", self.delta)):
            if value is not None:
                out[key] = value
        return out


@strawberry.type
class Query:
    @strawberry.field(description="Federations the caller's tenant is an opted-in member of.")
    def federations(self, info: Info, first: int = DEFAULT_PAGE, after: str | None = None
                    ) -> Connection[Federation]:
        c, service = _service(info, "read")
        page = service.list(c.tenant_id, first=first, after=after)
        return Connection.of(page, lambda row: Federation.of(row, c.tenant_id))

    @strawberry.field
    def federation(self, info: Info, id: strawberry.ID) -> Federation:
        c, service = _service(info, "read")
        return Federation.of(service.get(c.tenant_id, str(id)), c.tenant_id)


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Create a federation; the caller's tenant is its first member.")
    def create_federation(self, info: Info, input: CreateFederationInput) -> Federation:
        c, service = _service(info, "write")
        spec = FeatureSpec(target=Target(input.target.value), interval=input.interval,
                           instruments=input.instruments_per_participant, window_days=input.window_days)
        row = service.create(c.me, input.name, spec=spec, idempotency_key=input.idempotency_key)
        return Federation.of(row, c.tenant_id)

    @strawberry.mutation(description="Opt the caller's tenant in to a federation (again).")
    def join_federation(self, info: Info, id: strawberry.ID) -> Federation:
        c, service = _service(info, "write")
        return Federation.of(service.join(c.me, str(id)), c.tenant_id)

    @strawberry.mutation(description="Opt out: the federation trains without this tenant from now on.")
    def leave_federation(self, info: Info, id: strawberry.ID) -> FederationMember:
        c, service = _service(info, "write")
        return FederationMember.of(service.leave(c.me, str(id)))

    @strawberry.mutation(description="Train the federation's model (a Job). Every opted-in member "
                                     "takes part, each on its own data, which never leaves it.")
    def train_federated_model(self, info: Info, federation: strawberry.ID, rounds: int = DEFAULT_ROUNDS,
                              dp: DifferentialPrivacyInput | None = None, seed: int = 0,
                              region: str | None = None, secure_aggregation: bool = True,
                              baselines: Annotated[bool, strawberry.argument(
                                  description="Also fit each participant's local-only model and the "
                                  "centralised one; their exchanges are not covered by ε.")] = True,
                              idempotency_key: str | None = None) -> Job:
        c, service = _service(info, "write")
        service.check_trainable(c.tenant_id, str(federation))
        params = {"federation_id": str(federation), "rounds": rounds,
                  "dp": (dp or DifferentialPrivacyInput()).params(), "seed": seed,
                  "secure_aggregation": secure_aggregation, "baselines": baselines}
        return Job.from_row(c.runtime.jobs.start(c.me, KIND, params, region=region,
                                                 idempotency_key=idempotency_key))
