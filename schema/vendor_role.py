"""Asking for the vendor role (gateway/tenancy/vendor_role.py).

A tenant admin ("role" "write") asks for it, for itself or a user of its tenant, and reads its
own tenant's requests ("role" "read"); a platform administrator lists every tenant's requests
and decides them. Granting vendor directly (createUser, grantRole) is for platform
administrators only: a tenant admin gets FORBIDDEN with code VENDOR_ROLE_NEEDS_PLATFORM.
"""

from __future__ import annotations

import enum
from datetime import datetime

import strawberry
from strawberry.types import Info

from gateway.tenancy import models
from schema.common import DEFAULT_PAGE, Connection, ctx


@strawberry.enum
class VendorRoleRequestStatus(enum.Enum):
    PENDING = "PENDING"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"


@strawberry.type(description="A request that a user be made a plugin vendor.")
class VendorRoleRequest:
    id: strawberry.ID
    tenant_id: strawberry.ID
    user_id: strawberry.ID = strawberry.field(description="Who would become a vendor.")
    reason: str
    status: VendorRoleRequestStatus
    requested_by: strawberry.ID
    created_at: datetime
    decided_by: strawberry.ID | None
    decided_at: datetime | None
    note: str | None = strawberry.field(description="The platform administrator's note.")

    @classmethod
    def of(cls, row: models.VendorRoleRequest) -> VendorRoleRequest:
        return cls(id=strawberry.ID(row.id), tenant_id=strawberry.ID(row.tenant_id),
                   user_id=strawberry.ID(row.user_id), reason=row.reason,
                   status=VendorRoleRequestStatus(row.status),
                   requested_by=strawberry.ID(row.requested_by), created_at=row.created_at,
                   decided_by=strawberry.ID(row.decided_by) if row.decided_by else None,
                   decided_at=row.decided_at, note=row.note)


@strawberry.input
class RequestVendorRoleInput:
    user_id: strawberry.ID | None = strawberry.field(
        default=None, description="Who would become a vendor; defaults to the caller.")
    reason: str


@strawberry.type
class Query:
    @strawberry.field(description="Vendor role requests, newest first: every tenant's for a "
                                  "platform administrator, else the caller's tenant's.")
    def vendor_role_requests(self, info: Info, status: VendorRoleRequestStatus | None = None,
                             first: int = DEFAULT_PAGE, after: str | None = None
                             ) -> Connection[VendorRoleRequest]:
        c = ctx(info)
        if c.runtime.policy.is_platform_admin(c.me.user_id):
            tenant_id = None
        else:
            tenant_id = c.require("role", "read").tenant_id
        page = c.runtime.vendor_roles.requests(tenant_id, status=status.value if status else None,
                                               first=first, after=after)
        return Connection.of(page, VendorRoleRequest.of)


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Ask the platform to make a user of this tenant a vendor. "
                                     "One request is pending per tenant; asking again for the "
                                     "same user answers the pending one.")
    def request_vendor_role(self, info: Info, input: RequestVendorRoleInput) -> VendorRoleRequest:
        c = ctx(info)
        me = c.require("role", "write")
        return VendorRoleRequest.of(c.runtime.vendor_roles.request(
            c.tenant_id, me.user_id, input.reason,
            user_id=str(input.user_id) if input.user_id else None))

    @strawberry.mutation(description="Approve (grants the vendor role) or reject a pending "
                                     "request; platform administrators only.")
    def decide_vendor_role_request(self, info: Info, id: strawberry.ID, approve: bool,
                                   note: str | None = None) -> VendorRoleRequest:
        c = ctx(info)
        me = c.require_platform_admin()
        return VendorRoleRequest.of(c.runtime.vendor_roles.decide(str(id), me.user_id, approve,
                                                                  note))
