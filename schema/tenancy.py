"""Tenants, users, roles and API keys."""

from __future__ import annotations

import enum
from datetime import datetime

import strawberry
from strawberry.types import Info

from gateway.errors import NotFound
from gateway.tenancy import models
from schema.common import DEFAULT_PAGE, Connection, ctx


@strawberry.federation.type(keys=["id"])
class Tenant:
    id: strawberry.ID
    slug: str
    name: str
    base_currency: str
    home_region: str
    created_at: datetime
    trusted_documents_only: bool = strawberry.field(
        default=False, description="Only registered documents run (tenant admins are exempt).")

    @classmethod
    def from_row(cls, row: models.Tenant) -> Tenant:
        return cls(id=strawberry.ID(row.id), slug=row.slug, name=row.name,
                   base_currency=row.base_currency, home_region=row.home_region,
                   created_at=row.created_at, trusted_documents_only=row.trusted_documents_only)

    @classmethod
    def resolve_reference(cls, info: Info, id: strawberry.ID) -> Tenant:
        c = ctx(info)
        c.require("tenant", "read")
        # Only the caller's own tenant resolves; any other id is simply not found.
        if str(id) != c.tenant_id:
            raise NotFound("no such tenant", code="TENANT_NOT_FOUND")
        return cls.from_row(c.runtime.tenancy.tenant(c.tenant_id))


@strawberry.enum
class PersonIdScheme(enum.Enum):
    NIDN = "NIDN"
    CCPT = "CCPT"
    CONCAT = "CONCAT"


@strawberry.type(description="How MiFIR transaction reports identify a person within the firm "
                             "(RTS 22 Art. 6).")
class NationalIdentifier:
    identifier: str = strawberry.field(description="The country code, then the national "
                                                   "identifier, passport number or CONCAT code.")
    scheme: PersonIdScheme
    branch_country: str = strawberry.field(description="ISO 3166-1 alpha-2 of the branch that "
                                                       "supervises the person.")


@strawberry.type
class User:
    id: strawberry.ID
    email: str
    display_name: str
    active: bool
    created_at: datetime
    tenant_id: strawberry.Private[str]
    national_identifier: NationalIdentifier | None = strawberry.field(
        default=None, description="As the tenant admin recorded it; none until then.")

    @strawberry.field
    def roles(self, info: Info) -> list[str]:
        return ctx(info).runtime.policy.roles(str(self.id), self.tenant_id)

    @classmethod
    def from_row(cls, row: models.User) -> User:
        national = NationalIdentifier(
            identifier=row.national_id, scheme=PersonIdScheme(row.national_id_scheme),
            branch_country=row.branch_country or "") \
            if row.national_id and row.national_id_scheme else None
        return cls(id=strawberry.ID(row.id), email=row.email, display_name=row.display_name,
                   active=row.active, created_at=row.created_at, tenant_id=row.tenant_id,
                   national_identifier=national)


@strawberry.type
class ApiKey:
    id: strawberry.ID
    name: str
    key_id: str = strawberry.field(description="Public part of the key, shown in it after 'alp_'.")
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None = strawberry.field(
        description="When the key last authenticated a request (to the minute).")
    user_id: strawberry.Private[str]

    @strawberry.field
    def user(self, info: Info) -> User | None:
        c = ctx(info)
        row = c.loader("users", lambda ids: c.runtime.tenancy.users_by_id(c.tenant_id, ids)).load(
            self.user_id)
        return User.from_row(row) if row else None

    @classmethod
    def from_row(cls, row: models.ApiKey) -> ApiKey:
        return cls(id=strawberry.ID(row.id), name=row.name, key_id=row.key_id,
                   created_at=row.created_at, expires_at=row.expires_at,
                   revoked_at=row.revoked_at, last_used_at=row.last_used_at, user_id=row.user_id)


@strawberry.type
class CreatedApiKey:
    api_key: ApiKey
    key: str = strawberry.field(description="The key itself. Shown once; only a hash is kept.")


