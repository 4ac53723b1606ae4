"""Answers to a worker's own questions: venue facts (a connector or source asks
`context.venues`), egress, and a DeFi protocol's chain reads (read-only JSON-RPC methods on a
chain the gateway reaches; nothing that signs or sends). Nothing else is answered; a worker
cannot reach the database, the bus, a key or another tenant through this."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from gateway.marketplace.sandbox.egress import EgressProxy
from gateway.marketplace.sandbox.supervisor import ManagedPlugin
from plugins.sdk import VenueDirectory

_VENUE_OPS = {
    "venues": lambda d, a: list(d.venues()),
    "venue": lambda d, a: d.venue(str(a["mic"])),
    "is_open": lambda d, a: bool(d.is_open(str(a["mic"]), a["at"])),
    "sessions": lambda d, a: list(d.sessions(str(a["mic"]), a["start"], a["end"])),
    "lot_size": lambda d, a: d.lot_size(str(a["mic"]), a["price"]),
    "tick_size": lambda d, a: d.tick_size(str(a["mic"]), a["price"]),
}


# What a protocol may ask of a chain: reads of public state, never accounts, signing or sending.
CHAIN_READS = frozenset({"eth_chainId", "net_version", "eth_blockNumber", "eth_call", "eth_getBalance",
                         "eth_getCode", "eth_getStorageAt", "eth_getBlockByNumber", "eth_gasPrice"})
DEFI_HOOK = "alphintra_defi_protocols"


def _chain_read(chains: Any, managed: ManagedPlugin, args: dict[str, Any]) -> Any:
    if chains is None or DEFI_HOOK not in managed.spec.hooks:
        raise LookupError("only a DeFi protocol reads a chain")
    method = str(args.get("method"))
    if method not in CHAIN_READS:
        raise LookupError(f"{method} is not a read a protocol may make")
    params = args.get("params")
    if not isinstance(params, list):
        raise LookupError("params must be a list")
    chain = chains.get(int(args["chain_id"]))  # ChainUnknown: only chains this gateway reaches
    from web3 import Web3

    with chain.guard():
        result = chain.web3.manager.request_blocking(method, params)
    return json.loads(Web3.to_json(result))  # JSON-RPC's own shapes: hex strings, plain maps


def answerer(venues: VenueDirectory | None, egress: EgressProxy, chains: Any = None
             ) -> Callable[[ManagedPlugin, str, dict[str, Any]], Any]:
    def answer(managed: ManagedPlugin, method: str, args: dict[str, Any]) -> Any:
        if method == "venues":
            directory = managed.spec.venues or venues
            op = _VENUE_OPS.get(str(args.get("op")))
            if directory is None or op is None:
                raise LookupError("no venue directory for this question")
            return op(directory, args)
        if method == "egress":
            return egress.request(managed.spec.capabilities, args)
        if method == "chain":
            return _chain_read(chains, managed, args)
        raise LookupError(f"a worker cannot ask {method!r}")

    return answer
