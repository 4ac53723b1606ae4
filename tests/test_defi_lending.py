"""Lending through GraphQL on the embedded EVM: positions equal to the pool's own views, the
health-factor floor, bad input, compliance, idempotency, the audit trail and liquidation of a
tenant's position by another account. Every refusal is checked to send nothing: no new block,
no balance change, no row."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from sqlmodel import select

from gateway.defi.chain import EMBEDDED, EMBEDDED_CHAIN_ID, Chain, Chains, ChainSpec
from gateway.defi.deploy import bind, faucet_account
from gateway.defi.lending import LendingService, usd
from gateway.defi.lending_deploy import EXTRA_KEY, scaled
from gateway.defi.lending_models import DefiLendingAction
from gateway.trading.models import ComplianceControlsRow
from tests.support import error_codes, onboard, unique, user_key

POSITION = """query($c: String!, $a: String) { defiPosition(chain: $c, account: $a) {
  chain pool account collateralValue debtValue borrowCapacity healthFactor liquidationPrice
  liquidationToken healthFactorFloor
  assets { token tokenAddress price collateralFactor liquidationThreshold supplied borrowed } } }"""
ACTION = """mutation($i: DefiLendingInput!) { %s(input: $i) { id chain action account pool token amount
  healthFactorBefore healthFactorAfter transactionHashes blockNumber idempotencyKey } }"""


def act(gql: Any, key: str, field: str, token: str, amount: str, idem: str | None = None,
        chain: str = "embedded") -> dict[str, Any]:
    return gql(ACTION % field, {"i": {"chain": chain, "token": token, "amount": amount,
                                      "idempotencyKey": idem or unique("k")}}, key=key)


@pytest.fixture(scope="module")
def embedded(runtime: Any) -> Chain:
    chain = runtime.chains.get("embedded")
    runtime.defi_world.ensure(chain)
    return chain


@pytest.fixture(scope="module")
def pool(runtime: Any, embedded: Chain) -> Any:
    return bind(embedded, "lending_pool", runtime.defi_world.deployed(embedded).extras[EXTRA_KEY])


def token(runtime: Any, chain: Chain, symbol: str) -> Any:
    return bind(chain, "Token", runtime.defi_world.deployed(chain).tokens[symbol].address)


@pytest.fixture
def trader(runtime: Any, tenant: Any) -> str:
    return user_key(runtime, tenant, "trader")[1]


@pytest.fixture(scope="module")
def idle(runtime: Any, embedded: Chain) -> tuple[Any, str, str]:
    """A tenant with a funded key that never acts successfully (for the refusals)."""
    tenant = onboard(runtime)
    return tenant, user_key(runtime, tenant, "trader")[1], runtime.defi_keys.address(tenant.id, embedded)


def snapshot(runtime: Any, chain: Chain, pool: Any, address: str) -> tuple[Any, ...]:
    w3 = chain.web3
    return (w3.eth.block_number,
            tuple(token(runtime, chain, s).functions.balanceOf(address).call() for s in ("USDC", "WETH")),
            tuple(pool.functions.positions(address).call()))


def rows(runtime: Any, tenant_id: str) -> list[DefiLendingAction]:
    with runtime.db.tenant_session(tenant_id) as session:
        return list(session.exec(select(DefiLendingAction)).all())


def test_position_equals_the_pools_views(gql, runtime, tenant, trader, embedded, pool):
    supplied = act(gql, trader, "defiSupply", "WETH", "10")
    assert "errors" not in supplied, supplied
    s = supplied["data"]["defiSupply"]
    assert (s["action"], s["token"], s["amount"], s["healthFactorAfter"]) == ("SUPPLY", "WETH", "10", None)
    assert len(s["transactionHashes"]) == 2  # the approval, then the supply
    borrowed = act(gql, trader, "defiBorrow", "USDC", "5000.5")["data"]["defiBorrow"]
    address = runtime.defi_keys.address(tenant.id, embedded, create=False)
    assert borrowed["account"] == address

    p = gql.data(POSITION, {"c": "embedded"}, key=trader)["defiPosition"]
    collateral, debt, capacity, hf = pool.functions.account_data(address).call()
    assert Decimal(p["collateralValue"]) == usd(collateral) == Decimal(30000)
    assert Decimal(p["debtValue"]) == usd(debt) == Decimal("5000.5")
    assert Decimal(p["borrowCapacity"]) == usd(capacity)
    assert Decimal(p["healthFactor"]) == usd(hf) == usd(pool.functions.health_factor(address).call())
    assert Decimal(borrowed["healthFactorAfter"]) == Decimal(p["healthFactor"])
    # One collateral: the WETH price at which the factor is 1 is debt / (10 WETH x 0.8).
    assert p["liquidationToken"] == "WETH"
    assert Decimal(p["liquidationPrice"]) == Decimal("5000.5") / (10 * Decimal("0.8"))
    weth = next(a for a in p["assets"] if a["token"] == "WETH")
    assert (weth["supplied"], weth["liquidationThreshold"], weth["price"]) == ("10", "0.8", "3000")
    assert Decimal(p["healthFactorFloor"]) == Decimal("1.2")
    # Asking for its own address explicitly answers the same.
    assert gql.data(POSITION, {"c": "embedded", "a": address.lower()}, key=trader)["defiPosition"] == p

    # Audit trail: one record per action, in the tenant's chain, naming the action's row.
    records = runtime.audit.records(tenant.id, first=50).items
    ids = {r.id for r in rows(runtime, tenant.id)}
    audited = [(r.kind, r.subject) for r in records if r.kind.startswith("defi.lending.")]
    assert sorted(k for k, _ in audited) == ["defi.lending.borrow", "defi.lending.supply"]
    assert {s for _, s in audited} == ids
    assert [r.action for r in sorted(rows(runtime, tenant.id), key=lambda r: r.block_number)] == [
        "supply", "borrow"]


def test_health_factor_floor_refuses_before_sending(gql, runtime, tenant, trader, embedded, pool):
    assert "errors" not in act(gql, trader, "defiSupply", "WETH", "1")
    address = runtime.defi_keys.address(tenant.id, embedded, create=False)
    # 1 WETH = 3000 USD, threshold 0.8: borrowing 2000 leaves 2400 / 2000 = 1.2 exactly, 2000.01 less.
    before = snapshot(runtime, embedded, pool, address)
    refused = act(gql, trader, "defiBorrow", "USDC", "2000.01")
    assert error_codes(refused) == ["DEFI_HEALTH_FACTOR_FLOOR"]
    ext = refused["errors"][0]["extensions"]
    assert Decimal(ext["healthFactorAfter"]) < Decimal("1.2") and ext["floor"] == "1.2"
    assert snapshot(runtime, embedded, pool, address) == before
    assert [r.action for r in rows(runtime, tenant.id)] == ["supply"]

    ok = act(gql, trader, "defiBorrow", "USDC", "2000")["data"]["defiBorrow"]
    assert Decimal(ok["healthFactorAfter"]) == Decimal("1.2")
    # Now any withdrawal would go under the floor; a repay (it only raises the factor) passes.
    before = snapshot(runtime, embedded, pool, address)
    assert error_codes(act(gql, trader, "defiWithdraw", "WETH", "0.001")) == ["DEFI_HEALTH_FACTOR_FLOOR"]
    assert snapshot(runtime, embedded, pool, address) == before
    repaid = act(gql, trader, "defiRepay", "USDC", "500")["data"]["defiRepay"]
    assert Decimal(repaid["healthFactorAfter"]) == Decimal(2400) / Decimal(1500)
    # Repaying more than the debt takes only the debt.
    rest = act(gql, trader, "defiRepay", "USDC", "99999")["data"]["defiRepay"]
    assert (rest["amount"], rest["healthFactorAfter"]) == ("1500", None)
    assert error_codes(act(gql, trader, "defiRepay", "USDC", "1")) == ["DEFI_NO_DEBT"]
    out = act(gql, trader, "defiWithdraw", "WETH", "1")["data"]["defiWithdraw"]
    assert out["amount"] == "1"


@pytest.mark.parametrize(("field", "chain", "token_", "amount", "code"), [
    ("defiSupply", "embedded", "WETH", "0", "DEFI_AMOUNT_INVALID"),
    ("defiBorrow", "embedded", "USDC", "-5", "DEFI_AMOUNT_INVALID"),
    ("defiSupply", "embedded", "WETH", "lots", "DEFI_AMOUNT_INVALID"),
    ("defiSupply", "embedded", "USDC", "1.0000001", "DEFI_AMOUNT_INVALID"),  # 6 decimals
    ("defiSupply", "no-such-chain", "WETH", "1", "DEFI_CHAIN_UNKNOWN"),
    ("defiSupply", "embedded", "NOPE", "1", "DEFI_TOKEN_UNKNOWN"),
    ("defiSupply", "embedded", "WETH", "1000000", "DEFI_INSUFFICIENT_BALANCE"),
    ("defiWithdraw", "embedded", "WETH", "1", "DEFI_INSUFFICIENT_BALANCE"),
    ("defiRepay", "embedded", "USDC", "1", "DEFI_NO_DEBT"),
    ("defiBorrow", "embedded", "USDC", "100000000", "DEFI_INSUFFICIENT_LIQUIDITY"),
    ("defiBorrow", "embedded", "USDC", "1", "DEFI_HEALTH_FACTOR_FLOOR"),  # no collateral at all
])
def test_bad_input_is_refused_with_nothing_sent(gql, runtime, idle, embedded, pool, field,
                                                chain, token_, amount, code):
    tenant, trader, address = idle
    before = snapshot(runtime, embedded, pool, address)
    assert error_codes(act(gql, trader, field, token_, amount, chain=chain)) == [code]
    assert snapshot(runtime, embedded, pool, address) == before
    assert rows(runtime, tenant.id) == []


def test_rpc_down_is_chain_unavailable(runtime, tenant):
    chains = Chains([ChainSpec(EMBEDDED_CHAIN_ID, EMBEDDED, EMBEDDED),
                     ChainSpec(4242, "down", "http://127.0.0.1:9/rpc")])
    service = LendingService(runtime.db, chains, runtime.defi_world, runtime.defi_keys, runtime.audit,
                             floor=Decimal("1.2"), controls=None, max_page_size=50)
    from gateway.errors import DomainError

    for call in (lambda: service.position(tenant.id, "down"),
                 lambda: service.act(tenant.id, None, "supply", "down", "WETH", "1", "k-down")):
        with pytest.raises(DomainError) as caught:
            call()
        assert caught.value.code == "DEFI_CHAIN_UNAVAILABLE"
    assert rows(runtime, tenant.id) == []


def test_idempotent_retry_returns_the_first_action(gql, runtime, tenant, trader, embedded):
    first = act(gql, trader, "defiSupply", "WETH", "2", idem="same")["data"]["defiSupply"]
    height = embedded.web3.eth.block_number
    again = act(gql, trader, "defiSupply", "WETH", "2", idem="same")["data"]["defiSupply"]
    assert again == first and embedded.web3.eth.block_number == height
    assert error_codes(act(gql, trader, "defiSupply", "WETH", "3", idem="same")) == ["IDEMPOTENCY_KEY_REUSED"]
    assert error_codes(act(gql, trader, "defiBorrow", "WETH", "2", idem="same")) == ["IDEMPOTENCY_KEY_REUSED"]
    # Another tenant may use the same key for its own action.
    other = onboard(runtime)
    theirs = act(gql, other.key, "defiSupply", "WETH", "2", idem="same")["data"]["defiSupply"]
    assert theirs["id"] != first["id"] and theirs["account"] != first["account"]


def test_kill_switch_and_restricted_tokens_refuse(gql, runtime, tenant, trader, embedded, pool):
    address = runtime.defi_keys.address(tenant.id, embedded)
    with runtime.db.tenant_transaction(tenant.id) as session:
        session.add(ComplianceControlsRow(tenant_id=tenant.id, kill_switch=True))
    before = snapshot(runtime, embedded, pool, address)
    assert error_codes(act(gql, trader, "defiBorrow", "WETH", "1")) == ["COMPLIANCE_KILL_SWITCH"]
    assert error_codes(act(gql, trader, "defiWithdraw", "WETH", "1")) == ["COMPLIANCE_KILL_SWITCH"]
    with runtime.db.tenant_transaction(tenant.id) as session:
        row = session.exec(select(ComplianceControlsRow)).one()
        row.kill_switch, row.restricted = False, ["WETH"]
        session.add(row)
    assert error_codes(act(gql, trader, "defiSupply", "weth", "1")) == ["COMPLIANCE_RESTRICTED_INSTRUMENT"]
    assert snapshot(runtime, embedded, pool, address) == before
    assert rows(runtime, tenant.id) == []
    assert "errors" not in act(gql, trader, "defiSupply", "USDC", "1")


def test_viewer_reads_but_cannot_act(gql, runtime, tenant, trader):
    assert "errors" not in act(gql, trader, "defiSupply", "WETH", "1")
    _, viewer = user_key(runtime, tenant, "viewer")
    assert error_codes(act(gql, viewer, "defiSupply", "WETH", "1")) == ["FORBIDDEN"]
    assert gql.data(POSITION, {"c": "embedded"}, key=viewer)["defiPosition"]["collateralValue"] == "3000"


def test_a_price_drop_makes_the_position_liquidatable_by_another_account(
        gql, runtime, tenant, trader, embedded, pool):
    assert "errors" not in act(gql, trader, "defiSupply", "WETH", "2")
    assert "errors" not in act(gql, trader, "defiBorrow", "USDC", "3600")  # HF 6000*0.8/3600 = 1.333
    address = runtime.defi_keys.address(tenant.id, embedded, create=False)
    p = gql.data(POSITION, {"c": "embedded"}, key=trader)["defiPosition"]
    liq = Decimal(p["liquidationPrice"])
    assert liq == Decimal(3600) / (2 * Decimal("0.8"))  # 2250 USD per WETH

    w3, owner = embedded.web3, faucet_account(embedded)
    liquidator = w3.eth.accounts[7]
    weth, usdc = token(runtime, embedded, "WETH"), token(runtime, embedded, "USDC")
    usdc.functions.mint(liquidator, 10**12).transact({"from": owner})
    usdc.functions.approve(pool.address, 2**256 - 1).transact({"from": liquidator})
    original = pool.functions.price(weth.address).call()
    try:
        # Just above the liquidation price: healthy, and a liquidation reverts.
        pool.functions.set_price(weth.address, scaled(liq) + 10**16).transact({"from": owner})
        assert Decimal(gql.data(POSITION, {"c": "embedded"}, key=trader)["defiPosition"]["healthFactor"]) >= 1
        with pytest.raises(Exception, match="healthy"):
            pool.functions.liquidate(address, usdc.address, weth.address, 10**8).call({"from": liquidator})
        # Just below: under 1, and another account liquidates up to the close factor.
        pool.functions.set_price(weth.address, scaled(liq) - 10**16).transact({"from": owner})
        after_drop = gql.data(POSITION, {"c": "embedded"}, key=trader)["defiPosition"]
        assert Decimal(after_drop["healthFactor"]) < 1
        repay = 1800 * 10**6
        seized = pool.functions.liquidate(address, usdc.address, weth.address, repay).call(
            {"from": liquidator})
        before = weth.functions.balanceOf(liquidator).call()
        pool.functions.liquidate(address, usdc.address, weth.address, repay).transact({"from": liquidator})
        assert weth.functions.balanceOf(liquidator).call() - before == seized
        final = gql.data(POSITION, {"c": "embedded"}, key=trader)["defiPosition"]
        assert Decimal(final["debtValue"]) == Decimal(1800)
        assert Decimal(final["healthFactor"]) > Decimal(after_drop["healthFactor"])
    finally:
        pool.functions.set_price(weth.address, original).transact({"from": owner})


def test_another_tenant_never_sees_or_signs_for_the_position(gql, runtime, tenant, trader, embedded, pool):
    assert "errors" not in act(gql, trader, "defiSupply", "WETH", "1", idem="mine")
    a_address = runtime.defi_keys.address(tenant.id, embedded, create=False)
    other = onboard(runtime)
    b = other.key
    # B has no account yet: its position is not found, and A's address is not found either.
    assert error_codes(gql(POSITION, {"c": "embedded"}, key=b)) == ["DEFI_ACCOUNT_NOT_FOUND"]
    assert error_codes(gql(POSITION, {"c": "embedded", "a": a_address}, key=b)) == ["DEFI_ACCOUNT_NOT_FOUND"]
    # B's actions are signed with B's own key, never A's; A's position does not move.
    before = pool.functions.positions(a_address).call()
    mine = act(gql, b, "defiSupply", "WETH", "1", idem="mine")["data"]["defiSupply"]
    assert mine["account"] != a_address
    assert error_codes(act(gql, b, "defiWithdraw", "WETH", "2")) == ["DEFI_INSUFFICIENT_BALANCE"]
    assert pool.functions.positions(a_address).call() == before
    assert error_codes(gql(POSITION, {"c": "embedded", "a": a_address}, key=b)) == ["DEFI_ACCOUNT_NOT_FOUND"]
    # The list of actions is the tenant's own.
    listed = gql.data("{ defiLendingActions(first: 50) { edges { node { id account } } } }", key=b)
    assert [e["node"]["account"] for e in listed["defiLendingActions"]["edges"]] == [mine["account"]]
