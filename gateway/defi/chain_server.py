"""`alphintra chain serve`: the embedded EVM as its own process, one chain for every replica.

The chain is the same eth-tester/py-evm chain the gateway runs in process (same chain id,
same pre-funded accounts), answering Ethereum JSON-RPC over HTTP: POST / with one request or
a batch, GET /healthz. Requests run one at a time under one lock (eth-tester is not
thread-safe), through web3's own eth-tester request and result formatting, so the answers are
what the in-process chain would give; a revert is error code 3 with the revert data, which
web3 turns into ContractLogicError.

State: py-evm's key-value store, written through to an append-only file (chain_store.LogDB)
and committed once per request or batch before it is answered. A restart reloads the file and
rebuilds the chain over it: same blocks, balances, contracts and nonces.

The demo world (with the runtime's extensions, demo_world.build_demo_world) is deployed here
once, at first start, and kept in the same store; replicas read it with `alphintra_world` and
ask for faucet grants with `alphintra_fund(address)`, which grants once per address for the
life of the state (a second call answers false and sends nothing).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from web3 import Web3
from web3.providers.eth_tester import EthereumTesterProvider

from gateway.defi.chain import EMBEDDED, EMBEDDED_CHAIN_ID, Chain, ChainSpec
from gateway.defi.chain_store import LogDB
from gateway.defi.demo_world import build_demo_world
from gateway.defi.world import WorldDeployment

log = logging.getLogger(__name__)

WORLD_KEY = b"alphintra:world"  # py-evm's own keys are hashes or "v1:..."-style names
FUNDED_PREFIX = b"alphintra:funded:"

# JSON-RPC 2.0 error codes (3 is what geth answers for a revert, with the revert data).
PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602
# What web3 and the gateway need; eth-tester's evm_*/testing_* controls are not served.
SERVED_PREFIXES = ("eth_", "net_", "web3_")
SERVER_ERROR, REVERTED = -32000, 3


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


class _NodeProvider(EthereumTesterProvider):
    """eth-tester's provider, each request inside the node's transaction (lock + commit)."""

    def __init__(self, node: ChainNode, tester: Any) -> None:
        super().__init__(tester)
        self._node = node

    def make_request(self, method: Any, params: Any) -> Any:
        with self._node.transaction():
            return super().make_request(method, params)


class ChainNode:
    """The chain over its state file, the demo world on it, and the JSON-RPC dispatch."""

    def __init__(self, state: Path, *, fsync: bool = True) -> None:
        self.store = LogDB(state, fsync=fsync)
        self._lock = threading.RLock()
        self._depth = 0
        tester = _tester_over(self.store)
        # In-process use (the world's deployment, the faucet) goes through web3 as the gateway's
        # embedded chain does; served requests skip web3's client middleware (they are raw).
        self.chain = Chain(ChainSpec(EMBEDDED_CHAIN_ID, EMBEDDED, EMBEDDED),
                           _web3=Web3(_NodeProvider(self, tester)))
        raw = Web3(_NodeProvider(self, tester), middleware=[])
        self._request: Callable[[str, Any], Any] = raw.provider.request_func(raw, raw.middleware_onion)
        self.world = build_demo_world()
        self.deployment: WorldDeployment | None = None

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One at a time; what the outermost holder changed is on disk when it leaves."""
        with self._lock:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self.store.commit()

    def start(self) -> WorldDeployment:
        """The demo world: deployed at the first start, read back from the state after."""
        with self.transaction():
            raw = self.store.get(WORLD_KEY)
            if raw is None:
                deployment = self.world.ensure(self.chain)
                self.store[WORLD_KEY] = json.dumps(deployment.document()).encode()
            else:
                deployment = WorldDeployment.from_document(json.loads(raw))
                self.world.adopt(self.chain, deployment)
        self.deployment = deployment
        return deployment

    def close(self) -> None:
        with self._lock:
            self.store.close()

    @property
    def block_number(self) -> int:
        return int(self.chain.web3.eth.block_number)

    def fund(self, address: str) -> bool:
        """The faucet's grant to `address`, once for the life of the state: true when granted
        now, false when it was granted before."""
        checksum = Web3.to_checksum_address(address)
        key = FUNDED_PREFIX + checksum.lower().encode()
        with self.transaction():  # the grant's transactions and the mark: one frame on disk
            if key in self.store:
                return False
            self.world.fund(self.chain, checksum)
            self.store[key] = b"1"
            return True

    # ---- JSON-RPC ----
    def answer_batch(self, items: list[Any]) -> list[dict[str, Any]]:
        with self.transaction():
            answers = [self.answer(item) for item in items]
        return [a for a in answers if a is not None]

    def answer(self, item: Any) -> dict[str, Any] | None:
        """One request's response; None for a notification (no id)."""
        request_id = item.get("id") if isinstance(item, dict) else None
        try:
            if not (isinstance(item, dict) and item.get("jsonrpc") == "2.0"
                    and isinstance(item.get("method"), str)):
                raise RpcError(INVALID_REQUEST, "invalid request")
            params = item.get("params", [])
            if not isinstance(params, list):
                raise RpcError(INVALID_PARAMS, "params must be an array")
            result = self._dispatch(item["method"], params)
        except RpcError as exc:
            return error_response(request_id, exc.code, exc.message, exc.data)
        if isinstance(item, dict) and "id" not in item:
            return None
        return {"jsonrpc": "2.0", "id": request_id, "result": result}

    def _dispatch(self, method: str, params: list[Any]) -> Any:
        if method == "alphintra_world":
            assert self.deployment is not None, "start() first"
            return self.deployment.document()
        if method == "alphintra_fund":
            if len(params) != 1 or not isinstance(params[0], str) or not Web3.is_address(params[0]):
                raise RpcError(INVALID_PARAMS, "alphintra_fund takes one address")
            return self.fund(params[0])
        if not method.startswith(SERVED_PREFIXES):
            # eth-tester's test controls (evm_revert, evm_mine, testing_timeTravel …) would let
            # anyone who reaches the port rewind or reshape the chain every replica shares.
            raise RpcError(METHOD_NOT_FOUND, f"method {method} is not served")
        if method == "net_version":  # eth-tester answers "1"; the network is this chain
            return str(EMBEDDED_CHAIN_ID)
        from eth_tester.exceptions import TransactionFailed, ValidationError

        try:
            response = self._request(method, params)
        except TransactionFailed as exc:
            raise RpcError(REVERTED, str(exc), _revert_data(exc)) from None
        except (ValidationError, TypeError, ValueError) as exc:
            raise RpcError(INVALID_PARAMS, f"invalid params: {exc}") from None
        except Exception as exc:  # the node must answer whatever eth-tester raises
            log.warning("chain request %s failed: %r", method, exc)
            raise RpcError(SERVER_ERROR, f"{type(exc).__name__}: {exc}") from None
        if "error" in response:
            error = response["error"]
            code = error.get("code", SERVER_ERROR) if isinstance(error, Mapping) else SERVER_ERROR
            message = error.get("message", "") if isinstance(error, Mapping) else str(error)
            raise RpcError(int(code), str(message))
        return jsonable(response.get("result"))


