"""Installing a plugin and swapping the tenant's schema; memory of many tenants' plugin views.

    .venv/bin/python bench/plugin_install.py [--installs 20] [--tenants 1000] [--sets 20]

Part 1 times `Installations.install` end to end (look-up, config validation and sealing,
signature re-verification, the start of the tenant's sandboxed worker (which imports the
wheel), its SDL, composition, `alphintra_activated`, the commit with its audit record, the
swap): p50/p95 over fresh tenants, once with the installed set's schema already cached (another
tenant had the same set) and once composing a new schema each time (cache cleared). Target:
under 500 ms. Part 2 builds the views of `--tenants` tenants spread over `--sets` distinct
plugin sets (out of five synthetic schema-extension plugins) and reports tracemalloc's and the
process RSS's growth, how many schema objects exist (one per set), and the memory of the
sandboxed workers (one per tenant and plugin), read from their cgroups. Runs on a temporary
SQLite database and the in-process bus; plugins are published through the real publication
service (signature, inspection in the sandbox, review).
"""

from __future__ import annotations

import argparse
import base64
import gc
import hashlib
import io
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.cli import migrate_database  # noqa: E402
from gateway.marketplace.install_models import PluginInstallation  # noqa: E402
from gateway.runtime import build_runtime  # noqa: E402
from gateway.settings import Settings  # noqa: E402
from marketplace.signing import generate_key, sign  # noqa: E402
from schema.tenant import tenant_composer  # noqa: E402

PLUGIN_CODE = '''
import strawberry
from plugins.sdk import PluginContext, SchemaExtension, current_context, hookimpl


@strawberry.type
class Bench{n}Reading:
    value: int
    label: str


@strawberry.type
class Bench{n}Query:
    @strawberry.field
    def bench{n}(self) -> Bench{n}Reading:
        return Bench{n}Reading(value={n}, label=str(current_context().config.get("label", "")))


@hookimpl
def alphintra_schema_extensions(context: PluginContext) -> list[SchemaExtension]:
    return [SchemaExtension(query=Bench{n}Query)]
'''


