"""Subscription fan-out: N graphql-transport-ws clients on `orderUpdates` for one tenant, and
how long each order transition takes to reach every one of them (issue 14).

    .venv/bin/python bench/subscription_fanout.py [--clients 1000,10000] [--orders 5]
        [--interval 1.0] [--max-seconds 120] [--processes 2] [--selection '...']

What it does, for each N in --clients, in one run:

1. (Once) creates a SQLite database in a temporary directory, migrates it, onboards one tenant
   with a US trading account (ample credit, the duplicate guard off).
2. Starts a fresh gateway (`uvicorn _servers:published_gateway_app`: the gateway, whose bus
   notes when each order message is published; one worker; the embedded default: SQLite and
   the in-process bus) with the file-descriptor limit raised, and N WebSocket
   clients spread over --processes client processes (bench/_ws_client.py: raw asyncio, no
   compression offered), each `connection_init` with the tenant's API key and one
   `subscription { orderUpdates { … } }`.
3. Submits a probe order and waits until every client has its transitions (so every
   subscription is live and the path is warm), then submits --orders marketable BTC-USD IOC
   orders on ALPX, one every --interval seconds, each with `submitOrder` over HTTP, and waits
   until every client has every transition of them, or until --max-seconds after the first
   order (then what is missing is reported as not delivered in time).
   (Several probes if needed: a subscribe is acknowledged before it is live.)
4. Prints, over every (client, transition) pair, the delivery latency from the commit (the
   moment the gateway handed the transition's bus message to the bus, right after its
   transaction committed, as the gateway noted it; matched by the update's `sequence`) to its
   arrival at the client: p50/p99/max; the same from the transition's own `at` (written in
   the transaction, before commit: it adds the order's own processing); the transitions not
   delivered; the gateway's and the clients' CPU; and the ratio of p99 to the issue's target
   (1,000 clients: p99 < 50 ms; 10,000: p99 < 500 ms). Both clocks are this machine's.

Every process it started is stopped and the temporary directory removed on exit, error or
Ctrl-C.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import math
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from multiprocessing.connection import Connection, Listener
from pathlib import Path
from typing import Any

import httpx
from graphql_throughput import cpu_seconds, descendants, describe_database, free_port
from sqlmodel import select

from gateway.cli import migrate_database
from gateway.runtime import Runtime, build_runtime
from gateway.settings import Settings
from gateway.trading.models import OrderEvent

HERE = Path(__file__).resolve().parent
TARGET_P99 = {1000: 0.050, 10000: 0.500}  # issue 14's targets, seconds
SELECTION = ("orderUpdates { sequence transition { cursor orderId clientOrderId seq event "
             "statusFrom statusTo cumQty leavesQty lastQty lastPx at } }")
SUBMIT = "mutation($input: SubmitOrderInput!) { submitOrder(input: $input) { id status } }"


@dataclass
class Outcome:
    clients: int
    connected: int
    orders: int
    transitions: int
    latencies: list[float]  # from the commit, every delivered (client, transition)
    from_at: list[float]  # from the transition's `at`
    missing: int
    duplicates: int
    errors: list[str]
    seconds: float  # first order sent to last delivery (or the cap)
    capped: bool
    gateway_cpu: float | None
    client_cpu: float
    connect_seconds: float


# Setup -----------------------------------------------------------------------------------------

def settings_env(database_url: str) -> dict[str, str]:
    os.environ.setdefault("ALPHINTRA_SECRET_KEY", base64.b64encode(os.urandom(32)).decode())
    return {
        "ALPHINTRA_DATABASE_URL": database_url,
        "ALPHINTRA_SECRET_KEY": os.environ["ALPHINTRA_SECRET_KEY"],
        "ALPHINTRA_EMBEDDED_WORKER": "off",
        "ALPHINTRA_WARM_ON_START": "false",  # its 12-14 s of CPU would skew the first events
        # N subscribes from one key in seconds: the bench measures fan-out, not the limiter
        "ALPHINTRA_RATE_LIMIT_KEY_PER_SECOND": "0",
        "ALPHINTRA_RATE_LIMIT_TENANT_PER_SECOND": "0",
        "ALPHINTRA_LOG_JSON": "false",
        "ALPHINTRA_LOG_LEVEL": "WARNING",
    }


def seed(runtime: Runtime) -> tuple[str, str, Decimal]:
    """A tenant, its admin's key, and BTC-USD's mid on ALPX (24/7, so any hour works)."""
    slug = f"fanout-{uuid.uuid4().hex[:8]}"
    tenant, admin, (_, key) = runtime.tenancy.onboard(slug, "Fan-out bench", f"admin@{slug}.test")
    runtime.orders.upsert_account(tenant.id, admin.id, code="BENCH", currency="USD",
                                  domicile="US", credit_limit="1000000000000",
                                  equity="1000000000000")
    runtime.orders.set_controls(tenant.id, admin.id, {"duplicate_window_ms": None})
    quote = runtime.market_data.quote("BTC-USD.ALPX", runtime.markets.now())
    if quote is None:
        raise RuntimeError("no BTC-USD quote on ALPX")
    return tenant.id, key, (quote.bid + quote.ask) / 2


def raise_fd_limit(needed: int) -> int:
    """Raise this process's open-file limit (the gateway and client processes inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, needed))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