@strawberry.enum
class RoleGrantStatus(enum.Enum):
    PENDING = "PENDING"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"


@strawberry.type(description="A request to grant a role that needs a second person "
                             "(compliance_officer).")
class RoleGrantRequest:
    id: strawberry.ID
    user_id: strawberry.ID
    role: str
    status: RoleGrantStatus
    requested_by: strawberry.ID
    created_at: datetime
    decided_by: strawberry.ID | None
    decided_at: datetime | None

    @classmethod
    def of(cls, row: models.RoleGrantRequest) -> RoleGrantRequest:
        return cls(id=strawberry.ID(row.id), user_id=strawberry.ID(row.user_id), role=row.role,
                   status=RoleGrantStatus(row.status), requested_by=strawberry.ID(row.requested_by),
                   created_at=row.created_at,
                   decided_by=strawberry.ID(row.decided_by) if row.decided_by else None,
                   decided_at=row.decided_at)


@strawberry.type(description="A document registered for trusted-documents mode; also served by "
                             "its hash as a persisted query.")
class TrustedDocument:
    id: strawberry.ID
    sha256: str
    name: str
    document: str
    created_at: datetime

    @classmethod
    def of(cls, row: models.TrustedDocument) -> TrustedDocument:
        return cls(id=strawberry.ID(row.id), sha256=row.sha256, name=row.name,
                   document=row.document, created_at=row.created_at)


@strawberry.type
class Viewer:
    user: User
    tenant: Tenant
    roles: list[str]
    authenticated_by: str


@strawberry.input
class CreateUserInput:
    email: str
    display_name: str = ""
    roles: list[str] = strawberry.field(default_factory=list)


@strawberry.input
class CreateApiKeyInput:
    name: str
    user_id: strawberry.ID | None = strawberry.field(
        default=None, description="Whose key; defaults to the caller.")
    expires_at: datetime | None = None


@strawberry.input
class CreateTenantInput:
    slug: str
    name: str
    admin_email: str
    base_currency: str = "USD"
    home_region: str = "americas"


@strawberry.type
class CreatedTenant:
    tenant: Tenant
    admin: User
    admin_key: CreatedApiKey


@strawberry.type
class Query:
    @strawberry.field(description="Who is calling, in which tenant, with which roles.")
    def viewer(self, info: Info) -> Viewer:
        c = ctx(info)
        me = c.me
        return Viewer(user=User.from_row(c.runtime.tenancy.user(me.tenant_id, me.user_id)),
                      tenant=Tenant.from_row(c.runtime.tenancy.tenant(me.tenant_id)),
                      roles=list(me.roles), authenticated_by=me.via)

    @strawberry.field
    def tenant(self, info: Info) -> Tenant:
        c = ctx(info)
        c.require("tenant", "read")
        return Tenant.from_row(c.runtime.tenancy.tenant(c.tenant_id))

    @strawberry.field
    def user(self, info: Info, id: strawberry.ID) -> User:
        c = ctx(info)
        c.require("user", "read")
        return User.from_row(c.runtime.tenancy.user(c.tenant_id, str(id)))

    @strawberry.field
    def users(self, info: Info, first: int = DEFAULT_PAGE, after: str | None = None
              ) -> Connection[User]:
        c = ctx(info)
        c.require("user", "read")
        return Connection.of(c.runtime.tenancy.users(c.tenant_id, first=first, after=after),
                             User.from_row)

    @strawberry.field
    def api_keys(self, info: Info, first: int = DEFAULT_PAGE, after: str | None = None
                 ) -> Connection[ApiKey]:
        c = ctx(info)
        c.require("apikey", "read")
        page = c.runtime.tenancy.api_keys(c.tenant_id, first=first, after=after)
        c.loader("users", lambda ids: c.runtime.tenancy.users_by_id(c.tenant_id, ids)).want(
            k.user_id for k in page.items)
        return Connection.of(page, ApiKey.from_row)

    @strawberry.field(description="This tenant's requests for roles that need a second person, "
                                  "newest first.")
    def role_grant_requests(self, info: Info, first: int = DEFAULT_PAGE, after: str | None = None
                            ) -> Connection[RoleGrantRequest]:
        c = ctx(info)
        c.require("role", "read")
        return Connection.of(c.runtime.tenancy.role_grant_requests(c.tenant_id, first=first,
                                                                   after=after),
                             RoleGrantRequest.of)

    @strawberry.field(description="The documents registered for trusted-documents mode.")
    def trusted_documents(self, info: Info, first: int = DEFAULT_PAGE, after: str | None = None
                          ) -> Connection[TrustedDocument]:
        c = ctx(info)
        c.require("tenant", "write")
        return Connection.of(c.runtime.tenancy.documents.documents(c.tenant_id, first=first,
                                                                   after=after),
                             TrustedDocument.of)


