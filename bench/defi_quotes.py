"""DeFi quotes: route search over 50 pools, off-chain, against on-chain view calls.

    .venv/bin/python bench/defi_quotes.py [--pools 50] [--tokens 12] [--quotes 5000] [--seed 7]

What it does (about a minute with the defaults; it ends by itself):

1. Starts a fresh embedded EVM (eth-tester on py-evm) and deploys `--tokens` ERC-20 tokens and
   `--pools` pools between random pairs of them (four in five constant-product, one in five
   stable-swap), each seeded with liquidity; deployment time is printed but not counted.
2. Reads every pool's state once through the pool book (the protocol plugins, as the gateway
   does) and times that read.
3. Quotes `--quotes` random (token in, token out, amount) requests with `quotes.quote`: every
   direct and two-hop path across both protocols, each priced in integers, the best chosen
   and the alternatives ranked. Prints quotes per second, paths priced per second, and p50/p99.
4. Baseline in the same run: the pools' own view functions (`get_amount_out`, `get_dy`) called
   by eth_call through web3 on the same chain, one per pool hop; prints view calls per second,
   and what a route search of the same paths would cost at that rate.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.defi.chain import EMBEDDED, EMBEDDED_CHAIN_ID, Chains, ChainSpec
from gateway.defi.deploy import bind, deploy, faucet_account
from gateway.defi.pools import PoolBook
from gateway.defi.quotes import candidate_paths, quote
from gateway.defi.tokens import TokenInfo
from gateway.defi.world import CPMM, STABLESWAP, DemoWorld, WorldDeployment
from plugins.builtin import BUILTINS
from plugins.host import PluginHost


class BenchWorld(DemoWorld):
    """A world of `pools` random pools instead of the demo's eight."""

    def __init__(self, tokens: int, pools: int, rng: random.Random) -> None:
        super().__init__()
        self.n_tokens, self.n_pools, self.rng = tokens, pools, rng

    def _deploy(self, chain):  # type: ignore[no-untyped-def]
        owner = faucet_account(chain)
        world = WorldDeployment(chain.chain_id)
        decimals = [6, 8, 18]
        for k in range(self.n_tokens):
            d = decimals[k % 3]
            address = deploy(chain, "Token", f"Token {k}", f"T{k}", d)
            world.tokens[f"T{k}"] = TokenInfo(address, f"T{k}", d, f"Token {k}")
        symbols = list(world.tokens)
        pairs: set[tuple[str, str]] = set()
        while len(pairs) < self.n_pools:
            a, b = self.rng.sample(symbols, 2)
            if (b, a) not in pairs:
                pairs.add((a, b))
        for index, (a, b) in enumerate(sorted(pairs)):
            ta, tb = world.tokens[a], world.tokens[b]
            raw_a = self.rng.randint(10**5, 10**7) * 10**ta.decimals
            raw_b = self.rng.randint(10**5, 10**7) * 10**tb.decimals
            stable = index % 5 == 4
            if stable:
                pool = deploy(chain, "StableSwapPool", [ta.address, tb.address],
                              [ta.decimals, tb.decimals], 100, 4_000_000)
            else:
                pool = deploy(chain, "ConstantProductPool", ta.address, tb.address)
            self._seed(chain, owner, pool, [(ta, raw_a), (tb, raw_b)])
            contract = bind(chain, "StableSwapPool" if stable else "ConstantProductPool", pool)
            if stable:
                contract.functions.add_liquidity([raw_a, raw_b], 0).transact({"from": owner})
            else:
                contract.functions.add_liquidity(raw_a, raw_b, 0, owner).transact({"from": owner})
            world.pools.setdefault(STABLESWAP if stable else CPMM, []).append(pool)
        return world


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pools", type=int, default=50)
    parser.add_argument("--tokens", type=int, default=12)
    parser.add_argument("--quotes", type=int, default=5_000)
    parser.add_argument("--views", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    print(f"python {platform.python_version()} on {platform.machine()}, "
          f"{args.pools} pools over {args.tokens} tokens")

    chain = Chains([ChainSpec(EMBEDDED_CHAIN_ID, EMBEDDED, EMBEDDED)]).get(EMBEDDED)
    world = BenchWorld(args.tokens, args.pools, rng)
    started = time.perf_counter()
    world.ensure(chain)
    print(f"deploy: {time.perf_counter() - started:.1f} s (not counted)")

    book = PoolBook(PluginHost(BUILTINS), world)
    started = time.perf_counter()
    market = book.market(chain)
    read_s = time.perf_counter() - started
    kinds = {e.protocol.name for e in market.pools}
    print(f"read state of {len(market.pools)} pools ({', '.join(sorted(kinds))}) once: "
          f"{read_s * 1000:.0f} ms")

    tokens = market.tokens.all()
    requests = []
    for _ in range(args.quotes):
        a, b = rng.sample(tokens, 2)
        amount = rng.randint(1, 10**4) * 10**a.decimals
        requests.append((a, b, amount))
    all_paths = [candidate_paths(market, a.address, b.address) for a, b, _ in requests]
    paths_total = sum(len(p) for p in all_paths)
    hops_total = sum(len(path) for paths in all_paths for path in paths)

    latencies = []
    answered = 0
    started = time.perf_counter()
    for a, b, amount in requests:
        t0 = time.perf_counter_ns()
        try:
            quote(market, a, b, amount)
            answered += 1
        except Exception:  # no route for this pair: still a full search
            pass
        latencies.append(time.perf_counter_ns() - t0)
    elapsed = time.perf_counter() - started
    latencies.sort()
    qps = len(requests) / elapsed
    print(f"off-chain quotes with route search: {qps:,.0f} quotes/s "
          f"({answered} routed, {len(requests) - answered} without a route), "
          f"{paths_total / elapsed:,.0f} paths priced/s, "
          f"{paths_total / len(requests):.1f} paths per quote; "
          f"p50 {statistics.median(latencies) / 1000:.0f} µs, "
          f"p99 {latencies[int(len(latencies) * 0.99)] / 1000:.0f} µs")

    # Baseline: the contracts' own view functions by eth_call, one hop each.
    hops = []
    for entry in market.pools:
        t_in, t_out = entry.pool.tokens[0], entry.pool.tokens[1]
        hops.append((entry, t_in, t_out))
    started = time.perf_counter()
    for k in range(args.views):
        entry, t_in, t_out = hops[k % len(hops)]
        entry.protocol.onchain_quote(market.view, entry.pool, t_in, t_out, 10**6)
    view_elapsed = time.perf_counter() - started
    vps = args.views / view_elapsed
    per_quote = hops_total / len(requests)  # view calls one route search would need
    print(f"baseline, on-chain view calls (eth_call): {vps:,.0f} calls/s; a route search by view "
          f"calls ({per_quote:.1f} per quote) would manage about {vps / per_quote:,.1f} quotes/s")
    print(f"off-chain / on-chain: {qps / (vps / per_quote):,.0f}x")


if __name__ == "__main__":
    main()
