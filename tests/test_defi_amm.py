"""The AMM contracts on a real EVM (eth-tester/py-evm) against the protocols' off-chain maths:
equal to the unit, for many amounts, both pool kinds, and the reference vector; the contracts'
own guards (minimum out, deadline) and liquidity; routing picks the better of two paths."""

from __future__ import annotations

import time
from typing import Any

import pytest
from eth_tester.exceptions import TransactionFailed
from web3.exceptions import ContractLogicError
from web3.logs import DISCARD

from gateway.defi.chain import EMBEDDED, EMBEDDED_CHAIN_ID, Chain, Chains, ChainSpec
from gateway.defi.deploy import bind, deploy, faucet_account
from gateway.defi.pools import PoolBook
from gateway.defi.quotes import candidate_paths, price_path, quote
from gateway.defi.world import DemoWorld
from plugins.builtin import BUILTINS
from plugins.builtin.defi_cpmm import ConstantProductProtocol, amount_out
from plugins.builtin.defi_stableswap import StableSwapProtocol, get_dy
from plugins.host import PluginHost
from plugins.sdk import DefiChainView, DefiQuoteRefused

REVERTS = (TransactionFailed, ContractLogicError)
AMOUNTS = [1, 7, 999, 10_000, 123_457, 10**6, 3 * 10**7 + 11, 10**9, 10**12 + 5, 10**15,
           10**18, 7 * 10**19 + 3, 10**21, 10**23]


@pytest.fixture(scope="module")
def chain() -> Chain:
    return Chains([ChainSpec(EMBEDDED_CHAIN_ID, EMBEDDED, EMBEDDED)]).get(EMBEDDED)


def token(chain: Chain, symbol: str, decimals: int) -> Any:
    return bind(chain, "Token", deploy(chain, "Token", symbol, symbol, decimals))


def far() -> int:
    return int(time.time()) + 3_600


def cpmm_pool(chain: Chain, reserve0: int, reserve1: int, d0: int = 18, d1: int = 18
              ) -> tuple[Any, Any, Any]:
    owner = faucet_account(chain)
    t0, t1 = token(chain, "A", d0), token(chain, "B", d1)
    pool = bind(chain, "ConstantProductPool",
                deploy(chain, "ConstantProductPool", t0.address, t1.address))
    for t, amount in ((t0, reserve0), (t1, reserve1)):
        t.functions.mint(owner, amount).transact({"from": owner})
        t.functions.approve(pool.address, amount).transact({"from": owner})
    pool.functions.add_liquidity(reserve0, reserve1, 0, owner).transact({"from": owner})
    return pool, t0, t1


def stable_pool(chain: Chain, balance0: int, balance1: int, d0: int, d1: int, amp: int,
                fee: int = 4_000_000) -> tuple[Any, Any, Any]:
    owner = faucet_account(chain)
    t0, t1 = token(chain, "S0", d0), token(chain, "S1", d1)
    pool = bind(chain, "StableSwapPool", deploy(chain, "StableSwapPool", [t0.address, t1.address],
                                                [d0, d1], amp, fee))
    for t, amount in ((t0, balance0), (t1, balance1)):
        t.functions.mint(owner, amount).transact({"from": owner})
        t.functions.approve(pool.address, amount).transact({"from": owner})
    pool.functions.add_liquidity([balance0, balance1], 0).transact({"from": owner})
    return pool, t0, t1


def view(chain: Chain, kind: str, address: str) -> DefiChainView:
    return DefiChainView(chain.chain_id, chain.name, chain.web3, {kind: [address]})


def test_reference_vector(chain: Chain) -> None:
    assert amount_out(10_000, 45_851_931_234, 125_682_033_533) == 27_328
    pool, t0, t1 = cpmm_pool(chain, 45_851_931_234, 125_682_033_533)
    assert pool.functions.get_amount_out(t0.address, 10_000).call() == 27_328
    protocol = ConstantProductProtocol()
    (snapshot,) = protocol.pools(view(chain, "cpmm", pool.address))
    assert protocol.quote(snapshot, t0.address, t1.address, 10_000) == 27_328
    # and the swap itself pays exactly that
    owner = faucet_account(chain)
    t0.functions.mint(owner, 10_000).transact({"from": owner})
    t0.functions.approve(pool.address, 10_000).transact({"from": owner})
    before = t1.functions.balanceOf(owner).call()
    pool.functions.swap(t0.address, 10_000, 27_328, owner, far()).transact({"from": owner})
    assert t1.functions.balanceOf(owner).call() - before == 27_328
    assert pool.functions.get_reserves().call() == [45_851_941_234, 125_682_033_533 - 27_328]


@pytest.mark.parametrize("reserves", [(45_851_931_234, 125_682_033_533),
                                      (2_000 * 10**18, 6_000_000 * 10**6),
                                      (10**8 * 5, 300_000 * 10**6), (997, 10**30)])
