"""No tenant ever sees or touches another tenant's data: every root field is tried with
tenant A's key and tenant B's ids. A new root field fails `test_every_root_field_is_covered`
until it is added here."""

import asyncio

import pytest
from sqlmodel import select

from gateway.db import Database
from gateway.errors import Forbidden
from gateway.jobs.models import Job
from gateway.tenancy.models import ApiKey, Tenant, User
from schema.compose import build_schema
from tests.support import TransportWS, error_codes, onboard, unique, user_key, wait_for

# Root fields whose answer is not tenant data (schema text, the list of job kinds) or that
# are platform-only; each is still exercised below.
COVERED = {
    "Query": {"_entities", "_service", "viewer", "tenant", "user", "users", "apiKeys", "job",
              "jobs", "jobKinds"},
    "Mutation": {"createUser", "grantRole", "revokeRole", "createApiKey", "revokeApiKey",
                 "createTenant", "runDiagnostics", "cancelJob"},
    "Subscription": {"jobUpdated"},
}
# Markets: public reference data, the same for every tenant; test_markets.py
# (test_two_tenants_get_identical_market_answers) shows two tenants get identical answers.
COVERED["Query"] |= {"regions", "venue", "activeMarkets", "followTheSun"}
COVERED["Subscription"] |= {"marketSessionEvents"}
# Market data: reference data, the same for every tenant (test_market_data_is_the_same_for_every_tenant).
COVERED["Query"] |= {"instruments", "instrument", "bars", "quote"}
COVERED["Subscription"] |= {"quotes"}
# FX portfolios and hedging: test_fx.py (test_fx_fields_with_another_tenants_ids_find_and_change_nothing)
# tries each with another tenant's key, ids and idempotency keys; fxRate is public rate data.
COVERED["Query"] |= {"portfolios", "portfolio", "fxExposure", "fxRate"}
COVERED["Mutation"] |= {"createPortfolio", "recordPosition", "setCashBalance", "recordUnsettledTrade",
                        "proposeHedge", "executeHedge"}
# Chart patterns: derived from market data, the same for every tenant
# (test_patterns_are_the_same_for_every_tenant).
COVERED["Query"] |= {"detectPatterns"}
COVERED["Subscription"] |= {"patternDetections"}

# Federated learning: test_federated.py (test_federations_are_visible_to_members_only,
# test_training_another_tenants_federation_is_not_found, test_job_reads_only_participants_data)
# tries each with a tenant that is not a member, and shows a job reads no other tenant's data.
COVERED["Query"] |= {"federations", "federation"}
COVERED["Mutation"] |= {"createFederation", "joinFederation", "leaveFederation", "trainFederatedModel"}

# Portfolio optimisation: optimizePortfolio starts a Job, tenant-scoped like every job
# (test_optimisation_jobs_are_tenant_scoped); portfolioOptimisers lists plugins, not tenant data.
COVERED["Query"] |= {"portfolioOptimisers"}
COVERED["Mutation"] |= {"optimizePortfolio"}

