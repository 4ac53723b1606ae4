"""Each chain's pools, from the DeFi protocol plugins, with a snapshot of their state.

Protocols are collected once (`alphintra_defi_protocols`). A chain's pool set is loaded on
first use: the pools the gateway knows (the demo world's on the embedded chain) are handed to
every protocol in `DefiChainView.directory`, and a protocol may add pools from its own config.
A snapshot is tagged with the block it was read at; `market(chain)` re-reads the pools' state
when the chain has moved past that block, so quotes always price the latest state and a chain
at rest costs one `eth_blockNumber` per request.

Per tenant (the tenant in scope, gateway/scope.py): the built-ins' pools, less those of
built-ins the tenant switched off, then its installed protocols' pools (sandboxed; they read
the chain through the gateway). A pool a built-in or an earlier protocol already lists stays
theirs: the later claim is dropped and logged, naming the plugin. A protocol that fails to list
loses its pools for that snapshot, never the tenant's others.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.defi.chain import Chain
from gateway.defi.tokens import TokenDirectory, TokenInfo
from gateway.defi.world import DemoWorld
from gateway.scope import current_tenant
from plugins.host import PluginHost, default_context
from plugins.sdk import DefiChainView, DefiPool, DefiProtocol

log = logging.getLogger(__name__)
HOOK = "alphintra_defi_protocols"

ERC20_ABI: list[dict[str, Any]] = [
    {"type": "function", "name": n, "stateMutability": "view", "inputs": [],
     "outputs": [{"name": "", "type": t}]}
    for n, t in (("symbol", "string"), ("name", "string"), ("decimals", "uint8"))
] + [
    {"type": "function", "name": "balanceOf", "stateMutability": "view",
     "inputs": [{"name": "owner", "type": "address"}], "outputs": [{"name": "", "type": "uint256"}]},
    {"type": "function", "name": "allowance", "stateMutability": "view",
     "inputs": [{"name": "owner", "type": "address"}, {"name": "spender", "type": "address"}],
     "outputs": [{"name": "", "type": "uint256"}]},
    {"type": "function", "name": "approve", "stateMutability": "nonpayable",
     "inputs": [{"name": "spender", "type": "address"}, {"name": "value", "type": "uint256"}],
     "outputs": [{"name": "", "type": "bool"}]},
]


@dataclass(frozen=True)
class PoolEntry:
    plugin: str
    protocol: DefiProtocol
    pool: DefiPool


@dataclass(frozen=True)
class ChainMarket:
    """An immutable snapshot of one chain's pools and tokens at `block`."""

    chain: Chain
    view: DefiChainView
    block: int
    pools: tuple[PoolEntry, ...]
    tokens: TokenDirectory

    def pool(self, address: str) -> PoolEntry | None:
        return next((e for e in self.pools if e.pool.address.lower() == address.lower()), None)


