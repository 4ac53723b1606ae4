"""DeFi events: a poller reads blocks and the pools' logs after its stored cursor and publishes
them on the bus; a new poller (a restart) delivers exactly what was missed, once; and the
`defiEvents` subscription streams them over a real websocket."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from gateway.defi.chain import Chain, Chains, ChainSpec
from gateway.defi.compile import compile_contract
from gateway.defi.events import DefiEventPoller, topic
from gateway.defi.events_models import DefiEventCursor
from gateway.defi.lending_deploy import deploy_lending_market
from gateway.events import InProcessBus
from tests.support import TransportWS, user_key


def deployed(w3: Any, name: str, *args: Any, sender: str) -> Any:
    c = compile_contract(name)
    tx = w3.eth.contract(abi=c.abi, bytecode=c.bytecode).constructor(*args).transact({"from": sender})
    return w3.eth.contract(address=w3.eth.wait_for_transaction_receipt(tx)["contractAddress"], abi=c.abi)


@pytest.fixture
def world(runtime: Any) -> dict[str, Any]:
    """A chain of its own (a second in-process EVM under its own chain id, so its cursor row is
    its own), with two tokens, a constant-product pool and a lending market."""
    chain = Chain(ChainSpec(990_000 + int(time.time() * 1000) % 9_999, "events-test", "embedded"))
    w3 = chain.web3
    owner = w3.eth.accounts[0]
    usdc = deployed(w3, "Token", "USD Coin", "USDC", 6, sender=owner)
    weth = deployed(w3, "Token", "Wrapped Ether", "WETH", 18, sender=owner)
    pool = deployed(w3, "ConstantProductPool", weth.address, usdc.address, sender=owner)
    for t, amount in ((weth, 10**24), (usdc, 10**15)):
        t.functions.mint(owner, amount).transact({"from": owner})
        t.functions.approve(pool.address, 2**256 - 1).transact({"from": owner})
    pool.functions.add_liquidity(100 * 10**18, 300_000 * 10**6, 0, owner).transact({"from": owner})
    market = deploy_lending_market(w3, owner, {"USDC": (usdc.address, 6), "WETH": (weth.address, 18)})
    lending = w3.eth.contract(address=market.address, abi=compile_contract("lending_pool").abi)
    weth.functions.approve(lending.address, 2**256 - 1).transact({"from": owner})
    sources = {pool.address: "ConstantProductPool", lending.address: "lending_pool"}
    return {"chain": chain, "w3": w3, "owner": owner, "pool": pool, "lending": lending,
            "weth": weth, "usdc": usdc, "chains": Chains([chain.spec]), "sources": sources}


def poller(runtime: Any, world: dict[str, Any], bus: Any) -> DefiEventPoller:
    return DefiEventPoller(runtime.db, bus, world["chains"], lambda chain: world["sources"],
                           interval_seconds=0.05)


def activity(world: dict[str, Any]) -> None:
    """A swap, a lending supply and an empty block."""
    w3, owner = world["w3"], world["owner"]
    deadline = w3.eth.get_block("latest")["timestamp"] + 3600
    world["pool"].functions.swap(world["weth"].address, 10**18, 0, owner, deadline).transact({"from": owner})
    world["lending"].functions.supply(world["weth"].address, 5 * 10**18).transact({"from": owner})
    w3.provider.ethereum_tester.mine_blocks(1)


def test_a_new_poller_resumes_from_the_cursor_with_nothing_missed_or_repeated(runtime, world):
    chain, w3 = world["chain"], world["w3"]
    bus = InProcessBus()
    seen: list[dict[str, Any]] = []

    async def listen() -> None:
        await bus.listen(topic(chain.chain_id), lambda event: seen.append(event.payload))

    asyncio.run(listen())
    first = poller(runtime, world, bus)
    assert first.poll_once(chain) == []  # a chain seen the first time starts at its head
    start = w3.eth.block_number
    activity(world)
    got = first.poll_once(chain)
    assert [e["blockNumber"] for e in got if e["kind"] == "block"] == list(
        range(start + 1, w3.eth.block_number + 1))
    assert first.poll_once(chain) == []
    # "Stop" the first poller; the chain moves on while nothing polls.
    missed_from = w3.eth.block_number + 1
    activity(world)
    activity(world)
    head = w3.eth.block_number
    with runtime.db.system_session() as session:
        assert session.get(DefiEventCursor, chain.chain_id).last_block == missed_from - 1

    second = poller(runtime, world, bus)  # a restart: a new instance, the stored cursor
    delivered = second.poll_once(chain)
    blocks = [e["blockNumber"] for e in delivered if e["kind"] == "block"]
    assert blocks == list(range(missed_from, head + 1))
    named = [(e["kind"], e["event"]) for e in delivered if e["kind"] != "block"]
    assert named.count(("swap", "Swap")) == 2 and named.count(("lending", "Supply")) == 2
    assert ("liquidity", "Sync") in named
    keys = [(e["blockNumber"], e.get("logIndex")) for e in delivered]
    assert len(keys) == len(set(keys))
    supply = next(e for e in delivered if e["event"] == "Supply")
    assert supply["args"] == {"account": world["owner"], "asset": world["weth"].address,
                              "amount": str(5 * 10**18)}
    assert supply["address"] == world["lending"].address
    assert second.poll_once(chain) == [] and first.poll_once(chain) == []
    # Everything published on the bus, once each, in order.
    assert seen == got + delivered


def test_two_pollers_on_one_cursor_publish_a_range_once(runtime, world):
    chain = world["chain"]
    bus = InProcessBus()
    a, b = poller(runtime, world, bus), poller(runtime, world, bus)
    a.poll_once(chain)
    activity(world)
    # Both read the same range; the compare-and-set lets only one publish it.
    results = [a.poll_once(chain), b.poll_once(chain)]
    assert sorted(len(r) > 0 for r in results) == [False, True]


def test_a_cursor_from_another_genesis_restarts_at_the_head(runtime, world):
    chain, w3 = world["chain"], world["w3"]
    p = poller(runtime, world, InProcessBus())
    p.poll_once(chain)
    with runtime.db.system_session() as session, session.begin():
        row = session.get(DefiEventCursor, chain.chain_id)
        row.genesis_hash, row.last_block = "0x" + "00" * 32, 1
    activity(world)
    assert p.poll_once(chain) == []  # not a replay of a chain it never saw
    with runtime.db.system_session() as session:
        assert session.get(DefiEventCursor, chain.chain_id).last_block == w3.eth.block_number


def test_background_poller_starts_and_stops(runtime, world):
    bus = InProcessBus()
    p = poller(runtime, world, bus)
    seen: list[Any] = []
    asyncio.run(bus.listen(topic(world["chain"].chain_id), seen.append))
    p.ensure_started(world["chain"])
    p.ensure_started(world["chain"])  # once
    assert p.running() == [world["chain"].chain_id]
    deadline = time.monotonic() + 30
    with runtime.db.system_session() as session:
        while session.get(DefiEventCursor, world["chain"].chain_id) is None and time.monotonic() < deadline:
            time.sleep(0.05)
    activity(world)
    while not any(e.payload["kind"] == "swap" for e in seen) and time.monotonic() < deadline:
        time.sleep(0.05)
    p.stop()
    assert p.running() == []
    assert any(e.payload["kind"] == "swap" for e in seen)


SUBSCRIBE = """subscription($c: String!, $p: [String!]) { defiEvents(chain: $c, pools: $p) {
  sequence chain kind event blockNumber transactionHash address contract args } }"""


def test_defi_events_subscription_streams_lending_actions(gql, server, runtime, tenant):
    _, trader = user_key(runtime, tenant, "trader")
    chain = runtime.chains.get("embedded")
    world = runtime.defi_world.ensure(chain)
    lending = world.extras["lending_pool"]

    def cursor_placed() -> bool:
        with runtime.db.system_session() as session:
            return session.get(DefiEventCursor, chain.chain_id) is not None

    async def scenario() -> list[dict[str, Any]]:
        async with TransportWS(server.ws_url, tenant.key) as ws:
            await ws.subscribe("u", SUBSCRIBE, {"c": "atlantis"})
            refused = await ws.next(op_id="u")
            errors = refused["payload"]["errors"] if refused["type"] == "next" else refused["payload"]
            assert [e["extensions"]["code"] for e in errors] == ["DEFI_CHAIN_UNKNOWN"]
            await ws.subscribe("e", SUBSCRIBE, {"c": "embedded", "p": [lending.lower()]})
            # Wait for the poller to have placed its cursor (its first round), then act.
            deadline = time.monotonic() + 30
            while not await asyncio.to_thread(cursor_placed) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert chain.chain_id in runtime.defi_events.running()
            await asyncio.to_thread(gql, """mutation { defiSupply(input: {chain: "embedded", token: "WETH",
                amount: "1.5", idempotencyKey: "ev-1"}) { id account } }""", key=trader)
            out: list[dict[str, Any]] = []
            while not any(m.get("event") == "Supply" for m in out):
                message = await ws.next(op_id="e")
                assert message["type"] == "next", message
                out.append(message["payload"]["data"]["defiEvents"])
            return out

    events = asyncio.run(scenario())
    address = runtime.defi_keys.address(tenant.id, chain, create=False)
    supply = next(e for e in events if e["event"] == "Supply")
    assert supply["kind"] == "lending" and supply["address"] == lending
    assert supply["args"]["account"] == address and supply["args"]["amount"] == str(15 * 10**17)
    # Only the lending pool's events (and blocks) pass the `pools` filter.
    assert {e["address"] for e in events if e["kind"] != "block"} == {lending}
