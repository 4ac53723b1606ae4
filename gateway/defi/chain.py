"""Chain connections through web3: the embedded in-process EVM and JSON-RPC endpoints.

The embedded chain (eth-tester on py-evm) is built on first use, never at import or in
`build_runtime`, so start-up stays fast. eth-tester is not thread-safe: every request to it
goes through one lock. A JSON-RPC endpoint that does not answer is DEFI_CHAIN_UNAVAILABLE.

Configuration (`ALPHINTRA_DEFI_CHAINS`): a JSON list of objects {"id", "name", "rpcUrl",
"explorerUrl"} or a comma-separated list of `id:name:url[:explorer]`, e.g.
`1:mainnet:https://eth.example/rpc:https://etherscan.io,10:optimism:http://127.0.0.1:9545`.
`rpcUrl` "embedded" names the in-process EVM. With `defi_embedded` on (the default) the
embedded chain is listed first as "embedded". With `defi_chain_url` set, that same chain (same
name, same id) is the one `alphintra chain serve` runs for every replica and worker, reached
over JSON-RPC at that URL (gateway/defi/chain_server.py): `Chain.served`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from gateway.defi.errors import ChainUnavailable, ChainUnknown

EMBEDDED = "embedded"
EMBEDDED_CHAIN_ID = 131277322940537  # eth-tester's own chain id
RPC_TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class ChainSpec:
    chain_id: int
    name: str
    rpc_url: str  # "embedded" or an http(s) JSON-RPC endpoint
    explorer_url: str | None = None
    # Where signed transactions go instead of the public mempool (a private relay such as
    # Flashbots Protect), for chains that offer one; JSON key "privateRpcUrl".
    private_rpc_url: str | None = None
    # The embedded chain only: the URL of `alphintra chain serve` when the chain runs there
    # (shared by every process) instead of in this process.
    served_url: str | None = None

    @property
    def embedded(self) -> bool:
        return self.rpc_url == EMBEDDED


@dataclass
class Chain:
    """One chain and its web3 instance (built lazily). `private_submission` is the spec's
    private RPC where the chain offers one; None sends to the public RPC (the embedded chain
    has no mempool to front-run from: it mines each transaction as it is sent)."""

    spec: ChainSpec
    _web3: Any = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def chain_id(self) -> int:
        return self.spec.chain_id

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def rpc_url(self) -> str:
        return self.spec.rpc_url

    @property
    def explorer_url(self) -> str | None:
        return self.spec.explorer_url

    @property
    def private_submission(self) -> str | None:
        return self.spec.private_rpc_url

    @property
    def embedded(self) -> bool:
        return self.spec.embedded

    @property
    def served(self) -> bool:
        """The embedded chain, run by `alphintra chain serve` rather than in this process."""
        return self.embedded and self.spec.served_url is not None

    @property
    def web3(self) -> Any:
        """The web3.Web3 for this chain; the embedded EVM is created on the first call."""
        with self._lock:
            if self._web3 is None:
                if self.served:
                    self._web3 = _rpc_web3(str(self.spec.served_url))
                else:
                    self._web3 = _embedded_web3() if self.embedded else _rpc_web3(self.rpc_url)
            return self._web3

    @property
    def tester(self) -> Any:
        """The eth-tester instance behind the in-process embedded chain (faucet accounts, time
        travel); a served chain has none here."""
        if not self.embedded or self.served:
            raise ChainUnknown(f"chain {self.name} has no in-process tester")
        return self.web3.provider.ethereum_tester

    def served_request(self, method: str, params: list[Any]) -> Any:
        """One of the chain process's own methods (`alphintra_world`, `alphintra_fund`); an
        error answer is DEFI_CHAIN_UNAVAILABLE (nothing this process can fix)."""
        with self.guard():
            answer = self.web3.provider.make_request(method, params)
        if "error" in answer:
            error = answer["error"]
            message = error.get("message") if isinstance(error, dict) else str(error)
            raise ChainUnavailable(f"chain {self.name}: {method} failed: {message}",
                                   details={"chain": self.name, "method": method})
        return answer["result"]

    def explorer_link(self, tx_hash: str) -> str | None:
        return f"{self.explorer_url.rstrip('/')}/tx/{tx_hash}" if self.explorer_url else None

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Turn a transport failure of the RPC endpoint into DEFI_CHAIN_UNAVAILABLE."""
        try:
            yield
        except _transport_errors() as exc:
            raise ChainUnavailable(f"chain {self.name} did not answer",
                                   details={"chain": self.name}) from exc

    def check_available(self) -> None:
        with self.guard():
            reported = self.web3.eth.chain_id
        if reported != self.chain_id:
            raise ChainUnavailable(f"chain {self.name} answered as chain id {reported}",
                                   details={"chain": self.name, "reported": reported})


