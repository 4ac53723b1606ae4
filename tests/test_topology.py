"""The production topology as processes (issue 16; deploy/compose.yaml as containers): a scratch
PostgreSQL database, a Redis server of the drill's own, the chain process (`alphintra chain
serve`), the venue process (`alphintra venue serve`), two `alphintra serve` replicas behind
HAProxy (Debian's package, `make lb-host`, run on deploy/haproxy.cfg itself) and two
`alphintra worker` processes, one for americas and one for
emea and apac. The drill:

- requests through the load balancer reach both replicas (HAProxy names the replica in
  `X-Alphintra-Replica`, and each replica's own /metrics counts what it served);
- a job submitted through the load balancer is finished by the worker of its tenant's region,
  and its `jobUpdated` subscription over a WebSocket through the load balancer sees it finish;
- a key revoked through one replica closes its open WebSocket on the other within 5 s;
- both replicas answer the same DeFi balances for a tenant's address after a faucet funding and
  a swap (one chain for all);
- one replica SIGKILLed: the load balancer keeps answering every request.

PostgreSQL: ALPHINTRA_DRILL_POSTGRES, as in tests/test_drills_outage.py (its fixtures are used).
Without haproxy the drill skips, except under CI=true where it fails: CI installs it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from gateway.runtime import build_runtime
from gateway.settings import Settings
from tests.support import JWT_SECRET, GraphQLClient, TransportWS, error_codes, free_port, onboard, user_key
from tests.test_drills_outage import OwnRedis, own_redis, postgres_url  # noqa: F401 - fixtures
from tests.test_multiprocess import Proc, await_condition

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

HAPROXY_CFG = Path(__file__).resolve().parents[1] / "deploy" / "haproxy.cfg"
REPLICA_HEADER = "x-alphintra-replica"
VIEWER = "{ viewer { authenticatedBy } }"
RUN = "mutation($i: RunDiagnosticsInput) { runDiagnostics(input: $i) { id status } }"
JOB = "query($id: ID!) { job(id: $id) { status result } }"
JOB_UPDATED = "subscription($id: ID!) { jobUpdated(id: $id) { sequence job { id status } } }"
REVOKE = "mutation($id: ID!) { revokeApiKey(id: $id) { revokedAt } }"
KEYS = "{ apiKeys(first: 50) { edges { node { id keyId } } } }"
CHAINS = "{ defiChains { name } }"
OPEN = "mutation($c: String!) { defiOpenAccount(chain: $c) { address } }"
ACCOUNT = """query($c: String!) { defiAccount(chain: $c) { address nativeBalance
  balances { token { symbol } raw } } }"""
SWAP = """mutation($i: DefiSwapInput!) { defiSwap(input: $i) { status amountOut errorCode } }"""


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin")
    if found is None:
        message = "the topology drill needs haproxy (Debian's package: make lb-host)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI must install it", pytrace=False)
        pytest.skip(message)
    return found


def haproxy(binary: str, bind: str, gateways: list[str]) -> Proc:
    """haproxy in the foreground on deploy/haproxy.cfg, its addresses given as the file expects."""
    env = {**os.environ, "ALPHINTRA_LB_BIND": bind,
           **{f"ALPHINTRA_LB_GATEWAY_{i}": g for i, g in enumerate(gateways, 1)}}
    return Proc("haproxy", [], {}, popen=subprocess.Popen(
        [binary, "-db", "-f", str(HAPROXY_CFG)], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT))


@dataclass
class Topology:
    lb: str  # http://127.0.0.1:<port>
    replicas: dict[str, str]  # HAProxy's server name -> that replica's own URL
    admin_key: str  # tenant "americas"'s admin
    emea_key: str  # tenant "emea"'s admin
    trader: tuple[str, str]  # (user id, API key) of an americas trader
    workers: dict[str, Proc]  # region -> the worker consuming it
    gateways: dict[str, Proc]
    procs: list[Any] = field(default_factory=list)

    @property
    def ws(self) -> str:
        return self.lb.replace("http://", "ws://") + "/graphql"

    def check_alive(self) -> None:
        dead = [p for p in self.procs if not p.alive()]
        assert not dead, "\n".join(p.output() for p in dead)


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return False
    return True


def chain_answers(url: str) -> bool:
    try:
        body = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
                          timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return False
    return "result" in body


@pytest.fixture(scope="module")
def topology(postgres_url: str, own_redis: OwnRedis, tmp_path_factory: pytest.TempPathFactory  # noqa: F811
             ) -> Iterator[Topology]:
    binary = haproxy_binary()
    chain_port, venue_port, lb_port = free_port(), free_port(), free_port()
    ports = {"gateway-1": free_port(), "gateway-2": free_port()}
    env = {
        "ALPHINTRA_DATABASE_URL": postgres_url,
        "ALPHINTRA_REDIS_URL": own_redis.url,
        "ALPHINTRA_REDIS_NAMESPACE": f"topology-{uuid.uuid4().hex[:8]}",
        "ALPHINTRA_JWT_SECRET": JWT_SECRET,
        # The same secret key in every process, as the operations guide requires.
        "ALPHINTRA_SECRET_KEY": base64.b64encode(os.urandom(32)).decode(),
        "ALPHINTRA_DEFI_CHAIN_URL": f"http://127.0.0.1:{chain_port}",
        "ALPHINTRA_VENUE_URL": f"tcp://127.0.0.1:{venue_port}",  # one set of simulated books
        "ALPHINTRA_WARM_ON_START": "false",  # two replicas warming up at once on 2 CPUs: slow
        "ALPHINTRA_LOG_JSON": "false",
        "ALPHINTRA_OTEL_EXPORTER": "none",
        "ALPHINTRA_WORKER_THREADS": "2",
    }
    # Tenants first: the replicas load the role grants at start.
    rt = build_runtime(Settings.from_env(env))
    try:
        americas = onboard(rt)
        _, _, (_, emea_key) = rt.tenancy.onboard(
            f"emea-{uuid.uuid4().hex[:8]}", "EMEA tenant", "admin@emea.test", home_region="emea")
        trader = user_key(rt, americas, "trader")
    finally:
        rt.close()

    procs: list[Any] = []
    try:
        state = tmp_path_factory.mktemp("chain") / "chain-state"
        chain = Proc("chain", ["chain", "serve", "--host", "127.0.0.1", "--port", str(chain_port),
                               "--state", str(state)], env)
        procs.append(chain)
        await_condition(lambda: chain_answers(env["ALPHINTRA_DEFI_CHAIN_URL"]), 60,
                        "the chain process answering JSON-RPC", procs)
        venue = Proc("venue", ["venue", "serve", "--host", "127.0.0.1", "--port", str(venue_port)],
                     env)
        procs.append(venue)
        await_condition(lambda: listening(venue_port), 60, "the venue process listening", procs)
        gateways = {name: Proc(name, ["serve", "--port", str(port)], env) for name, port in ports.items()}
        procs.extend(gateways.values())
        workers = {"americas": Proc("worker americas", ["worker", "--region", "americas"], env),
                   "emea": Proc("worker emea+apac", ["worker", "--region", "emea", "--region", "apac"],
                                env)}
        procs.extend(workers.values())
        replicas = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        await_condition(lambda: all(ready(url) for url in replicas.values()), 90,
                        "both replicas ready", procs)
        lb = haproxy(binary, f"127.0.0.1:{lb_port}", [f"127.0.0.1:{p}" for p in ports.values()])
        procs.append(lb)
        lb_url = f"http://127.0.0.1:{lb_port}"
        # Both servers up in HAProxy (two good checks each): answers come from both names.
        seen: set[str] = set()
        await_condition(lambda: seen.update(_replica_names(lb_url)) or len(seen) == 2, 30,
                        "the load balancer sending to both replicas", procs)
        yield Topology(lb_url, replicas, americas.key, emea_key, trader, workers, gateways, procs)
    finally:
        for proc in reversed(procs):
            proc.stop()


def _replica_names(lb_url: str) -> set[str]:
    try:
        return {httpx.get(f"{lb_url}/readyz", timeout=2).headers.get(REPLICA_HEADER, "")} - {""}
    except httpx.HTTPError:
        return set()


def graphql_requests(url: str) -> float:
    """The replica's own count of POST /graphql requests it answered (its /metrics)."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == "alphintra_http_requests_total"
               and sample.labels.get("route") == "/graphql" and sample.labels.get("method") == "POST")


