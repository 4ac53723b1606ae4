"""GraphQL throughput: the gateway against a bare Starlette route doing the same domain work.

    .venv/bin/python bench/graphql_throughput.py [--requests N] [--concurrency C] [--rounds R]
                                                 [--warmup W] [--database-url URL]

What it does, in one run:

1. Creates a SQLite database in a temporary directory (or uses --database-url), migrates it,
   onboards one tenant and inserts 60 jobs created by the tenant's admin.
2. Serves, each in its own uvicorn process (1 worker, httptools, log level warning), the
   gateway (`gateway.app.create_app`) and a bare Starlette route (bench/_servers.py) that
   authenticates the same API key, checks the same permission, loads the same 50-job page and
   its creators through the same services, in a worker thread, and answers the same JSON.
3. Checks once that both answer identical data, then loads both with the same httpx client
   (one process, C concurrent keep-alive connections): a warm-up, then R alternating rounds of
   N requests each. Every answer must be 200 with the verified body size. Prints requests/s
   (median of rounds), p50/p99 latency (all rounds pooled), each server's CPU time per request
   (from /proc, median of rounds) and the gateway/bare ratios.

Subprocesses and temporary files are removed on exit, error or Ctrl-C. With --database-url the
tenant it created is deleted again (the migrations it applied stay).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ctypes
import json
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx
from _servers import PAGE_SIZE, QUERY
from sqlalchemy.engine import make_url
from sqlmodel import delete

from gateway.auth.models import CasbinRule
from gateway.cli import migrate_database
from gateway.db import utcnow
from gateway.jobs.models import Job, JobStatus
from gateway.runtime import Runtime, build_runtime
from gateway.settings import Settings
from gateway.tenancy.models import ApiKey, Tenant, User

HERE = Path(__file__).resolve().parent
JOB_ROWS = 60  # more than one page, so the gateway's has-next look-ahead row is real
TARGETS = ("bare", "gateway")


@dataclass
class Seeded:
    tenant_id: str
    admin_id: str
    key: str


@dataclass
class Round:
    requests: int
    seconds: float
    latencies: list[float]
    server_cpu: float | None  # seconds of CPU the server process used (all its threads)
    client_cpu: float  # seconds of CPU this (client) process used

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


@dataclass
class Results:
    rounds: dict[str, list[Round]] = field(default_factory=lambda: {t: [] for t in TARGETS})

    def rps(self, target: str) -> float:
        return statistics.median(r.rps for r in self.rounds[target])

    def server_cpu_ms(self, target: str) -> float | None:
        """Server CPU per request, median of rounds (None where /proc is missing)."""
        values = [r.server_cpu / r.requests for r in self.rounds[target]
                  if r.server_cpu is not None]
        return statistics.median(values) * 1000 if values else None

    def utilisation(self, target: str, side: str) -> float | None:
        """CPU used by the server or the client during the rounds, in cores (1.0 = one core)."""
        rounds = self.rounds[target]
        cpu = [r.server_cpu if side == "server" else r.client_cpu for r in rounds]
        if any(c is None for c in cpu):
            return None
        return sum(cpu) / sum(r.seconds for r in rounds)  # type: ignore[arg-type]

    def latency_ms(self, target: str, q: float) -> float:
        pooled = sorted(x for r in self.rounds[target] for x in r.latencies)
        return pooled[max(0, math.ceil(q * len(pooled)) - 1)] * 1000  # nearest rank


# Setup -----------------------------------------------------------------------------------------

def settings_env(database_url: str) -> dict[str, str]:
    """The gateway settings, as the ALPHINTRA_* variables both servers read."""
    # one key for the run's scratch database, shared by the seeding process and both servers
    os.environ.setdefault("ALPHINTRA_SECRET_KEY", base64.b64encode(os.urandom(32)).decode())
    return {
        "ALPHINTRA_DATABASE_URL": database_url,
        "ALPHINTRA_SECRET_KEY": os.environ["ALPHINTRA_SECRET_KEY"],
        "ALPHINTRA_EMBEDDED_WORKER": "off",
        # the bench measures the pipeline, not the rate limiter (docs/security.md)
        "ALPHINTRA_RATE_LIMIT_KEY_PER_SECOND": "0",
        "ALPHINTRA_RATE_LIMIT_TENANT_PER_SECOND": "0",
        "ALPHINTRA_LOG_JSON": "false",
        "ALPHINTRA_LOG_LEVEL": "WARNING",
    }


def seed(runtime: Runtime) -> Seeded:
    slug = f"bench-{uuid.uuid4().hex[:8]}"
    tenant, admin, (_, key) = runtime.tenancy.onboard(slug, "Benchmark Capital",
                                                      f"admin@{slug}.test")
    statuses = list(JobStatus)
    start = utcnow() - timedelta(hours=1)
    with runtime.db.tenant_transaction(tenant.id) as session:
        for i in range(JOB_ROWS):
            at = start + timedelta(seconds=i)
            session.add(Job(
                tenant_id=tenant.id, kind="diagnostics", status=statuses[i % len(statuses)].value,
                region="americas", progress=(i % 11) / 10, message=f"step {i % 5} of 5",
                params={"steps": 5, "step_seconds": 0.2, "fail_at_step": None},
                created_by=admin.id, attempts=1, created_at=at, updated_at=at))
    return Seeded(tenant.id, admin.id, key)


def drop_tenant(runtime: Runtime, tenant_id: str) -> None:
    """Remove what `seed` wrote (only needed for a database that outlives the run)."""
    with runtime.db.system_transaction() as session:
        session.exec(delete(Job).where(Job.tenant_id == tenant_id))
        session.exec(delete(ApiKey).where(ApiKey.tenant_id == tenant_id))
        session.exec(delete(CasbinRule).where(CasbinRule.ptype == "g",
                                              CasbinRule.v2 == tenant_id))
        session.exec(delete(User).where(User.tenant_id == tenant_id))
        session.exec(delete(Tenant).where(Tenant.id == tenant_id))


# Servers ---------------------------------------------------------------------------------------

def http_impl() -> str:
    try:
        import httptools  # noqa: F401
    except ImportError:
        return "h11"
    return "httptools"


def loop_impl() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a process and all its threads so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the benchmark dies without cleaning up."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Server:
    """One uvicorn process serving one factory of bench/_servers.py."""

    def __init__(self, name: str, factory: str, env: dict[str, str], log_dir: Path) -> None:
        self.name, self.factory, self.env = name, factory, env
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def uvicorn_args(self, port: int) -> list[str]:
        return ["-m", "uvicorn", f"_servers:{self.factory}", "--factory", "--app-dir", str(HERE),
                "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                "--http", http_impl(), "--loop", loop_impl(), "--lifespan", "on",
                "--log-level", "warning", "--no-access-log"]

    def start(self) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ALPHINTRA_")}
        env.update(self.env)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, *self.uvicorn_args(port)], env=env, cwd=HERE.parent,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} server exited:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} server not ready in {timeout}s:\n"
                                   f"{self.log_tail()}")
            time.sleep(0.1)

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


# Load ------------------------------------------------------------------------------------------

def request_body() -> bytes:
    return json.dumps({"query": QUERY, "operationName": "Page"}).encode()


def request_headers(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}", "content-type": "application/json",
            "accept": "application/json"}


def verify(servers: dict[str, Server], key: str) -> int:
    """One request to each: both must answer 200 with identical `data`. Returns body size."""
    answers = {}
    for name, server in servers.items():
        response = httpx.post(f"{server.url}/graphql", content=request_body(),
                              headers=request_headers(key), timeout=30)
        if response.status_code != 200:
            raise RuntimeError(f"{name} answered {response.status_code}: {response.text[:500]}")
        answers[name] = response
    bodies = {name: r.json() for name, r in answers.items()}
    for name, body in bodies.items():
        if set(body) != {"data"}:
            raise RuntimeError(f"{name} answered more than data: {json.dumps(body)[:500]}")
    if bodies["bare"]["data"] != bodies["gateway"]["data"]:
        raise RuntimeError("the bare route and the gateway answer different data:\n"
                           f"bare:    {json.dumps(bodies['bare'])[:400]}\n"
                           f"gateway: {json.dumps(bodies['gateway'])[:400]}")
    edges = bodies["gateway"]["data"]["jobs"]["edges"]
    if len(edges) != PAGE_SIZE or any(e["node"]["createdBy"] is None for e in edges):
        raise RuntimeError(f"expected {PAGE_SIZE} jobs with creators, got {len(edges)}")
    sizes = {len(r.content) for r in answers.values()}
    if len(sizes) != 1:
        raise RuntimeError(f"same data but different body sizes: {sizes}")
    return sizes.pop()


async def load(client: httpx.AsyncClient, key: str, total: int, concurrency: int,
               body_size: int, server_pid: int) -> Round:
    """`total` POSTs over `concurrency` connections; every answer must be 200 and full-size."""
    body, headers = request_body(), request_headers(key)
    latencies: list[float] = []
    remaining = total
    failures: list[str] = []

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0 and not failures:
            remaining -= 1
            started = time.perf_counter()
            response = await client.post("/graphql", content=body, headers=headers)
            latencies.append(time.perf_counter() - started)
            if response.status_code != 200 or len(response.content) != body_size:
                failures.append(f"{response.status_code}: {response.text[:300]}")

    server_before, client_before = cpu_seconds(server_pid), time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    server_after, client_cpu = cpu_seconds(server_pid), time.process_time() - client_before
    if failures:
        raise RuntimeError(f"bad answer under load: {failures[0]}")
    server_cpu = (server_after - server_before
                  if server_before is not None and server_after is not None else None)
    return Round(total, seconds, latencies, server_cpu, client_cpu)


async def run_load(servers: dict[str, Server], key: str, args: argparse.Namespace,
                   body_size: int) -> Results:
    limits = httpx.Limits(max_connections=args.concurrency,
                          max_keepalive_connections=args.concurrency)
    clients = {name: httpx.AsyncClient(base_url=s.url, limits=limits, timeout=60)
               for name, s in servers.items()}
    pids = {name: s.proc.pid for name, s in servers.items() if s.proc is not None}
    task = asyncio.current_task()
    if task is not None:  # SIGTERM: cancel the load cleanly (main() turns it into an interrupt)
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    results = Results()
    try:
        for name in TARGETS:
            await load(clients[name], key, args.warmup, args.concurrency, body_size, pids[name])
            print(f"  warm-up {name}: {args.warmup} requests", flush=True)
        for i in range(args.rounds):
            order = TARGETS if i % 2 == 0 else TARGETS[::-1]  # alternate who goes first
            line = []
            for name in order:
                result = await load(clients[name], key, args.requests, args.concurrency,
                                    body_size, pids[name])
                results.rounds[name].append(result)
                line.append(f"{name} {result.rps:8.1f} req/s")
            print(f"  round {i + 1}/{args.rounds}: " + "   ".join(line), flush=True)
    finally:
        for client in clients.values():
            await client.aclose()
    return results


# Report ----------------------------------------------------------------------------------------

def describe_database(url: str) -> str:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return f"SQLite file {parsed.database} (WAL)"
    return parsed.render_as_string(hide_password=True)


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def report(results: Results, args: argparse.Namespace) -> None:
    print()
    print(f"{'':<14}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'srv CPU':>10}{'srv':>7}{'client':>8}"
          "   req/s per round")
    print(f"{'':<14}{'median':>9}{'':>9}{'':>9}{'ms/req':>10}{'cores':>7}{'cores':>8}")
    for name in TARGETS:
        per_round = ", ".join(f"{r.rps:.1f}" for r in results.rounds[name])
        print(f"{name:<14}{results.rps(name):>9.1f}{results.latency_ms(name, 0.5):>9.2f}"
              f"{results.latency_ms(name, 0.99):>9.2f}"
              f"{_fmt(results.server_cpu_ms(name), '.2f'):>10}"
              f"{_fmt(results.utilisation(name, 'server'), '.2f'):>7}"
              f"{_fmt(results.utilisation(name, 'client'), '.2f'):>8}   {per_round}")
    ratio = {
        "rps": results.rps("gateway") / results.rps("bare"),
        "p50": results.latency_ms("gateway", 0.5) / results.latency_ms("bare", 0.5),
        "p99": results.latency_ms("gateway", 0.99) / results.latency_ms("bare", 0.99),
    }
    cpu = (results.server_cpu_ms("gateway"), results.server_cpu_ms("bare"))
    cpu_ratio = cpu[0] / cpu[1] if cpu[0] and cpu[1] else None
    print(f"{'gateway/bare':<14}{ratio['rps']:>8.2f}x{ratio['p50']:>8.2f}x{ratio['p99']:>8.2f}x"
          f"{_fmt(cpu_ratio, '.2f'):>9}x")
    print(f"\nthroughput ratio gateway/bare: {ratio['rps']:.2f} (the bare route is "
          f"{1 / ratio['rps']:.2f}x faster). Latency percentiles pool all {args.rounds} rounds "
          f"({args.rounds * args.requests} requests per target); srv CPU is the server process's "
          "CPU time per request; cores = CPU time / wall time during the rounds.")


def code_version() -> str:
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=HERE.parent,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def print_setup(args: argparse.Namespace, database_url: str, settings: Settings) -> None:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    import uvicorn

    print(f"code:      {code_version()}")
    print(f"machine:   {os.cpu_count()} cores (usable: {affinity or '?'}), "
          f"{platform.system()} {platform.machine()}, Python {platform.python_version()}")
    print(f"database:  {describe_database(database_url)}, {JOB_ROWS} jobs in one tenant")
    print(f"servers:   uvicorn {uvicorn.__version__}, one process each, --workers 1, "
          f"--http {http_impl()}, --loop {loop_impl()}, --log-level warning, no access log")
    print(f"settings:  embedded_worker={settings.embedded_worker}, log_json={settings.log_json}, "
          f"log_level={settings.log_level}, otel_exporter={settings.otel_exporter}, "
          f"redis_url={settings.redis_url} (in-process bus), introspection="
          f"{settings.introspection}, max_page_size={settings.max_page_size}")
    print(f"load:      httpx {httpx.__version__} AsyncClient in 1 process, concurrency "
          f"{args.concurrency} (keep-alive), {args.warmup} warm-up + {args.rounds} rounds x "
          f"{args.requests} requests per target, rounds alternate")
    print(f"query:     {QUERY}")


def positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=positive, default=2000,
                        help="measured requests per round and target (default 2000)")
    parser.add_argument("--warmup", type=positive, default=200,
                        help="warm-up requests per target before the rounds (default 200)")
    parser.add_argument("--concurrency", type=positive, default=8,
                        help="concurrent connections (default 8)")
    parser.add_argument("--rounds", type=positive, default=3,
                        help="rounds per target, alternating (default 3)")
    parser.add_argument("--database-url", default=None,
                        help="e.g. postgresql+psycopg://user@127.0.0.1:5432/db (default: a "
                             "SQLite file in a temporary directory); gets migrated")
    return parser.parse_args(argv)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the finally blocks below stop servers and delete files.
    signal.signal(signal.SIGTERM, _interrupt)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="alphintra-bench-") as tmp:
        database_url = args.database_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        env = settings_env(database_url)
        settings = Settings.from_env(env)
        print_setup(args, database_url, settings)
        migrate_database(settings)
        runtime = build_runtime(settings)
        seeded: Seeded | None = None
        servers = {"bare": Server("bare", "bare_app", env, Path(tmp)),
                   "gateway": Server("gateway", "gateway_app", env, Path(tmp))}
        try:
            seeded = seed(runtime)
            for server in servers.values():
                server.start()
            for server in servers.values():
                server.wait_ready()
            body_size = verify(servers, seeded.key)
            print(f"verified:  both answer identical data ({PAGE_SIZE} jobs with creators, "
                  f"{body_size} bytes)", flush=True)
            try:
                results = asyncio.run(run_load(servers, seeded.key, args, body_size))
            except asyncio.CancelledError:
                raise KeyboardInterrupt from None
            finally:
                signal.signal(signal.SIGTERM, _interrupt)  # the closed loop reset it
            report(results, args)
        except (httpx.HTTPError, RuntimeError) as exc:
            print(f"\nbenchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            for server in servers.values():
                if server.proc is not None and server.proc.poll() is not None:
                    print(f"{server.name} server exited with {server.proc.returncode}; log tail:"
                          f"\n{server.log_tail()}", file=sys.stderr)
            return 1
        finally:
            for server in servers.values():
                server.stop()
            if seeded is not None and args.database_url:
                try:
                    drop_tenant(runtime, seeded.tenant_id)
                except Exception as exc:  # report, but let the run's own outcome stand
                    print(f"could not delete the benchmark tenant {seeded.tenant_id}: {exc}",
                          file=sys.stderr)
            runtime.close()
    print(f"done in {time.monotonic() - began:.0f}s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted: servers stopped, temporary files removed", file=sys.stderr)
        sys.exit(130)
