"""Asking for the vendor role: a tenant admin requests it for one of its users, a platform
administrator approves or rejects. Approval grants the role in the decision's transaction.

At most one request per tenant is PENDING (a partial unique index); asking again for the same
user answers the pending request. Every request and decision is an audit record on the
tenant's chain; a decision is also recorded on the platform's chain.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select, update

from gateway.audit import AuditEntry, AuditTrail
from gateway.auth.policy import VENDOR
from gateway.db import Database, utcnow
from gateway.errors import Conflict, InvalidInput, NotFound
from gateway.pagination import Page, keyset_page
from gateway.tenancy.models import VendorRoleRequest
from gateway.tenancy.service import TenancyService

PENDING, APPROVED, REJECTED = "PENDING", "APPROVED", "REJECTED"
STATUSES: tuple[str, ...] = (PENDING, APPROVED, REJECTED)
TEXT_MAX = 2000


def _text(value: str | None, field: str, *, required: bool) -> str:
    text = (value or "").strip()
    if not text and required:
        raise InvalidInput(f"{field} must not be empty", code="VENDOR_REQUEST_INVALID")
    if len(text) > TEXT_MAX:
        raise InvalidInput(f"{field} is longer than {TEXT_MAX} characters",
                           code="VENDOR_REQUEST_INVALID")
    return text


class VendorRoleRequests:
    def __init__(self, db: Database, tenancy: TenancyService, audit: AuditTrail,
                 max_page_size: int) -> None:
        self.db = db
        self.tenancy = tenancy
        self.audit = audit
        self.max_page_size = max_page_size

    def request(self, tenant_id: str, requested_by: str, reason: str, *,
                user_id: str | None = None) -> VendorRoleRequest:
        """A new PENDING request, or the pending one when it names the same user."""
        text = _text(reason, "reason", required=True)
        target = user_id or requested_by
        self.tenancy.user(tenant_id, target)  # NotFound for another tenant's user
        if VENDOR in self.tenancy.policy.roles(target, tenant_id):
            raise Conflict("that user is a vendor already", code="VENDOR_ROLE_HELD")
        pending = self._pending(tenant_id)
        if pending is not None:
            return self._same(pending, target)
        row = VendorRoleRequest(tenant_id=tenant_id, user_id=target, reason=text,
                                requested_by=requested_by)
        try:
            with self.db.tenant_transaction(tenant_id) as session:
                session.add(row)
                session.flush()
                self.audit.append(session, tenant_id, [AuditEntry(
                    "vendor_role.requested", row.id, {"userId": target, "reason": text},
                    requested_by)])
        except IntegrityError:
            # Another request of this tenant became pending meanwhile.
            pending = self._pending(tenant_id)
            if pending is None:
                raise
            return self._same(pending, target)
        return row

    @staticmethod
    def _same(pending: VendorRoleRequest, user_id: str) -> VendorRoleRequest:
        if pending.user_id != user_id:
            raise Conflict("this tenant has a pending vendor role request for another user",
                           code="VENDOR_REQUEST_PENDING", details={"requestId": pending.id})
        return pending

    def _pending(self, tenant_id: str) -> VendorRoleRequest | None:
        with self.db.tenant_session(tenant_id) as session:
            return session.exec(select(VendorRoleRequest)
                                .where(VendorRoleRequest.status == PENDING)).first()

    def decide(self, request_id: str, decided_by: str, approve: bool, note: str | None = None
               ) -> VendorRoleRequest:
        """Approve (grant vendor) or reject a PENDING request. The caller is a platform
        administrator; the resolver checks that."""
        text = _text(note, "note", required=False) or None
        status = APPROVED if approve else REJECTED
        # Across tenants: the platform decides. The UPDATE comes first, so SQLite takes its
        # write lock before any read and two deciders take turns; only one finds it PENDING.
        with self.db.system_transaction() as session:
            changed = session.exec(
                update(VendorRoleRequest)
                .where(col(VendorRoleRequest.id) == request_id,
                       col(VendorRoleRequest.status) == PENDING)
                .values(status=status, decided_by=decided_by, decided_at=utcnow(), note=text)
            ).rowcount
            row = session.exec(select(VendorRoleRequest)
                               .where(VendorRoleRequest.id == request_id)).first()
            if row is None:
                raise NotFound(f"no vendor role request {request_id}",
                               code="VENDOR_REQUEST_NOT_FOUND")
            if not changed:
                raise Conflict(f"the request is {row.status} already",
                               code="VENDOR_REQUEST_DECIDED")
            if approve:
                self.tenancy.add_role(session, row.tenant_id, row.user_id, VENDOR, actor=decided_by)
            payload = {"userId": row.user_id, "note": text}
            kind = f"vendor_role.{status.lower()}"
            self.audit.append(session, row.tenant_id, [AuditEntry(kind, row.id, payload, decided_by)])
            self.audit.append(session, None, [AuditEntry(
                kind, row.id, {**payload, "tenantId": row.tenant_id}, decided_by)])
        if approve:
            self.tenancy.policy_changed()
        return row

    def requests(self, tenant_id: str | None, *, status: str | None = None, first: int,
                 after: str | None = None) -> Page[VendorRoleRequest]:
        """Newest first: one tenant's requests, or every tenant's (`tenant_id` None, for
        platform administrators)."""
        stmt: Any = select(VendorRoleRequest)
        if status is not None:
            if status not in STATUSES:
                raise InvalidInput(f"status is one of {', '.join(STATUSES)}",
                                   code="VENDOR_REQUEST_INVALID")
            stmt = stmt.where(VendorRoleRequest.status == status)
        return keyset_page(self.db, tenant_id, stmt, VendorRoleRequest, first=first, after=after,
                           max_page_size=self.max_page_size)
