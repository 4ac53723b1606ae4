"""The demo world on the embedded chain: tokens, pools and the faucet.

Deployed once per process on first use (`DemoWorld.ensure`, idempotent and locked), or at
start-up when the app warms up (`warm_on_start`). On a served chain (`alphintra chain serve`)
the chain process deploys it once and keeps it in its state; every other process reads its
directory (`alphintra_world`) and asks that process for faucet grants (`alphintra_fund`), so a
tenant address is funded once across replicas. Everything it deploys is owned by the
embedded chain's first pre-funded account, which is also the faucet: a tenant's new address
gets ETH for gas and demo tokens minted to it.

Reference prices (USD): USDC, USDT, DAI 1; WETH 3,000; WBTC 60,000. WBTC/USDC is deliberately
shallow, so a large WBTC→USDC trade routes better through WETH.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.defi.chain import Chain
from gateway.defi.deploy import bind, deploy, faucet_account, transact
from gateway.defi.tokens import TokenInfo

CPMM = "cpmm"
STABLESWAP = "stableswap"


@dataclass(frozen=True)
class DemoToken:
    symbol: str
    name: str
    decimals: int
    faucet_grant: int  # whole tokens minted to each new tenant address


TOKENS = (
    DemoToken("USDC", "USD Coin", 6, 1_000_000),
    DemoToken("USDT", "Tether USD", 6, 1_000_000),
    DemoToken("DAI", "Dai Stablecoin", 18, 1_000_000),
    DemoToken("WETH", "Wrapped Ether", 18, 100),
    DemoToken("WBTC", "Wrapped Bitcoin", 8, 10),
)
# (token a, whole amount a, token b, whole amount b)
CPMM_POOLS = (
    ("WETH", 2_000, "USDC", 6_000_000),
    ("WETH", 1_000, "USDT", 3_000_000),
    ("WETH", 800, "DAI", 2_400_000),
    ("WBTC", 100, "WETH", 2_000),
    ("WBTC", 5, "USDC", 300_000),
    ("DAI", 1_000_000, "USDC", 1_000_000),
)
# (token a, token b, whole amount of each, amplification A, fee in 1e-10)
STABLE_POOLS = (
    ("USDC", "USDT", 5_000_000, 200, 4_000_000),
    ("DAI", "USDT", 2_000_000, 100, 4_000_000),
)
FAUCET_ETH = 100


@dataclass
class WorldDeployment:
    chain_id: int
    tokens: dict[str, TokenInfo] = field(default_factory=dict)  # by symbol
    pools: dict[str, list[str]] = field(default_factory=dict)  # protocol kind -> addresses
    extras: dict[str, str] = field(default_factory=dict)  # other contracts by role (lending...)
    funded: set[str] = field(default_factory=set)  # addresses the faucet served on this chain

    def directory(self) -> dict[str, list[str]]:
        return {kind: list(addresses) for kind, addresses in self.pools.items()}

    def document(self) -> dict[str, Any]:
        """What the chain process serves as `alphintra_world` (and keeps in its state)."""
        return {"chainId": self.chain_id,
                "tokens": {s: {"address": t.address, "symbol": t.symbol, "decimals": t.decimals,
                               "name": t.name} for s, t in self.tokens.items()},
                "pools": self.directory(), "extras": dict(self.extras)}

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> WorldDeployment:
        return cls(int(doc["chainId"]),
                   {s: TokenInfo(str(t["address"]), str(t["symbol"]), int(t["decimals"]),
                                 str(t.get("name", ""))) for s, t in doc["tokens"].items()},
                   {kind: [str(a) for a in addresses] for kind, addresses in doc["pools"].items()},
                   {role: str(a) for role, a in doc["extras"].items()})


Extension = Callable[[Chain, WorldDeployment], None]


class DemoWorld:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faucet_lock = threading.Lock()
        self._deployed: dict[int, WorldDeployment] = {}
        self._extensions: list[tuple[str, Extension]] = []

    def add_extension(self, name: str, deploy_more: Extension) -> None:
        """Deploy more into the world after the tokens and pools (the lending market)."""
        self._extensions.append((name, deploy_more))

    def deployed(self, chain: Chain) -> WorldDeployment | None:
        return self._deployed.get(chain.chain_id)

    def ensure(self, chain: Chain) -> WorldDeployment:
        """The world on `chain` (embedded only), deploying it the first time (a served chain's
        is read from the chain process, which deployed it)."""
        if not chain.embedded:
            raise ValueError("the demo world lives on the embedded chain only")
        with self._lock:
            found = self._deployed.get(chain.chain_id)
            if found is None:
                found = (WorldDeployment.from_document(chain.served_request("alphintra_world", []))
                         if chain.served else self._deploy(chain))
                self._deployed[chain.chain_id] = found
            return found

    def adopt(self, chain: Chain, deployment: WorldDeployment) -> None:
        """Take a world deployed earlier on `chain` (the chain process, from its state)."""
        with self._lock:
            self._deployed[chain.chain_id] = deployment

    def fund(self, chain: Chain, address: str) -> None:
        """The faucet: ETH for gas and demo tokens, once per address on this chain. The
        in-process chain lives in memory, so after a restart a tenant's stored key is funded
        again on the new chain; a served chain's process remembers whom it funded."""
        world = self.ensure(chain)
        if chain.served:
            # The chain process grants once per address across every replica, and only it
            # knows whether its state is the one that granted: a chain started afresh (its
            # state lost) must fund the address again, so there is no local short-cut here.
            chain.served_request("alphintra_fund", [address])
            return
        with self._faucet_lock:  # one grant at a time, so an address is never served twice
            if address in world.funded:
                return
            owner = faucet_account(chain)
            w3 = chain.web3
            with chain.guard():
                tx = w3.eth.send_transaction({"from": owner, "to": address,
                                              "value": w3.to_wei(FAUCET_ETH, "ether")})
                w3.eth.wait_for_transaction_receipt(tx)
            for demo in TOKENS:
                token = bind(chain, "Token", world.tokens[demo.symbol].address)
                transact(chain, token.functions.mint(address, demo.faucet_grant * 10 ** demo.decimals),
                         owner)
            world.funded.add(address)

    def _deploy(self, chain: Chain) -> WorldDeployment:
        owner = faucet_account(chain)
        world = WorldDeployment(chain.chain_id)
        for demo in TOKENS:
            address = deploy(chain, "Token", demo.name, demo.symbol, demo.decimals)
            world.tokens[demo.symbol] = TokenInfo(address, demo.symbol, demo.decimals, demo.name)
        for a, amount_a, b, amount_b in CPMM_POOLS:
            ta, tb = world.tokens[a], world.tokens[b]
            pool = deploy(chain, "ConstantProductPool", ta.address, tb.address)
            raw_a, raw_b = amount_a * 10 ** ta.decimals, amount_b * 10 ** tb.decimals
            self._seed(chain, owner, pool, [(ta, raw_a), (tb, raw_b)])
            contract = bind(chain, "ConstantProductPool", pool)
            transact(chain, contract.functions.add_liquidity(raw_a, raw_b, 0, owner), owner)
            world.pools.setdefault(CPMM, []).append(pool)
        for a, b, whole, amp, fee in STABLE_POOLS:
            ta, tb = world.tokens[a], world.tokens[b]
            pool = deploy(chain, "StableSwapPool", [ta.address, tb.address],
                          [ta.decimals, tb.decimals], amp, fee)
            raw = [whole * 10 ** ta.decimals, whole * 10 ** tb.decimals]
            self._seed(chain, owner, pool, [(ta, raw[0]), (tb, raw[1])])
            transact(chain, bind(chain, "StableSwapPool", pool).functions.add_liquidity(raw, 0), owner)
            world.pools.setdefault(STABLESWAP, []).append(pool)
        # ---- More of the world (issue 8, lending): extensions registered with
        # `add_extension` deploy here, e.g. the lending market, recording their addresses in
        # `world.extras`. ----
        for _name, deploy_more in self._extensions:
            deploy_more(chain, world)
        return world

    @staticmethod
    def _seed(chain: Chain, owner: str, spender: str, amounts: list[tuple[TokenInfo, int]]) -> None:
        for token, raw in amounts:
            contract = bind(chain, "Token", token.address)
            transact(chain, contract.functions.mint(owner, raw), owner)
            transact(chain, contract.functions.approve(spender, raw), owner)