# Audit trail: test_audit.py (test_audit_fields_are_tenant_isolated) shows tenant B's key reads
# and verifies only B's chain, never A's records, A's break or the platform chain.
COVERED["Query"] |= {"verifyAuditTrail", "auditRecords"}
# Audit checkpoints: test_audit_checkpoints.py (test_checkpoints_are_tenant_isolated) shows B
# lists and takes only B's checkpoints, and A's checkpoint given to B's verification is refused
# as another chain's (AUDIT_CHECKPOINT_FOREIGN) without a word about A's chain. Lanes:
# test_audit_lanes.py shows the same of A's lane-1 checkpoint
# (test_the_checkpoint_of_another_tenants_lane_is_foreign), createAuditCheckpoint(chain:) with A's
# chains refused as AUDIT_CHAIN_UNKNOWN and createAuditCheckpoints taking B's lanes only
# (test_create_audit_checkpoint_refuses_a_chain_not_the_tenants), and tenants whose ids look like
# each other's lanes reading and verifying their own only
# (test_a_tenant_never_reaches_lanes_named_like_its_own).
COVERED["Query"] |= {"auditCheckpoints"}
COVERED["Mutation"] |= {"createAuditCheckpoint", "createAuditCheckpoints"}
# Regulatory reports: test_reports.py (test_report_fields_are_tenant_isolated,
# test_mifid_xml_report_end_to_end_with_download) shows B's key with A's idempotency key, job and
# file ids finds nothing of A's (GET /reports/{id} is 404) and B's reports read only B's rows.
# test_reports_mifir.py (test_scope_by_instrument_class_venue_and_account) shows B's report
# scoped to A's account codes reads only B's own trades.
COVERED["Query"] |= {"reportFiles"}
COVERED["Mutation"] |= {"startRegulatoryReport"}
# A user's national identifier for MiFIR reports: test_reports_mifir.py
# (test_decision_maker_is_a_national_identifier_or_an_algorithm_never_a_user_id) shows B's key
# with A's user id is USER_NOT_FOUND and a trader's is FORBIDDEN.
COVERED["Mutation"] |= {"setUserNationalIdentifier"}

# Strategy lab: test_strategy_lab.py (test_strategy_fields_with_another_tenants_ids_find_and_change_nothing)
# tries each with tenant B's key and tenant A's ids (NOT_FOUND codes, nothing changed);
# strategySchema is the published DSL schema, the same for every tenant.
COVERED["Query"] |= {"strategySchema", "strategies", "strategy", "backtestResult", "explainDecision",
                     "decisionExplanations", "strategyReport"}
COVERED["Mutation"] |= {"createStrategy", "createStrategyVersion", "approveStrategyVersion", "backtest"}
# Strategy lab, LLM and news: test_synthesis.py (test_improving_another_tenants_strategy_is_not_found:
# B's key with A's strategy id is STRATEGY_NOT_FOUND, no job, no version; A's synthesis job and
# strategy are JOB_NOT_FOUND / STRATEGY_NOT_FOUND for B); test_news.py
# (test_analyses_are_each_tenants_own: B never reads A's cached analyses;
# test_news_items_are_the_same_for_every_tenant: news items are reference data). llmProviders
# lists plugins, not tenant data.
COVERED["Query"] |= {"llmProviders", "newsItems"}
COVERED["Mutation"] |= {"synthesizeStrategy", "improveStrategy", "analyzeNews"}

# Marketplace publication: test_marketplace_publish.py (test_isolation_of_publication_fields,
# test_another_vendor_cannot_take_a_plugin_id_or_see_versions): another tenant lists none of a
# vendor's versions, cannot publish over its plugin id, and review, delisting and the review
# queue are platform-only (FORBIDDEN, nothing changes).
COVERED["Query"] |= {"vendorPluginVersions", "pluginReviewQueue"}
COVERED["Mutation"] |= {"registerVendorKey", "publishPluginVersion", "reviewPluginVersion",
                        "delistPlugin"}
# DeFi lending and vaults: test_defi_lending.py (test_another_tenant_never_sees_or_signs_for_the_position:
# B's key with A's address is DEFI_ACCOUNT_NOT_FOUND, B's actions are signed with B's own key and
# A's position does not move, defiLendingActions lists only B's; test_idempotent_retry_returns_the_
# first_action: the same idempotency key is each tenant's own) and test_defi_vault.py
# (test_another_tenant_never_sees_or_controls_the_vault: B lists none of A's vaults, A's job is
# JOB_NOT_FOUND for B, governStrategyVault with A's vault id is DEFI_VAULT_NOT_FOUND, and B's key
# cannot pause or re-govern A's vault on-chain either). defiEvents streams public
# on-chain events (blocks and the pools' logs), the same for every tenant
# (test_defi_events.py::test_defi_events_subscription_streams_lending_actions).
COVERED["Query"] |= {"defiPosition", "defiLendingActions", "defiVaults"}
COVERED["Mutation"] |= {"defiSupply", "defiBorrow", "defiRepay", "defiWithdraw", "deployStrategyVault",
                        "governStrategyVault"}