class PoolBook:
    def __init__(self, plugins: PluginHost, world: DemoWorld,
                 configs: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self._plugins = plugins
        self._world = world
        self._configs = configs or {}
        self._protocols: list[tuple[str, DefiProtocol]] | None = None
        self._markets: dict[int, ChainMarket] = {}
        self._lock = threading.Lock()
        self._chain_locks: dict[int | tuple[str, int], threading.Lock] = {}
        self._installed: Callable[[str], Sequence[tuple[str, DefiProtocol]]] | None = None
        self._disabled: Callable[[str], frozenset[str]] | None = None
        self._tenant_markets: dict[tuple[str, int], tuple[tuple[Any, ...], ChainMarket]] = {}

    def bind_installed(self, installed: Callable[[str], Sequence[tuple[str, DefiProtocol]]],
                       disabled: Callable[[str], frozenset[str]] | None = None) -> None:
        """Where a tenant's installed protocols come from, and which built-ins it switched off."""
        self._installed = installed
        self._disabled = disabled

    def protocols(self) -> list[tuple[str, DefiProtocol]]:
        with self._lock:
            if self._protocols is None:
                found, _failures = self._plugins.collect(
                    HOOK, lambda name: default_context(name, config=dict(self._configs.get(name, {}))),
                    expect=DefiProtocol)
                self._protocols = [(c.plugin, c.value) for c in found]
            return self._protocols

    def market(self, chain: Chain, *, fresh: bool = True) -> ChainMarket:
        """The chain's pools as the tenant in scope sees them (the built-ins' outside a scope)."""
        shared = self.shared_market(chain, fresh=fresh)
        tenant = current_tenant()
        if tenant is None:
            return shared
        installed = list(self._installed(tenant)) if self._installed is not None else []
        off = self._disabled(tenant) if self._disabled is not None else frozenset()
        off = off & {plugin for plugin, _ in self.protocols()}
        if not installed and not off:
            return shared
        return self._tenant_market(tenant, chain, shared, installed, off, fresh)

    def shared_market(self, chain: Chain, *, fresh: bool = True) -> ChainMarket:
        with self._lock:
            lock = self._chain_locks.setdefault(chain.chain_id, threading.Lock())
        with lock, chain.guard():
            current = self._markets.get(chain.chain_id)
            if current is None:
                current = self._load(chain)
            elif fresh:
                block = chain.web3.eth.block_number
                if block != current.block:
                    current = self._refresh(current, block)
            self._markets[chain.chain_id] = current
            return current

    def _tenant_market(self, tenant: str, chain: Chain, shared: ChainMarket,
                       installed: list[tuple[str, DefiProtocol]], off: frozenset[str],
                       fresh: bool) -> ChainMarket:
        key = (tenant, chain.chain_id)
        identity = (tuple(id(p) for _, p in installed), tuple(sorted(off)))
        with self._lock:
            lock = self._chain_locks.setdefault(key, threading.Lock())
        with lock, chain.guard():
            cached = self._tenant_markets.get(key)
            if cached is not None and cached[0] == identity and (
                    cached[1].block == shared.block or not fresh):
                return cached[1]
            own: list[PoolEntry] = []
            for plugin, protocol in installed:
                before = [e for e in cached[1].pools if e.plugin == plugin] if cached is not None \
                    and cached[0] == identity else []
                refreshed = [self._refreshed(shared.view, e) for e in before]
                if before and all(e is not None for e in refreshed):
                    own.extend(e for e in refreshed if e is not None)
                else:  # first listed, or a refresh failed (the worker may have restarted): list again
                    own.extend(self._listed(shared.view, plugin, protocol))
            entries = [e for e in shared.pools if e.plugin not in off]
            taken = {e.pool.address.lower(): e.plugin for e in entries}
            # the shared tokens first: a plugin's token never takes a known symbol
            known = {t.address.lower(): t for t in shared.tokens.all()}
            if cached is not None:
                known.update({t.address.lower(): t for t in cached[1].tokens.all()})
            for entry in own:
                owner = taken.get(entry.pool.address.lower())
                if owner is not None:
                    log.warning("a protocol lists a pool another plugin already lists: dropped",
                                extra={"plugin": entry.plugin, "owner": owner, "pool": entry.pool.address})
                    continue
                try:
                    for address in entry.pool.tokens:
                        if address.lower() not in known:
                            known[address.lower()] = read_token(chain, address)
                except Exception:
                    log.warning("a pool's token is not an ERC-20 the gateway can read: dropped",
                                extra={"plugin": entry.plugin, "pool": entry.pool.address})
                    continue
                taken[entry.pool.address.lower()] = entry.plugin
                entries.append(entry)
            market = ChainMarket(chain, shared.view, shared.block, tuple(entries),
                                 TokenDirectory(list(known.values())))
            self._tenant_markets[key] = (identity, market)
            return market

    @staticmethod
    def _listed(view: DefiChainView, plugin: str, protocol: DefiProtocol) -> list[PoolEntry]:
        try:
            return [PoolEntry(plugin, protocol, p) for p in protocol.pools(view)]
        except Exception:
            log.warning("an installed protocol failed to list its pools", extra={"plugin": plugin})
            return []

    @staticmethod
    def _refreshed(view: DefiChainView, entry: PoolEntry) -> PoolEntry | None:
        try:
            return PoolEntry(entry.plugin, entry.protocol, entry.protocol.refresh(view, entry.pool))
        except Exception:
            log.warning("an installed protocol failed to refresh a pool",
                        extra={"plugin": entry.plugin, "pool": entry.pool.address})
            return None

    def _view(self, chain: Chain) -> DefiChainView:
        directory: dict[str, list[str]] = {}
        if chain.embedded:
            directory = self._world.ensure(chain).directory()
        return DefiChainView(chain.chain_id, chain.name, chain.web3, directory)

    def _load(self, chain: Chain) -> ChainMarket:
        view = self._view(chain)
        block = chain.web3.eth.block_number
        entries: list[PoolEntry] = []
        for plugin, protocol in self.protocols():
            try:
                entries.extend(PoolEntry(plugin, protocol, p) for p in protocol.pools(view))
            except Exception:
                log.exception("protocol failed to list its pools",
                              extra={"plugin": plugin, "chain": chain.name})
        return ChainMarket(chain, view, block, tuple(entries), self._tokens(chain, entries))

    def _refresh(self, market: ChainMarket, block: int) -> ChainMarket:
        entries = []
        for entry in market.pools:
            try:
                entries.append(PoolEntry(entry.plugin, entry.protocol,
                                         entry.protocol.refresh(market.view, entry.pool)))
            except Exception:
                log.exception("protocol failed to refresh a pool",
                              extra={"plugin": entry.plugin, "pool": entry.pool.address})
        return ChainMarket(market.chain, market.view, block, tuple(entries), market.tokens)

    def _tokens(self, chain: Chain, entries: list[PoolEntry]) -> TokenDirectory:
        known: dict[str, TokenInfo] = {}
        if chain.embedded:
            known = {t.address.lower(): t for t in self._world.ensure(chain).tokens.values()}
        for entry in entries:
            for address in entry.pool.tokens:
                if address.lower() not in known:
                    known[address.lower()] = read_token(chain, address)
        return TokenDirectory(list(known.values()))


def read_token(chain: Chain, address: str) -> TokenInfo:
    contract = chain.web3.eth.contract(address=chain.web3.to_checksum_address(address), abi=ERC20_ABI)
    f = contract.functions
    return TokenInfo(contract.address, f.symbol().call(), int(f.decimals().call()), f.name().call())


def erc20(chain: Chain, address: str) -> Any:
    return chain.web3.eth.contract(address=chain.web3.to_checksum_address(address), abi=ERC20_ABI)