def test_cpmm_quotes_equal_the_contract_for_many_amounts(chain: Chain, reserves: tuple[int, int]
                                                         ) -> None:
    pool, t0, t1 = cpmm_pool(chain, *reserves)
    protocol = ConstantProductProtocol()
    (snapshot,) = protocol.pools(view(chain, "cpmm", pool.address))
    v = view(chain, "cpmm", pool.address)
    checked = 0
    for a, b in ((t0, t1), (t1, t0)):
        for amount in AMOUNTS:
            on_chain = pool.functions.get_amount_out(a.address, amount).call()
            r_in, r_out = (reserves if a is t0 else reserves[::-1])
            assert amount_out(amount, r_in, r_out) == on_chain
            assert protocol.onchain_quote(v, snapshot, a.address, b.address, amount) == on_chain
            if 0 < on_chain < r_out and amount <= r_in:
                assert protocol.quote(snapshot, a.address, b.address, amount) == on_chain
                checked += 1
            else:
                with pytest.raises(DefiQuoteRefused):
                    protocol.quote(snapshot, a.address, b.address, amount)
    assert checked >= 2  # the lopsided pool fills few of the amounts


@pytest.mark.parametrize("setup", [
    (5_000_000 * 10**6, 5_000_000 * 10**6, 6, 6, 200),
    (2_000_000 * 10**18, 2_000_000 * 10**6, 18, 6, 100),
    (3_000_000 * 10**18, 1_000_000 * 10**8, 18, 8, 50),  # imbalanced, different decimals
    (10**12, 10**12, 6, 6, 1),
])
def test_stableswap_quotes_equal_the_contract_for_many_amounts(chain: Chain, setup: tuple) -> None:
    b0, b1, d0, d1, amp = setup
    pool, t0, t1 = stable_pool(chain, b0, b1, d0, d1, amp)
    protocol = StableSwapProtocol()
    v = view(chain, "stableswap", pool.address)
    (snapshot,) = protocol.pools(v)
    checked = 0
    for (i, j), (a, b) in (((0, 1), (t0, t1)), ((1, 0), (t1, t0))):
        for amount in AMOUNTS:
            try:
                on_chain = pool.functions.get_dy(i, j, amount).call()
            except REVERTS:
                with pytest.raises(DefiQuoteRefused):
                    protocol.quote(snapshot, a.address, b.address, amount)
                continue
            assert get_dy(snapshot.state, i, j, amount) == on_chain
            if on_chain > 0 and amount <= snapshot.state.balances[i]:
                assert protocol.quote(snapshot, a.address, b.address, amount) == on_chain
                checked += 1
            else:
                with pytest.raises(DefiQuoteRefused):
                    protocol.quote(snapshot, a.address, b.address, amount)
    assert checked >= 10


def test_stableswap_exchange_pays_get_dy_and_refuses_under_min_dy(chain: Chain) -> None:
    pool, t0, t1 = stable_pool(chain, 10**12, 10**12, 6, 6, 100)
    owner = faucet_account(chain)
    dx = 25_000 * 10**6
    t0.functions.mint(owner, 2 * dx).transact({"from": owner})
    t0.functions.approve(pool.address, 2 * dx).transact({"from": owner})
    expected = pool.functions.get_dy(0, 1, dx).call()
    with pytest.raises(REVERTS):
        pool.functions.exchange(0, 1, dx, expected + 1, far()).transact({"from": owner})
    with pytest.raises(REVERTS):
        pool.functions.exchange(0, 1, dx, 0, int(time.time()) - 10).transact({"from": owner})
    before = t1.functions.balanceOf(owner).call()
    pool.functions.exchange(0, 1, dx, expected, far()).transact({"from": owner})
    assert t1.functions.balanceOf(owner).call() - before == expected
    # near 1:1 for a balanced pool (fee 4 bp), far better than constant product at this depth
    assert 0.999 * dx < expected < dx
    assert expected > amount_out(dx, 10**12, 10**12)


