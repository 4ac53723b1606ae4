"""DeFi lending and events on the in-process EVM: what a position read, a health-factor check
and an event poll cost.

    .venv/bin/python bench/defi_lending.py [--reads N] [--blocks N]

What it does (about 30 s; it ends by itself):

1. Starts an eth-tester/py-evm chain, deploys five tokens and the lending market
   (gateway/defi/lending_deploy.py), and gives one account collateral in three assets and debt
   in two.
2. Position reads: the pool's `positions(account)` eth_call (one call for every asset) followed
   by the off-chain totals and health factor, N times; and the pool's own `account_data` view.
3. Health-factor checks before an action: off-chain (`lending_maths`, on the snapshot) against
   the pool's `health_factor_after` eth_call, which the service also makes to confirm.
4. Event polling: a backlog of N blocks, each with a lending supply, read by one
   `DefiEventPoller.poll_once` (SQLite cursor, in-process bus), in blocks and events per
   second; then a poller keeping up (one block per round), per round.

Prints medians and rates. No assertion on time: the figures go to docs/performance.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlmodel import SQLModel
from web3 import Web3

from gateway.db import Database
from gateway.defi import lending_maths as lm
from gateway.defi.chain import Chain, Chains, ChainSpec
from gateway.defi.compile import compile_contract
from gateway.defi.events import DefiEventPoller
from gateway.defi.events_models import DefiEventCursor
from gateway.defi.lending_deploy import deploy_lending_market
from gateway.events import InProcessBus

TOKENS = (("USDC", 6), ("USDT", 6), ("DAI", 18), ("WETH", 18), ("WBTC", 8))


def timed(fn: Any, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def contract(w3: Any, name: str, address: str) -> Any:
    return w3.eth.contract(address=address, abi=compile_contract(name).abi)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reads", type=int, default=300)
    parser.add_argument("--blocks", type=int, default=200)
    args = parser.parse_args()

    chain = Chain(ChainSpec(990_001, "bench", "embedded"))
    w3: Web3 = chain.web3
    owner, user = w3.eth.accounts[0], w3.eth.accounts[1]
    token_c = compile_contract("Token")
    tokens: dict[str, Any] = {}
    for symbol, decimals in TOKENS:
        tx = w3.eth.contract(abi=token_c.abi, bytecode=token_c.bytecode).constructor(
            symbol, symbol, decimals).transact({"from": owner})
        tokens[symbol] = contract(w3, "Token", w3.eth.wait_for_transaction_receipt(tx)["contractAddress"])
    market = deploy_lending_market(w3, owner, {s: (t.address, d) for (s, d), t in
                                               zip(TOKENS, tokens.values(), strict=True)})
    pool = contract(w3, "lending_pool", market.address)
    for symbol, amount in (("WETH", 10**19), ("WBTC", 10**8), ("DAI", 10**22)):
        tokens[symbol].functions.mint(user, amount).transact({"from": owner})
        tokens[symbol].functions.approve(pool.address, 2**256 - 1).transact({"from": user})
        pool.functions.supply(tokens[symbol].address, amount).transact({"from": user})
    pool.functions.borrow(tokens["USDC"].address, 20_000 * 10**6).transact({"from": user})
    pool.functions.borrow(tokens["USDT"].address, 10_000 * 10**6).transact({"from": user})

    def read_position() -> None:
        rows = pool.functions.positions(user).call()
        states = [lm.AssetState(a, a, d, p, cf, lt, s, b) for a, d, p, cf, lt, s, b in rows]
        lm.totals(states).health_factor  # noqa: B018

    states = [lm.AssetState(a, a, d, p, cf, lt, s, b)
              for a, d, p, cf, lt, s, b in pool.functions.positions(user).call()]
    usdc = tokens["USDC"].address
    read = timed(read_position, args.reads)
    view = timed(lambda: pool.functions.account_data(user).call(), args.reads)
    off = timed(lambda: lm.totals(lm.moved(states, usdc, 0, 10**9)).health_factor, args.reads * 10)
    on = timed(lambda: pool.functions.health_factor_after(user, usdc, 0, 10**9).call(), args.reads)

    db = Database("sqlite://")
    SQLModel.metadata.create_all(db.engine, tables=[DefiEventCursor.__table__])  # type: ignore[list-item]
    bus = InProcessBus()
    poller = DefiEventPoller(db, bus, Chains([chain.spec]), lambda c: {pool.address: "lending_pool"},
                             interval_seconds=1)
    poller.poll_once(chain)
    weth = tokens["WETH"]
    weth.functions.mint(user, 10**24).transact({"from": owner})
    for _ in range(args.blocks):
        pool.functions.supply(weth.address, 10**15).transact({"from": user})
    t0 = time.perf_counter()
    events = poller.poll_once(chain)
    poll_s = time.perf_counter() - t0
    blocks = sum(1 for e in events if e["kind"] == "block")
    # Keeping up: one block with one event between polls (eth-tester's log scan grows with the
    # distance from the head, so a backlog costs more per block than a poller that keeps up).
    steady = []
    for _ in range(50):
        pool.functions.supply(weth.address, 10**15).transact({"from": user})
        t1 = time.perf_counter()
        poller.poll_once(chain)
        steady.append(time.perf_counter() - t1)

    def us(xs: list[float]) -> str:
        return f"{statistics.median(xs) * 1e6:9.1f} µs"

    print(f"python {platform.python_version()}, web3 in-process eth-tester/py-evm")
    print(f"position read (positions() eth_call + off-chain maths), median: {us(read)}"
          f"  ({1 / statistics.median(read):.0f}/s)")
    print(f"account_data() view alone, median:                      {us(view)}")
    print(f"health factor after an action, off-chain, median:       {us(off)}")
    print(f"health factor after an action, eth_call, median:        {us(on)}")
    print(f"event poll: {blocks} blocks, {len(events) - blocks} events in {poll_s:.2f} s "
          f"({blocks / poll_s:.0f} blocks/s, {(len(events) - blocks) / poll_s:.0f} events/s)")
    print(f"event poll keeping up (1 block, 1 event per round), median: {us(steady)}")


if __name__ == "__main__":
    main()