# Gateway ---------------------------------------------------------------------------------------

def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Gateway:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("ALPHINTRA_")}
        child_env.update(env)
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "_servers:published_gateway_app", "--factory",
                 "--app-dir", str(HERE), "--host", "127.0.0.1", "--port", str(self.port),
                 "--workers", "1", "--lifespan", "on", "--log-level", "warning",
                 # what `alphintra serve` runs: sans-I/O websockets, no per-message deflate
                 "--ws", "websockets-sansio", "--ws-per-message-deflate", "false",
                 "--no-access-log", "--backlog", "4096"],
                env=child_env, cwd=HERE.parent, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        self.pids: list[int] = []

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the gateway exited:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    self.pids = descendants(self.proc.pid)
                    return
            time.sleep(0.1)
        raise RuntimeError(f"the gateway was not ready in {timeout}s:\n{self.log_tail()}")

    def cpu(self) -> float | None:
        values = [cpu_seconds(pid) for pid in self.pids]
        return None if not values or values[0] is None else sum(v or 0 for v in values)

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


# Clients ---------------------------------------------------------------------------------------

class Clients:
    """The client processes (bench/_ws_client.py run as scripts, so they import nothing of the
    gateway), each holding its share of the N sockets and answering on a local connection."""

    def __init__(self, n: int, processes: int, port: int, key: str, query: str,
                 connect_timeout: float) -> None:
        shares = [n // processes + (1 if i < n % processes else 0) for i in range(processes)]
        shares = [s for s in shares if s]
        authkey = os.urandom(16)
        env = {**os.environ, "BENCH_API_KEY": key, "BENCH_AUTHKEY": authkey.hex(),
               "BENCH_CONNECT_TIMEOUT": str(connect_timeout)}
        self.procs: list[subprocess.Popen[bytes]] = []
        self.pipes: list[Connection] = []
        with Listener(("127.0.0.1", 0), authkey=authkey) as listener:
            address = f"127.0.0.1:{listener.address[1]}"
            for share in shares:
                self.procs.append(subprocess.Popen(
                    [sys.executable, str(HERE / "_ws_client.py"), address, str(port),
                     str(share), query], env=env, stdin=subprocess.DEVNULL,
                    preexec_fn=_die_with_parent))
            # Listener.accept has no timeout of its own: a child that died would hang it
            sock = getattr(getattr(listener, "_listener", None), "_socket", None)
            if sock is not None:
                sock.settimeout(120)
            for _ in shares:
                self.pipes.append(listener.accept())

    def ready(self, timeout: float) -> tuple[int, list[str]]:
        connected, failures = 0, []
        for pipe in self.pipes:
            if not pipe.poll(timeout):
                raise RuntimeError(f"client processes not connected within {timeout:.0f}s")
            _, count, sample, failed = pipe.recv()
            connected += count
            if failed:
                failures.append(f"{failed} failed, e.g. {sample[0]}")
        return connected, failures

    def counts(self) -> list[int]:
        for pipe in self.pipes:
            pipe.send("count")
        return [c for pipe in self.pipes for c in pipe.recv()]

    def received(self) -> tuple[list[tuple[dict[int, float], int, str | None]], float]:
        for pipe in self.pipes:
            pipe.send("stop")
        out: list[tuple[dict[int, float], int, str | None]] = []
        cpu = 0.0
        for pipe in self.pipes:
            _, per_client, used = pipe.recv()
            out += per_client
            cpu += used
        return out, cpu

    def stop(self) -> None:
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.terminate()
                proc.wait(timeout=5)


# Run -------------------------------------------------------------------------------------------

def submit(http: httpx.Client, key: str, mid: Decimal, tag: str) -> str:
    """One marketable order through `submitOrder`; its id."""
    order = {"clientOrderId": f"fanout-{tag}-{uuid.uuid4().hex[:8]}", "account": "BENCH",
             "symbol": "BTC-USD", "mic": "ALPX", "side": "BUY", "ordType": "LIMIT",
             "timeInForce": "IOC", "quantity": "0.001",
             "limitPrice": str((mid * Decimal("1.02")).quantize(Decimal("0.01")))}
    response = http.post("/graphql", json={"query": SUBMIT, "variables": {"input": order}},
                         headers={"authorization": f"Bearer {key}"})
    body = response.json()
    if response.status_code != 200 or body.get("errors"):
        raise RuntimeError(f"submitOrder failed: {response.status_code} {str(body)[:300]}")
    return str(body["data"]["submitOrder"]["id"])


def transitions(runtime: Runtime, tenant_id: str, order_ids: list[str]) -> dict[int, float]:
    """cursor -> the transition's `at` as a Unix time, for the orders given."""
    with runtime.db.tenant_session(tenant_id) as session:
        rows = session.exec(select(OrderEvent.stream_seq, OrderEvent.at, OrderEvent.order_id)
                            .where(OrderEvent.order_id.in_(order_ids))).all()  # type: ignore[attr-defined]
    out = {}
    for seq, at, _ in rows:
        at = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
        out[int(seq)] = at.timestamp()
    return out


def wait_counts(clients: Clients, done: Any, until: float) -> list[int]:
    """Poll the clients' receipt counts until `done(counts)` or `until` passes; the last counts."""
    while True:
        counts = clients.counts()
        if done(counts) or time.time() >= until:
            return counts
        time.sleep(0.2)


def go_live(clients: Clients, http: httpx.Client, key: str, mid: Decimal, n: int,
            until: float) -> list[int]:
    """Probe orders until every client has received something (every subscription is live and
    the path warm), then let the deliveries settle. Returns the clients' counts."""
    per_probe = max(5.0, n * 0.01)  # today's gateway: ~3.5 ms per subscriber per transition
    while True:
        submit(http, key, mid, "probe")
        counts = wait_counts(clients, lambda c: min(c) >= 1, min(until, time.time() + per_probe))
        if min(counts) >= 1 or time.time() >= until:
            break
    if min(counts) < 1:
        print(f"  {sum(c < 1 for c in counts)} clients got no probe in time; measuring anyway",
              flush=True)
    while time.time() < until:  # settled: nothing arrived for a second
        time.sleep(1.0)
        now = clients.counts()
        if now == counts:
            break
        counts = now
    return counts


def run_n(n: int, args: argparse.Namespace, env: dict[str, str], runtime: Runtime,
          tenant_id: str, key: str, mid: Decimal, tmp: Path) -> Outcome:
    query = f"subscription {{ {args.selection} }}"
    gateway = Gateway(env, tmp / f"gateway-{n}.log")
    clients: Clients | None = None
    try:
        gateway.wait_ready()
        began = time.monotonic()
        clients = Clients(n, min(args.processes, n), gateway.port, key, query,
                          args.connect_timeout)
        connected, failures = clients.ready(args.connect_timeout + 60)
        connect_seconds = time.monotonic() - began
        if not connected:
            raise RuntimeError(f"no client subscribed: {'; '.join(failures)}")
        print(f"  {n} clients: {connected} subscribed in {connect_seconds:.1f}s"
              + (f" ({'; '.join(failures)})" if failures else ""), flush=True)
        with httpx.Client(base_url=gateway.url, timeout=120) as http:
            before = go_live(clients, http, key, mid, n, time.time() + args.max_seconds)
            cpu_before = gateway.cpu()
            first = time.time()
            cap = first + args.max_seconds
            submitted: list[str] = []
            for i in range(args.orders):
                if time.time() > cap:
                    break
                submitted.append(submit(http, key, mid, str(i)))
                time.sleep(max(0.0, first + (i + 1) * args.interval - time.time()))
            expected = transitions(runtime, tenant_id, submitted)
            total = len(expected)
            after = wait_counts(clients, lambda c: all(a - b >= total for a, b in zip(c, before,
                                                                                      strict=True)),
                                cap)
            done = all(a - b >= total for a, b in zip(after, before, strict=True))
            seconds = time.time() - first
            cpu_after = gateway.cpu()
            published = {int(k): v for k, v in http.get("/bench/published").json().items()}
        received, client_cpu = clients.received()
    finally:
        if clients is not None:
            clients.stop()
        gateway.stop()
    latencies, from_at, errors = [], [], []
    missing = duplicates = unmatched = 0
    for times, dups, error in received:
        duplicates += dups
        if error is not None:
            errors.append(error)
        for cursor, at in expected.items():
            if cursor not in times:
                missing += 1
                continue
            arrived, sequence = times[cursor]
            from_at.append(arrived - at)
            if sequence in published:
                latencies.append(arrived - published[sequence])
            else:  # read from the store (a gap): no bus message to time it from
                unmatched += 1
    if unmatched:
        errors.append(f"{unmatched} deliveries without a bus message (read from the store)")
    return Outcome(n, connected, len(submitted), len(expected), latencies, from_at, missing,
                   duplicates, errors, seconds, not done,
                   None if cpu_before is None or cpu_after is None else cpu_after - cpu_before,
                   client_cpu, connect_seconds)


# Report ----------------------------------------------------------------------------------------

def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else float("nan")


def report(outcomes: list[Outcome]) -> None:
    print()
    print(f"{'clients':>8}{'orders':>7}{'events':>7}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
          f"{'lost':>7}{'gw CPU s':>9}{'cli CPU s':>10}   p99 target   p99/target   "
          "from `at`: p50 / p99 ms")
    for o in outcomes:
        target = TARGET_P99.get(o.clients)
        p99 = pct(o.latencies, 0.99)
        ratio = f"{p99 / target:10.2f}x" if target else f"{'':>10} "
        print(f"{o.clients:>8}{o.orders:>7}{o.transitions:>7}{pct(o.latencies, 0.5) * 1000:>9.1f}"
              f"{p99 * 1000:>9.1f}{pct(o.latencies, 1.0) * 1000:>9.1f}{o.missing:>7}"
              f"{'n/a' if o.gateway_cpu is None else format(o.gateway_cpu, '.1f'):>9}"
              f"{o.client_cpu:>10.1f}   "
              f"{'< ' + format(target * 1000, '.0f') + ' ms' if target else 'none':>10}   "
              f"{ratio}   {pct(o.from_at, 0.5) * 1000:.1f} / "
              f"{pct(o.from_at, 0.99) * 1000:.1f}")
    for o in outcomes:
        notes = []
        if o.connected < o.clients:
            notes.append(f"only {o.connected} of {o.clients} clients subscribed")
        if o.capped:
            notes.append(f"capped: {o.missing} (client, transition) pairs not delivered "
                         f"{o.seconds:.0f}s after the first order")
        if o.duplicates:
            notes.append(f"{o.duplicates} duplicate deliveries")
        if o.errors:
            notes.append(f"{len(o.errors)} errors, e.g. {o.errors[0]}")
        if o.gateway_cpu is not None and o.transitions:
            per = o.gateway_cpu / (o.transitions * max(1, o.connected)) * 1e6
            notes.append(f"gateway CPU per delivered message ~{per:.0f} µs (orders included)")
        print(f"{o.clients} clients: subscribed in {o.connect_seconds:.1f}s; "
              + "; ".join(notes))
    print("\nlatency: from the commit (the gateway handing the transition's bus message to the "
          "bus) to its arrival at each client, over every (client, transition) pair; from `at`: "
          "from the transition's own timestamp, before commit; p99/target above 1 "
          "misses the issue's target. lost: pairs never delivered within the run. gw CPU: the "
          "gateway's CPU from the first order to the last delivery; cli CPU: the client "
          "processes' from subscribed to stopped.")


def clients_list(value: str) -> list[int]:
    numbers = [int(v) for v in value.split(",") if v.strip()]
    if not numbers or min(numbers) < 1:
        raise argparse.ArgumentTypeError("comma-separated positive numbers")
    return numbers


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=clients_list, default=[1000, 10000],
                        help="WebSocket clients, one run each (default 1000,10000)")
    parser.add_argument("--orders", type=int, default=5,
                        help="orders submitted per run, after the probe (default 5)")
    parser.add_argument("--interval", type=float, default=1.0,
                        help="seconds between orders (default 1.0)")
    parser.add_argument("--max-seconds", type=float, default=120.0,
                        help="cap per run: no more orders and no more waiting this long after "
                             "the first order (and for the probe) (default 120)")
    parser.add_argument("--processes", type=int, default=2,
                        help="client processes the sockets are spread over (default 2)")
    parser.add_argument("--connect-timeout", type=float, default=300.0,
                        help="seconds for one client's handshake and ack (default 300)")
    parser.add_argument("--fanout", choices=("on", "off"), default="on",
                        help="ALPHINTRA_SUBSCRIPTION_FANOUT for the gateway (default on): off "
                             "executes and encodes per subscriber, as before issue 14")
    parser.add_argument("--direct", choices=("on", "off"), default="on",
                        help="fanned-out frames written straight to the transport (default on); "
                             "off sends each through uvicorn's `send`, as before")
    parser.add_argument("--selection", default=SELECTION,
                        help="the subscription's selection (default: the transition's fields; "
                             "adding `order { … }` adds a database read per subscriber)")
    return parser.parse_args(argv)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    limit = raise_fd_limit(max(args.clients) + 1024)
    if limit < max(args.clients) + 256:
        print(f"open-file limit {limit} is too low for {max(args.clients)} clients",
              file=sys.stderr)
        return 1
    began = time.monotonic()
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="alphintra-fanout-") as tmp:
        database_url = f"sqlite:///{Path(tmp) / 'fanout.db'}"
        env = settings_env(database_url)
        env["ALPHINTRA_SUBSCRIPTION_FANOUT"] = "true" if args.fanout == "on" else "false"
        env["BENCH_DIRECT_WRITES"] = args.direct
        settings = Settings.from_env(env)
        migrate_database(settings)
        runtime = build_runtime(settings)
        try:
            tenant_id, key, mid = seed(runtime)
            print(f"database:  {describe_database(database_url)}; gateway: uvicorn, 1 worker, "
                  f"in-process bus; open-file limit {limit}")
            print(f"clients:   {', '.join(map(str, args.clients))} over {args.processes} "
                  "processes (raw asyncio graphql-transport-ws, no compression offered)")
            print(f"orders:    a probe, then {args.orders} marketable BTC-USD IOC orders on ALPX, "
                  f"one every {args.interval:g}s; cap {args.max_seconds:g}s per run")
            print(f"query:     subscription {{ {args.selection} }}", flush=True)
            for n in args.clients:
                outcomes.append(run_n(n, args, env, runtime, tenant_id, key, mid, Path(tmp)))
        except (RuntimeError, httpx.HTTPError) as exc:
            print(f"\nbenchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            if outcomes:
                report(outcomes)
            return 1
        finally:
            runtime.close()
    report(outcomes)
    print(f"done in {time.monotonic() - began:.0f}s ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted: gateway and clients stopped, temporary files removed",
              file=sys.stderr)
        sys.exit(130)
