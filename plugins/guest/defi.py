"""A DeFi protocol inside a worker: its chain reads, and its pools' state.

The worker has no network. A protocol reads a chain through a `web3.Web3` whose provider asks
the gateway (`chain` asks: read-only JSON-RPC methods only, answered by the gateway against the
chain it already reaches). A pool's `state` is the protocol's own object, which need not cross
the wire: it stays here, and the gateway holds a handle in its place (`DefiPool.state`), turned
back into the state when the pool comes back for a quote. Handles carry this worker's epoch, so
one from a worker that has since been replaced is refused rather than misread.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
from collections import OrderedDict
from typing import Any

from plugins import sdk

MAX_STATES = 4096  # pool snapshots kept; the gateway re-reads pools older than these
# method -> (index of the chain argument or None, index of the pool argument or None)
ARGUMENTS: dict[str, tuple[int | None, int | None]] = {
    "pools": (0, None), "refresh": (0, 1), "quote": (None, 0), "mid_price": (None, 0),
    "onchain_quote": (0, 1), "swap_call": (0, 1),
}


class StateGone(LookupError):
    """A pool handle this worker no longer holds (evicted, or from a replaced worker)."""


def _provider(ask: Any, chain_id: int) -> Any:
    from web3.providers.base import BaseProvider

    class GatewayChain(BaseProvider):
        def make_request(self, method: Any, params: Any) -> Any:
            result = ask("chain", {"chain_id": chain_id, "method": str(method),
                                   "params": list(params or ())})
            return {"jsonrpc": "2.0", "id": 0, "result": result}

        def is_connected(self, show_traceback: bool = False) -> bool:
            return True

    return GatewayChain()


@dataclasses.dataclass
class DefiGuest:
    ask: Any  # Guest.ask
    epoch: str = dataclasses.field(default_factory=lambda: secrets.token_hex(4))
    states: OrderedDict[str, Any] = dataclasses.field(default_factory=OrderedDict)
    views: dict[tuple[int, str], sdk.DefiChainView] = dataclasses.field(default_factory=dict)
    counter: int = 0
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)  # calls run on threads

    def view(self, described: Any) -> sdk.DefiChainView:
        if not isinstance(described, dict) or not isinstance(described.get("chain_id"), int):
            raise TypeError("a chain arrives as {chain_id, name, directory}")
        directory = {str(k): [str(a) for a in v] for k, v in (described.get("directory") or {}).items()}
        key = (described["chain_id"], repr(sorted(directory.items())))
        with self.lock:
            found = self.views.get(key)
        if found is None:
            from web3 import Web3

            found = sdk.DefiChainView(described["chain_id"], str(described.get("name", "")),
                                      Web3(_provider(self.ask, described["chain_id"])), directory)
            with self.lock:
                found = self.views.setdefault(key, found)
        return found

    def keep(self, pool: Any) -> Any:
        """The pool as it leaves: its state replaced by a handle."""
        if not isinstance(pool, sdk.DefiPool):
            return pool  # the gateway refuses the shape, naming the plugin
        with self.lock:
            self.counter += 1
            handle = f"{self.epoch}:{self.counter}"
            self.states[handle] = pool.state
            while len(self.states) > MAX_STATES:
                self.states.popitem(last=False)
        return dataclasses.replace(pool, state=handle)

    def restore(self, pool: Any) -> Any:
        if not isinstance(pool, sdk.DefiPool) or not isinstance(pool.state, str):
            raise TypeError("a pool arrives with the handle this worker gave it")
        with self.lock:
            if pool.state not in self.states:
                raise StateGone(f"pool {pool.address}: its state is no longer held here")
            self.states.move_to_end(pool.state)
            state = self.states[pool.state]
        return dataclasses.replace(pool, state=state)

    def call(self, protocol: Any, method: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        chain_at, pool_at = ARGUMENTS[method]
        args = list(args)
        if chain_at is not None and chain_at < len(args):
            args[chain_at] = self.view(args[chain_at])
        if pool_at is not None and pool_at < len(args):
            args[pool_at] = self.restore(args[pool_at])
        answer = getattr(protocol, method)(*args, **kwargs)
        if method == "pools":
            return [self.keep(p) for p in answer] if isinstance(answer, list) else answer
        if method == "refresh":
            return self.keep(answer)
        return answer