COVERED["Subscription"] |= {"defiEvents"}
# DeFi chains, pools, quotes and swaps: defiChains, defiPools and defiQuote are public market
# data, the same for every tenant (test_defi_swap.py::test_two_tenants_see_the_same_market);
# test_defi_swap.py::test_swap_isolation_between_tenants shows B never lists A's swaps
# (defiSwaps), never replays A's idempotency key (defiSwap) and has its own address
# (defiAccount); test_defi_keys.py::test_tenant_b_can_never_sign_with_a_key shows a key sealed
# for A does not open for B, even copied into B's row.
COVERED["Query"] |= {"defiChains", "defiPools", "defiQuote", "defiAccount", "defiSwaps"}
COVERED["Mutation"] |= {"defiSwap"}
# defiOpenAccount takes no id: test_defi_keys.py::test_open_account_is_each_tenants_own shows B gets
# its own key and address, never A's, and A's key row is untouched.
COVERED["Mutation"] |= {"defiOpenAccount"}
# Orders: test_orders.py (test_order_fields_with_another_tenants_ids_find_and_change_nothing:
# B's key with A's order ids is ORDER_NOT_FOUND for order/cancelOrder/amendOrder; orders, trades,
# tradingAccounts and complianceDecisions list none of A's; positions and recordLocate on A's
# account code are ACCOUNT_NOT_FOUND; A's ClOrdID and account code in B make B's own rows;
# setComplianceControls in B leaves A's controls; orderUpdates and complianceAlerts of B carry
# none of A's events).
COVERED["Query"] |= {"order", "orders", "trades", "positions", "tradingAccounts", "complianceControls",
                     "complianceDecisions"}
COVERED["Mutation"] |= {"submitOrder", "submitOrders", "amendOrder", "cancelOrder", "upsertTradingAccount",
                        "setComplianceControls", "recordLocate"}
COVERED["Subscription"] |= {"orderUpdates", "complianceAlerts"}
# The order stream: test_drop_copy.py (test_a_reconnecting_drop_copy_replays_what_it_missed_and_
# nothing_of_another_tenant: B's orderEvents and orderUpdates(after) carry only B's transitions,
# and A's cursor, beyond B's stream, is ORDER_CURSOR_INVALID).
COVERED["Query"] |= {"orderEvents"}
# Desk views: test_desk_views.py (test_another_tenant_sees_none_of_it: B's key counts and lists
# none of A's orders and trades under any range, side, statuses or account filter, and sees no
# positions, totals or locates of A's; positionSummary and locates on A's account code are
# ACCOUNT_NOT_FOUND, and B's own account under that code shows only B's empty book).
COVERED["Query"] |= {"positionSummary", "locates"}
# Mass cancel and kill switches: test_mass_cancel.py
# (test_a_tenants_mass_cancel_and_kill_switch_never_touch_another_tenant: B's cancelOrders with
# A's account code and symbol cancels only B's orders, and B's setKillSwitch, tenant-wide and on
# that account code, leaves A's orders open, A's controls off and A's new orders accepted).
COVERED["Mutation"] |= {"cancelOrders", "setKillSwitch"}
# Marketplace installation: test_marketplace_install.py
# (test_marketplace_fields_with_another_tenants_ids_change_nothing: B's key on the plugin A
# installed is PLUGIN_NOT_INSTALLED for configure/upgrade/rollback/uninstall, installedPlugins
# and marketplace { plugin { installation usage } } show none of A's, A's schema object and
# history are unchanged, whiteLabel is B's default; test_install_for_one_tenant_grows_only_its_schema
# shows installPlugin changes only A's schema; test_unapproved_incompatible_unknown_and_private_
# versions_are_refused: another vendor's PRIVATE plugin is PLUGIN_NOT_FOUND in marketplace and
# install; test_vendor_statement_bills_metered_calls: a non-vendor's vendorStatement is
# VENDOR_NOT_FOUND and a vendor sees opaque customer references, never tenant ids;
# test_plugin_events_reach_only_their_tenant: B's pluginEvents skips A's install and shows
# B's own). ratePlugin writes the caller's own rating row (catalogue
# averages are aggregates).
COVERED["Query"] |= {"marketplace", "installedPlugins", "whiteLabel", "vendorStatement"}
COVERED["Mutation"] |= {"installPlugin", "configurePlugin", "upgradePlugin", "rollbackPlugin",
                        "uninstallPlugin", "ratePlugin"}