WHEEL = b"Wheel-Version: 1.0\nGenerator: bench\nRoot-Is-Purelib: true\nTag: py3-none-any\n"


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def bench_wheel(n: int) -> tuple[bytes, dict[str, Any]]:
    package = f"bench{n}"
    manifest = {"id": f"bench.plugin-{n}", "name": f"Bench {n}", "vendor": "Bench", "version": "1.0.0",
                "gateway": ">=0.1,<1.0", "category": "analytics", "entry_point": f"{package}.plugin",
                "hooks": ["alphintra_schema_extensions"], "capabilities": ["schema:extend"],
                "config_schema": {"type": "object", "properties": {
                    "label": {"type": "string"}, "token": {"type": "string", "x-secret": True}}},
                "pricing": {"model": "per_call", "amount": "0.001", "currency": "USD"}, "licence": "MIT"}
    info = f"{package}-1.0.0.dist-info"
    files = {f"{package}/__init__.py": b"", f"{package}/plugin.py": PLUGIN_CODE.format(n=n).encode(),
             f"{package}/alphintra_manifest.json": json.dumps(manifest).encode(),
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {package}\nVersion: 1.0.0\n".encode(),
             f"{info}/WHEEL": WHEEL,
             f"{info}/entry_points.txt":
                 f"[alphintra.plugins]\n{manifest['id']} = {package}.plugin\n".encode()}
    record = "".join(f"{k},{_record_hash(v)},{len(v)}\n" for k, v in files.items()) + f"{info}/RECORD,,\n"
    files[f"{info}/RECORD"] = record.encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return out.getvalue(), manifest


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--installs", type=int, default=20)
    parser.add_argument("--tenants", type=int, default=20)  # each (tenant, plugin) starts a worker
    parser.add_argument("--sets", type=int, default=20)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="alphintra-bench-"))
    settings = Settings(database_url=f"sqlite:///{tmp / 'bench.db'}", log_json=False, warm_on_start=False,
                            rate_limit_key_per_second=0, rate_limit_tenant_per_second=0,
                        secret_key=base64.b64encode(os.urandom(32)).decode(), embedded_worker="off")
    migrate_database(settings)
    runtime = build_runtime(settings)
    service = runtime.marketplace
    service.bind_composer(tenant_composer(settings))

    vendor, admin, _ = runtime.tenancy.onboard("bench-vendor", "Bench vendor", "admin@bench.test")
    private_key, public_key = generate_key()
    runtime.marketplace_publishing.register_vendor_key(vendor.id, admin.id, public_key, "Bench")
    refs = []
    for n in range(5):
        wheel, manifest = bench_wheel(n)
        signature = sign(wheel, manifest, private_key)
        version = runtime.marketplace_publishing.publish(vendor.id, admin.id, wheel, signature,
                                                          "COMMUNITY").version
        runtime.marketplace_publishing.review(None, version.id, "IN_REVIEW")
        runtime.marketplace_publishing.review(None, version.id, "APPROVED")
        refs.append(manifest["id"])

    def timed_installs(count: int, clear_cache: bool) -> list[float]:
        out = []
        for i in range(count):
            tenant, user, _ = runtime.tenancy.onboard(f"bench-{int(clear_cache)}-{i}-{os.urandom(3).hex()}",
                                                      "Bench tenant", f"a{i}@bench.test")
            if clear_cache and service.schemas is not None:
                service.schemas._schemas.clear()
            start = time.perf_counter()
            service.install(tenant.id, user.id, refs[0], "1.0.0", {"label": "x", "token": "secret-token"})
            out.append((time.perf_counter() - start) * 1000)
        return out

    timed_installs(1, clear_cache=True)  # first import of the wheel and strawberry's warm-up
    cached = timed_installs(args.installs, clear_cache=False)
    fresh = timed_installs(args.installs, clear_cache=True)
    print(f"install + schema swap, set cached     : p50 {statistics.median(cached):6.1f} ms  "
          f"p95 {percentile(cached, 0.95):6.1f} ms  (n={len(cached)})")
    print(f"install + schema swap, composing anew : p50 {statistics.median(fresh):6.1f} ms  "
          f"p95 {percentile(fresh, 0.95):6.1f} ms  (n={len(fresh)})  target < 500 ms")

    # Part 2: many tenants' views over a few distinct sets.
    subsets = [s for r in range(1, 6) for s in itertools.combinations(range(5), r)][:args.sets]
    version_refs = [service._installable(vendor.id, plugin_id, "1.0.0") for plugin_id in refs]
    service.schemas._schemas.clear() if service.schemas is not None else None
    gc.collect()
    rss_before = rss_kib()
    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    start = time.perf_counter()
    after_sets = before
    for t in range(args.tenants):
        if t == len(subsets):  # every distinct set composed once by now
            gc.collect()
            after_sets, _ = tracemalloc.get_traced_memory()
        tenant_id = f"bench-tenant-{t:05d}"
        plugins = []
        for index in subsets[t % len(subsets)]:
            # The same configuration for every tenant (defaults, as most tenants run): schemas are
            # shared by set and configuration, since extensions may close over the config.
            row = PluginInstallation(tenant_id=tenant_id, plugin_id=refs[index], version_id="v",
                                     version="1.0.0", config={"label": "shared"})
            plugins.append(service._activate(tenant_id, version_refs[index], row, call_activated=False))
        service._swap(tenant_id, plugins)
    elapsed = time.perf_counter() - start
    gc.collect()
    after, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_after = rss_kib()
    schemas = {id(service.schema_for(f"bench-tenant-{t:05d}")) for t in range(args.tenants)}
    print(f"{args.tenants} tenants over {len(subsets)} plugin sets: {len(schemas)} schema objects, "
          f"{len(service.schemas or [])} cached; built in {elapsed:.1f} s")
    print(f"  tracemalloc: +{(after - before) / 1e6:.1f} MB retained (peak +{(peak - before) / 1e6:.1f} MB), "
          f"{(after - before) / args.tenants / 1e3:.1f} kB per tenant")
    rest = args.tenants - len(subsets)
    print(f"  of which the first {len(subsets)} tenants (one new schema each): "
          f"+{(after_sets - before) / 1e6:.1f} MB; the other {rest}: "
          f"+{(after - after_sets) / 1e6:.1f} MB ({(after - after_sets) / max(rest, 1) / 1e3:.1f} kB each)")
    grown = (rss_after - rss_before) / 1024
    print(f"  gateway RSS: {rss_before / 1024:.0f} MB -> {rss_after / 1024:.0f} MB (+{grown:.0f} MB)")
    workers = [m.worker for m in service.sandbox.workers() if m.worker is not None and m.worker.alive]
    used = [w.launch.cgroup.memory_used() for w in workers if w.launch.cgroup is not None]
    if used:
        print(f"  {len(workers)} sandboxed workers (one per tenant and plugin): "
              f"{statistics.median(used) / 2**20:.1f} MiB each (p50 of their cgroups), "
              f"{sum(used) / 2**20:.0f} MiB in all")
    service.stop()
    runtime.close()


if __name__ == "__main__":
    main()
