"""Tenants, users, API keys and role grants. Plain Python over rows; no GraphQL here.

Who grants: a role in `PLATFORM_GRANTED_ROLES` (vendor) is granted only by the platform itself
(`by_platform=True`: the CLI, an operator's own tooling) or by an `actor` who is a platform
administrator; a tenant admin asks for it instead (gateway/tenancy/vendor_role.py). A role in
`APPROVAL_ROLES` (compliance_officer) is granted by the platform, a platform administrator, or
through a request (`request_role_grant`) that a second tenant admin approves: one independent of
the requester (gateway/tenancy/independence.py).

Credentials that stop being valid (`revoke_api_key`, `set_user_active(False)`) are announced on
`CREDENTIALS_TOPIC`, so every replica closes the WebSockets they hold open.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from gateway.audit import AuditEntry, AuditTrail
from gateway.auth import apikeys
from gateway.auth.models import CasbinRule
from gateway.auth.policy import (
    APPROVAL_ROLES,
    CREDENTIALS_TOPIC,
    PLATFORM_GRANTED_ROLES,
    POLICY_TOPIC,
    VENDOR,
    AccessPolicy,
    role_subject,
    subject,
)
from gateway.auth.principal import Principal
from gateway.db import Database, utcnow
from gateway.errors import Conflict, Forbidden, InvalidInput, NotFound
from gateway.events import Bus
from gateway.outbox import Outbox
from gateway.pagination import Page, keyset_page
from gateway.tenancy.documents import TrustedDocuments
from gateway.tenancy.independence import independence_problem
from gateway.tenancy.models import ApiKey, RoleGrantRequest, Tenant, User

SLUG = re.compile(r"^[a-z][a-z0-9-]{1,62}$")
CURRENCY = re.compile(r"^[A-Z]{3}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class TenancyService:
    def __init__(self, db: Database, policy: AccessPolicy, bus: Bus,
                 regions: tuple[str, ...], max_page_size: int, audit: AuditTrail, *,
                 approval_window: timedelta = timedelta(hours=24),
                 outbox: Outbox | None = None) -> None:
        self.db = db
        # Events after a commit go through the outbox: a bus that is down delays them, and
        # never turns the committed write into an error answer.
        self.outbox = outbox
        self.approval_window = approval_window
        self.documents = TrustedDocuments(db, audit, max_page_size)  # trusted-documents mode
        self.documents.mode_changed = lambda tenant_id: self.credentials_revoked(
            tenant_id, "TENANT_CHANGED")  # no key nor user: no socket closes, caches forget
        self.audit = audit  # permission and configuration changes are recorded with them
        self.policy = policy
        self.bus = bus
        self.regions = regions
        self.max_page_size = max_page_size
        # Called with CREDENTIALS_TOPIC's payload before it is published: this process's
        # credential cache forgets at once (gateway/runtime.py binds it).
        self.credentials_changed: Callable[[dict[str, Any]], None] | None = None

    # Tenants (platform scope: creating one spans tenants by definition).
    def create_tenant(self, slug: str, name: str, *, base_currency: str = "USD",
                      home_region: str = "americas") -> Tenant:
        tenant = self._new_tenant(slug, name, base_currency, home_region)
        try:
            with self.db.system_transaction() as session:
                session.add(tenant)
                session.flush()
                self.audit.append(session, None, [self._tenant_created(tenant)])
                self.audit.append(session, tenant.id, [self._tenant_created(tenant)])
        except IntegrityError:
            raise Conflict(f"tenant {slug!r} exists", code="TENANT_EXISTS") from None
        return tenant

    def _new_tenant(self, slug: str, name: str, base_currency: str, home_region: str) -> Tenant:
        if not SLUG.match(slug):
            raise InvalidInput("slug must be 2-63 lowercase letters, digits or '-', "
                               "starting with a letter", code="TENANT_SLUG_INVALID")
        if not name.strip():
            raise InvalidInput("name must not be empty", code="TENANT_NAME_INVALID")
        if not CURRENCY.match(base_currency):
            raise InvalidInput("baseCurrency must be an ISO 4217 code such as USD",
                               code="CURRENCY_INVALID")
        if home_region not in self.regions:
            raise InvalidInput(f"homeRegion must be one of {', '.join(self.regions)}",
                               code="REGION_UNKNOWN")
        return Tenant(slug=slug, name=name.strip(), base_currency=base_currency,
                      home_region=home_region)

    @staticmethod
    def _tenant_created(tenant: Tenant) -> AuditEntry:
        return AuditEntry("tenant.created", tenant.id, {
            "slug": tenant.slug, "name": tenant.name, "baseCurrency": tenant.base_currency,
            "homeRegion": tenant.home_region})

    @staticmethod
    def _user_created(user: User, roles: list[str] | tuple[str, ...], actor: str | None) -> AuditEntry:
        return AuditEntry("user.created", user.id, {"email": user.email, "roles": sorted(roles)},
                          actor)

    @staticmethod
    def _key_created(key: ApiKey, actor: str | None) -> AuditEntry:
        # The key id is public (it prefixes the token); the secret and its hash never go here.
        return AuditEntry("apikey.created", key.id, {
            "userId": key.user_id, "name": key.name, "keyId": key.key_id,
            "expiresAt": key.expires_at}, actor)

    def tenant(self, tenant_id: str) -> Tenant:
        with self.db.tenant_session(tenant_id) as session:
            tenant = session.exec(select(Tenant)).first()
        if tenant is None:
            raise NotFound("no such tenant", code="TENANT_NOT_FOUND")
        return tenant

    def tenant_by_slug(self, slug: str) -> Tenant:
        with self.db.system_session() as session:
            tenant = session.exec(select(Tenant).where(Tenant.slug == slug)).first()
        if tenant is None:
            raise NotFound(f"no tenant {slug!r}", code="TENANT_NOT_FOUND")
        return tenant

    # Users and roles.
    def create_user(self, tenant_id: str, email: str, *, display_name: str = "",
                    roles: list[str] | tuple[str, ...] = (), actor: str | None = None,
                    actor_key_id: str | None = None, by_platform: bool = False) -> User:
        self.check_grantor(roles, actor=actor, by_platform=by_platform)
        user = self._new_user(tenant_id, email, display_name)
        user.created_by = self._origin(tenant_id, actor, actor_key_id)
        grants = self.policy.grant_rows(user.id, roles, tenant_id)
        try:
            with self.db.tenant_transaction(tenant_id) as session:
                session.add(user)
                session.flush()  # the user exists before its role rows
                session.add_all(grants)
                self.audit.append(session, tenant_id, [self._user_created(user, roles, actor)])
        except IntegrityError:
            raise Conflict(f"user {user.email} exists", code="USER_EXISTS") from None
        if grants:
            self.policy_changed()
        return user

    def check_grantor(self, roles: list[str] | tuple[str, ...], *, actor: str | None,
                      by_platform: bool = False) -> None:
        """FORBIDDEN unless the platform or a platform administrator grants these roles (a
        tenant admin asks: requestVendorRole, requestRoleGrant)."""
        reserved = sorted(set(roles) & PLATFORM_GRANTED_ROLES)
        second = sorted(set(roles) & APPROVAL_ROLES)
        if not (reserved or second) or by_platform:
            return
        if actor is not None and self.policy.is_platform_admin(actor):
            return
        if VENDOR in reserved:
            raise Forbidden("the vendor role is granted by a platform administrator only; "
                            "a tenant admin requests it (requestVendorRole)",
                            code="VENDOR_ROLE_NEEDS_PLATFORM")
        if reserved:
            raise Forbidden(f"the {reserved[0]} role is granted by a platform administrator only",
                            code="ROLE_NEEDS_PLATFORM")
        raise Forbidden(f"the {second[0]} role needs a second person: request it (requestRoleGrant) "
                        "and another tenant admin or a platform administrator approves",
                        code="ROLE_GRANT_NEEDS_APPROVAL")

    @staticmethod
    def _new_user(tenant_id: str, email: str, display_name: str) -> User:
        email = email.strip().lower()
        if not EMAIL.match(email):
            raise InvalidInput("email is not an address", code="EMAIL_INVALID")
        return User(tenant_id=tenant_id, email=email, display_name=display_name.strip())

    def onboard(self, slug: str, name: str, admin_email: str, *, base_currency: str = "USD",
                home_region: str = "americas", admin_key: str | None = None
                ) -> tuple[Tenant, User, tuple[ApiKey, str]]:
        """A tenant, its first admin and the admin's API key, in one transaction."""
        tenant = self._new_tenant(slug, name, base_currency, home_region)
        admin = self._new_user(tenant.id, admin_email, "Administrator")
        material = apikeys.generate(admin_key)
        key = ApiKey(tenant_id=tenant.id, user_id=admin.id, name="admin", key_id=material.key_id,
                     salt=material.salt, secret_hash=material.secret_hash)
        try:
            with self.db.system_transaction() as session:
                session.add(tenant)
                session.flush()
                session.add(admin)
                session.flush()
                session.add(key)
                session.add_all(self.policy.grant_rows(admin.id, ["admin"], tenant.id))
                session.flush()
                self.audit.append(session, None, [self._tenant_created(tenant)])
                self.audit.append(session, tenant.id, [
                    self._tenant_created(tenant), self._user_created(admin, ["admin"], None),
                    self._key_created(key, None)])
        except IntegrityError:
            raise Conflict(f"tenant {slug!r} exists", code="TENANT_EXISTS") from None
        self.policy_changed()
        return tenant, admin, (key, material.token)

    def user(self, tenant_id: str, user_id: str) -> User:
        with self.db.tenant_session(tenant_id) as session:
            user = session.exec(select(User).where(User.id == user_id)).first()
        if user is None:
            raise NotFound(f"no user {user_id}", code="USER_NOT_FOUND")
        return user

    def users(self, tenant_id: str, *, first: int, after: str | None = None) -> Page[User]:
        return self._page(tenant_id, User, first, after)

    def users_by_id(self, tenant_id: str, ids: list[str]) -> dict[str, User]:
        with self.db.tenant_session(tenant_id) as session:
            rows = session.exec(select(User).where(col(User.id).in_(ids))).all()
        return {u.id: u for u in rows}

    def set_national_id(self, tenant_id: str, user_id: str, *, identifier: str | None,
                        scheme: str | None, branch_country: str | None,
                        actor: str | None = None) -> User:
        """Record (or, with no identifier, clear) how MiFIR reports identify the user. The
        audit record keeps the scheme, the branch country and a digest, not the identifier."""
        from gateway.reports.identifiers import national_id_problem

        if identifier is not None:
            identifier = identifier.strip().upper()
            scheme = (scheme or "").strip().upper()
            branch_country = (branch_country or "").strip().upper()
            problem = national_id_problem(scheme, identifier, branch_country)
            if problem is not None:
                raise InvalidInput(f"national identifier: {problem}", code="NATIONAL_ID_INVALID")
        else:
            scheme = branch_country = None
        with self.db.tenant_transaction(tenant_id) as session:
            user = session.exec(select(User).where(User.id == user_id)).first()
            if user is None:
                raise NotFound(f"no user {user_id}", code="USER_NOT_FOUND")
            user.national_id, user.national_id_scheme, user.branch_country = (
                identifier, scheme, branch_country)
            session.add(user)
            payload: dict[str, Any] = {"scheme": scheme, "branchCountry": branch_country,
                                       "sha256": hashlib.sha256(identifier.encode()).hexdigest()
                                       if identifier else None}
            self.audit.append(session, tenant_id, [
                AuditEntry("user.national_id_set", user_id, payload, actor)])
            session.flush()
            session.refresh(user)
            session.expunge(user)
        return user

    # Role rows are written here, not through casbin's adapter (which commits on its own), so
    # the grant and its audit record commit together; the enforcer reloads afterwards.
    def grant_role(self, tenant_id: str, user_id: str, role: str, *, actor: str | None = None,
                   by_platform: bool = False) -> list[str]:
        self.check_grantor([role], actor=actor, by_platform=by_platform)
        self.user(tenant_id, user_id)  # NotFound for another tenant's user
        self.policy.check_role(role, tenant_id)
        with self.db.tenant_transaction(tenant_id) as session:
            self.add_role(session, tenant_id, user_id, role, actor=actor)
        self.policy_changed()
        return self.policy.roles(user_id, tenant_id)

    def add_role(self, session: Session, tenant_id: str, user_id: str, role: str, *,
                 actor: str | None) -> bool:
        """The role's row and its audit record in the caller's transaction (the caller has
        checked who grants); False if the user holds it already. `policy_changed()` after commit."""
        if session.exec(self._role_rows(user_id, role, tenant_id)).first() is not None:
            return False
        session.add_all(self.policy.grant_rows(user_id, [role], tenant_id))
        self.audit.append(session, tenant_id, [
            AuditEntry("permission.granted", user_id, {"role": role}, actor)])
        return True

    def revoke_role(self, tenant_id: str, user_id: str, role: str, *, actor: str | None = None
                    ) -> list[str]:
        self.user(tenant_id, user_id)
        self.policy.check_role(role, tenant_id)
        with self.db.tenant_transaction(tenant_id) as session:
            rows = session.exec(self._role_rows(user_id, role, tenant_id)).all()
            for row in rows:
                session.delete(row)
            if rows:
                self.audit.append(session, tenant_id, [
                    AuditEntry("permission.revoked", user_id, {"role": role}, actor)])
        self.policy_changed()
        return self.policy.roles(user_id, tenant_id)

    @staticmethod
    def _role_rows(user_id: str, role: str, tenant_id: str) -> Any:
        return select(CasbinRule).where(CasbinRule.ptype == "g", CasbinRule.v0 == subject(user_id),
                                        CasbinRule.v1 == role_subject(role),
                                        CasbinRule.v2 == tenant_id)

    def policy_changed(self) -> None:
        # Announced even if this process cannot reload right now (its fingerprint refresh
        # catches up): the change is committed, and other replicas must hear of it. Reloaded
        # first, so this process's listeners (open sockets' roles) see the new policy.
        try:
            self.policy.reload()
        finally:
            self._publish(POLICY_TOPIC, {"at": utcnow().isoformat()})

    def _publish(self, topic: str, payload: dict[str, Any]) -> None:
        if self.outbox is not None:
            self.outbox.publish(topic, payload)
        else:
            self.bus.publish(topic, payload)

    def _origin(self, tenant_id: str, actor: str | None, actor_key_id: str | None) -> str | None:
        """Who really acts: a key made by someone other than its user is held by its maker (the
        secret was shown to them), so what it creates is theirs, for the independence rule."""
        if actor is None or actor_key_id is None:
            return actor
        with self.db.tenant_session(tenant_id) as session:
            key = session.exec(select(ApiKey).where(ApiKey.id == actor_key_id)).first()
        return key.created_by if key is not None and key.created_by else actor

    # API keys.
    def create_api_key(self, tenant_id: str, user_id: str, name: str, *,
                       expires_at: datetime | None = None, token: str | None = None,
                       actor: str | None = None, actor_key_id: str | None = None,
                       by_platform: bool = False) -> tuple[ApiKey, str]:
        """Returns the row and the key itself, which is never stored and never shown again.

        A key acts as its user, so a key for another user who is a platform administrator is
        made only by the platform or by a platform administrator."""
        if not name.strip():
            raise InvalidInput("name must not be empty", code="APIKEY_NAME_INVALID")
        if expires_at is not None and expires_at <= utcnow():
            raise InvalidInput("expiresAt must be in the future", code="APIKEY_EXPIRY_INVALID")
        self.user(tenant_id, user_id)
        if (not by_platform and user_id != actor and self.policy.is_platform_admin(user_id)
                and not (actor is not None and self.policy.is_platform_admin(actor))):
            raise Forbidden("a key for a platform administrator is made by the platform only",
                            code="APIKEY_PLATFORM_ADMIN_FORBIDDEN")
        material = apikeys.generate(token)
        key = ApiKey(tenant_id=tenant_id, user_id=user_id, name=name.strip(),
                     key_id=material.key_id, salt=material.salt,
                     secret_hash=material.secret_hash, expires_at=expires_at,
                     created_by=None if by_platform else self._origin(tenant_id, actor, actor_key_id))
        try:
            with self.db.tenant_transaction(tenant_id) as session:
                session.add(key)
                session.flush()
                self.audit.append(session, tenant_id, [self._key_created(key, actor)])
        except IntegrityError:
            raise Conflict("that key id is taken", code="APIKEY_EXISTS") from None
        return key, material.token

    def api_keys(self, tenant_id: str, *, first: int, after: str | None = None) -> Page[ApiKey]:
        return self._page(tenant_id, ApiKey, first, after)

    def revoke_api_key(self, tenant_id: str, api_key_id: str, *, actor: str | None = None
                       ) -> ApiKey:
        with self.db.tenant_transaction(tenant_id) as session:
            key = session.exec(select(ApiKey).where(ApiKey.id == api_key_id)).first()
            if key is None:
                raise NotFound(f"no API key {api_key_id}", code="APIKEY_NOT_FOUND")
            revoked = key.revoked_at is None
            if revoked:
                key.revoked_at = utcnow()
                session.add(key)
                self.audit.append(session, tenant_id, [AuditEntry(
                    "apikey.revoked", key.id, {"userId": key.user_id, "keyId": key.key_id}, actor)])
        if revoked:
            self.credentials_revoked(tenant_id, "AUTH_KEY_REVOKED", api_key_id=key.id)
        return key

    def credentials_revoked(self, tenant_id: str, reason: str, *, api_key_id: str | None = None,
                            user_id: str | None = None) -> None:
        """Tell every replica (after commit) to close the WebSockets these credentials opened
        and forget their cached look-ups; with neither key nor user, the tenant's state changed:
        look-ups are forgotten, sockets stay."""
        payload = {"tenantId": tenant_id, "apiKeyId": api_key_id, "userId": user_id,
                   "reason": reason}
        if self.credentials_changed is not None:
            self.credentials_changed(payload)
        self._publish(CREDENTIALS_TOPIC, payload)

    def set_user_active(self, tenant_id: str, user_id: str, active: bool, *,
                        actor: str | None = None) -> User:
        """Deactivate (every credential of the user stops at once, open sockets close) or
        reactivate a user. A user does not deactivate itself (the last admin would lock the
        tenant out)."""
        if not active and actor == user_id:
            raise InvalidInput("a user cannot deactivate itself", code="USER_SELF_DEACTIVATION")
        with self.db.tenant_transaction(tenant_id) as session:
            user = session.exec(select(User).where(User.id == user_id)).first()
            if user is None:
                raise NotFound(f"no user {user_id}", code="USER_NOT_FOUND")
            changed = user.active != active
            if changed:
                user.active = active
                session.add(user)
                self.audit.append(session, tenant_id, [AuditEntry(
                    "user.activated" if active else "user.deactivated", user_id, {}, actor)])
            session.flush()
            session.refresh(user)
            session.expunge(user)
        if changed and not active:
            self.credentials_revoked(tenant_id, "AUTH_USER_DEACTIVATED", user_id=user_id)
        return user

    # Role grants that need a second person (APPROVAL_ROLES).
    def request_role_grant(self, tenant_id: str, user_id: str, role: str, *, requested_by: str
                           ) -> RoleGrantRequest:
        """A PENDING request; asking again for the same user and role answers the pending one."""
        if role not in APPROVAL_ROLES:
            raise InvalidInput(f"only {', '.join(sorted(APPROVAL_ROLES))} is requested; grant other "
                               "roles with grantRole", code="ROLE_INVALID")
        self.user(tenant_id, user_id)  # NotFound for another tenant's user
        if role in self.policy.roles(user_id, tenant_id):
            raise Conflict(f"that user holds {role} already", code="ROLE_HELD")
        with self.db.tenant_transaction(tenant_id) as session:
            pending = session.exec(select(RoleGrantRequest).where(
                RoleGrantRequest.user_id == user_id, RoleGrantRequest.role == role,
                RoleGrantRequest.status == "PENDING")).first()
            if pending is not None:
                session.expunge(pending)
                return pending
            row = RoleGrantRequest(tenant_id=tenant_id, user_id=user_id, role=role,
                                   requested_by=requested_by)
            session.add(row)
            session.flush()
            self.audit.append(session, tenant_id, [AuditEntry(
                "role_grant.requested", row.id, {"userId": user_id, "role": role}, requested_by)])
            session.refresh(row)
            session.expunge(row)
        return row

    def decide_role_grant(self, request_id: str, decider: Principal, approve: bool, *,
                          platform_admin: bool = False) -> RoleGrantRequest:
        """Approve (the role is granted in the same transaction) or reject. A tenant admin
        decides its own tenant's requests and must be independent of the requester; a platform
        administrator decides any tenant's (`platform_admin`), but not its own request."""
        scope = None if platform_admin else decider.tenant_id
        with (self.db.system_transaction() if scope is None
              else self.db.tenant_transaction(scope)) as session:
            row = session.exec(select(RoleGrantRequest).where(RoleGrantRequest.id == request_id)
                               .with_for_update()).first()
            if row is None:
                raise NotFound(f"no role grant request {request_id}", code="ROLE_GRANT_NOT_FOUND")
            if row.status != "PENDING":
                raise Conflict(f"the request is {row.status} already", code="ROLE_GRANT_DECIDED")
            if decider.user_id in (row.requested_by, row.user_id):
                raise Forbidden("a request is decided by someone other than its requester and "
                                "the user it grants to", code="ROLE_GRANT_SELF_APPROVAL")
            if not platform_admin:
                problem = independence_problem(session, decider, row.requested_by,
                                               self.approval_window)
                if problem is not None:
                    raise Forbidden(f"the decider {problem}", code="APPROVER_NOT_INDEPENDENT")
            row.status = "APPROVED" if approve else "REJECTED"
            row.decided_by, row.decided_at = decider.user_id, utcnow()
            session.add(row)
            if approve:
                self.add_role(session, row.tenant_id, row.user_id, row.role, actor=decider.user_id)
            self.audit.append(session, row.tenant_id, [AuditEntry(
                f"role_grant.{row.status.lower()}", row.id, {"userId": row.user_id, "role": row.role},
                decider.user_id)])
            session.flush()
            session.refresh(row)
            session.expunge(row)
        if approve:
            self.policy_changed()
        return row

    def role_grant_requests(self, tenant_id: str, *, first: int, after: str | None = None
                            ) -> Page[RoleGrantRequest]:
        return self._page(tenant_id, RoleGrantRequest, first, after)

    def _page(self, tenant_id: str, model: Any, first: int, after: str | None) -> Page[Any]:
        return keyset_page(self.db, tenant_id, select(model), model, first=first, after=after,
                           max_page_size=self.max_page_size)
