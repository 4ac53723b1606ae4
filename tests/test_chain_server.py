"""`alphintra chain serve`: the embedded EVM as its own process. A web3 client and the gateway's
DeFi services through it; two gateways on one chain answer the same balances after one of
them swaps; a restart (even SIGKILL) keeps blocks, balances, nonces and faucet grants; the
state file drops a torn write; and a gateway beside Redis refuses an in-process chain."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from web3 import Web3
from web3.exceptions import ContractLogicError

from gateway.app import create_app
from gateway.defi.chain import EMBEDDED_CHAIN_ID, Chains
from gateway.defi.chain_store import ChainStoreBusy, LogDB
from gateway.defi.deploy import bind
from gateway.defi.lending_deploy import EXTRA_KEY
from gateway.defi.world import TOKENS, WorldDeployment
from gateway.runtime import build_runtime
from gateway.settings import Settings
from tests.support import GraphQLClient, LiveServer, error_codes, free_port, onboard, unique, wait_for
from tests.test_multiprocess import Proc, await_condition, gateway_env, healthy
from tests.test_multiprocess import own_database as own_database  # a fixture, used by name

ACCOUNT = """query { defiAccount(chain: "embedded") { address balances { token { symbol } raw } } }"""
OPEN = """mutation { defiOpenAccount(chain: "embedded") { address } }"""
SWAP = """mutation($i: DefiSwapInput!) { defiSwap(input: $i) { status amountOut account } }"""


class ChainProcess:
    """`alphintra chain serve` on a free port over `state`."""

    def __init__(self, state: Path, port: int | None = None) -> None:
        self.state = state
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = Proc("chain", ["chain", "serve", "--port", str(self.port), "--state",
                                   str(state)], {"ALPHINTRA_LOG_JSON": "false"})
        # the first start deploys the demo world (vyper compile included): seconds
        await_condition(self.healthy, 90, "chain process healthy", [self.proc])

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def rpc(self, method: str, *params: Any) -> Any:
        answer = httpx.post(self.url, json={"jsonrpc": "2.0", "id": 1, "method": method,
                                            "params": list(params)}, timeout=30).json()
        assert "error" not in answer, answer
        return answer["result"]

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.stop()


@pytest.fixture(scope="module")
def chain_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChainProcess]:
    served = ChainProcess(tmp_path_factory.mktemp("chain") / "chain.state")
    yield served
    served.proc.stop()


def served_chains(url: str) -> Chains:
    return Chains.from_settings(Settings(defi_chain_url=url))


@pytest.mark.slow
def test_a_web3_client_and_the_world_through_the_chain_process(chain_process: ChainProcess) -> None:
    chain = served_chains(chain_process.url).get("embedded")
    assert chain.served and chain.chain_id == EMBEDDED_CHAIN_ID
    chain.check_available()  # answers as the in-process chain's id
    w3 = chain.web3
    world = WorldDeployment.from_document(chain_process.rpc("alphintra_world"))
    assert set(world.tokens) == {t.symbol for t in TOKENS}
    assert len(world.pools["cpmm"]) == 6 and len(world.pools["stableswap"]) == 2
    assert w3.eth.get_code(world.extras[EXTRA_KEY]) != b""  # the runtime's lending extension

    # the faucet: once per address, remembered by the chain process
    address = w3.eth.account.create().address
    assert chain_process.rpc("alphintra_fund", address) is True
    assert chain_process.rpc("alphintra_fund", address) is False
    usdc = bind(chain, "Token", world.tokens["USDC"].address)
    assert usdc.functions.balanceOf(address).call() == 1_000_000 * 10**6
    assert w3.eth.get_balance(address) == Web3.to_wei(100, "ether")

    # a revert reaches web3 as ContractLogicError with the contract's reason
    pool = bind(chain, "ConstantProductPool", world.pools["cpmm"][0])
    with pytest.raises(ContractLogicError, match="expired"):
        pool.functions.swap(world.tokens["WETH"].address, 10**18, 1, address, 1).call(
            {"from": address})

    # a batch: one answer per request, by id; an unknown method is a JSON-RPC error
    answers = httpx.post(chain_process.url, json=[
        {"jsonrpc": "2.0", "id": 7, "method": "eth_chainId", "params": []},
        {"jsonrpc": "2.0", "id": 8, "method": "eth_nothing", "params": []}]).json()
    assert answers[0] == {"jsonrpc": "2.0", "id": 7, "result": hex(EMBEDDED_CHAIN_ID)}
    assert answers[1]["id"] == 8 and answers[1]["error"]["code"] == -32601
    bad = httpx.post(chain_process.url, content=b"{not json").json()
    assert bad["error"]["code"] == -32700


def runtime_on(settings: Settings, url: str) -> Any:
    return build_runtime(settings.with_(defi_chain_url=url, embedded_worker="off"))


@pytest.mark.slow
def test_two_gateways_on_one_chain_answer_the_same_balances(chain_process: ChainProcess,
                                                          migrated: Settings) -> None:
    a, b = runtime_on(migrated, chain_process.url), runtime_on(migrated, chain_process.url)
    try:
        tenant = onboard(a)
        # Two runtimes without a shared bus: B learns of A's grants by its policy's periodic
        # fingerprint check (replicas on Redis hear them at once).
        wait_for(lambda: "admin" in b.policy.roles(tenant.admin_id, tenant.id), timeout=5)
        with LiveServer(create_app(runtime=a)) as server_a, \
                LiveServer(create_app(runtime=b)) as server_b:
            gql_a, gql_b = GraphQLClient(server_a.url), GraphQLClient(server_b.url)
            address = gql_a.data(OPEN, key=tenant.key)["defiOpenAccount"]["address"]
            gql_b.data(OPEN, key=tenant.key)  # B funds nothing again: the chain granted once

            def balances(gql: GraphQLClient) -> dict[str, int]:
                account = gql.data(ACCOUNT, key=tenant.key)["defiAccount"]
                assert account["address"] == address
                return {x["token"]["symbol"]: int(x["raw"]) for x in account["balances"]}

            before = balances(gql_b)
            assert before["WETH"] == 100 * 10**18 and before == balances(gql_a)
            done = gql_a.data(SWAP, {"i": {
                "chain": "embedded", "tokenIn": "WETH", "tokenOut": "USDC", "amountIn": "1",
                "slippageBps": 50, "idempotencyKey": unique("swap")}}, key=tenant.key)["defiSwap"]
            assert done["status"] == "EXECUTED" and done["account"] == address
            after_b = balances(gql_b)  # B's answer shows A's swap
            assert after_b == balances(gql_a)
            assert after_b["WETH"] == before["WETH"] - 10**18
            assert after_b["USDC"] > before["USDC"]
    finally:
        a.close()
        b.close()


@pytest.mark.slow
def test_a_chain_started_afresh_funds_stored_addresses_again(tmp_path: Path,
                                                             migrated: Settings) -> None:
    """The chain's state lost: a new chain at the same address knows nobody, and a running
    gateway must not trust its own memory of whom it funded."""
    first = ChainProcess(tmp_path / "first.state")
    rt = runtime_on(migrated, first.url)
    try:
        tenant = onboard(rt)
        with LiveServer(create_app(runtime=rt)) as server:
            gql = GraphQLClient(server.url)
            gql.data(OPEN, key=tenant.key)
            first.kill()
            fresh = ChainProcess(tmp_path / "fresh.state", port=first.port)
            try:
                account = gql.data(ACCOUNT, key=tenant.key)["defiAccount"]
                weth = {x["token"]["symbol"]: int(x["raw"]) for x in account["balances"]}["WETH"]
                assert weth == 100 * 10**18  # funded again, on the new chain
            finally:
                fresh.proc.stop()
    finally:
        rt.close()


@pytest.mark.slow
def test_a_restart_even_a_kill_keeps_the_chain(tmp_path: Path) -> None:
    state = tmp_path / "chain.state"
    first = ChainProcess(state)
    try:
        chain = served_chains(first.url).get("embedded")
        w3 = chain.web3
        sender = w3.eth.account.create()
        first.rpc("alphintra_fund", sender.address)
        receiver = w3.eth.account.create().address
        signed = sender.sign_transaction({
            "to": receiver, "value": 12345, "gas": 21000, "nonce": 0, "chainId": EMBEDDED_CHAIN_ID,
            "maxFeePerGas": 2 * 10**9, "maxPriorityFeePerGas": 10**9})
        w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(signed.raw_transaction))
        before = {"block": w3.eth.get_block("latest")["hash"], "number": w3.eth.block_number,
                  "sender": w3.eth.get_balance(sender.address), "receiver": w3.eth.get_balance(receiver),
                  "nonce": w3.eth.get_transaction_count(sender.address),
                  "world": first.rpc("alphintra_world")}
    finally:
        first.kill()  # no shutdown: every answered request is already on disk
    second = ChainProcess(state)
    try:
        w3 = served_chains(second.url).get("embedded").web3
        after = {"block": w3.eth.get_block("latest")["hash"], "number": w3.eth.block_number,
                 "sender": w3.eth.get_balance(sender.address), "receiver": w3.eth.get_balance(receiver),
                 "nonce": w3.eth.get_transaction_count(sender.address),
                 "world": second.rpc("alphintra_world")}
        assert after == before and after["receiver"] == 12345 and after["nonce"] == 1
        assert second.rpc("alphintra_fund", sender.address) is False  # the grant is remembered
        # and the chain goes on from there
        again = sender.sign_transaction({
            "to": receiver, "value": 1, "gas": 21000, "nonce": 1, "chainId": EMBEDDED_CHAIN_ID,
            "maxFeePerGas": 2 * 10**9, "maxPriorityFeePerGas": 10**9})
        receipt = w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(again.raw_transaction))
        assert receipt["status"] == 1 and receipt["blockNumber"] == before["number"] + 1
    finally:
        second.proc.stop()


def test_the_state_file_drops_a_torn_write(tmp_path: Path) -> None:
    path = tmp_path / "chain.state"
    store = LogDB(path, fsync=False)
    store[b"a"] = b"1"
    store[b"b"] = b"2"
    store.commit()
    del store[b"a"]
    store[b"c"] = b"3"
    store.close()
    whole = path.stat().st_size
    with path.open("ab") as f:  # a crash in the middle of appending the next frame
        f.write(b"\x00\x00\x01\x00garbage")
    reopened = LogDB(path, fsync=False)
    assert dict((k, reopened[k]) for k in reopened) == {b"b": b"2", b"c": b"3"}
    assert reopened.torn_bytes == 11 and path.stat().st_size == whole
    reopened[b"d"] = b"4"  # appends after the last good frame
    reopened.close()
    assert LogDB(path, fsync=False)[b"d"] == b"4"


def test_one_process_at_a_time_holds_a_state_file(tmp_path: Path) -> None:
    path = tmp_path / "chain.state"
    first = LogDB(path, fsync=False)
    with pytest.raises(ChainStoreBusy):
        LogDB(path, fsync=False)  # a second writer would fork the chain
    first.close()
    LogDB(path, fsync=False).close()  # released on close


def test_the_test_controls_are_not_served(chain_process: ChainProcess) -> None:
    for method in ("evm_snapshot", "evm_mine", "testing_timeTravel", "personal_listAccounts"):
        answer = httpx.post(chain_process.url, json={"jsonrpc": "2.0", "id": 1, "method": method,
                                                     "params": []}, timeout=10).json()
        assert answer["error"]["code"] == -32601, answer
    assert chain_process.rpc("net_version") == str(EMBEDDED_CHAIN_ID)


@pytest.mark.slow
def test_a_second_chain_process_on_the_same_state_is_refused(chain_process: ChainProcess) -> None:
    second = run_cli("chain", "serve", "--port", str(free_port()), "--state",
                     str(chain_process.state), env={"ALPHINTRA_LOG_JSON": "false"})
    assert second.returncode == 1, second.stderr
    assert "in use by another chain process" in second.stderr
    assert chain_process.healthy()


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("ALPHINTRA_")}
    full.update(env)
    return subprocess.run([sys.executable, "-m", "gateway", *args], env=full, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.slow
def test_serve_and_worker_refuse_an_in_process_chain_beside_redis(tmp_path: Path) -> None:
    env = {"ALPHINTRA_REDIS_URL": "redis://127.0.0.1:1/0",  # refused before connecting
           "ALPHINTRA_SECRET_KEY": "A" * 43 + "=", "ALPHINTRA_LOG_JSON": "false",
           "ALPHINTRA_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}
    for command in (["serve", "--port", str(free_port())], ["worker"]):
        done = run_cli(*command, env=env)
        assert done.returncode == 2, done.stderr
        line = done.stderr.strip()
        assert "\n" not in line and "alphintra chain serve" in line
        assert "ALPHINTRA_DEFI_CHAIN_URL" in line and "ALPHINTRA_DEFI_EMBEDDED=false" in line
    settings = Settings(redis_url="redis://x")
    assert settings.chain_problem() is not None
    assert settings.with_(defi_chain_url="http://127.0.0.1:8545").chain_problem() is None
    assert settings.with_(defi_embedded=False).chain_problem() is None
    assert Settings().chain_problem() is None  # the embedded default keeps its in-process chain


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_two_gateway_processes_beside_redis_share_the_chain(chain_process: ChainProcess,
                                                           own_database: Settings) -> None:
    """The README's scale-out: two `alphintra serve` on Redis and one chain process."""
    settings = own_database
    setup = build_runtime(settings.with_(embedded_worker="off", defi_chain_url=chain_process.url))
    try:
        tenant = onboard(setup)
    finally:
        setup.close()
    env = gateway_env(settings, f"alphintra-chain-{unique()}", embedded_worker="off",
                      defi_embedded="true", defi_chain_url=chain_process.url, warm_on_start="false")
    ports = free_port(), free_port()
    procs = [Proc(f"gateway {p}", ["serve", "--port", str(p)], env) for p in ports]
    try:
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        await_condition(lambda: all(healthy(u) for u in urls), 60, "both gateways healthy", procs)
        gql_a, gql_b = (GraphQLClient(u) for u in urls)
        gql_a.data(OPEN, key=tenant.key)
        done = gql_a.data(SWAP, {"i": {
            "chain": "embedded", "tokenIn": "WETH", "tokenOut": "DAI", "amountIn": "2",
            "slippageBps": 50, "idempotencyKey": unique("swap")}}, key=tenant.key)["defiSwap"]
        assert done["status"] == "EXECUTED"
        seen = [gql.data(ACCOUNT, key=tenant.key)["defiAccount"] for gql in (gql_a, gql_b)]
        assert seen[0] == seen[1]
        weth = next(int(x["raw"]) for x in seen[1]["balances"] if x["token"]["symbol"] == "WETH")
        assert weth == 98 * 10**18
    finally:
        for proc in procs:
            proc.stop()


def test_a_chain_process_that_is_down_is_chain_unavailable(migrated: Settings) -> None:
    runtime = runtime_on(migrated, f"http://127.0.0.1:{free_port()}")  # nothing listens there
    try:
        tenant = onboard(runtime)
        with LiveServer(create_app(runtime=runtime)) as server:
            gql = GraphQLClient(server.url)
            for query in (OPEN, '{ defiPools(chain: "embedded") { address } }'):
                assert error_codes(gql(query, key=tenant.key)) == ["DEFI_CHAIN_UNAVAILABLE"]
    finally:
        runtime.close()
