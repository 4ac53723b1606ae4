"""DeFi events from the chain to subscribers: new blocks, swaps, liquidity changes and lending
actions, read by a poller and published on the bus (topic `defi.events.<chain id>`), so every
replica's subscribers get them whichever replica polled.

Resumption. The poller keeps, per chain, the last block it published in `DefiEventCursor`. Each
round reads the blocks after it up to the head (at most MAX_RANGE at a time) and their logs from
the watched contracts, then advances the cursor with a compare-and-set (`WHERE last_block =
<what it read>`): only the poller whose update took publishes that range, so two replicas
polling the same chain never both publish it, and a new poller (after a restart) starts where
the last one stopped and delivers exactly the blocks it missed. The cursor moves before the
publish: a process dying between the two loses that range rather than sending it twice.
A chain seen for the first time, or one whose genesis differs from the cursor's (the embedded
chain starts afresh with each process), starts at its head: history is not replayed.

The poller runs only when wanted: the first `defiEvents` subscription on a chain starts it
(`ensure_started`); the app's lifespan stops every poller at shutdown.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import update

from gateway.db import Database, utcnow
from gateway.defi.chain import Chain, Chains
from gateway.defi.compile import compile_contract
from gateway.defi.events_models import DefiEventCursor
from gateway.events import Bus

log = logging.getLogger(__name__)

MAX_RANGE = 500  # blocks read per round
KINDS = {
    "Swap": "swap", "TokenExchange": "swap",
    "Mint": "liquidity", "Burn": "liquidity", "AddLiquidity": "liquidity",
    "RemoveLiquidity": "liquidity", "Sync": "liquidity",
    "Supply": "lending", "Withdraw": "lending", "Borrow": "lending", "Repay": "lending",
    "Liquidate": "lending", "PriceSet": "lending", "AssetListed": "lending",
}
# Contract name (gateway/defi/contracts/<name>.vy) -> watched address, per chain.
Sources = Callable[[Chain], dict[str, str]]


def topic(chain_id: int) -> str:
    return f"defi.events.{chain_id}"


def world_sources(world: Any) -> Sources:
    """The demo world's pools and lending pool, once the world is deployed on the chain."""

    def sources(chain: Chain) -> dict[str, str]:
        deployed = world.deployed(chain) if chain.embedded else None
        if deployed is None:
            return {}
        names = {"cpmm": "ConstantProductPool", "stableswap": "StableSwapPool"}
        out = {address: names[kind] for kind, addresses in deployed.pools.items()
               if kind in names for address in addresses}
        if "lending_pool" in deployed.extras:
            out[deployed.extras["lending_pool"]] = "lending_pool"
        return out

    return sources


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # integers of 256 bits: strings, as JSON numbers lose them
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@dataclass
class _Decoder:
    """topic0 -> (contract name, web3 event) for the watched contracts' ABIs."""

    w3: Any
    by_topic: dict[str, tuple[str, Any]] = field(default_factory=dict)

    def add(self, name: str, address: str) -> None:
        contract = self.w3.eth.contract(address=address, abi=compile_contract(name).abi)
        for item in contract.abi:
            if item.get("type") != "event":
                continue
            signature = f"{item['name']}({','.join(i['type'] for i in item['inputs'])})"
            self.by_topic[self.w3.keccak(text=signature).to_0x_hex()] = (
                name, getattr(contract.events, item["name"])())

    def decode(self, entry: Any) -> dict[str, Any] | None:
        if not entry["topics"]:
            return None
        found = self.by_topic.get(entry["topics"][0].to_0x_hex())
        if found is None:
            return None
        contract, event = found
        decoded = event.process_log(entry)
        return {"kind": KINDS.get(decoded["event"], "other"), "event": decoded["event"],
                "contract": contract, "address": entry["address"],
                "blockNumber": int(entry["blockNumber"]),
                "transactionHash": entry["transactionHash"].to_0x_hex(),
                "logIndex": int(entry["logIndex"]),
                "args": {k: _plain(v) for k, v in decoded["args"].items()}}


