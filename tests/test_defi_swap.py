"""defiSwap end to end on the embedded EVM: executed and recorded, a sandwich turned away (by
the simulation, and by the contract's minimum-out check), compliance refusals, bad input with
no transaction sent and no balance changed, and an RPC endpoint that is down."""

from __future__ import annotations

import socket
import time
from decimal import Decimal
from typing import Any

import pytest
from sqlmodel import select

from gateway.audit.models import AuditRecord
from gateway.defi.chain import EMBEDDED, EMBEDDED_CHAIN_ID, Chains, ChainSpec
from gateway.defi.deploy import bind, faucet_account
from gateway.defi.errors import ChainUnavailable, TransactionReverted
from gateway.defi.models import DefiSwap
from gateway.defi.pools import PoolBook, erc20
from gateway.defi.service import DefiMarkets
from gateway.defi.swaps import DefiSwaps, SwapRequest
from gateway.trading.models import ComplianceControlsRow
from tests.support import error_codes, onboard, unique

QUOTE = """query($c: String!, $i: String!, $o: String!, $a: String!) {
  defiQuote(chain: $c, tokenIn: $i, tokenOut: $o, amountIn: $a) {
    amountOut amountOutRaw priceImpact gasEstimate fees block
    route { path { symbol } hops { pool protocol amountOutRaw } }
    alternatives { amountOutRaw path { symbol } } } }"""
SWAP = """mutation($i: DefiSwapInput!) { defiSwap(input: $i) {
  id status amountIn amountOut quotedOut minOut txHashes account replayed errorCode
  tokenIn { symbol } tokenOut { symbol } } }"""
ACCOUNT = """query($c: String!) { defiAccount(chain: $c) { address nativeBalance
  balances { token { symbol } raw } } }"""


def swap_input(token_in: str = "WETH", token_out: str = "USDC", amount: str = "1", **more: Any
               ) -> dict[str, Any]:
    return {"chain": "embedded", "tokenIn": token_in, "tokenOut": token_out, "amountIn": amount,
            "slippageBps": 50, "idempotencyKey": unique("swap"), **more}


OPEN = """mutation($c: String!) { defiOpenAccount(chain: $c) { address } }"""


def balances(gql: Any, key: str) -> dict[str, Any]:
    gql.data(OPEN, {"c": "embedded"}, key=key)  # a read makes no key: open the account first
    account = gql.data(ACCOUNT, {"c": "embedded"}, key=key)["defiAccount"]
    return {"address": account["address"], "native": account["nativeBalance"],
            **{b["token"]["symbol"]: int(b["raw"]) for b in account["balances"]}}


def nonce(runtime: Any, address: str) -> int:
    return runtime.chains.get("embedded").web3.eth.get_transaction_count(address)


def swap_rows(runtime: Any, tenant_id: str) -> list[DefiSwap]:
    with runtime.db.tenant_session(tenant_id) as session:
        return list(session.exec(select(DefiSwap)))


def audit_kinds(runtime: Any, tenant_id: str) -> list[str]:
    with runtime.db.tenant_session(tenant_id) as session:
        return [r.kind for r in session.exec(select(AuditRecord).where(
            AuditRecord.kind.startswith("defi.swap")))]  # type: ignore[attr-defined]


