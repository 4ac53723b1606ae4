"""The vendor role is granted by the platform only: a tenant admin cannot grant it by any
mutation (nothing is written), it asks (requestVendorRole) and a platform administrator decides
(decideVendorRoleRequest). Through GraphQL against the live server."""

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlmodel import col, func, select

from gateway.audit import AuditRecord
from gateway.auth.models import CasbinRule
from gateway.auth.policy import subject
from gateway.db import ALL_TENANTS
from gateway.tenancy.models import ApiKey, User, VendorRoleRequest
from tests.support import error_codes, onboard, unique, user_key

FIELDS = "id tenantId userId reason status requestedBy decidedBy decidedAt note"
REQUEST = ("mutation($u: ID, $r: String!) { requestVendorRole(input: {userId: $u, reason: $r}) "
           f"{{ {FIELDS} }} }}")
DECIDE = ("mutation($id: ID!, $a: Boolean!, $n: String) { decideVendorRoleRequest(id: $id, "
          f"approve: $a, note: $n) {{ {FIELDS} }} }}")
LIST = ("query($s: VendorRoleRequestStatus, $f: Int, $a: String) { vendorRoleRequests(status: $s, "
        f"first: $f, after: $a) {{ edges {{ node {{ {FIELDS} }} }} "
        "pageInfo { hasNextPage endCursor } } }")
CREATE_USER = ('mutation($e: String!, $r: [String!]!) { createUser(input: {email: $e, roles: $r}) '
               "{ id roles } }")
GRANT = "mutation($u: ID!, $r: String!) { grantRole(userId: $u, role: $r) { id roles } }"
CREATE_KEY = 'mutation($u: ID!) { createApiKey(input: {userId: $u, name: "k"}) { key } }'
REGISTER = 'mutation($k: String!) { registerVendorKey(publicKey: $k, name: "Acme") { id } }'
ROLES = "{ viewer { roles } }"


@pytest.fixture
def platform_admin(runtime):
    """A user of an operator tenant who is a platform administrator; returns (user id, key)."""
    ops = onboard(runtime)
    user_id, key = user_key(runtime, ops)
    runtime.policy.grant(user_id, "platform_admin", ALL_TENANTS)
    return user_id, key


def public_key() -> str:
    raw = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def stored(runtime, tenant):
    """What a refused grant must not have changed: users, role rows, audit records, keys."""
    with runtime.db.system_session() as session:
        users = session.exec(select(func.count()).select_from(User)
                             .where(User.tenant_id == tenant.id)).one()
        user_ids = session.exec(select(User.id).where(User.tenant_id == tenant.id)).all()
        roles = session.exec(select(CasbinRule.v0, CasbinRule.v1).where(
            CasbinRule.ptype == "g", col(CasbinRule.v0).in_([subject(u) for u in user_ids]))).all()
        audit = session.exec(select(func.count()).select_from(AuditRecord)  # every lane's
                             .where(AuditRecord.tenant_id == tenant.id)).one()
        keys = session.exec(select(func.count()).select_from(ApiKey)
                            .where(ApiKey.tenant_id == tenant.id)).one()
    return users, sorted(roles), audit, keys


def audit_kinds(runtime, chain):
    """The kinds recorded on the platform chain, or a tenant's (every lane), oldest first."""
    where = AuditRecord.chain == chain if chain == "platform" else AuditRecord.tenant_id == chain
    with runtime.db.system_session() as session:
        return session.exec(select(AuditRecord.kind).where(where).order_by(
            col(AuditRecord.at), col(AuditRecord.chain), col(AuditRecord.seq))).all()


def test_a_tenant_admin_cannot_grant_vendor_by_any_mutation(gql, runtime, tenant):
    user_id, user = user_key(runtime, tenant)
    before = stored(runtime, tenant)
    email = f"{unique()}@x.test"
    attempts = [
        gql(CREATE_USER, {"e": email, "r": ["vendor"]}, key=tenant.key),
        gql(CREATE_USER, {"e": email, "r": ["trader", "vendor"]}, key=tenant.key),
        gql(GRANT, {"u": user_id, "r": "vendor"}, key=tenant.key),
        gql(GRANT, {"u": tenant.admin_id, "r": "vendor"}, key=tenant.key),  # itself
    ]
    for body in attempts:
        assert error_codes(body) == ["VENDOR_ROLE_NEEDS_PLATFORM"], body
        assert body["data"] is None or not any(body["data"].values())
    assert stored(runtime, tenant) == before  # no user row, no role, no audit record
    assert "vendor" not in gql.data(ROLES, key=tenant.key)["viewer"]["roles"]
    assert "vendor" not in gql.data(ROLES, key=user)["viewer"]["roles"]
    assert error_codes(gql(REGISTER, {"k": public_key()}, key=tenant.key)) == ["FORBIDDEN"]
    # Other roles still go through.
    granted = gql.data(GRANT, {"u": user_id, "r": "trader"}, key=tenant.key)["grantRole"]
    assert granted["roles"] == ["trader"]