def test_cpmm_swap_guards_and_liquidity(chain: Chain) -> None:
    pool, t0, _t1 = cpmm_pool(chain, 10**21, 3 * 10**24)
    owner = faucet_account(chain)
    t0.functions.mint(owner, 10**19).transact({"from": owner})
    t0.functions.approve(pool.address, 10**19).transact({"from": owner})
    out = pool.functions.get_amount_out(t0.address, 10**18).call()
    reserves = pool.functions.get_reserves().call()
    with pytest.raises(REVERTS):  # minimum out
        pool.functions.swap(t0.address, 10**18, out + 1, owner, far()).transact({"from": owner})
    with pytest.raises(REVERTS):  # deadline passed
        pool.functions.swap(t0.address, 10**18, 0, owner, int(time.time()) - 1).transact({"from": owner})
    assert pool.functions.get_reserves().call() == reserves
    tx = pool.functions.swap(t0.address, 10**18, out, owner, far()).transact({"from": owner})
    receipt = chain.web3.eth.wait_for_transaction_receipt(tx)
    swap_event = pool.events.Swap().process_receipt(receipt, errors=DISCARD)[0]["args"]
    sync_event = pool.events.Sync().process_receipt(receipt, errors=DISCARD)[0]["args"]
    assert swap_event["amount_out"] == out
    assert [sync_event["reserve0"], sync_event["reserve1"]] == pool.functions.get_reserves().call()
    # remove half the liquidity: proportional amounts, Burn emitted
    lp = pool.functions.balanceOf(owner).call()
    r0, r1 = pool.functions.get_reserves().call()
    supply = pool.functions.totalSupply().call()
    tx = pool.functions.remove_liquidity(lp // 2, 0, 0, owner).transact({"from": owner})
    burn = pool.events.Burn().process_receipt(chain.web3.eth.wait_for_transaction_receipt(tx),
                                              errors=DISCARD)[0]
    assert burn["args"]["amount0"] == (lp // 2) * r0 // supply
    assert burn["args"]["amount1"] == (lp // 2) * r1 // supply


@pytest.fixture(scope="module")
def world_book(chain: Chain) -> tuple[DemoWorld, PoolBook]:
    world = DemoWorld()
    return world, PoolBook(PluginHost(BUILTINS), world)


def test_world_is_deployed_once(chain: Chain, world_book: tuple[DemoWorld, PoolBook]) -> None:
    world, book = world_book
    first = world.ensure(chain)
    assert world.ensure(chain) is first
    market = book.market(chain)
    assert {t.symbol for t in market.tokens.all()} == {"USDC", "USDT", "DAI", "WETH", "WBTC"}
    assert {e.protocol.name for e in market.pools} == {"cpmm", "stableswap"}
    assert len(market.pools) == 8


def test_routing_picks_the_better_of_two_paths(chain: Chain, world_book: tuple[DemoWorld, PoolBook]
                                               ) -> None:
    _, book = world_book
    market = book.market(chain)
    wbtc, usdc = market.tokens.resolve("WBTC"), market.tokens.resolve("USDC")
    paths = candidate_paths(market, wbtc.address, usdc.address)
    direct = [p for p in paths if len(p) == 1]
    via_weth = [p for p in paths if len(p) == 2 and p[0][2].lower()
                == market.tokens.resolve("WETH").address.lower()]
    assert direct and via_weth
    for amount, winner in ((10**5, direct[0]), (2 * 10**8, via_weth[0])):
        q = quote(market, wbtc, usdc, amount)
        a, b = price_path(direct[0], amount), price_path(via_weth[0], amount)
        assert q.best.amount_out == max(a.amount_out, b.amount_out)
        assert [h.entry.pool.address for h in q.best.hops] == [e.pool.address for e, _, _ in winner]
        # every hop's off-chain amount equals the pool contract's own view, chained
        carried = amount
        for hop in q.best.hops:
            carried = hop.entry.protocol.onchain_quote(market.view, hop.entry.pool, hop.token_in,
                                                       hop.token_out, carried)
            assert carried == hop.amount_out
        assert carried == q.best.amount_out
        assert q.alternatives and all(r.amount_out <= q.best.amount_out for r in q.alternatives)
        assert q.best.gas_estimate > 21_000
        assert 0 <= q.best.price_impact < 1
    # the bigger trade moves the shallow direct pool harder
    assert quote(market, wbtc, usdc, 2 * 10**8).best.price_impact > \
        quote(market, wbtc, usdc, 10**5).best.price_impact


def test_quotes_follow_the_chain(chain: Chain, world_book: tuple[DemoWorld, PoolBook]) -> None:
    """A swap on chain moves the next quote (the book re-reads state at the new block)."""
    _world, book = world_book
    market = book.market(chain)
    weth, usdc = market.tokens.resolve("WETH"), market.tokens.resolve("USDC")
    before = quote(market, weth, usdc, 10**18).best
    pool = bind(chain, "ConstantProductPool", before.hops[0].entry.pool.address)
    owner = faucet_account(chain)
    weth_c = bind(chain, "Token", weth.address)
    weth_c.functions.mint(owner, 50 * 10**18).transact({"from": owner})
    weth_c.functions.approve(pool.address, 50 * 10**18).transact({"from": owner})
    pool.functions.swap(weth.address, 50 * 10**18, 0, owner, far()).transact({"from": owner})
    after_market = book.market(chain)
    assert after_market.block > market.block
    after = quote(after_market, weth, usdc, 10**18).best
    assert after.amount_out < before.amount_out
    # the moved pool's snapshot is the chain's new state; the route now avoids it
    moved = after_market.pool(pool.address)
    assert moved is not None
    assert moved.protocol.quote(moved.pool, weth.address, usdc.address, 10**18) == \
        pool.functions.get_amount_out(weth.address, 10**18).call()
    assert after.hops[0].entry.pool.address != pool.address
