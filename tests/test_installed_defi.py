"""A tenant's installed DeFi protocol joins its pool book: its pools are listed and refreshed in
the plugin's sandboxed worker (which reads the chain only through the gateway's read-only
JSON-RPC), priced in the tenant's quotes and routes beside the built-ins' pools, and swapped
through with the tenant's key, the swap call checked to go to the quoted pool. Another tenant
sees none of it; a broken protocol costs only its own pools."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.defi.deploy import bind, deploy, faucet_account, transact
from gateway.errors import DomainError
from gateway.marketplace.sandbox.asks import answerer
from tests.support import PluginVendor, error_codes, install_plugin, onboard, unique

AMM_CODE = '''
from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction

from plugins.sdk import DefiCall, DefiPool, DefiQuoteRefused, PluginContext, hookimpl

ABI = [
    {"type": "function", "name": "token0", "stateMutability": "view", "inputs": [],
     "outputs": [{"name": "", "type": "address"}]},
    {"type": "function", "name": "token1", "stateMutability": "view", "inputs": [],
     "outputs": [{"name": "", "type": "address"}]},
    {"type": "function", "name": "get_reserves", "stateMutability": "view", "inputs": [],
     "outputs": [{"name": "", "type": "uint256"}, {"name": "", "type": "uint256"}]},
    {"type": "function", "name": "get_amount_out", "stateMutability": "view",
     "inputs": [{"name": "token_in", "type": "address"}, {"name": "amount_in", "type": "uint256"}],
     "outputs": [{"name": "", "type": "uint256"}]},
    {"type": "function", "name": "swap", "stateMutability": "nonpayable",
     "inputs": [{"name": "token_in", "type": "address"}, {"name": "amount_in", "type": "uint256"},
                {"name": "min_out", "type": "uint256"}, {"name": "to", "type": "address"},
                {"name": "deadline", "type": "uint256"}],
     "outputs": [{"name": "", "type": "uint256"}]},
]


@dataclass(frozen=True)
class Reserves:  # the protocol's own state object: it stays in the worker
    r0: int
    r1: int


class ZetaAmm:
    name = "zeta-amm"

    def __init__(self, pools, mode):
        self._pools = pools
        self._mode = mode

    def _contract(self, chain, address):
        return chain.web3.eth.contract(address=chain.web3.to_checksum_address(address), abi=ABI)

    def pools(self, chain):
        if self._mode == "broken":
            raise RuntimeError("pool registry unreachable")
        out = []
        for address in self._pools.get(str(chain.chain_id), []):
            c = self._contract(chain, address)
            r0, r1 = c.functions.get_reserves().call()
            out.append(DefiPool(protocol="zeta-amm", address=c.address,
                                tokens=(c.functions.token0().call(), c.functions.token1().call()),
                                fee=Fraction(3, 1000), state=Reserves(r0, r1), gas_per_swap=90_000,
                                block=chain.web3.eth.block_number))
        return out

    def refresh(self, chain, pool):
        r0, r1 = self._contract(chain, pool.address).functions.get_reserves().call()
        return replace(pool, state=Reserves(r0, r1), block=chain.web3.eth.block_number)

    def _sides(self, pool, token_in, token_out):
        t0, t1 = (t.lower() for t in pool.tokens)
        if (token_in.lower(), token_out.lower()) == (t0, t1):
            return pool.state.r0, pool.state.r1
        if (token_in.lower(), token_out.lower()) == (t1, t0):
            return pool.state.r1, pool.state.r0
        raise DefiQuoteRefused("INSUFFICIENT_LIQUIDITY", "not this pair")

    def quote(self, pool, token_in, token_out, amount_in):
        r_in, r_out = self._sides(pool, token_in, token_out)
        if amount_in > r_in:
            raise DefiQuoteRefused("INSUFFICIENT_LIQUIDITY", "more than the reserve")
        with_fee = amount_in * 997
        return with_fee * r_out // (r_in * 1000 + with_fee)

    def mid_price(self, pool, token_in, token_out):
        r_in, r_out = self._sides(pool, token_in, token_out)
        return Fraction(r_out, r_in)

    def onchain_quote(self, chain, pool, token_in, token_out, amount_in):
        return int(self._contract(chain, pool.address).functions.get_amount_out(token_in, amount_in).call())

    def swap_call(self, chain, pool, token_in, token_out, amount_in, min_out, recipient, deadline):
        data = self._contract(chain, pool.address).encode_abi(
            "swap", args=[token_in, amount_in, min_out, recipient, deadline])
        if self._mode == "thief":  # sends the tenant's approval to somebody else
            return DefiCall(to=pool.address, data=data, spender="0x" + "11" * 20)
        return DefiCall(to=pool.address, data=data, spender=pool.address)


@hookimpl
def alphintra_defi_protocols(context: PluginContext) -> list:
    return [ZetaAmm(dict(context.config.get("pools") or {}), str(context.config.get("mode", "")))]
'''

AMM_ID = "zeta.zeta-amm"
MANIFEST = {
    "id": AMM_ID, "name": "Zeta AMM", "vendor": "Zeta", "version": "1.0.0",
    "gateway": ">=0.1,<1.0", "category": "analytics", "entry_point": "zeta_amm.plugin",
    "hooks": ["alphintra_defi_protocols"], "capabilities": [],
    "config_schema": {"type": "object", "properties": {"pools": {"type": "object"},
                                                       "mode": {"type": "string"}}},
    "pricing": {"model": "free"}, "licence": "MIT",
}
QUOTE = """query($i: String!, $o: String!, $a: String!) {
  defiQuote(chain: "embedded", tokenIn: $i, tokenOut: $o, amountIn: $a) {
    amountOutRaw route { path { symbol } hops { pool protocol amountOutRaw } } } }"""
POOLS = """{ defiPools(chain: "embedded") { address protocol plugin tokens { symbol } } }"""
SWAP = """mutation($i: DefiSwapInput!) { defiSwap(input: $i) {
  status amountOut quotedOut errorCode tokenOut { symbol } } }"""
OPEN = """mutation { defiOpenAccount(chain: "embedded") { address } }"""
ACCOUNT = """{ defiAccount(chain: "embedded") { balances { token { symbol } raw } } }"""
CONFIGURE = 'mutation($c: JSON!) { configurePlugin(pluginId: "zeta.zeta-amm", config: $c) { id } }'


@pytest.fixture(scope="module")
def zeta(runtime: Any, gql: Any) -> Iterator[dict[str, Any]]:
    """ZETA, a token only the installed protocol's pool trades (ZETA/USDC on the embedded chain)."""
    chain = runtime.chains.get("embedded")
    world = runtime.defi_world.ensure(chain)
    usdc = world.tokens["USDC"]
    owner = faucet_account(chain)
    token = deploy(chain, "Token", "Zeta Token", "ZETA", 18)
    pool = deploy(chain, "ConstantProductPool", token, usdc.address)
    raw_zeta, raw_usdc = 100_000 * 10**18, 200_000 * 10**6  # 1 ZETA = 2 USDC
    for address, raw in ((token, raw_zeta), (usdc.address, raw_usdc)):
        contract = bind(chain, "Token", address)
        transact(chain, contract.functions.mint(owner, raw), owner)
        transact(chain, contract.functions.approve(pool, raw), owner)
    transact(chain, bind(chain, "ConstantProductPool", pool).functions.add_liquidity(
        raw_zeta, raw_usdc, 0, owner), owner)
    PluginVendor(runtime, "Zeta").publish_code(AMM_CODE, MANIFEST, "COMMUNITY")
    a, b = onboard(runtime), onboard(runtime)
    config = {"pools": {str(chain.chain_id): [pool]}}
    body = install_plugin(gql, a.key, AMM_ID, config)
    assert "errors" not in body, body
    yield {"a": a, "b": b, "pool": pool, "token": token, "config": config}
    # its worker stops: later tests' runtimes do not start it again
    gql.data(f'mutation {{ uninstallPlugin(pluginId: "{AMM_ID}") {{ active }} }}', key=a.key)


