"""Every table of the gateway, gathered for Alembic and for tests."""

from sqlalchemy import MetaData
from sqlmodel import SQLModel

from gateway.auth.models import CasbinRule
from gateway.federated.models import Federation, FederationMember
from gateway.fx.models import (
    CashBalance,
    HedgeExecution,
    HedgePosition,
    Portfolio,
    Position,
    UnsettledTrade,
)
from gateway.jobs.models import Job
from gateway.tenancy.models import ApiKey, Tenant, User

__all__ = ["ApiKey", "CasbinRule", "CashBalance", "Federation", "FederationMember", "HedgeExecution",
           "HedgePosition", "Job", "Portfolio", "Position", "Tenant", "UnsettledTrade", "User", "metadata"]


def metadata() -> MetaData:
    return SQLModel.metadata