def _transport_errors() -> tuple[type[BaseException], ...]:
    import requests
    from web3.exceptions import ProviderConnectionError, TimeExhausted

    return (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
            ProviderConnectionError, TimeExhausted, ConnectionError, TimeoutError)


def revert_errors() -> tuple[type[BaseException], ...]:
    """What a call or gas estimate that would revert raises: web3's error over JSON-RPC,
    eth-tester's own on the embedded chain."""
    from eth_tester.exceptions import TransactionFailed
    from web3.exceptions import ContractLogicError

    return (ContractLogicError, TransactionFailed)


def _embedded_web3() -> Any:
    from web3 import Web3
    from web3.providers.eth_tester import EthereumTesterProvider

    class LockedTesterProvider(EthereumTesterProvider):
        """eth-tester mutates shared state on every request; serialise them."""

        _request_lock = threading.RLock()

        def make_request(self, method: Any, params: Any) -> Any:
            with self._request_lock:
                return super().make_request(method, params)

    return Web3(LockedTesterProvider())


def _rpc_web3(url: str) -> Any:
    from web3 import Web3

    return Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": RPC_TIMEOUT_SECONDS}))


def parse_chain_specs(raw: str) -> list[ChainSpec]:
    raw = raw.strip()
    if not raw:
        return []
    if raw.startswith("["):
        return [ChainSpec(int(item["id"]), str(item["name"]), str(item.get("rpcUrl", EMBEDDED)),
                          item.get("explorerUrl"), item.get("privateRpcUrl"))
                for item in json.loads(raw)]
    specs = []
    for entry in (e.strip() for e in raw.split(",") if e.strip()):
        chain_id, name, rest = entry.split(":", 2)
        url, explorer = rest, None
        cut = rest.find(":http", 1)
        if cut > 0:
            url, explorer = rest[:cut], rest[cut + 1:]
        specs.append(ChainSpec(int(chain_id), name, url, explorer))
    return specs


class Chains:
    """The chains this gateway reaches, by name or id."""

    def __init__(self, specs: list[ChainSpec]) -> None:
        self._chains: dict[str, Chain] = {}
        for spec in specs:
            if spec.name in self._chains or any(c.chain_id == spec.chain_id
                                                for c in self._chains.values()):
                raise ValueError(f"chain {spec.name} ({spec.chain_id}) configured twice")
            self._chains[spec.name] = Chain(spec)

    @classmethod
    def from_settings(cls, settings: Any) -> Chains:
        specs = []
        if getattr(settings, "defi_embedded", True):
            specs.append(ChainSpec(EMBEDDED_CHAIN_ID, EMBEDDED, EMBEDDED, None,
                                   served_url=getattr(settings, "defi_chain_url", None) or None))
        specs.extend(parse_chain_specs(getattr(settings, "defi_chains", "") or ""))
        return cls(specs)

    def all(self) -> list[Chain]:
        return list(self._chains.values())

    def get(self, key: str | int) -> Chain:
        """By name ("embedded") or chain id (as an int or a decimal string)."""
        text = str(key).strip()
        if text in self._chains:
            return self._chains[text]
        for chain in self._chains.values():
            if str(chain.chain_id) == text:
                return chain
        raise ChainUnknown(f"unknown chain {text!r}", details={"chain": text,
                           "known": list(self._chains)})

    def embedded(self) -> Chain | None:
        return next((c for c in self._chains.values() if c.embedded), None)