def _tester_over(store: LogDB) -> Any:
    """eth-tester on py-evm with the chain's database in `store`: a new chain's genesis is
    copied into it (the default accounts, as the in-process chain has), an existing one is
    rebuilt over it from its canonical head."""
    from eth.db.atomic import AtomicDB
    from eth_tester import EthereumTester, PyEVMBackend

    backend = PyEVMBackend()  # genesis in memory: the chain class, accounts and genesis data
    if store.empty:
        for key, value in backend.chain.chaindb.db.wrapped_db.kv_store.items():
            store[key] = value
        store.commit()
    backend.chain = type(backend.chain)(AtomicDB(store))
    return EthereumTester(backend)


def _revert_data(exc: BaseException) -> str:
    """The revert data as hex, for web3 to raise ContractLogicError with the reason as geth's
    would: eth-tester's own TransactionFailed (which web3's provider wrapped) carries the raw
    bytes, or the Error(string) reason it already decoded, which is encoded back."""
    from eth_abi import abi

    original = exc.__context__ if exc.__context__ is not None else exc
    arg: Any = original.args[0] if original.args else b""
    if isinstance(arg, BaseException):
        arg = arg.args[0] if arg.args else b""
    if isinstance(arg, bytes | bytearray):
        return "0x" + bytes(arg).hex()
    text = str(arg)
    if text.startswith(("b'", 'b"')):  # bytes eth-tester could not decode, already printed
        return "0x"
    return "0x08c379a0" + abi.encode(["string"], [text]).hex()


def jsonable(value: Any) -> Any:
    """eth-tester's formatted results as JSON-RPC writes them: quantities and bytes as hex."""
    if isinstance(value, bool) or value is None or isinstance(value, str | float):
        return value
    if isinstance(value, int):
        return hex(value)
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, Mapping):  # a bloom is 256 bytes, leading zeros included
        return {str(k): ("0x" + v.to_bytes(256).hex() if k == "logsBloom" and isinstance(v, int)
                         else jsonable(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    raise TypeError(f"cannot serialise {type(value).__name__}")


def error_response(request_id: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


def create_chain_app(node: ChainNode) -> Starlette:
    async def rpc(request: Request) -> Response:
        try:
            payload = json.loads(await request.body())
        except ValueError:
            return JSONResponse(error_response(None, PARSE_ERROR, "parse error"))
        if isinstance(payload, list):
            if not payload:
                return JSONResponse(error_response(None, INVALID_REQUEST, "empty batch"))
            answers: Any = await run_in_threadpool(node.answer_batch, payload)
        else:
            answers = await run_in_threadpool(node.answer_batch, [payload])
            answers = answers[0] if answers else None
        return JSONResponse(answers) if answers else Response(status_code=204)

    async def healthz(_: Request) -> Response:
        block = await run_in_threadpool(lambda: node.block_number)
        return JSONResponse({"chainId": EMBEDDED_CHAIN_ID, "block": block})

    return Starlette(routes=[Route("/", rpc, methods=["POST"]),
                             Route("/healthz", healthz, methods=["GET"])])


def serve(host: str, port: int, state: Path, announce: Callable[[str], None]) -> None:
    """Open the state, deploy or read the world, serve until SIGTERM/SIGINT, close the state."""
    import uvicorn

    node = ChainNode(state)
    if node.store.torn_bytes:
        announce(f"chain state: dropped {node.store.torn_bytes} bytes of an unfinished write")
    try:
        node.start()
        announce(f"chain {EMBEDDED_CHAIN_ID} at block {node.block_number} serving JSON-RPC on "
                 f"http://{host}:{port} (state {state.resolve()})")
        uvicorn.run(create_chain_app(node), host=host, port=port, log_config=None,
                    access_log=False)
    finally:
        node.close()