def test_quote_equals_the_chain_and_the_swap_pays_it(gql: Any, runtime: Any, tenant: Any) -> None:
    before = balances(gql, tenant.key)
    assert before["WETH"] == 100 * 10**18 and before["USDC"] == 1_000_000 * 10**6
    q = gql.data(QUOTE, {"c": "embedded", "i": "WETH", "o": "USDC", "a": "1"},
                 key=tenant.key)["defiQuote"]
    assert q["route"]["path"][0]["symbol"] == "WETH" and q["route"]["path"][-1]["symbol"] == "USDC"
    # the quote equals the pools' own view functions, hop by hop
    chain = runtime.chains.get("embedded")
    market = runtime.defi.market("embedded")
    carried = 10**18
    token_in = market.tokens.resolve("WETH").address
    for hop, sym in zip(q["route"]["hops"], q["route"]["path"][1:], strict=True):
        entry = market.pool(hop["pool"])
        token_out = market.tokens.resolve(sym["symbol"]).address
        carried = entry.protocol.onchain_quote(market.view, entry.pool, token_in, token_out, carried)
        assert carried == int(hop["amountOutRaw"])
        token_in = token_out
    assert carried == int(q["amountOutRaw"])

    args = swap_input(expectedAmountOut=q["amountOut"])
    done = gql.data(SWAP, {"i": args}, key=tenant.key)["defiSwap"]
    assert done["status"] == "EXECUTED" and not done["replayed"]
    assert Decimal(done["amountOut"]) == Decimal(q["amountOut"])  # nothing moved in between
    assert Decimal(done["minOut"]) == (Decimal(q["amountOutRaw"]) * 9950 // 10000) / 10**6
    after = balances(gql, tenant.key)
    assert after["WETH"] == before["WETH"] - 10**18
    assert after["USDC"] == before["USDC"] + int(q["amountOutRaw"])
    assert done["account"] == after["address"]
    assert all(chain.web3.eth.get_transaction_receipt(h)["status"] == 1 for h in done["txHashes"])
    assert audit_kinds(runtime, tenant.id) == ["defi.swap"]
    # the same idempotency key answers the first outcome and sends nothing
    sent = nonce(runtime, after["address"])
    again = gql.data(SWAP, {"i": args}, key=tenant.key)["defiSwap"]
    assert again["id"] == done["id"] and again["replayed"]
    assert nonce(runtime, after["address"]) == sent
    assert balances(gql, tenant.key) == after
    assert error_codes(gql(SWAP, {"i": {**args, "amountIn": "2"}}, key=tenant.key)) == \
        ["IDEMPOTENCY_KEY_REUSED"]
    listed = gql.data("{ defiSwaps(first: 10) { edges { node { id status } } } }",
                      key=tenant.key)["defiSwaps"]["edges"]
    assert [e["node"]["id"] for e in listed] == [done["id"]]


def front_run(runtime: Any, pool_address: str, token_in: str, amount: int) -> None:
    """Another account (the faucet) swaps first, moving the pool's price."""
    chain = runtime.chains.get("embedded")
    attacker = faucet_account(chain)
    token = bind(chain, "Token", token_in)
    token.functions.mint(attacker, amount).transact({"from": attacker})
    token.functions.approve(pool_address, amount).transact({"from": attacker})
    market = runtime.defi.market("embedded")
    entry = market.pool(pool_address)
    other = next(t for t in entry.pool.tokens if t.lower() != token_in.lower())
    deadline = chain.web3.eth.get_block("latest")["timestamp"] + 600  # block time, not the wall's
    call = entry.protocol.swap_call(market.view, entry.pool, token_in, other, amount, 0, attacker,
                                    deadline)
    tx = chain.web3.eth.send_transaction({"from": attacker, "to": call.to, "data": call.data})
    assert chain.web3.eth.wait_for_transaction_receipt(tx)["status"] == 1


def test_sandwich_is_refused_by_the_simulation(gql: Any, runtime: Any, tenant: Any) -> None:
    before = balances(gql, tenant.key)
    q = gql.data(QUOTE, {"c": "embedded", "i": "WBTC", "o": "WETH", "a": "1"},
                 key=tenant.key)["defiQuote"]
    assert [h["protocol"] for h in q["route"]["hops"]] == ["cpmm"]
    wbtc = runtime.defi.market("embedded").tokens.resolve("WBTC").address
    # the attacker sells WBTC into the same pool first (and every other route is worse)
    front_run(runtime, q["route"]["hops"][0]["pool"], wbtc, 20 * 10**8)
    sent = nonce(runtime, before["address"])
    body = gql(SWAP, {"i": swap_input("WBTC", "WETH", "1", expectedAmountOut=q["amountOut"])},
               key=tenant.key)
    assert error_codes(body) == ["DEFI_SLIPPAGE_EXCEEDED"]
    assert nonce(runtime, before["address"]) == sent  # nothing was sent
    assert balances(gql, tenant.key) == before  # tokens and ETH alike
    (row,) = swap_rows(runtime, tenant.id)
    assert row.status == "REFUSED" and row.error_code == "DEFI_SLIPPAGE_EXCEEDED" and not row.tx_hashes
    assert audit_kinds(runtime, tenant.id) == ["defi.swap_refused"]


def test_sandwich_in_the_block_is_refused_by_the_minimum_out(gql: Any, runtime: Any, tenant: Any
                                                              ) -> None:
    """The victim's signed swap carries min_out from its quote; a front-runner mined first makes
    the pool contract revert it: no token changes hands (only the gas is spent)."""
    chain = runtime.chains.get("embedded")
    market = runtime.defi.market("embedded")
    weth = market.tokens.resolve("WETH")
    signer = runtime.defi_keys.signer(tenant.id, chain)
    q = runtime.defi.quote("embedded", "WETH", "USDC", "5")
    hop = q.best.hops[0]  # the first hop alone: WETH into its pool
    approve = erc20(chain, weth.address).functions.approve(hop.entry.pool.address, 5 * 10**18)
    signer.send({"to": approve.address, "data": approve._encode_transaction_data()})
    min_out = hop.amount_out * 9_950 // 10_000
    call = hop.entry.protocol.swap_call(market.view, hop.entry.pool, hop.token_in, hop.token_out,
                                        5 * 10**18, min_out, signer.address,
                                        chain.web3.eth.get_block("latest")["timestamp"] + 600)
    tokens_before = {t.symbol: erc20(chain, t.address).functions.balanceOf(signer.address).call()
                     for t in market.tokens.all()}
    front_run(runtime, hop.entry.pool.address, weth.address, 300 * 10**18)
    with pytest.raises(TransactionReverted):
        signer.send({"to": call.to, "data": call.data, "gas": 300_000})
    tokens_after = {t.symbol: erc20(chain, t.address).functions.balanceOf(signer.address).call()
                    for t in market.tokens.all()}
    assert tokens_after == tokens_before


def set_controls(runtime: Any, tenant_id: str, **values: Any) -> None:
    with runtime.db.tenant_transaction(tenant_id) as session:
        row = session.exec(select(ComplianceControlsRow)).first() or ComplianceControlsRow(
            tenant_id=tenant_id)
        for name, value in values.items():
            setattr(row, name, value)
        session.add(row)


def test_compliance_refuses_and_records(gql: Any, runtime: Any, tenant: Any) -> None:
    before = balances(gql, tenant.key)
    sent = nonce(runtime, before["address"])
    set_controls(runtime, tenant.id, kill_switch=True)
    killed = swap_input()
    assert error_codes(gql(SWAP, {"i": killed}, key=tenant.key)) == ["COMPLIANCE_KILL_SWITCH"]
    set_controls(runtime, tenant.id, kill_switch=False, restricted=["DEFI:wbtc"])
    # the same key answers the first outcome again, even with the switch now off
    assert error_codes(gql(SWAP, {"i": killed}, key=tenant.key)) == ["COMPLIANCE_KILL_SWITCH"]
    assert error_codes(gql(SWAP, {"i": swap_input("USDC", "WBTC", "100")}, key=tenant.key)) == \
        ["COMPLIANCE_RESTRICTED_INSTRUMENT"]
    wbtc = runtime.defi.market("embedded").tokens.resolve("WBTC").address
    set_controls(runtime, tenant.id, restricted=[wbtc.lower()])  # by address
    assert error_codes(gql(SWAP, {"i": swap_input("WBTC", "USDC", "0.1")}, key=tenant.key)) == \
        ["COMPLIANCE_RESTRICTED_INSTRUMENT"]
    set_controls(runtime, tenant.id, restricted=[], max_order_value=Decimal(1000))
    # 1 WETH is worth about 3,000 USD (valued through the pools to USDC)
    assert error_codes(gql(SWAP, {"i": swap_input("WETH", "DAI", "1")}, key=tenant.key)) == \
        ["COMPLIANCE_MAX_ORDER_VALUE"]
    assert error_codes(gql(SWAP, {"i": swap_input("USDT", "DAI", "1000.01")}, key=tenant.key)) == \
        ["COMPLIANCE_MAX_ORDER_VALUE"]  # stablecoins at 1:1
    assert nonce(runtime, before["address"]) == sent
    assert balances(gql, tenant.key) == before
    rows = swap_rows(runtime, tenant.id)
    assert sorted(r.error_code for r in rows) == sorted(
        ["COMPLIANCE_KILL_SWITCH", "COMPLIANCE_RESTRICTED_INSTRUMENT",
         "COMPLIANCE_RESTRICTED_INSTRUMENT", "COMPLIANCE_MAX_ORDER_VALUE",
         "COMPLIANCE_MAX_ORDER_VALUE"])
    assert audit_kinds(runtime, tenant.id) == ["defi.swap_refused"] * 5
    # within the limit it goes through
    done = gql.data(SWAP, {"i": swap_input("USDT", "DAI", "900")}, key=tenant.key)["defiSwap"]
    assert done["status"] == "EXECUTED"


@pytest.mark.parametrize(("change", "code"), [
    ({"tokenIn": "NOPE"}, "DEFI_TOKEN_UNKNOWN"),
    ({"tokenOut": "0x0000000000000000000000000000000000000001"}, "DEFI_TOKEN_UNKNOWN"),
    ({"chain": "moon"}, "DEFI_CHAIN_UNKNOWN"),
    ({"amountIn": "0"}, "DEFI_AMOUNT_INVALID"),
    ({"amountIn": "-1"}, "DEFI_AMOUNT_INVALID"),
    ({"amountIn": "lots"}, "DEFI_AMOUNT_INVALID"),
    ({"amountIn": "0.0000000000000000001"}, "DEFI_AMOUNT_INVALID"),  # 19 decimals of WETH
    ({"amountIn": "50000"}, "DEFI_INSUFFICIENT_LIQUIDITY"),  # more WETH than every pool holds
    ({"slippageBps": 0}, "DEFI_SLIPPAGE_INVALID"),
    ({"slippageBps": 5001}, "DEFI_SLIPPAGE_INVALID"),
    ({"slippageBps": -3}, "DEFI_SLIPPAGE_INVALID"),
    ({"deadlineSeconds": 0}, "DEFI_DEADLINE_EXPIRED"),
    ({"deadlineSeconds": -60}, "DEFI_DEADLINE_EXPIRED"),
])
def test_bad_input_sends_nothing(gql: Any, runtime: Any, tenant: Any, change: dict[str, Any],
                                 code: str) -> None:
    before = balances(gql, tenant.key)
    sent = nonce(runtime, before["address"])
    assert error_codes(gql(SWAP, {"i": {**swap_input(), **change}}, key=tenant.key)) == [code]
    assert nonce(runtime, before["address"]) == sent
    assert balances(gql, tenant.key) == before
    assert swap_rows(runtime, tenant.id) == []


def test_bad_quotes(gql: Any, tenant: Any) -> None:
    def code(**args: str) -> list[str]:
        variables = {"c": "embedded", "i": "WETH", "o": "USDC", "a": "1", **args}
        return error_codes(gql(QUOTE, variables, key=tenant.key))

    assert code(i="XYZ") == ["DEFI_TOKEN_UNKNOWN"]
    assert code(o="WETH") == ["DEFI_TOKEN_UNKNOWN"]
    assert code(c="999") == ["DEFI_CHAIN_UNKNOWN"]
    assert code(a="0") == ["DEFI_AMOUNT_INVALID"]
    assert code(a="0.000000000000000001", o="WBTC") == ["DEFI_AMOUNT_INVALID"]  # buys nothing
    assert code(a="1000000") == ["DEFI_INSUFFICIENT_LIQUIDITY"]


def test_permissions(gql: Any, runtime: Any, tenant: Any) -> None:
    from tests.support import user_key

    _, viewer = user_key(runtime, tenant, "viewer")
    assert "errors" not in gql(QUOTE, {"c": "embedded", "i": "WETH", "o": "USDC", "a": "1"}, key=viewer)
    assert error_codes(gql(SWAP, {"i": swap_input()}, key=viewer)) == ["FORBIDDEN"]
    _, trader = user_key(runtime, tenant, "trader")
    chains = gql.data("{ defiChains { chainId name embedded privateSubmission } }",
                      key=trader)["defiChains"]
    assert {"chainId": str(EMBEDDED_CHAIN_ID), "name": "embedded", "embedded": True,
            "privateSubmission": False} in chains


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_rpc_endpoint_down(runtime: Any, tenant: Any) -> None:
    chains = Chains([ChainSpec(EMBEDDED_CHAIN_ID, EMBEDDED, EMBEDDED),
                     ChainSpec(10, "down", f"http://127.0.0.1:{free_port()}", "https://x.test")])
    markets = DefiMarkets(chains, PoolBook(runtime.plugins, runtime.defi_world), runtime.defi_keys)
    swaps = DefiSwaps(runtime.db, markets, runtime.audit)
    with pytest.raises(ChainUnavailable) as caught:
        markets.quote("down", "WETH", "USDC", "1")
    assert caught.value.code == "DEFI_CHAIN_UNAVAILABLE"
    with pytest.raises(ChainUnavailable):
        markets.list_pools("10")
    with pytest.raises(ChainUnavailable):
        swaps.swap(tenant.id, None, SwapRequest("down", "WETH", "USDC", "1", 50, 60, "k-1"))
    assert swap_rows(runtime, tenant.id) == []


def test_two_tenants_see_the_same_market(gql: Any, tenant: Any, other_tenant: Any) -> None:
    query = '{ defiPools(chain: "embedded", tokens: ["USDC"]) { address protocol fee tokens { symbol } } }'
    a = gql.data(query, key=tenant.key)["defiPools"]
    assert a == gql.data(query, key=other_tenant.key)["defiPools"]
    assert {p["protocol"] for p in a} == {"cpmm", "stableswap"}
    assert all("USDC" in {t["symbol"] for t in p["tokens"]} for p in a)


def test_swap_isolation_between_tenants(gql: Any, runtime: Any, tenant: Any) -> None:
    """Tenant B never sees A's swaps, never replays A's idempotency key, and has its own address."""
    b = onboard(runtime)
    args = swap_input("USDC", "DAI", "10")
    a_swap = gql.data(SWAP, {"i": args}, key=tenant.key)["defiSwap"]
    b_rows_before = swap_rows(runtime, b.id)
    listed = gql.data("{ defiSwaps(first: 50) { edges { node { id } } } }", key=b.key)["defiSwaps"]
    assert listed["edges"] == [] and b_rows_before == []
    b_swap = gql.data(SWAP, {"i": args}, key=b.key)["defiSwap"]  # A's key means nothing to B
    assert b_swap["id"] != a_swap["id"] and not b_swap["replayed"]
    assert b_swap["account"] != a_swap["account"]
    a_list = gql.data("{ defiSwaps(first: 50) { edges { node { id } } } }", key=tenant.key)
    assert [e["node"]["id"] for e in a_list["defiSwaps"]["edges"]] == [a_swap["id"]]
    assert gql.data(ACCOUNT, {"c": "embedded"}, key=b.key)["defiAccount"]["address"] == b_swap["account"]


def test_deadline_counts_from_block_time_when_the_chain_runs_ahead(gql: Any, runtime: Any,
                                                                  tenant: Any) -> None:
    """Every block is at least a second after the one before, so an embedded chain drifts ahead
    of the wall clock; a deadline counted from the wall would already have passed on chain."""
    chain = runtime.chains.get("embedded")
    gql.data(OPEN, {"c": "embedded"}, key=tenant.key)  # the world and the key exist
    with chain.guard():
        ahead = chain.web3.eth.get_block("latest")["timestamp"] + 3600
        chain.tester.time_travel(ahead)
    done = gql.data(SWAP, {"i": swap_input("USDC", "DAI", "5", deadlineSeconds=60)},
                    key=tenant.key)["defiSwap"]
    assert done["status"] == "EXECUTED"
    [row] = [r for r in swap_rows(runtime, tenant.id) if r.id == done["id"]]
    assert row.deadline.timestamp() > time.time() + 3000  # from block time, not the wall's


def test_two_hop_swap_pays_the_quote(gql: Any, runtime: Any, tenant: Any) -> None:
    before = balances(gql, tenant.key)
    q = gql.data(QUOTE, {"c": "embedded", "i": "WBTC", "o": "USDC", "a": "2"},
                 key=tenant.key)["defiQuote"]
    assert [p["symbol"] for p in q["route"]["path"]] == ["WBTC", "WETH", "USDC"]
    done = gql.data(SWAP, {"i": swap_input("WBTC", "USDC", "2", expectedAmountOut=q["amountOut"])},
                    key=tenant.key)["defiSwap"]
    assert done["status"] == "EXECUTED" and len(done["txHashes"]) == 4  # two approvals, two hops
    assert done["amountOut"] == q["amountOut"]
    after = balances(gql, tenant.key)
    assert after["WBTC"] == before["WBTC"] - 2 * 10**8
    assert after["USDC"] == before["USDC"] + int(q["amountOutRaw"])
    assert after["WETH"] == before["WETH"]  # the intermediate token passed straight through


def test_price_moved_after_the_simulation_is_refused_by_the_chain(
        gql: Any, runtime: Any, tenant: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The race the simulation cannot see: a front-runner lands between the simulation and the
    swap. The swap carries min_out, so the pool refuses it; no token changes hands."""
    q = runtime.defi.quote("embedded", "WBTC", "WETH", "1")
    pool = q.best.hops[0].entry.pool.address
    wbtc = q.token_in.address
    simulate = DefiSwaps._simulate

    def simulate_then_get_front_run(*args: Any, **kwargs: Any) -> int | None:
        answer = simulate(*args, **kwargs)
        front_run(runtime, pool, wbtc, 20 * 10**8)
        return answer

    monkeypatch.setattr(DefiSwaps, "_simulate", staticmethod(simulate_then_get_front_run))
    before = balances(gql, tenant.key)
    body = gql(SWAP, {"i": swap_input("WBTC", "WETH", "1")}, key=tenant.key)
    assert error_codes(body) == ["DEFI_SLIPPAGE_EXCEEDED"]
    after = balances(gql, tenant.key)
    assert {k: v for k, v in after.items() if k != "native"} == \
        {k: v for k, v in before.items() if k != "native"}
    (row,) = swap_rows(runtime, tenant.id)
    assert row.status == "REFUSED" and row.amount_out is None
    assert audit_kinds(runtime, tenant.id) == ["defi.swap_refused"]


class PrivateRelay:
    """A private transaction relay on localhost (the role Flashbots Protect plays on mainnet):
    it accepts eth_sendRawTransaction and hands the transaction to the chain directly."""

    def __init__(self, chain: Any) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.received: list[str] = []
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if request["method"] == "eth_sendRawTransaction":
                    raw = request["params"][0]
                    relay.received.append(raw)
                    result: Any = chain.web3.eth.send_raw_transaction(raw).to_0x_hex()
                elif request["method"] == "eth_chainId":
                    result = hex(chain.chain_id)
                else:
                    result = None
                body = json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": result}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_private_submission_sends_through_the_relay(runtime: Any) -> None:
    from gateway.defi.keys import DefiKeys
    from gateway.defi.world import DemoWorld

    plain = Chains([ChainSpec(EMBEDDED_CHAIN_ID, EMBEDDED, EMBEDDED)]).get(EMBEDDED)
    relay = PrivateRelay(plain)
    try:
        # the same EVM, configured with a private submission endpoint
        chains = Chains([ChainSpec(EMBEDDED_CHAIN_ID, EMBEDDED, EMBEDDED, None, relay.url)])
        chain = chains.get(EMBEDDED)
        chain._web3 = plain.web3
        world = DemoWorld()
        keys = DefiKeys(runtime.db, runtime.secrets, funder=world.fund)
        markets = DefiMarkets(chains, PoolBook(runtime.plugins, world), keys)
        swaps = DefiSwaps(runtime.db, markets, runtime.audit)
        tenant = onboard(runtime)
        outcome = swaps.swap(tenant.id, None, SwapRequest("embedded", "WETH", "USDC", "1", 50, 60,
                                                          "private-1"))
        assert outcome.swap.status == "EXECUTED"
        assert len(relay.received) == len(outcome.swap.tx_hashes) == 2  # approval and swap
        assert all(chain.web3.eth.get_transaction_receipt(h)["status"] == 1
                   for h in outcome.swap.tx_hashes)
    finally:
        relay.close()


def test_chain_configuration() -> None:
    from gateway.defi.chain import parse_chain_specs
    from gateway.defi.errors import ChainUnknown

    specs = parse_chain_specs("1:mainnet:https://eth.example/rpc:https://etherscan.io,"
                              "10:optimism:http://127.0.0.1:9545")
    assert specs == [ChainSpec(1, "mainnet", "https://eth.example/rpc", "https://etherscan.io"),
                     ChainSpec(10, "optimism", "http://127.0.0.1:9545", None)]
    assert parse_chain_specs('[{"id": 5, "name": "test", "rpcUrl": "http://h:1", '
                             '"privateRpcUrl": "http://relay"}]') == \
        [ChainSpec(5, "test", "http://h:1", None, "http://relay")]
    chains = Chains(specs)
    assert chains.get("10").name == "optimism" and chains.get(1).name == "mainnet"
    assert chains.get("mainnet").explorer_link("0xab") == "https://etherscan.io/tx/0xab"
    with pytest.raises(ChainUnknown):
        chains.get("polygon")
    with pytest.raises(ValueError):
        Chains([*specs, ChainSpec(1, "again", "http://x")])