def test_requests_through_the_load_balancer_reach_both_replicas(topology: Topology):
    before = {name: graphql_requests(url) for name, url in topology.replicas.items()}
    lb = GraphQLClient(topology.lb)
    answered_by: list[str] = []
    for _ in range(20):
        response = lb.post(VIEWER, key=topology.admin_key)
        assert response.status_code == 200 and "errors" not in response.json(), response.text
        answered_by.append(response.headers[REPLICA_HEADER])
    counted = {name: graphql_requests(url) - before[name] for name, url in topology.replicas.items()}
    # Round robin: each replica served about half, and by its own count, the same requests.
    assert {name: answered_by.count(name) for name in topology.replicas} == counted
    assert min(counted.values()) >= 5 and sum(counted.values()) == 20, counted
    topology.check_alive()


async def _follow_job(ws_url: str, key: str, job_id: str) -> list[str]:
    """The statuses `jobUpdated` delivers over one socket, until the subscription completes."""
    statuses = []
    async with TransportWS(ws_url, key) as ws:
        assert ws.ack is not None and ws.ack["type"] == "connection_ack", ws.ack
        await ws.subscribe("1", JOB_UPDATED, {"id": job_id})
        while True:
            message = await ws.next(30, op_id="1")
            if message["type"] == "complete":
                return statuses
            assert message["type"] == "next", message
            statuses.append(message["payload"]["data"]["jobUpdated"]["job"]["status"])