def _quote(gql: Any, key: str, token_in: str, token_out: str, amount: str) -> dict[str, Any]:
    return gql(QUOTE, {"i": token_in, "o": token_out, "a": amount}, key=key)


def test_the_installed_pool_prices_the_tenants_quotes_and_routes(gql: Any, zeta: dict[str, Any]) -> None:
    a, b = zeta["a"], zeta["b"]
    pools = gql.data(POOLS, key=a.key)["defiPools"]
    mine = [p for p in pools if p["address"].lower() == zeta["pool"].lower()]
    assert mine and mine[0]["protocol"] == "zeta-amm" and mine[0]["plugin"] == AMM_ID
    assert sorted(t["symbol"] for t in mine[0]["tokens"]) == ["USDC", "ZETA"]
    assert len(pools) > 1  # the built-ins' pools are still there

    body = _quote(gql, a.key, "USDC", "ZETA", "100")
    assert "errors" not in body, body
    direct = body["data"]["defiQuote"]
    with_fee = 100 * 10**6 * 997
    expected = with_fee * 100_000 * 10**18 // (200_000 * 10**6 * 1000 + with_fee)
    assert int(direct["amountOutRaw"]) == expected  # the plugin's own pricing, through the sandbox
    assert direct["route"]["hops"][0]["pool"].lower() == zeta["pool"].lower()

    # a two-hop route through a built-in pool and the installed one
    routed = _quote(gql, a.key, "WETH", "ZETA", "1")["data"]["defiQuote"]
    assert [s["symbol"] for s in routed["route"]["path"]] == ["WETH", "USDC", "ZETA"]
    assert [h["protocol"] for h in routed["route"]["hops"]] == ["cpmm", "zeta-amm"]

    # tenant B did not install it: no such token, no such pool
    assert error_codes(_quote(gql, b.key, "USDC", "ZETA", "100")) == ["DEFI_TOKEN_UNKNOWN"]
    assert all(p["address"].lower() != zeta["pool"].lower()
               for p in gql.data(POOLS, key=b.key)["defiPools"])


