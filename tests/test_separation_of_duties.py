"""Separation of duties (issue 16): a tenant admin cannot make a compliance officer alone (a
platform administrator grants it, or a second, independent tenant admin approves a request), and
a strategy's approver may not be its creator, a user its creator made within the approval
window, nor someone acting through a key its creator made."""

from __future__ import annotations

from gateway.db import ALL_TENANTS
from tests.support import GraphQLClient, TenantHandle, error_codes, onboard, unique, user_key
from tests.test_strategy_lab import APPROVE, CREATE, DOC

CREATE_USER = ("mutation($e: String!, $r: [String!]!) { createUser(input: {email: $e, roles: $r}) "
               "{ id roles } }")
CREATE_KEY = "mutation($u: ID!) { createApiKey(input: {name: \"k\", userId: $u}) { key } }"
GRANT = "mutation($u: ID!, $r: String!) { grantRole(userId: $u, role: $r) { roles } }"
REQUEST = ("mutation($u: ID!, $r: String!) { requestRoleGrant(userId: $u, role: $r) "
           "{ id status role userId requestedBy } }")
DECIDE = "mutation($id: ID!, $a: Boolean!) { decideRoleGrant(id: $id, approve: $a) { status decidedBy } }"
ROLES = "query($u: ID!) { user(id: $u) { roles } }"


def _user(gql: GraphQLClient, tenant: TenantHandle, *roles: str) -> str:
    return gql.data(CREATE_USER, {"e": f"{unique('u')}@{tenant.slug}.test", "r": list(roles)},
                    key=tenant.key)["createUser"]["id"]


def test_a_tenant_admin_cannot_make_a_compliance_officer_alone(gql, runtime, tenant):
    email = f"co@{tenant.slug}.test"
    refused = gql(CREATE_USER, {"e": email, "r": ["compliance_officer"]}, key=tenant.key)
    assert error_codes(refused) == ["ROLE_GRANT_NEEDS_APPROVAL"]
    emails = {e["node"]["email"] for e in gql.data("{ users { edges { node { email } } } }",
                                                    key=tenant.key)["users"]["edges"]}
    assert email not in emails  # nothing written
    user = _user(gql, tenant)
    assert error_codes(gql(GRANT, {"u": user, "r": "compliance_officer"}, key=tenant.key)) == \
        ["ROLE_GRANT_NEEDS_APPROVAL"]
    assert gql.data(ROLES, {"u": user}, key=tenant.key)["user"]["roles"] == []
    # other roles a tenant admin still grants alone
    assert gql.data(GRANT, {"u": user, "r": "trader"}, key=tenant.key)["grantRole"]["roles"] == ["trader"]


def test_a_second_independent_admin_approves_a_role_grant(gql, runtime, tenant):
    user = _user(gql, tenant)
    request = gql.data(REQUEST, {"u": user, "r": "compliance_officer"}, key=tenant.key)["requestRoleGrant"]
    assert request["status"] == "PENDING" and request["requestedBy"] == tenant.admin_id
    # asking again answers the pending request
    again = gql.data(REQUEST, {"u": user, "r": "compliance_officer"}, key=tenant.key)["requestRoleGrant"]
    assert again["id"] == request["id"]
    # the requester itself
    assert error_codes(gql(DECIDE, {"id": request["id"], "a": True}, key=tenant.key)) == \
        ["ROLE_GRANT_SELF_APPROVAL"]
    # an admin the requester just made (and keyed) is not independent
    puppet = _user(gql, tenant, "admin")
    puppet_key = gql.data(CREATE_KEY, {"u": puppet}, key=tenant.key)["createApiKey"]["key"]
    assert error_codes(gql(DECIDE, {"id": request["id"], "a": True}, key=puppet_key)) == \
        ["APPROVER_NOT_INDEPENDENT"]
    # an admin the platform made, with a key of its own, is: the grant happens
    colleague, colleague_key = user_key(runtime, tenant, "admin")
    decided = gql.data(DECIDE, {"id": request["id"], "a": True}, key=colleague_key)["decideRoleGrant"]
    assert decided == {"status": "APPROVED", "decidedBy": colleague}
    assert gql.data(ROLES, {"u": user}, key=tenant.key)["user"]["roles"] == ["compliance_officer"]
    assert error_codes(gql(DECIDE, {"id": request["id"], "a": False}, key=colleague_key)) == \
        ["ROLE_GRANT_DECIDED"]
    # but not a trader
    other = _user(gql, tenant)
    second = gql.data(REQUEST, {"u": other, "r": "compliance_officer"}, key=tenant.key)["requestRoleGrant"]
    _, trader = user_key(runtime, tenant, "trader")
    assert error_codes(gql(DECIDE, {"id": second["id"], "a": True}, key=trader)) == ["FORBIDDEN"]


def test_a_platform_administrator_grants_or_approves(gql, runtime, tenant):
    operator_tenant = onboard(runtime)
    operator, operator_key = user_key(runtime, operator_tenant)
    runtime.policy.grant(operator, "platform_admin", ALL_TENANTS)
    user = _user(gql, tenant)
    request = gql.data(REQUEST, {"u": user, "r": "compliance_officer"}, key=tenant.key)["requestRoleGrant"]
    rejected = gql.data(DECIDE, {"id": request["id"], "a": False}, key=operator_key)["decideRoleGrant"]
    assert rejected["status"] == "REJECTED"
    assert gql.data(ROLES, {"u": user}, key=tenant.key)["user"]["roles"] == []
    # directly, in the service, as the platform administrator it is
    runtime.tenancy.grant_role(tenant.id, user, "compliance_officer", actor=operator)
    assert "compliance_officer" in runtime.policy.roles(user, tenant.id)