@pytest.mark.parametrize("region", ["americas", "emea"])
def test_a_job_through_the_load_balancer_is_done_by_its_regions_worker_and_seen_over_it(
        topology: Topology, region: str):
    key = topology.admin_key if region == "americas" else topology.emea_key
    lb = GraphQLClient(topology.lb)
    started = lb.data(RUN, {"i": {"steps": 10, "stepSeconds": 0.25}}, key=key)["runDiagnostics"]
    assert started["status"] == "QUEUED"
    statuses = asyncio.run(asyncio.wait_for(_follow_job(topology.ws, key, started["id"]), 60))
    # The first message is the snapshot taken at subscribe time; the job takes 2.5 s, so the
    # socket saw it run and finish, not only a finished snapshot.
    assert statuses[0] in {"QUEUED", "RUNNING"} and statuses[-1] == "SUCCEEDED", statuses
    job = lb.data(JOB, {"id": started["id"]}, key=key)["job"]
    assert job["status"] == "SUCCEEDED"
    assert job["result"]["worker"]["pid"] == topology.workers[region].pid
    topology.check_alive()


async def _closed_after(ws: Any, act: Any, timeout: float) -> tuple[int | None, str, float]:
    started = time.monotonic()
    await asyncio.to_thread(act)
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except websockets.ConnectionClosed as closed:
        code, reason = (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else (None, "")
    return code, reason, time.monotonic() - started


def test_a_key_revoked_through_one_replica_closes_its_socket_on_the_other(topology: Topology):
    _, trader_key = topology.trader
    admin = topology.admin_key
    edges = GraphQLClient(topology.lb).data(KEYS, key=admin)["apiKeys"]["edges"]
    key_id = next(e["node"]["id"] for e in edges if e["node"]["keyId"] == trader_key.split("_")[1])
    job = GraphQLClient(topology.lb).data(RUN, {"i": {"steps": 40, "stepSeconds": 0.25}},
                                          key=trader_key)["runDiagnostics"]

    async def scenario() -> tuple[str, int | None, str, float]:
        async with websockets.connect(topology.ws, subprotocols=["graphql-transport-ws"]) as ws:
            on = ws.response.headers[REPLICA_HEADER]  # the replica the LB gave this socket
            other = next(url for name, url in topology.replicas.items() if name != on)
            await ws.send(json.dumps({"type": "connection_init",
                                      "payload": {"Authorization": f"Bearer {trader_key}"}}))
            assert json.loads(await ws.recv())["type"] == "connection_ack"
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {
                "query": JOB_UPDATED, "variables": {"id": job["id"]}}}))
            assert json.loads(await ws.recv())["type"] == "next"
            code, reason, elapsed = await _closed_after(
                ws, lambda: GraphQLClient(other).data(REVOKE, {"id": key_id}, key=admin), 10)
            return on, code, reason, elapsed

    on, code, reason, elapsed = asyncio.run(scenario())
    print(f"socket on {on}: closed {elapsed * 1000:.0f} ms after the revocation on the other replica")
    assert (code, reason) == (4403, "AUTH_KEY_REVOKED")
    assert elapsed < 5
    for url in topology.replicas.values():
        refused = GraphQLClient(url).post(VIEWER, key=trader_key).json()
        assert error_codes(refused) == ["AUTH_KEY_REVOKED"]