def test_a_tenant_admin_cannot_borrow_a_platform_administrators_key(gql, runtime, tenant):
    """A key acts as its user: a tenant admin may not mint one for a platform administrator of
    its tenant (it would then grant vendor as the platform)."""
    operator, _ = user_key(runtime, tenant)
    runtime.policy.grant(operator, "platform_admin", ALL_TENANTS)
    before = stored(runtime, tenant)
    assert error_codes(gql(CREATE_KEY, {"u": operator}, key=tenant.key)) == [
        "APIKEY_PLATFORM_ADMIN_FORBIDDEN"]
    assert stored(runtime, tenant) == before


def test_a_platform_admin_may_grant_vendor_directly(gql, runtime, tenant, platform_admin):
    _, key = platform_admin
    ops_tenant = gql.data("{ viewer { tenant { id } } }", key=key)["viewer"]["tenant"]["id"]
    with runtime.db.system_session() as session:
        admin = session.exec(select(User).where(User.tenant_id == ops_tenant)).first()
    granted = gql.data(GRANT, {"u": admin.id, "r": "vendor"}, key=key)["grantRole"]
    assert "vendor" in granted["roles"]
    created = gql.data(CREATE_USER, {"e": f"{unique()}@ops.test", "r": ["vendor"]}, key=key)
    assert created["createUser"]["roles"] == ["vendor"]


def test_request_approve_then_the_user_is_a_vendor(gql, runtime, tenant, platform_admin):
    operator, ops_key = platform_admin
    user_id, user = user_key(runtime, tenant)
    asked = gql.data(REQUEST, {"u": user_id, "r": "We publish analytics"},
                     key=tenant.key)["requestVendorRole"]
    assert asked["status"] == "PENDING"
    assert (asked["userId"], asked["tenantId"], asked["requestedBy"]) == (
        user_id, tenant.id, tenant.admin_id)
    # Asking again answers the pending request; another user is refused while it is pending.
    again = gql.data(REQUEST, {"u": user_id, "r": "again"}, key=tenant.key)["requestVendorRole"]
    assert again["id"] == asked["id"] and again["reason"] == "We publish analytics"
    assert error_codes(gql(REQUEST, {"r": "me too"}, key=tenant.key)) == ["VENDOR_REQUEST_PENDING"]
    # The tenant admin reads its own requests; the platform sees them among all tenants'.
    mine = gql.data(LIST, {}, key=tenant.key)["vendorRoleRequests"]["edges"]
    assert [e["node"]["id"] for e in mine] == [asked["id"]]
    pending = gql.data(LIST, {"s": "PENDING", "f": 100}, key=ops_key)["vendorRoleRequests"]["edges"]
    assert asked["id"] in [e["node"]["id"] for e in pending]
    assert error_codes(gql(REGISTER, {"k": public_key()}, key=user)) == ["FORBIDDEN"]

    decided = gql.data(DECIDE, {"id": asked["id"], "a": True, "n": "welcome"},
                       key=ops_key)["decideVendorRoleRequest"]
    assert (decided["status"], decided["decidedBy"], decided["note"]) == ("APPROVED", operator,
                                                                          "welcome")
    assert decided["decidedAt"] is not None
    assert "vendor" in gql.data(ROLES, key=user)["viewer"]["roles"]
    assert gql.data(REGISTER, {"k": public_key()}, key=user)["registerVendorKey"]["id"]
    # Decided once only; the tenant may then ask for someone else.
    assert error_codes(gql(DECIDE, {"id": asked["id"], "a": False}, key=ops_key)) == [
        "VENDOR_REQUEST_DECIDED"]
    assert error_codes(gql(REQUEST, {"u": user_id, "r": "again"}, key=tenant.key)) == [
        "VENDOR_ROLE_HELD"]
    kinds = audit_kinds(runtime, tenant.id)
    start = kinds.index("vendor_role.requested")
    assert kinds[start:start + 3] == ["vendor_role.requested", "permission.granted",
                                      "vendor_role.approved"]
    assert "vendor_role.approved" in audit_kinds(runtime, "platform")
    approved = gql.data(LIST, {"s": "APPROVED"}, key=tenant.key)["vendorRoleRequests"]["edges"]
    assert [e["node"]["id"] for e in approved] == [asked["id"]]


