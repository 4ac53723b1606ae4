"""The lending pool contract on a real EVM (eth-tester/py-evm): its views against the off-chain
maths, the collateral checks, and liquidation on each side of the threshold."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from eth_tester.exceptions import TransactionFailed
from web3 import EthereumTesterProvider, Web3

from gateway.defi import lending_maths as lm
from gateway.defi.compile import compile_contract
from gateway.defi.lending_deploy import LendingMarket, deploy_lending_market, scaled


@pytest.fixture(scope="module")
def chain() -> tuple[Any, LendingMarket, dict[str, Any]]:
    w3 = Web3(EthereumTesterProvider())
    owner = w3.eth.accounts[0]
    token_c = compile_contract("Token")
    tokens: dict[str, Any] = {}
    for symbol, decimals in (("USDC", 6), ("WETH", 18), ("WBTC", 8)):
        tx = w3.eth.contract(abi=token_c.abi, bytecode=token_c.bytecode).constructor(
            symbol, symbol, decimals).transact({"from": owner})
        address = w3.eth.wait_for_transaction_receipt(tx)["contractAddress"]
        tokens[symbol] = w3.eth.contract(address=address, abi=token_c.abi)
    market = deploy_lending_market(
        w3, owner, {s: (t.address, t.functions.decimals().call()) for s, t in tokens.items()})
    return w3, market, tokens


def pool_of(w3: Any, market: LendingMarket) -> Any:
    return w3.eth.contract(address=market.address, abi=compile_contract("lending_pool").abi)


def state(w3: Any, market: LendingMarket, account: str) -> list[lm.AssetState]:
    pool = pool_of(w3, market)
    out = []
    for a in market.assets.values():
        f = pool.functions
        out.append(lm.AssetState(a.address, a.symbol, f.decimals(a.address).call(),
                                 f.price(a.address).call(), f.collateral_factor(a.address).call(),
                                 f.liquidation_threshold(a.address).call(),
                                 f.supplied(account, a.address).call(),
                                 f.borrowed(account, a.address).call()))
    return out


def fund(w3: Any, market: LendingMarket, token: Any, account: str, amount: int) -> None:
    token.functions.mint(account, amount).transact({"from": market.owner})
    token.functions.approve(market.address, 2**256 - 1).transact({"from": account})


def as_contract(hf: int | None) -> int:
    return 2**256 - 1 if hf is None else hf


def test_views_equal_the_off_chain_maths(chain: Any) -> None:
    w3, market, tokens = chain
    pool = pool_of(w3, market)
    user = w3.eth.accounts[1]
    fund(w3, market, tokens["WETH"], user, 3 * 10**18)
    fund(w3, market, tokens["WBTC"], user, 10**8)
    fund(w3, market, tokens["USDC"], user, 0)
    pool.functions.supply(tokens["WETH"].address, 3 * 10**18 - 12345).transact({"from": user})
    pool.functions.supply(tokens["WBTC"].address, 7_654_321).transact({"from": user})
    pool.functions.borrow(tokens["USDC"].address, 3_141_592_653).transact({"from": user})
    pool.functions.borrow(tokens["WETH"].address, 10**17 + 7).transact({"from": user})

    assets = state(w3, market, user)
    t = lm.totals(assets)
    assert tuple(pool.functions.account_data(user).call()) == (
        t.collateral, t.debt, t.capacity, as_contract(t.health_factor))
    assert pool.functions.health_factor(user).call() == t.health_factor
    for symbol, dc, dd in (("USDC", 0, 10**9), ("WETH", -10**18, 0), ("WBTC", 1234, -0),
                           ("WETH", 0, -10**17)):
        address = tokens[symbol].address
        after = lm.totals(lm.moved(assets, address, dc, dd)).health_factor
        assert pool.functions.health_factor_after(user, address, dc, dd).call() == as_contract(after)


def test_borrow_beyond_the_collateral_factor_reverts_and_changes_nothing(chain: Any) -> None:
    w3, market, tokens = chain
    pool = pool_of(w3, market)
    user = w3.eth.accounts[2]
    fund(w3, market, tokens["WETH"], user, 10**18)
    pool.functions.supply(tokens["WETH"].address, 10**18).transact({"from": user})
    # capacity 3000 * 0.75 = 2250 USDC
    usdc = tokens["USDC"]
    before = usdc.functions.balanceOf(user).call()
    with pytest.raises(TransactionFailed, match="insufficient collateral"):
        pool.functions.borrow(usdc.address, 2250 * 10**6 + 1).transact({"from": user})
    assert usdc.functions.balanceOf(user).call() == before
    pool.functions.borrow(usdc.address, 2250 * 10**6).transact({"from": user})
    with pytest.raises(TransactionFailed, match="insufficient collateral"):
        pool.functions.withdraw(tokens["WETH"].address, 1).transact({"from": user})
    with pytest.raises(TransactionFailed, match="amount"):
        pool.functions.supply(tokens["WETH"].address, 0).transact({"from": user})


def test_liquidation_across_the_threshold(chain: Any) -> None:
    w3, market, tokens = chain
    pool = pool_of(w3, market)
    weth, usdc = tokens["WETH"], tokens["USDC"]
    borrower, liquidator = w3.eth.accounts[3], w3.eth.accounts[4]
    fund(w3, market, weth, borrower, 10**18)
    fund(w3, market, usdc, liquidator, 10**12)
    pool.functions.supply(weth.address, 10**18).transact({"from": borrower})
    pool.functions.borrow(usdc.address, 1200 * 10**6).transact({"from": borrower})

    found = lm.liquidation_price(state(w3, market, borrower))
    assert found is not None
    collateral, p_liq = found
    assert collateral.symbol == "WETH"
    assert p_liq == Decimal(1200) / Decimal("0.8")  # 1200 USDC debt over 0.8 of one WETH

    owner = market.owner
    # Just above the liquidation price the position is safe and liquidation reverts.
    pool.functions.set_price(weth.address, scaled(p_liq) + 10**15).transact({"from": owner})
    assert pool.functions.health_factor(borrower).call() >= 10**18
    with pytest.raises(TransactionFailed, match="healthy"):
        pool.functions.liquidate(borrower, usdc.address, weth.address, 100 * 10**6).transact(
            {"from": liquidator})

    # Just below, the health factor is under 1 and another account may liquidate.
    pool.functions.set_price(weth.address, scaled(p_liq) - 10**15).transact({"from": owner})
    assert pool.functions.health_factor(borrower).call() < 10**18
    with pytest.raises(TransactionFailed, match="close factor"):
        pool.functions.liquidate(borrower, usdc.address, weth.address, 600 * 10**6 + 1).transact(
            {"from": liquidator})
    price = pool.functions.price(weth.address).call()
    repay = 600 * 10**6
    expected_seized = (repay * 10**18 // 10**6) * (10**18 + 5 * 10**16) // 10**18 * 10**18 // price
    weth_before = weth.functions.balanceOf(liquidator).call()
    usdc_before = usdc.functions.balanceOf(liquidator).call()
    pool.functions.liquidate(borrower, usdc.address, weth.address, repay).transact({"from": liquidator})
    assert weth.functions.balanceOf(liquidator).call() - weth_before == expected_seized
    assert usdc_before - usdc.functions.balanceOf(liquidator).call() == repay
    assert pool.functions.borrowed(borrower, usdc.address).call() == 600 * 10**6
    assert pool.functions.supplied(borrower, weth.address).call() == 10**18 - expected_seized
    logs = pool.events.Liquidate().get_logs(from_block=0)
    assert logs[-1]["args"]["seized"] == expected_seized
    assert logs[-1]["args"]["liquidator"] == liquidator


def test_only_the_owner_sets_prices(chain: Any) -> None:
    w3, market, tokens = chain
    pool = pool_of(w3, market)
    with pytest.raises(TransactionFailed, match="owner"):
        pool.functions.set_price(tokens["WETH"].address, 1).transact({"from": w3.eth.accounts[5]})