def test_a_swap_goes_through_the_installed_pool_with_the_tenants_key(gql: Any, zeta: dict[str, Any]) -> None:
    a = zeta["a"]
    gql.data(OPEN, key=a.key)
    swap = gql.data(SWAP, {"i": {"chain": "embedded", "tokenIn": "USDC", "tokenOut": "ZETA", "amountIn": "50",
                                 "slippageBps": 50, "idempotencyKey": unique("zeta")}}, key=a.key)["defiSwap"]
    assert swap["status"] == "EXECUTED", swap
    balances = {b["token"]["symbol"]: int(b["raw"])
                for b in gql.data(ACCOUNT, key=a.key)["defiAccount"]["balances"]}
    paid = Decimal(balances["ZETA"]).scaleb(-18)
    assert paid == Decimal(swap["amountOut"]) == Decimal(swap["quotedOut"]) > 0  # quoted, then paid

    # the pool's state moved: the next quote is read at the new block, through the worker
    after = int(_quote(gql, a.key, "USDC", "ZETA", "100")["data"]["defiQuote"]["amountOutRaw"])
    with_fee = 100 * 10**6 * 997
    before = with_fee * 100_000 * 10**18 // (200_000 * 10**6 * 1000 + with_fee)
    assert after < before


def test_quotes_go_on_after_the_protocols_worker_stops(gql: Any, runtime: Any, zeta: dict[str, Any]) -> None:
    """Pool states live in the worker: after it idle-stops, its handles name nothing, and the
    pools are listed again on the next quote instead of failing it."""
    a = zeta["a"]
    first = _quote(gql, a.key, "USDC", "ZETA", "10")["data"]["defiQuote"]
    stopped = 0
    for managed in runtime.marketplace.sandbox.workers():
        if managed.plugin_id == AMM_ID and managed.spec.tenant_id == a.id and managed.worker is not None:
            managed.idle_stop()
            stopped += 1
    assert stopped == 1
    again = _quote(gql, a.key, "USDC", "ZETA", "10")
    assert "errors" not in again, again
    assert again["data"]["defiQuote"]["amountOutRaw"] == first["amountOutRaw"]
    assert again["data"]["defiQuote"]["route"]["hops"][0]["protocol"] == "zeta-amm"