COVERED["Subscription"] |= {"pluginEvents"}
# Vendor role requests: test_vendor_role.py (test_another_tenant_cannot_see_or_decide_a_tenants_requests:
# B lists none of A's requests, even with A's cursor, cannot decide them (platform only) nor ask
# for A's user, USER_NOT_FOUND; test_a_tenant_admin_cannot_decide_its_own_request).
COVERED["Query"] |= {"vendorRoleRequests"}
# A tenant's built-in switches act on its own view only: tests/test_installed_sources.py.
COVERED["Query"] |= {"builtinPlugins"}
COVERED["Mutation"] |= {"setBuiltinPlugin"}
# A tenant's own data files: tests/test_market_data_files.py (B lists none of A's files, cannot
# delete one by its name, MARKETDATA_FILE_NOT_FOUND, and is served none of their instruments).
COVERED["Query"] |= {"marketDataFiles"}
COVERED["Mutation"] |= {"putMarketDataFile", "deleteMarketDataFile"}
COVERED["Mutation"] |= {"requestVendorRole", "decideVendorRoleRequest"}
# Market state: platform-wide (halts, short-sale restrictions and lists are the venue's, the same
# for every tenant); tests/test_market_state.py (test_market_state_is_platform_wide_and_only_
# platform_admins_change_it): tenant B reads what tenant A reads, and neither tenant's admin
# halts, resumes or edits a list (FORBIDDEN; platform administrators only); test_a_halt_denies_
# orders_until_resumed_and_is_audited_and_published subscribes to marketStateEvents.
COVERED["Query"] |= {"marketState", "marketHalts", "shortSaleDesignations"}
COVERED["Mutation"] |= {"haltTrading", "resumeTrading", "setShortSaleDesignation"}
COVERED["Subscription"] |= {"marketStateEvents"}
# Issue 16, separation of duties: tests/test_separation_of_duties.py
# (test_role_grant_fields_with_another_tenants_ids_find_nothing): B's key with A's user and
# request ids is USER_NOT_FOUND / ROLE_GRANT_NOT_FOUND and B lists none of A's requests.
COVERED["Query"] |= {"roleGrantRequests"}
COVERED["Mutation"] |= {"requestRoleGrant", "decideRoleGrant"}
# Deactivating users: tests/test_socket_credentials.py
# (test_set_user_active_with_another_tenants_user_finds_nothing): A's admin with B's user id is
# USER_NOT_FOUND and B's admin still works.
COVERED["Mutation"] |= {"setUserActive"}
# Trusted documents: tests/test_persisted_queries.py
# (test_trusted_documents_are_an_admins_and_tenant_isolated): B lists none of A's documents,
# removing A's is TRUSTED_DOCUMENT_NOT_FOUND, and B's mode switch leaves A's alone.
COVERED["Query"] |= {"trustedDocuments"}
COVERED["Mutation"] |= {"registerTrustedDocument", "removeTrustedDocument", "setTrustedDocumentsOnly"}

def test_every_root_field_is_covered(settings):
    schema = build_schema(settings)._schema
    for root, covered in COVERED.items():
        fields = set(getattr(schema, f"{root.lower()}_type").fields)
        assert fields == covered, f"{root}: add isolation checks for {fields - covered}"