def test_both_replicas_answer_the_same_defi_balances(topology: Topology):
    key = topology.admin_key
    lb = GraphQLClient(topology.lb)
    chain = lb.data(CHAINS, key=key)["defiChains"][0]["name"]
    address = lb.data(OPEN, {"c": chain}, key=key)["defiOpenAccount"]["address"]  # faucet funding
    swap = lb.data(SWAP, {"i": {"chain": chain, "tokenIn": "WETH", "tokenOut": "USDC", "amountIn": "1",
                                "slippageBps": 100, "idempotencyKey": uuid.uuid4().hex}},
                   key=key)["defiSwap"]
    assert swap["status"] == "EXECUTED", swap
    answers = {name: GraphQLClient(url).data(ACCOUNT, {"c": chain}, key=key)["defiAccount"]
               for name, url in topology.replicas.items()}
    first, second = answers.values()
    assert first["address"] == address and first == second, answers
    held = {b["token"]["symbol"]: int(b["raw"]) for b in first["balances"]}
    assert held["WETH"] == 99 * 10**18  # the faucet's 100, less the 1 swapped
    assert held["USDC"] > 1_000_000 * 10**6  # its 1,000,000 and the swap's proceeds


def test_the_load_balancer_keeps_answering_with_a_replica_killed(topology: Topology):
    # Last in the module: it leaves one replica.
    victim = topology.gateways["gateway-1"]
    os.kill(victim.pid, signal.SIGKILL)
    victim.popen.wait(10)
    topology.procs.remove(victim)
    lb = GraphQLClient(topology.lb)
    answered_by = []
    started = time.monotonic()
    for _ in range(30):  # at once: before HAProxy's checks have marked it down
        response = lb.post(VIEWER, key=topology.admin_key)
        assert response.status_code == 200 and "errors" not in response.json(), response.text
        answered_by.append(response.headers[REPLICA_HEADER])
    print(f"30 requests answered in {time.monotonic() - started:.2f} s with gateway-1 killed")
    assert set(answered_by) == {"gateway-2"}
    # A new subscription through the load balancer still works.
    job = lb.data(RUN, {"i": {"steps": 4, "stepSeconds": 0.1}}, key=topology.admin_key)["runDiagnostics"]
    statuses = asyncio.run(asyncio.wait_for(
        _follow_job(topology.ws, topology.admin_key, job["id"]), 60))
    assert statuses[-1] == "SUCCEEDED"
    topology.check_alive()
