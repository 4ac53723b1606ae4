"""Every table of the gateway, gathered for Alembic and for tests."""

from sqlalchemy import MetaData
from sqlmodel import SQLModel

from gateway.auth.models import CasbinRule
from gateway.jobs.models import Job
from gateway.tenancy.models import ApiKey, Tenant, User

__all__ = ["ApiKey", "CasbinRule", "Job", "Tenant", "User", "metadata"]


def metadata() -> MetaData:
    return SQLModel.metadata