@pytest.fixture
def b(runtime, gql, server):
    """Tenant B with a second user, an API key and a finished job."""
    tenant = onboard(runtime)
    user_id, _ = user_key(runtime, tenant, "viewer")
    key_row = runtime.tenancy.api_keys(tenant.id, first=5).items[0]
    job = gql.data('mutation { runDiagnostics(input: {steps: 2, stepSeconds: 0, '
                   'idempotencyKey: "shared-key"}) { id } }', key=tenant.key)["runDiagnostics"]
    wait_for(lambda: runtime.jobs.get(tenant.id, job["id"]).status == "SUCCEEDED")
    return {"tenant": tenant, "user_id": user_id, "api_key_id": key_row.id, "job_id": job["id"]}


def test_queries_with_another_tenants_ids_find_nothing(gql, runtime, tenant, b):
    a = tenant.key
    viewer = gql.data("{ viewer { tenant { id } user { id } } }", key=a)["viewer"]
    assert viewer["tenant"]["id"] == tenant.id and viewer["user"]["id"] == tenant.admin_id
    assert gql.data("{ tenant { id } }", key=a)["tenant"]["id"] == tenant.id

    assert error_codes(gql("query($id: ID!) { user(id: $id) { email } }", {"id": b["user_id"]},
                           key=a)) == ["USER_NOT_FOUND"]
    assert error_codes(gql("query($id: ID!) { job(id: $id) { id } }", {"id": b["job_id"]},
                           key=a)) == ["JOB_NOT_FOUND"]

    users = gql.data("{ users(first: 200) { edges { node { id } } } }", key=a)["users"]["edges"]
    assert {e["node"]["id"] for e in users} == {tenant.admin_id}
    keys = gql.data("{ apiKeys(first: 200) { edges { node { id user { id } } } } }",
                    key=a)["apiKeys"]["edges"]
    assert b["api_key_id"] not in {e["node"]["id"] for e in keys}
    assert {e["node"]["user"]["id"] for e in keys} == {tenant.admin_id}
    jobs = gql.data("{ jobs(first: 200) { edges { node { id } } } }", key=a)["jobs"]["edges"]
    assert b["job_id"] not in {e["node"]["id"] for e in jobs}
    assert "diagnostics" in gql.data("{ jobKinds }", key=a)["jobKinds"]
    assert "type Job" in gql.data("{ _service { sdl } }", key=a)["_service"]["sdl"]


def test_federation_entities_resolve_only_own_tenant(gql, tenant, b):
    query = """query($r: [_Any!]!) { _entities(representations: $r) {
        ... on Tenant { id slug } ... on Job { id status } } }"""
    own = gql.data(query, {"r": [{"__typename": "Tenant", "id": tenant.id}]}, key=tenant.key)
    assert own["_entities"] == [{"id": tenant.id, "slug": tenant.slug}]
    theirs = gql(query, {"r": [{"__typename": "Tenant", "id": b["tenant"].id},
                               {"__typename": "Job", "id": b["job_id"]}]}, key=tenant.key)
    assert theirs["data"]["_entities"] == [None, None]
    assert set(error_codes(theirs)) == {"TENANT_NOT_FOUND", "JOB_NOT_FOUND"}