def test_a_tenant_admin_cannot_approve_its_own_strategy(gql, runtime, tenant):
    created = gql.data(CREATE, {"doc": DOC, "key": unique("k")}, key=tenant.key)["createStrategy"]
    version = created["versions"][0]
    assert error_codes(gql(APPROVE, {"id": version["id"]}, key=tenant.key)) == ["APPROVAL_SELF"]

    # an officer the admin made: approved by a second admin, yet made by the creator just now
    made = _user(gql, tenant)
    made_key = gql.data(CREATE_KEY, {"u": made}, key=tenant.key)["createApiKey"]["key"]
    request = gql.data(REQUEST, {"u": made, "r": "compliance_officer"}, key=tenant.key)["requestRoleGrant"]
    _, colleague_key = user_key(runtime, tenant, "admin")
    gql.data(DECIDE, {"id": request["id"], "a": True}, key=colleague_key)
    refused = gql(APPROVE, {"id": version["id"]}, key=made_key)
    assert error_codes(refused) == ["APPROVER_NOT_INDEPENDENT"]
    assert "approval window" in refused["errors"][0]["message"]

    # an officer the platform made, acting through a key the creator made for it
    officer, officer_key = user_key(runtime, tenant, "compliance_officer")
    keyed = gql.data(CREATE_KEY, {"u": officer}, key=tenant.key)["createApiKey"]["key"]
    refused = gql(APPROVE, {"id": version["id"]}, key=keyed)
    assert error_codes(refused) == ["APPROVER_NOT_INDEPENDENT"]
    assert "key" in refused["errors"][0]["message"]
    # the same officer with its own key approves
    approved = gql.data(APPROVE, {"id": version["id"]}, key=officer_key)["approveStrategyVersion"]
    assert approved["canTrade"] is True and approved["approvedById"] == officer


def test_role_grant_fields_with_another_tenants_ids_find_nothing(gql, runtime, tenant, other_tenant):
    user = _user(gql, tenant)
    request = gql.data(REQUEST, {"u": user, "r": "compliance_officer"}, key=tenant.key)["requestRoleGrant"]
    assert error_codes(gql(REQUEST, {"u": user, "r": "compliance_officer"}, key=other_tenant.key)) == \
        ["USER_NOT_FOUND"]
    _, b_admin = user_key(runtime, other_tenant, "admin")
    assert error_codes(gql(DECIDE, {"id": request["id"], "a": True}, key=b_admin)) == ["ROLE_GRANT_NOT_FOUND"]
    listed = "{ roleGrantRequests { edges { node { id } } } }"
    assert gql.data(listed, key=other_tenant.key)["roleGrantRequests"]["edges"] == []
    assert [e["node"]["id"] for e in gql.data(listed, key=tenant.key)["roleGrantRequests"]["edges"]] == \
        [request["id"]]
    assert gql.data(ROLES, {"u": user}, key=tenant.key)["user"]["roles"] == []


def test_a_key_laundered_through_a_colleague_is_still_the_requesters(gql, runtime, tenant):
    """A key made through a key someone else made is theirs: its secret came from them."""
    user = _user(gql, tenant)
    request = gql.data(REQUEST, {"u": user, "r": "compliance_officer"}, key=tenant.key)["requestRoleGrant"]
    colleague, _ = user_key(runtime, tenant, "admin")  # independent, made by the platform
    k1 = gql.data(CREATE_KEY, {"u": colleague}, key=tenant.key)["createApiKey"]["key"]
    assert error_codes(gql(DECIDE, {"id": request["id"], "a": True}, key=k1)) == ["APPROVER_NOT_INDEPENDENT"]
    k2 = gql.data(CREATE_KEY, {"u": colleague}, key=k1)["createApiKey"]["key"]  # made "as" the colleague
    assert error_codes(gql(DECIDE, {"id": request["id"], "a": True}, key=k2)) == ["APPROVER_NOT_INDEPENDENT"]
    assert "compliance_officer" not in gql.data(ROLES, {"u": user}, key=tenant.key)["user"]["roles"]


def test_a_user_made_by_a_puppet_of_the_requester_is_not_independent(gql, runtime, tenant):
    user = _user(gql, tenant)
    request = gql.data(REQUEST, {"u": user, "r": "compliance_officer"}, key=tenant.key)["requestRoleGrant"]
    puppet = _user(gql, tenant, "admin")
    puppet_key = gql.data(CREATE_KEY, {"u": puppet}, key=tenant.key)["createApiKey"]["key"]
    make_admin = "mutation($e: String!) { createUser(input: {email: $e, roles: [\"admin\"]}) { id } }"
    email = f"b-{request['id'][:8]}@{tenant.slug}.test"
    approver = gql.data(make_admin, {"e": email}, key=puppet_key)["createUser"]["id"]
    approver_key = gql.data(CREATE_KEY, {"u": approver}, key=puppet_key)["createApiKey"]["key"]
    assert error_codes(gql(DECIDE, {"id": request["id"], "a": True}, key=approver_key)) == \
        ["APPROVER_NOT_INDEPENDENT"]


def test_the_user_a_role_is_granted_to_does_not_decide_it(gql, runtime, tenant):
    grantee, grantee_key = user_key(runtime, tenant, "admin")
    request = gql.data(REQUEST, {"u": grantee, "r": "compliance_officer"}, key=tenant.key)["requestRoleGrant"]
    assert error_codes(gql(DECIDE, {"id": request["id"], "a": True}, key=grantee_key)) == \
        ["ROLE_GRANT_SELF_APPROVAL"]
