"""GraphQL throughput: the same query against the gateway, plain strawberry, graphql-yoga and
Starlette, in one run and one load loop (issue 14).

    .venv/bin/python bench/graphql_throughput.py [--duration S] [--rounds R] [--warmup S]
        [--concurrency C] [--gateway-workers 1,2] [--targets gateway,bare,strawberry,yoga,raw]
        [--client wrk|httpx] [--requests N] [--database-url URL]

What it does, in one run:

1. Creates a SQLite database in a temporary directory (or uses --database-url), migrates it,
   onboards one tenant and inserts 60 jobs created by the tenant's admin; dumps the first page
   (50 jobs and their creator) to a JSON file for the in-memory servers.
2. Serves, each in its own process (log level warning, no access log), the targets:
   - `gateway`: the real gateway (`gateway.app.create_app`), one uvicorn process per
     --gateway-workers entry: `gateway` with 1 worker, `gateway-wN` with uvicorn's own
     `--workers N` over the app factory, with the in-process bus (`alphintra serve --workers N`
     refuses N > 1 without Redis and a separate chain process; for this read-only query the
     workers need nothing from each other);
   - `bare`: a Starlette route doing the same domain work (bench/_servers.py: same API-key
     authentication, permission check, page and creators queries, in a worker thread);
   - `strawberry`: plain strawberry, a minimal schema of the same shape over the dumped data,
     in memory (bench/_servers.py);
   - `yoga`: graphql-yoga on Node, the same schema shape over the same data file
     (bench/yoga/server.mjs; `npm ci` there first if node_modules is missing);
   - `raw`: a Starlette route answering the same JSON, encoded once at start.
   The Python servers run uvicorn with httptools and uvloop where installed.
3. Checks once per server that it answers 200 with exactly the gateway's `data`, then loads
   every target with the same generator and settings: a warm-up, then R rounds, the targets in
   turn (their order reversed every other round). Every answer must be 200 with that server's
   verified body size. Prints requests/s, p50/p99 latency (medians of the rounds), the server
   processes' CPU time per request (from /proc, all threads and worker processes), the cores
   used by server and load generator, and the ratios gateway/yoga, gateway/raw, strawberry/yoga
   (and the others in RATIOS) against the issue's targets.

The load generator is `wrk` (Debian's package: apt-get install wrk) with one thread and C
keep-alive connections, POSTing through bench/wrk_graphql.lua; it runs each round for
--duration seconds. `--client httpx` is the earlier pure-Python loop (C connections in this
process, --requests per round), kept to show its own ceiling: against `raw` it saturates a core
at a fraction of wrk's rate, so it cannot measure the fast servers.

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
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from importlib.metadata import version
from pathlib import Path

import httpx
from _procs import descendants, tree_cpu_seconds
from _servers import PAGE_SIZE, QUERY, bench_data
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
YOGA_DIR = HERE / "yoga"
WRK_SCRIPT = HERE / "wrk_graphql.lua"
JOB_ROWS = 60  # more than one page, so the gateway's has-next look-ahead row is real
KINDS = ("gateway", "bare", "strawberry", "yoga", "raw")
# (numerator, denominator, the target for the ratio of requests/s, if any)
RATIOS: tuple[tuple[str, str, str], ...] = (
    ("gateway", "yoga", ">= 0.5 (issue 14)"),
    ("gateway-base", "yoga", "(--baseline-tree)"),
    ("gateway", "gateway-base", "(--baseline-tree: this tree / the copy)"),
    ("gateway-w2", "yoga", ">= 1.0 (issue 14)"),
    ("gateway", "raw", ""),
    ("gateway-w2", "raw", ""),
    ("gateway", "bare", ""),
    ("strawberry", "yoga", ""),
    ("yoga", "raw", ""),
)


@dataclass
class Seeded:
    tenant_id: str
    admin_id: str
    key: str


@dataclass
class Round:
    requests: int
    seconds: float
    p50: float  # seconds
    p99: float
    server_cpu: float | None  # seconds of CPU the server's processes used (all threads)
    client_cpu: float  # seconds of CPU the load generator used

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


@dataclass
class Results:
    targets: list[str]
    rounds: dict[str, list[Round]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rounds = {t: [] for t in self.targets}

    def rps(self, target: str) -> float:
        return statistics.median(r.rps for r in self.rounds[target])

    def latency_ms(self, target: str, which: str) -> float:
        return statistics.median(getattr(r, which) for r in self.rounds[target]) * 1000

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


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


# Setup -----------------------------------------------------------------------------------------

def settings_env(database_url: str) -> dict[str, str]:
    """The gateway settings, as the ALPHINTRA_* variables the Python servers read."""
    # one key for the run's scratch database, shared by the seeding process and the servers
    os.environ.setdefault("ALPHINTRA_SECRET_KEY", base64.b64encode(os.urandom(32)).decode())
    return {
        "ALPHINTRA_DATABASE_URL": database_url,
        "ALPHINTRA_SECRET_KEY": os.environ["ALPHINTRA_SECRET_KEY"],
        "ALPHINTRA_EMBEDDED_WORKER": "off",
        # the start-up warm-up (calendars, pattern model, chain demo) has nothing to do with this
        # query and would take CPU from the first rounds (issue 14: 12-14 s after /healthz)
        "ALPHINTRA_WARM_ON_START": "false",
        # the bench measures the pipeline, not the rate limiter (docs/security.md)
        "ALPHINTRA_RATE_LIMIT_KEY_PER_SECOND": "0",
        "ALPHINTRA_RATE_LIMIT_TENANT_PER_SECOND": "0",
        "ALPHINTRA_LOG_JSON": "false",
        "ALPHINTRA_LOG_LEVEL": "WARNING",
        # compiled plans or graphql-core (issue 14): ALPHINTRA_EXECUTION=graphql-core for "before"
        "ALPHINTRA_EXECUTION": os.environ.get("ALPHINTRA_EXECUTION", "compiled"),
        # threads per gateway process for request work (the setting's default unless given)
        **({"ALPHINTRA_REQUEST_THREADS": os.environ["ALPHINTRA_REQUEST_THREADS"]}
           if "ALPHINTRA_REQUEST_THREADS" in os.environ else {}),
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


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the benchmark dies without cleaning up."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Server:
    """One server process (and, for uvicorn --workers, the workers it forks)."""

    def __init__(self, name: str, command: Callable[[int], list[str]], env: dict[str, str],
                 log_dir: Path, describe: str, cwd: Path = HERE.parent) -> None:
        self.name, self.command, self.env, self.describe = name, command, env, describe
        self.cwd = cwd  # the tree whose packages it imports (the working directory comes first)
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.pids: list[int] = []
        self.url = ""

    def start(self) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ALPHINTRA_")}
        env.update(self.env)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.command(port), env=env, cwd=self.cwd,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} server exited:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} server not ready in {timeout}s:\n"
                                   f"{self.log_tail()}")
            time.sleep(0.1)
        self.pids = descendants(self.proc.pid)

    def cpu(self) -> float | None:
        return tree_cpu_seconds(self.pids)

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            for pid in descendants(self.proc.pid)[::-1]:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def uvicorn_server(name: str, factory: str, workers: int, env: dict[str, str],
                   log_dir: Path, tree: Path = HERE.parent) -> Server:
    def command(port: int) -> list[str]:
        return [sys.executable, "-m", "uvicorn", f"_servers:{factory}", "--factory",
                "--app-dir", str(tree / "bench"), "--host", "127.0.0.1", "--port", str(port),
                "--workers", str(workers), "--http", http_impl(), "--loop", loop_impl(),
                "--lifespan", "on", "--log-level", "warning", "--no-access-log"]

    note = (" (uvicorn's own workers over the factory, in-process bus: not `alphintra serve`)"
            if workers > 1 else "")
    where = f", the tree at {tree}" if tree != HERE.parent else ""
    return Server(name, command, env, log_dir,
                  f"uvicorn --workers {workers}, _servers:{factory}{note}{where}", cwd=tree)


def node_version() -> str:
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("the yoga target needs Node.js 20 or later on PATH "
                           "(or leave yoga out of --targets)")
    return subprocess.run([node, "--version"], capture_output=True, text=True,
                          check=True).stdout.strip()


def yoga_server(env: dict[str, str], log_dir: Path) -> Server:
    node = node_version()
    if not (YOGA_DIR / "node_modules").is_dir():
        print(f"yoga:      npm ci in {YOGA_DIR.relative_to(HERE.parent)} (node_modules missing)",
              flush=True)
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                       cwd=YOGA_DIR, check=True)
    lock = json.loads((YOGA_DIR / "package-lock.json").read_text())["packages"]
    versions = ", ".join(f"{p} {lock[f'node_modules/{p}']['version']}"
                         for p in ("graphql-yoga", "graphql"))

    def command(port: int) -> list[str]:
        return ["node", str(YOGA_DIR / "server.mjs"), str(port), env["BENCH_DATA_FILE"]]

    return Server("yoga", command, env, log_dir, f"node {node}, {versions}, one process")


def target_names(args: argparse.Namespace) -> list[str]:
    names = []
    for kind in args.targets:
        if kind == "gateway":
            names += ["gateway" if w == 1 else f"gateway-w{w}" for w in args.gateway_workers]
            names += [base_name(i) for i in range(len(args.baseline_tree))]
        else:
            names.append(kind)
    return names


def base_name(index: int) -> str:
    """The target serving the `index`th --baseline-tree: gateway-base, gateway-base2, …"""
    return "gateway-base" if index == 0 else f"gateway-base{index + 1}"


def make_servers(args: argparse.Namespace, env: dict[str, str], log_dir: Path
                 ) -> dict[str, Server]:
    servers = {}
    for name in target_names(args):
        if name.startswith("gateway-base"):
            tree = args.baseline_tree[int(name.removeprefix("gateway-base") or 1) - 1]
            servers[name] = uvicorn_server(name, "gateway_app", 1, env, log_dir, tree)
        elif name.startswith("gateway"):
            workers = 1 if name == "gateway" else int(name.removeprefix("gateway-w"))
            servers[name] = uvicorn_server(name, "gateway_app", workers, env, log_dir)
        elif name == "yoga":
            servers[name] = yoga_server(env, log_dir)
        else:
            servers[name] = uvicorn_server(name, f"{name}_app", 1, env, log_dir)
    return servers


# Load ------------------------------------------------------------------------------------------

def request_body() -> bytes:
    return json.dumps({"query": QUERY, "operationName": "Page"}).encode()


def request_headers(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}", "content-type": "application/json",
            "accept": "application/json"}


def verify(servers: dict[str, Server], key: str) -> dict[str, int]:
    """One request to each: all must answer 200 with `data` identical to the gateway's (or the
    first server's). Returns each server's body size, which every answer under load must have."""
    bodies, sizes = {}, {}
    for name, server in servers.items():
        response = httpx.post(f"{server.url}/graphql", content=request_body(),
                              headers=request_headers(key), timeout=30)
        if response.status_code != 200:
            raise RuntimeError(f"{name} answered {response.status_code}: {response.text[:500]}")
        bodies[name], sizes[name] = response.json(), len(response.content)
        if set(bodies[name]) != {"data"}:
            raise RuntimeError(f"{name} answered more than data: {response.text[:500]}")
    reference = next((n for n in servers if n.startswith("gateway")), next(iter(servers)))
    for name, body in bodies.items():
        if body["data"] != bodies[reference]["data"]:
            raise RuntimeError(f"{name} and {reference} answer different data:\n"
                               f"{name}: {json.dumps(body)[:400]}\n"
                               f"{reference}: {json.dumps(bodies[reference])[:400]}")
    edges = bodies[reference]["data"]["jobs"]["edges"]
    if len(edges) != PAGE_SIZE or any(e["node"]["createdBy"] is None for e in edges):
        raise RuntimeError(f"expected {PAGE_SIZE} jobs with creators, got {len(edges)}")
    return sizes


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wrk_round(server: Server, key: str, seconds: int, args: argparse.Namespace,
              body_size: int) -> Round:
    """One wrk run of `seconds` against one server; every answer must be 200 and full-size."""
    cpu_before, client_before = server.cpu(), children_cpu()
    out = subprocess.run(
        ["wrk", "-t", str(args.wrk_threads), "-c", str(args.concurrency), "-d", f"{seconds}s",
         "--timeout", "30s", "-s", str(WRK_SCRIPT), f"{server.url}/graphql", "--",
         key, request_body().decode(), str(body_size)],
        capture_output=True, text=True, timeout=seconds + 60)
    cpu_after, client_cpu = server.cpu(), children_cpu() - client_before
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr[-500:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["bad"] or result["errors"] or not result["requests"]:
        raise RuntimeError(f"bad answers from {server.name} under load: {result}\n{out.stdout}")
    server_cpu = (cpu_after - cpu_before
                  if cpu_before is not None and cpu_after is not None else None)
    return Round(result["requests"], result["duration_us"] / 1e6, result["p50_us"] / 1e6,
                 result["p99_us"] / 1e6, server_cpu, client_cpu)


async def httpx_round(client: httpx.AsyncClient, server: Server, key: str, total: int,
                      concurrency: int, body_size: int) -> Round:
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

    server_before, client_before = server.cpu(), time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    server_after, client_cpu = server.cpu(), time.process_time() - client_before
    if failures:
        raise RuntimeError(f"bad answer from {server.name} under load: {failures[0]}")
    server_cpu = (server_after - server_before
                  if server_before is not None and server_after is not None else None)
    return Round(total, seconds, nearest_rank(latencies, 0.5), nearest_rank(latencies, 0.99),
                 server_cpu, client_cpu)


async def run_httpx(servers: dict[str, Server], key: str, args: argparse.Namespace,
                    sizes: dict[str, int], results: Results) -> None:
    limits = httpx.Limits(max_connections=args.concurrency,
                          max_keepalive_connections=args.concurrency)
    clients = {name: httpx.AsyncClient(base_url=s.url, limits=limits, timeout=60)
               for name, s in servers.items()}
    task = asyncio.current_task()
    if task is not None:  # SIGTERM: cancel the load cleanly (main() turns it into an interrupt)
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    warmup = max(1, int(args.requests * args.warmup / args.duration))
    try:
        for name in results.targets:
            await httpx_round(clients[name], servers[name], key, warmup, args.concurrency,
                              sizes[name])
            print(f"  warm-up {name}: {warmup} requests", flush=True)
        for i in range(args.rounds):
            line = []
            for name in results.targets if i % 2 == 0 else results.targets[::-1]:
                result = await httpx_round(clients[name], servers[name], key, args.requests,
                                           args.concurrency, sizes[name])
                results.rounds[name].append(result)
                line.append(f"{name} {result.rps:.1f}")
            print(f"  round {i + 1}/{args.rounds} (req/s): " + ", ".join(line), flush=True)
    finally:
        for client in clients.values():
            await client.aclose()


def run_wrk(servers: dict[str, Server], key: str, args: argparse.Namespace,
            sizes: dict[str, int], results: Results) -> None:
    for name in results.targets:
        wrk_round(servers[name], key, args.warmup, args, sizes[name])
        print(f"  warm-up {name}: {args.warmup} s", flush=True)
    for i in range(args.rounds):
        line = []
        for name in results.targets if i % 2 == 0 else results.targets[::-1]:
            result = wrk_round(servers[name], key, args.duration, args, sizes[name])
            results.rounds[name].append(result)
            line.append(f"{name} {result.rps:.1f}")
        print(f"  round {i + 1}/{args.rounds} (req/s): " + ", ".join(line), flush=True)


def run_load(servers: dict[str, Server], key: str, args: argparse.Namespace,
             sizes: dict[str, int]) -> Results:
    results = Results(list(servers))
    if args.client == "wrk":
        run_wrk(servers, key, args, sizes, results)
        return results
    try:
        asyncio.run(run_httpx(servers, key, args, sizes, results))
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None
    finally:
        signal.signal(signal.SIGTERM, _interrupt)  # the closed loop reset it
    return results


# Report ----------------------------------------------------------------------------------------

def describe_database(url: str) -> str:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return f"SQLite file {parsed.database} (WAL)"
    return parsed.render_as_string(hide_password=True)


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def report(results: Results, args: argparse.Namespace, sizes: dict[str, int]) -> None:
    print()
    print(f"{'':<12}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'srv CPU':>9}{'srv':>6}{'client':>8}"
          f"{'bytes':>7}   req/s per round")
    print(f"{'':<12}{'':>9}{'':>9}{'':>9}{'ms/req':>9}{'cores':>6}{'cores':>8}")
    for name in results.targets:
        per_round = ", ".join(f"{r.rps:.0f}" for r in results.rounds[name])
        print(f"{name:<12}{results.rps(name):>9.1f}{results.latency_ms(name, 'p50'):>9.2f}"
              f"{results.latency_ms(name, 'p99'):>9.2f}"
              f"{_fmt(results.server_cpu_ms(name), '.3f'):>9}"
              f"{_fmt(results.utilisation(name, 'server'), '.2f'):>6}"
              f"{_fmt(results.utilisation(name, 'client'), '.2f'):>8}{sizes[name]:>7}"
              f"   {per_round}")
    print(f"\n{'ratio':<20}{'req/s':>8}{'p50':>8}{'p99':>8}{'CPU/req':>9}   target")
    for top, bottom, target in RATIOS:
        if top not in results.rounds or bottom not in results.rounds:
            continue
        cpu = (results.server_cpu_ms(top), results.server_cpu_ms(bottom))
        cpu_ratio = cpu[0] / cpu[1] if cpu[0] and cpu[1] else None
        rps = results.rps(top) / results.rps(bottom)
        p50 = results.latency_ms(top, "p50") / results.latency_ms(bottom, "p50")
        p99 = results.latency_ms(top, "p99") / results.latency_ms(bottom, "p99")
        print(f"{top + '/' + bottom:<20}{rps:>7.3f}x{p50:>7.2f}x{p99:>7.2f}x"
              f"{_fmt(cpu_ratio, '.2f'):>8}x   {target}")
    print(f"\nreq/s, p50 and p99 are medians of {args.rounds} rounds; srv CPU is the server's "
          "CPU time per request (all its processes and threads); cores = CPU time / wall time "
          "during the rounds (client: the load generator). A ratio of req/s above 1 means the "
          "first is faster.")


def code_version() -> str:
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=HERE.parent,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def load_generator(args: argparse.Namespace) -> str:
    if args.client == "httpx":
        return (f"httpx {httpx.__version__} AsyncClient in this process, {args.concurrency} "
                f"keep-alive connections, {args.rounds} rounds x {args.requests} requests")
    out = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    return (f"{(out.stdout or out.stderr).split(' [')[0]}, {args.wrk_threads} thread(s), "
            f"{args.concurrency} keep-alive connections, {args.warmup} s warm-up + "
            f"{args.rounds} rounds x {args.duration} s per target")


def print_setup(args: argparse.Namespace, database_url: str, settings: Settings,
                servers: dict[str, Server]) -> None:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    import uvicorn

    print(f"code:      {code_version()}")
    print(f"machine:   {os.cpu_count()} cores (usable: {affinity or '?'}), "
          f"{platform.system()} {platform.machine()}, Python {platform.python_version()}")
    print(f"database:  {describe_database(database_url)}, {JOB_ROWS} jobs in one tenant")
    print(f"python:    uvicorn {uvicorn.__version__} --http {http_impl()} --loop {loop_impl()}, "
          f"strawberry-graphql {version('strawberry-graphql')}, "
          f"graphql-core {version('graphql-core')}")
    for server in servers.values():
        print(f"  {server.name + ':':<12}{server.describe}")
    print(f"settings:  embedded_worker={settings.embedded_worker}, warm_on_start="
          f"{settings.warm_on_start}, log_level={settings.log_level}, otel_exporter="
          f"{settings.otel_exporter}, redis_url={settings.redis_url} (in-process bus)")
    print(f"load:      {load_generator(args)}")
    print(f"query:     {QUERY}")


def positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def workers_list(value: str) -> list[int]:
    return [positive(v) for v in value.split(",") if v.strip()]


def targets_list(value: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = set(names) - set(KINDS)
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(KINDS)}")
    return names


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", type=targets_list, default=list(KINDS),
                        help=f"comma-separated, in this order (default {','.join(KINDS)})")
    parser.add_argument("--gateway-workers", type=workers_list, default=[1, 2],
                        help="one gateway per entry, with that many uvicorn workers "
                             "(default 1,2)")
    parser.add_argument("--client", choices=("wrk", "httpx"), default="wrk",
                        help="load generator (default wrk)")
    parser.add_argument("--duration", type=positive, default=10,
                        help="seconds per round and target with wrk (default 10)")
    parser.add_argument("--warmup", type=positive, default=5,
                        help="warm-up seconds per target before the rounds (default 5)")
    parser.add_argument("--rounds", type=positive, default=3,
                        help="rounds per target, order reversed every other round (default 3)")
    parser.add_argument("--concurrency", type=positive, default=8,
                        help="concurrent keep-alive connections (default 8)")
    parser.add_argument("--wrk-threads", type=positive, default=1,
                        help="wrk threads (default 1: the other core serves)")
    parser.add_argument("--requests", type=positive, default=2000,
                        help="requests per round and target with --client httpx (default 2000)")
    parser.add_argument("--database-url", default=None,
                        help="e.g. postgresql+psycopg://user@127.0.0.1:5432/db (default: a "
                             "SQLite file in a temporary directory); gets migrated")
    parser.add_argument("--baseline-tree", type=Path, action="append", default=[],
                        help="also serve `gateway-base` (one worker) from this copy of the "
                             "source tree (e.g. the tree before a change, copied without .venv "
                             "and .git), alternated with `gateway` in the same run; repeat for "
                             "gateway-base2, …")
    args = parser.parse_args(argv)
    if args.client == "wrk" and shutil.which("wrk") is None:
        parser.error("wrk is not installed (apt-get install wrk), or use --client httpx")
    return args


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the finally blocks below stop servers and delete files.
    signal.signal(signal.SIGTERM, _interrupt)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="alphintra-bench-") as tmp:
        database_url = args.database_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        data_file = Path(tmp) / "page.json"
        env = {**settings_env(database_url), "BENCH_DATA_FILE": str(data_file)}
        settings = Settings.from_env(env)
        migrate_database(settings)
        runtime = build_runtime(settings)
        seeded: Seeded | None = None
        servers: dict[str, Server] = {}
        try:
            servers = make_servers(args, env, Path(tmp))
            print_setup(args, database_url, settings, servers)
            seeded = seed(runtime)
            data_file.write_text(json.dumps(bench_data(runtime, seeded.key)))
            for server in servers.values():
                server.start()
            for server in servers.values():
                server.wait_ready()
            sizes = verify(servers, seeded.key)
            print(f"verified:  all answer identical data ({PAGE_SIZE} jobs with creators); "
                  "bytes: " + ", ".join(f"{n} {s}" for n, s in sizes.items()), flush=True)
            results = run_load(servers, seeded.key, args, sizes)
            report(results, args, sizes)
        except (httpx.HTTPError, RuntimeError, subprocess.SubprocessError) as exc:
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