def test_mutations_with_another_tenants_ids_change_nothing(gql, runtime, tenant, b):
    a, bt = tenant.key, b["tenant"]
    before_roles = runtime.policy.roles(bt.admin_id, bt.id)
    assert error_codes(gql('mutation($u: ID!) { grantRole(userId: $u, role: "admin") { id } }',
                           {"u": b["user_id"]}, key=a)) == ["USER_NOT_FOUND"]
    assert error_codes(gql('mutation($u: ID!) { revokeRole(userId: $u, role: "admin") { id } }',
                           {"u": bt.admin_id}, key=a)) == ["USER_NOT_FOUND"]
    assert runtime.policy.roles(bt.admin_id, bt.id) == before_roles
    assert runtime.policy.roles(b["user_id"], bt.id) == ["viewer"]

    assert error_codes(gql('mutation($u: ID!) { createApiKey(input: {name: "x", userId: $u}) '
                           "{ key } }", {"u": bt.admin_id}, key=a)) == ["USER_NOT_FOUND"]
    assert error_codes(gql("mutation($id: ID!) { revokeApiKey(id: $id) { id } }",
                           {"id": b["api_key_id"]}, key=a)) == ["APIKEY_NOT_FOUND"]
    assert "errors" not in gql("{ viewer { authenticatedBy } }", key=bt.key)

    finished = runtime.jobs.get(bt.id, b["job_id"])
    assert error_codes(gql("mutation($id: ID!) { cancelJob(id: $id) { id } }",
                           {"id": b["job_id"]}, key=a)) == ["JOB_NOT_FOUND"]
    assert runtime.jobs.get(bt.id, b["job_id"]).updated_at == finished.updated_at

    # Idempotency keys are per tenant: A reusing B's key gets a job of its own.
    mine = gql.data('mutation { runDiagnostics(input: {steps: 2, stepSeconds: 0, '
                    'idempotencyKey: "shared-key"}) { id tenant { id } } }', key=a)["runDiagnostics"]
    assert mine["id"] != b["job_id"] and mine["tenant"]["id"] == tenant.id

    email = f"{unique()}@x.test"
    created = gql.data('mutation($e: String!) { createUser(input: {email: $e}) { id } }',
                       {"e": email}, key=a)["createUser"]
    assert runtime.tenancy.user(tenant.id, created["id"]).tenant_id == tenant.id
    assert email not in {u.email for u in runtime.tenancy.users(bt.id, first=200).items}
    assert error_codes(gql('mutation { createTenant(input: {slug: "zz-x", name: "x", '
                           'adminEmail: "a@b.test"}) { tenant { id } } }', key=a)) == ["FORBIDDEN"]


def test_subscription_to_another_tenants_job_finds_nothing(server, tenant, b):
    async def scenario():
        async with TransportWS(server.ws_url, tenant.key) as ws:
            await ws.subscribe("1", "subscription($id: ID!) { jobUpdated(id: $id) { job { id } } }",
                               {"id": b["job_id"]})
            message = await ws.next()
            return message

    message = asyncio.run(scenario())
    assert message["type"] in ("next", "error")
    errors = message["payload"]["errors"] if message["type"] == "next" else message["payload"]
    assert [e["extensions"]["code"] for e in errors] == ["JOB_NOT_FOUND"]


def test_identical_subscriptions_of_two_tenants_never_share(server, tenant, b):
    """Fan-out (gateway/http/fanout.py) groups identical subscriptions: the same document and
    variables from two tenants at once are two groups, so A never gets B's job."""
    query = "subscription($id: ID!) { jobUpdated(id: $id) { job { id status } } }"

    async def scenario():
        async with TransportWS(server.ws_url, b["tenant"].key) as owner, \
                TransportWS(server.ws_url, tenant.key) as other:
            await owner.subscribe("1", query, {"id": b["job_id"]})
            await other.subscribe("1", query, {"id": b["job_id"]})
            return await owner.next(op_id="1"), await other.next(op_id="1")

    owned, other = asyncio.run(scenario())
    assert owned["payload"]["data"]["jobUpdated"]["job"]["id"] == b["job_id"]
    errors = other["payload"]["errors"] if other["type"] == "next" else other["payload"]
    assert [e["extensions"]["code"] for e in errors] == ["JOB_NOT_FOUND"]
    assert other["type"] == "error" or other["payload"]["data"] is None


def test_tenant_sessions_filter_and_refuse_cross_tenant_writes(runtime, tenant, other_tenant):
    db: Database = runtime.db
    with db.tenant_session(tenant.id) as session:
        assert [t.id for t in session.exec(select(Tenant)).all()] == [tenant.id]
        assert {u.tenant_id for u in session.exec(select(User)).all()} == {tenant.id}
        assert {k.tenant_id for k in session.exec(select(ApiKey)).all()} == {tenant.id}
        assert session.get(User, other_tenant.admin_id) is None
        # Joined entities are filtered too, not only the selected one.
        joined = session.exec(select(ApiKey, User).join(User, User.id != "")).all()
        assert {(k.tenant_id, u.tenant_id) for k, u in joined} == {(tenant.id, tenant.id)}
    with pytest.raises(Forbidden) as refused, db.tenant_transaction(tenant.id) as session:
        session.add(Job(tenant_id=other_tenant.id, kind="diagnostics", region="emea"))
    assert refused.value.code == "TENANT_FORBIDDEN"
    with db.tenant_session(other_tenant.id) as session:
        assert session.exec(select(Job).where(Job.region == "emea")).all() == []
    with pytest.raises(RuntimeError, match="without a tenant scope"), db.unscoped_session() as s:
        s.exec(select(User)).all()