def test_a_swap_call_that_approves_another_spender_is_refused(gql: Any, zeta: dict[str, Any]) -> None:
    a = zeta["a"]
    gql.data(CONFIGURE, {"c": {**zeta["config"], "mode": "thief"}}, key=a.key)
    try:
        gql.data(OPEN, key=a.key)
        body = gql(SWAP, {"i": {"chain": "embedded", "tokenIn": "USDC", "tokenOut": "ZETA", "amountIn": "5",
                                "slippageBps": 50, "idempotencyKey": unique("thief")}}, key=a.key)
        assert error_codes(body) == ["PLUGIN_FAILED"], body
        assert body["errors"][0]["extensions"]["plugin"] == AMM_ID
        assert "approve" in body["errors"][0]["message"]
    finally:
        gql.data(CONFIGURE, {"c": zeta["config"]}, key=a.key)


def test_a_broken_protocol_loses_only_its_own_pools(gql: Any, zeta: dict[str, Any]) -> None:
    a = zeta["a"]
    gql.data(CONFIGURE, {"c": {**zeta["config"], "mode": "broken"}}, key=a.key)
    try:
        pools = gql.data(POOLS, key=a.key)["defiPools"]
        assert pools and all(p["address"].lower() != zeta["pool"].lower() for p in pools)
        q = _quote(gql, a.key, "WETH", "USDC", "1")["data"]["defiQuote"]  # built-ins still quote
        assert int(q["amountOutRaw"]) > 0
    finally:
        gql.data(CONFIGURE, {"c": zeta["config"]}, key=a.key)
    assert any(p["address"].lower() == zeta["pool"].lower() for p in gql.data(POOLS, key=a.key)["defiPools"])


def test_a_worker_may_only_read_public_chain_state(runtime: Any) -> None:
    """The gateway's answer to a worker's chain asks: reads on a chain it reaches, for a DeFi
    protocol only; accounts, signing and sending are refused."""
    chain = runtime.chains.get("embedded")
    answer = answerer(None, runtime.marketplace.egress, runtime.chains)
    protocol = SimpleNamespace(spec=SimpleNamespace(hooks=("alphintra_defi_protocols",)))
    other = SimpleNamespace(spec=SimpleNamespace(hooks=("alphintra_market_data_sources",)))
    block = answer(protocol, "chain", {"chain_id": chain.chain_id, "method": "eth_blockNumber", "params": []})
    assert block == chain.web3.eth.block_number
    owner = faucet_account(chain)
    for method, params in (("eth_accounts", []), ("eth_sign", [owner, "0x00"]),
                           ("eth_sendTransaction", [{"from": owner, "to": owner, "value": 1}]),
                           ("personal_unlockAccount", [owner, ""])):
        with pytest.raises(LookupError):
            answer(protocol, "chain", {"chain_id": chain.chain_id, "method": method, "params": params})
    with pytest.raises(LookupError):  # a data source has no business on a chain
        answer(other, "chain", {"chain_id": chain.chain_id, "method": "eth_blockNumber", "params": []})
    with pytest.raises(DomainError):  # only chains this gateway reaches
        answer(protocol, "chain", {"chain_id": 1, "method": "eth_blockNumber", "params": []})
