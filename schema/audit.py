"""The audit trail: verify the caller's tenant chain and page through its records.

Permission (casbin object "audit", action "read"): admin and compliance_officer. A tenant sees
and verifies only its own chain; the platform chain is checked with `alphintra audit verify
--platform`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from gateway.audit import AuditPage, AuditRecord, AuditVerification
from schema.common import DEFAULT_PAGE, Edge, PageInfo, ctx


@strawberry.type(description="The result of recomputing every hash and link of the chain.")
class AuditTrailVerification:
    ok: bool
    checked: int = strawberry.field(description="Records verified before the first bad one.")
    first_bad_seq: int | None = strawberry.field(
        description="The seq where the chain breaks: the record edited, missing or out of order.")
    problem: str | None

    @classmethod
    def of(cls, v: AuditVerification) -> AuditTrailVerification:
        return cls(ok=v.ok, checked=v.checked, first_bad_seq=v.first_bad_seq, problem=v.problem)


@strawberry.type
class AuditTrailRecord:
    seq: int
    at: datetime
    kind: str
    subject: str
    actor: str | None
    payload: JSON
    prev_hash: str
    hash: str

    @classmethod
    def of(cls, row: AuditRecord) -> AuditTrailRecord:
        return cls(seq=row.seq, at=row.at, kind=row.kind, subject=row.subject, actor=row.actor,
                   payload=row.payload, prev_hash=row.prev_hash, hash=row.hash)


@strawberry.type
class AuditRecordConnection:
    edges: list[Edge[AuditTrailRecord]]
    page_info: PageInfo

    @classmethod
    def of(cls, page: AuditPage) -> AuditRecordConnection:
        edges = [Edge(cursor=page.cursor(r), node=AuditTrailRecord.of(r)) for r in page.items]
        return cls(edges=edges, page_info=PageInfo(
            has_next_page=page.has_next, end_cursor=edges[-1].cursor if edges else None))


@strawberry.type
class Query:
    @strawberry.field(description="Check the tenant's audit chain, whole or for records with "
                                  "from <= at < to; says where it is broken.")
    def verify_audit_trail(self, info: Info,
                           from_: Annotated[datetime | None, strawberry.argument(name="from")] = None,
                           to: datetime | None = None) -> AuditTrailVerification:
        c = ctx(info)
        c.require("audit", "read")
        return AuditTrailVerification.of(c.runtime.audit.verify(c.tenant_id, from_, to))

    @strawberry.field(description="The tenant's audit records, newest first.")
    def audit_records(self, info: Info, kind: str | None = None, subject: str | None = None,
                      first: int = DEFAULT_PAGE, after: str | None = None) -> AuditRecordConnection:
        c = ctx(info)
        c.require("audit", "read")
        return AuditRecordConnection.of(c.runtime.audit.records(
            c.tenant_id, kind=kind, subject=subject, first=first, after=after))