def test_a_rejected_request_grants_nothing(gql, runtime, tenant, platform_admin):
    _, ops_key = platform_admin
    asked = gql.data(REQUEST, {"r": "please"}, key=tenant.key)["requestVendorRole"]
    assert asked["userId"] == tenant.admin_id  # defaults to the caller
    before = stored(runtime, tenant)
    decided = gql.data(DECIDE, {"id": asked["id"], "a": False, "n": "not yet"},
                       key=ops_key)["decideVendorRoleRequest"]
    assert decided["status"] == "REJECTED"
    users, roles, audit, keys = stored(runtime, tenant)
    assert (users, roles, keys) == (before[0], before[1], before[3])
    assert audit == before[2] + 1
    assert audit_kinds(runtime, tenant.id)[-1] == "vendor_role.rejected"
    assert "vendor" not in gql.data(ROLES, key=tenant.key)["viewer"]["roles"]
    assert error_codes(gql(REGISTER, {"k": public_key()}, key=tenant.key)) == ["FORBIDDEN"]
    # A new request may follow a decided one.
    new = gql.data(REQUEST, {"r": "please, again"}, key=tenant.key)["requestVendorRole"]
    assert new["id"] != asked["id"] and new["status"] == "PENDING"


def test_a_tenant_admin_cannot_decide_its_own_request(gql, runtime, tenant):
    asked = gql.data(REQUEST, {"r": "trust me"}, key=tenant.key)["requestVendorRole"]
    for approve in (True, False):
        body = gql(DECIDE, {"id": asked["id"], "a": approve}, key=tenant.key)
        assert error_codes(body) == ["FORBIDDEN"]
    assert "vendor" not in gql.data(ROLES, key=tenant.key)["viewer"]["roles"]
    with runtime.db.tenant_session(tenant.id) as session:
        assert session.get(VendorRoleRequest, asked["id"]).status == "PENDING"


def test_another_tenant_cannot_see_or_decide_a_tenants_requests(gql, runtime, tenant, other_tenant):
    asked = gql.data(REQUEST, {"r": "ours"}, key=tenant.key)["requestVendorRole"]
    theirs = gql.data(LIST, {"f": 100}, key=other_tenant.key)["vendorRoleRequests"]["edges"]
    assert theirs == []
    for approve in (True, False):
        assert error_codes(gql(DECIDE, {"id": asked["id"], "a": approve}, key=other_tenant.key)) == [
            "FORBIDDEN"]
    # Nor ask on behalf of a user of the first tenant, nor page into it with its cursor.
    assert error_codes(gql(REQUEST, {"u": tenant.admin_id, "r": "x"}, key=other_tenant.key)) == [
        "USER_NOT_FOUND"]
    cursor = gql.data(LIST, {"f": 1}, key=tenant.key)["vendorRoleRequests"]["pageInfo"]["endCursor"]
    crossed = gql.data(LIST, {"f": 100, "a": cursor}, key=other_tenant.key)["vendorRoleRequests"]
    assert crossed["edges"] == []
    with runtime.db.tenant_session(other_tenant.id) as session:  # the filter, not just the query
        assert session.exec(select(VendorRoleRequest)).all() == []
    with runtime.db.tenant_session(tenant.id) as session:
        assert session.get(VendorRoleRequest, asked["id"]).status == "PENDING"


def test_only_admins_ask_and_read_requests(gql, runtime, tenant):
    _, trader = user_key(runtime, tenant, "trader")
    assert error_codes(gql(REQUEST, {"r": "let me"}, key=trader)) == ["FORBIDDEN"]
    assert error_codes(gql(LIST, {}, key=trader)) == ["FORBIDDEN"]
    assert error_codes(gql(REQUEST, {"r": "   "}, key=tenant.key)) == ["VENDOR_REQUEST_INVALID"]


def test_requests_page_newest_first(gql, runtime, platform_admin):
    _, ops_key = platform_admin
    ids = []
    for _ in range(3):
        t = onboard(runtime)
        ids.append(gql.data(REQUEST, {"r": "x"}, key=t.key)["requestVendorRole"]["id"])
    seen, after = [], None
    while True:
        page = gql.data(LIST, {"s": "PENDING", "f": 2, "a": after}, key=ops_key)["vendorRoleRequests"]
        seen += [e["node"]["id"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert [i for i in seen if i in ids] == ids[::-1]
    assert len(seen) == len(set(seen))


def test_the_cli_still_grants_vendor(runtime, tenant):
    """The CLI is the platform's operator tool: it may grant vendor directly."""
    user = runtime.tenancy.create_user(tenant.id, f"{unique()}@x.test")
    roles = runtime.tenancy.grant_role(tenant.id, user.id, "vendor", actor="cli", by_platform=True)
    assert "vendor" in roles