@strawberry.type
class Mutation:
    @strawberry.mutation(description="With the role vendor: platform administrators only "
                                     "(VENDOR_ROLE_NEEDS_PLATFORM); a tenant admin asks with "
                                     "requestVendorRole. compliance_officer needs a second person "
                                     "(ROLE_GRANT_NEEDS_APPROVAL): requestRoleGrant.")
    def create_user(self, info: Info, input: CreateUserInput) -> User:
        c = ctx(info)
        me = c.require("user", "write")
        if input.roles:
            c.require("role", "write")
        return User.from_row(c.runtime.tenancy.create_user(
            c.tenant_id, input.email, display_name=input.display_name, roles=input.roles,
            actor=me.user_id, actor_key_id=me.api_key_id))

    @strawberry.mutation(description="vendor: platform administrators only "
                                     "(VENDOR_ROLE_NEEDS_PLATFORM); a tenant admin asks with "
                                     "requestVendorRole. compliance_officer needs a second person "
                                     "(ROLE_GRANT_NEEDS_APPROVAL): requestRoleGrant.")
    def grant_role(self, info: Info, user_id: strawberry.ID, role: str) -> User:
        c = ctx(info)
        me = c.require("role", "write")
        c.runtime.tenancy.grant_role(c.tenant_id, str(user_id), role, actor=me.user_id)
        return User.from_row(c.runtime.tenancy.user(c.tenant_id, str(user_id)))

    @strawberry.mutation
    def revoke_role(self, info: Info, user_id: strawberry.ID, role: str) -> User:
        c = ctx(info)
        me = c.require("role", "write")
        c.runtime.tenancy.revoke_role(c.tenant_id, str(user_id), role, actor=me.user_id)
        return User.from_row(c.runtime.tenancy.user(c.tenant_id, str(user_id)))

    @strawberry.mutation(description="Record how MiFIR transaction reports identify the user as "
                                     "investment decision maker or executor: NIDN (national "
                                     "identifier) or CCPT (passport number), each after the "
                                     "country code, or CONCAT (country, birth date YYYYMMDD, the "
                                     "first five letters of the first name and of the surname, "
                                     "# for padding), and the branch's country. No identifier "
                                     "clears it. NATIONAL_ID_INVALID when malformed.")
    def set_user_national_identifier(self, info: Info, user_id: strawberry.ID,
                                     identifier: str | None = None,
                                     scheme: PersonIdScheme | None = None,
                                     branch_country: str | None = None) -> User:
        c = ctx(info)
        me = c.require("user", "write")
        return User.from_row(c.runtime.tenancy.set_national_id(
            c.tenant_id, str(user_id), identifier=identifier,
            scheme=scheme.value if scheme else None, branch_country=branch_country,
            actor=me.user_id))

    @strawberry.mutation(description="Deactivate (its keys and tokens stop at once; its open "
                                     "WebSockets close with 4403 AUTH_USER_DEACTIVATED) or "
                                     "reactivate a user.")
    def set_user_active(self, info: Info, user_id: strawberry.ID, active: bool) -> User:
        c = ctx(info)
        me = c.require("user", "write")
        return User.from_row(c.runtime.tenancy.set_user_active(c.tenant_id, str(user_id), active,
                                                               actor=me.user_id))

    @strawberry.mutation(description="Ask for a role that needs a second person "
                                     "(compliance_officer): another tenant admin, not made by the "
                                     "requester within the approval window nor acting through a "
                                     "key it made, or a platform administrator approves.")
    def request_role_grant(self, info: Info, user_id: strawberry.ID, role: str) -> RoleGrantRequest:
        c = ctx(info)
        me = c.require("role", "write")
        return RoleGrantRequest.of(c.runtime.tenancy.request_role_grant(
            c.tenant_id, str(user_id), role, requested_by=me.user_id))

    @strawberry.mutation(description="Approve (grants the role) or reject a pending role grant "
                                     "request. APPROVER_NOT_INDEPENDENT, ROLE_GRANT_SELF_APPROVAL.")
    def decide_role_grant(self, info: Info, id: strawberry.ID, approve: bool) -> RoleGrantRequest:
        c = ctx(info)
        platform = c.runtime.policy.is_platform_admin(c.me.user_id)
        me = c.me if platform else c.require("role", "write")
        return RoleGrantRequest.of(c.runtime.tenancy.decide_role_grant(
            str(id), me, approve, platform_admin=platform))

    @strawberry.mutation(description="Register a document (it must parse) for trusted-documents "
                                     "mode; the same text again answers the registered one.")
    def register_trusted_document(self, info: Info, document: str, name: str = ""
                                  ) -> TrustedDocument:
        c = ctx(info)
        me = c.require("tenant", "write")
        return TrustedDocument.of(c.runtime.tenancy.documents.register(
            c.tenant_id, document, name=name, actor=me.user_id))

    @strawberry.mutation
    def remove_trusted_document(self, info: Info, id: strawberry.ID) -> TrustedDocument:
        c = ctx(info)
        me = c.require("tenant", "write")
        return TrustedDocument.of(c.runtime.tenancy.documents.remove(c.tenant_id, str(id),
                                                                     actor=me.user_id))

    @strawberry.mutation(description="Trusted-documents mode on or off: on, only registered "
                                     "documents run for this tenant's non-admin callers "
                                     "(DOCUMENT_NOT_TRUSTED otherwise).")
    def set_trusted_documents_only(self, info: Info, enabled: bool) -> Tenant:
        c = ctx(info)
        me = c.require("tenant", "write")
        c.runtime.tenancy.documents.set_mode(c.tenant_id, enabled, actor=me.user_id)
        return Tenant.from_row(c.runtime.tenancy.tenant(c.tenant_id))

    @strawberry.mutation
    def create_api_key(self, info: Info, input: CreateApiKeyInput) -> CreatedApiKey:
        c = ctx(info)
        me = c.require("apikey", "write")
        row, key = c.runtime.tenancy.create_api_key(
            c.tenant_id, str(input.user_id or me.user_id), input.name, expires_at=input.expires_at,
            actor=me.user_id, actor_key_id=me.api_key_id)
        return CreatedApiKey(api_key=ApiKey.from_row(row), key=key)

    @strawberry.mutation
    def revoke_api_key(self, info: Info, id: strawberry.ID) -> ApiKey:
        c = ctx(info)
        me = c.require("apikey", "write")
        return ApiKey.from_row(c.runtime.tenancy.revoke_api_key(c.tenant_id, str(id),
                                                                actor=me.user_id))

    @strawberry.mutation(description="Platform administrators only.")
    def create_tenant(self, info: Info, input: CreateTenantInput) -> CreatedTenant:
        c = ctx(info)
        c.require_platform_admin()
        tenant, admin, (key_row, key) = c.runtime.tenancy.onboard(
            input.slug, input.name, input.admin_email, base_currency=input.base_currency,
            home_region=input.home_region)
        return CreatedTenant(tenant=Tenant.from_row(tenant), admin=User.from_row(admin),
                             admin_key=CreatedApiKey(api_key=ApiKey.from_row(key_row), key=key))