class DefiEventPoller:
    def __init__(self, db: Database, bus: Bus, chains: Chains, sources: Sources, *,
                 interval_seconds: float) -> None:
        self._db = db
        self._bus = bus
        self._chains = chains
        self._sources = sources
        self._interval = interval_seconds
        self._threads: dict[int, threading.Thread] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()

    # -- one round ---------------------------------------------------------------------------

    def poll_once(self, chain: Chain) -> list[dict[str, Any]]:
        """Read what happened since the cursor, advance it, publish; answer what was published."""
        w3 = chain.web3
        with chain.guard():
            head = int(w3.eth.block_number)
            genesis = w3.eth.get_block(0)["hash"].to_0x_hex()
        with self._db.system_session() as session:
            cursor = session.get(DefiEventCursor, chain.chain_id)
        if cursor is None or cursor.genesis_hash != genesis or cursor.last_block > head:
            self._restart(chain, cursor, genesis, head)
            return []
        start, end = cursor.last_block + 1, min(head, cursor.last_block + MAX_RANGE)
        if start > end:
            return []
        events = self._read(chain, start, end)
        with self._db.system_session() as session, session.begin():
            taken = session.execute(
                update(DefiEventCursor)
                .where(DefiEventCursor.chain_id == chain.chain_id,  # type: ignore[arg-type]
                       DefiEventCursor.last_block == cursor.last_block,  # type: ignore[arg-type]
                       DefiEventCursor.genesis_hash == genesis)  # type: ignore[arg-type]
                .values(last_block=end, updated_at=utcnow())).rowcount
        if taken != 1:
            return []  # another poller published this range
        for event in events:
            self._bus.publish(topic(chain.chain_id), event)
        return events

    def _restart(self, chain: Chain, cursor: DefiEventCursor | None, genesis: str, head: int) -> None:
        with self._db.system_session() as session, session.begin():
            row = session.get(DefiEventCursor, chain.chain_id)
            if row is None:
                session.add(DefiEventCursor(chain_id=chain.chain_id, genesis_hash=genesis,
                                            last_block=head))
            elif row.genesis_hash != genesis or row.last_block > head:
                row.genesis_hash, row.last_block, row.updated_at = genesis, head, utcnow()
        log.info("defi events on %s start at block %s", chain.name, head)

    def _read(self, chain: Chain, start: int, end: int) -> list[dict[str, Any]]:
        w3 = chain.web3
        decoder = _Decoder(w3)
        sources = self._sources(chain)
        for address, name in sources.items():
            decoder.add(name, address)
        by_block: dict[int, list[dict[str, Any]]] = {}
        with chain.guard():
            if sources:
                logs = w3.eth.get_logs({"fromBlock": start, "toBlock": end,
                                        "address": list(sources)})
                for entry in logs:
                    decoded = decoder.decode(entry)
                    if decoded is not None:
                        by_block.setdefault(decoded["blockNumber"], []).append(decoded)
            events: list[dict[str, Any]] = []
            for number in range(start, end + 1):
                block = w3.eth.get_block(number)
                events.append({"kind": "block", "event": "Block", "blockNumber": number,
                               "blockHash": block["hash"].to_0x_hex(),
                               "timestamp": int(block["timestamp"]),
                               "transactions": len(block["transactions"])})
                events.extend(sorted(by_block.get(number, []), key=lambda e: e["logIndex"]))
        for event in events:
            event["chain"] = chain.name
            event["chainId"] = chain.chain_id
        return events

    # -- the background loop -----------------------------------------------------------------

    def ensure_started(self, chain: Chain) -> None:
        """Start polling `chain` in a thread, once; the first round places the cursor."""
        with self._lock:
            running = self._threads.get(chain.chain_id)
            if running is not None and running.is_alive():
                return
            self._stop.clear()
            thread = threading.Thread(target=self._loop, args=(chain,), daemon=True,
                                      name=f"defi-events-{chain.name}")
            self._threads[chain.chain_id] = thread
            thread.start()

    def running(self) -> list[int]:
        with self._lock:
            return [cid for cid, t in self._threads.items() if t.is_alive()]

    def _loop(self, chain: Chain) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once(chain)
            except Exception:
                log.exception("defi event poll failed", extra={"chain": chain.name})
            self._stop.wait(self._interval)

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            threads = list(self._threads.values())
            self._threads.clear()
        for thread in threads:
            thread.join(timeout=10)

    def chain(self, key: str) -> Chain:
        return self._chains.get(key)
