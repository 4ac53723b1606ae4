from __future__ import annotations

from sqlmodel import Field, SQLModel


class CasbinRule(SQLModel, table=True):
    """Casbin policy lines: `p, sub, dom, obj, act` and `g, user, role, dom`."""

    __tablename__ = "casbin_rule"

    id: int | None = Field(default=None, primary_key=True)
    ptype: str = Field(max_length=8, index=True)
    v0: str = Field(default="", max_length=255)
    v1: str = Field(default="", max_length=255)
    v2: str = Field(default="", max_length=255)
    v3: str = Field(default="", max_length=255)
    v4: str = Field(default="", max_length=255)
    v5: str = Field(default="", max_length=255)