def test_aggregates_and_subqueries_are_filtered_too(runtime, tenant, other_tenant):
    from sqlmodel import func

    db: Database = runtime.db
    for owner in (tenant, other_tenant):
        with db.tenant_transaction(owner.id) as session:
            session.add(Job(kind="diagnostics", region="apac"))
    with db.tenant_session(tenant.id) as session:
        # No entity is selected here, only a table named in FROM.
        count = session.exec(select(func.count()).select_from(Job).where(Job.region == "apac")).one()
        assert count == 1
        owners = select(User.id).scalar_subquery()
        assert session.exec(select(func.count()).select_from(User).where(User.id.in_(owners))
                            ).one() == 1
    with db.system_session() as session:
        assert session.exec(select(func.count()).select_from(Job).where(Job.region == "apac")
                            ).one() >= 2
    with pytest.raises(RuntimeError, match="without a tenant scope"), db.unscoped_session() as s:
        s.exec(select(func.count()).select_from(Job)).one()


def test_market_data_is_the_same_for_every_tenant(gql, tenant, other_tenant):
    query = """{ instruments(first: 50) { edges { node { key source tickSize } } }
      instrument(key: "AAPL.XNAS") { isin }
      bars(instrument: "SHEL.XLON", start: "2024-03-04T00:00:00Z", end: "2024-03-05T00:00:00Z",
           interval: "1h") { start close volume }
      quote(instrument: "7203.XTKS", at: "2024-03-05T01:00:00Z") { bid ask } }"""
    mine, theirs = gql.data(query, key=tenant.key), gql.data(query, key=other_tenant.key)
    assert mine == theirs and mine["instruments"]["edges"] and mine["bars"]


def test_patterns_are_the_same_for_every_tenant(gql, tenant, other_tenant):
    query = """{ detectPatterns(instrument: "SHEL.XLON", window: 60, interval: "15m",
                                at: "2026-03-04T12:00:00Z") {
      instrument pattern confidence probabilities { pattern probability } at windowStart model } }"""
    mine, theirs = gql.data(query, key=tenant.key), gql.data(query, key=other_tenant.key)
    assert mine == theirs and mine["detectPatterns"]["instrument"] == "SHEL.XLON"
    assert tenant.id not in str(mine) and other_tenant.id not in str(mine)


def test_optimisation_jobs_are_tenant_scoped(gql, runtime, tenant, other_tenant):
    start = """mutation { optimizePortfolio(input: {instruments: ["AAPL.XNAS", "SHEL.XLON",
        "7203.XTKS"], budget: 2, lookbackDays: 60, asOf: "2025-01-02T00:00:00Z",
        idempotencyKey: "opt-1"}) { id } }"""
    theirs = gql.data(start, key=other_tenant.key)["optimizePortfolio"]["id"]
    wait_for(lambda: runtime.jobs.get(other_tenant.id, theirs).finished_at, timeout=30)
    assert error_codes(gql("query($id: ID!) { job(id: $id) { result } }", {"id": theirs},
                           key=tenant.key)) == ["JOB_NOT_FOUND"]
    mine = gql.data(start, key=tenant.key)["optimizePortfolio"]["id"]  # same key, own job
    assert mine != theirs
    listing = "{ portfolioOptimisers { name kind maxAssets } }"
    assert gql.data(listing, key=tenant.key) == gql.data(listing, key=other_tenant.key)
