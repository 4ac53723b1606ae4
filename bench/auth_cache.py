"""What the credential and decision caches save per request (issue 14).

    .venv/bin/python bench/auth_cache.py [--database-url URL] [--calls N] [--rounds R]

Without --database-url it uses a SQLite file in a temporary directory (PostgreSQL: give a
scratch database of your own; the bench migrates it and onboards a tenant of its own).

In one run, on one database, rounds interleaved so both see the same machine:

- `authenticate()` of one API key with the cache off (`auth_cache_seconds=0`, the path before
  the cache: the key/user/tenant join, the HMAC, the roles from casbin) and on (the HMAC, the
  expiry, the kept Principal);
- `AccessPolicy.allowed()` of one (user, tenant, object, action) with the decision cache off
  (`policy_cache_size=0`: casbin's enforce) and on;
- the HMAC alone, the floor a cached authentication cannot go under.

Prints per-call µs (median of rounds) and the cold/cached ratios.
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.auth import apikeys
from gateway.auth.authenticate import Authenticator
from gateway.auth.policy import AccessPolicy
from gateway.cli import migrate_database
from gateway.runtime import build_runtime
from gateway.settings import Settings


def per_call_us(fn: Callable[[], object], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - started) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url")
    parser.add_argument("--calls", type=int, default=2_000, help="calls per round and path")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{tmp}/bench.db"
        settings = Settings(database_url=url, embedded_worker="off", warm_on_start=False,
                            log_json=False, secret_key=base64.b64encode(os.urandom(32)).decode())
        migrate_database(settings)
        rt = build_runtime(settings)
        try:
            slug = f"bench-{uuid.uuid4().hex[:8]}"
            tenant, _admin, _ = rt.tenancy.onboard(slug, "Bench", f"admin@{slug}.test")
            user = rt.tenancy.create_user(tenant.id, f"trader@{slug}.test", roles=["trader"],
                                          by_platform=True)
            _, key = rt.tenancy.create_api_key(tenant.id, user.id, "bench", by_platform=True)

            cold_policy = AccessPolicy(rt.db, cache_size=0)
            cold_auth = Authenticator(rt.db, cold_policy, settings.with_(auth_cache_seconds=0))
            cached_auth, cached_policy = rt.authenticator, rt.policy
            assert cold_auth.authenticate(key) == cached_auth.authenticate(key)  # same answer
            assert cold_policy.allowed(user.id, tenant.id, "order", "write") is \
                cached_policy.allowed(user.id, tenant.id, "order", "write") is True
            key_id, secret = apikeys.parse(key) or ("", "")
            entry = cached_auth.keys.get(key_id)
            assert entry is not None

            paths: dict[str, Callable[[], object]] = {
                "authenticate, cache off": lambda: cold_auth.authenticate(key),
                "authenticate, cached": lambda: cached_auth.authenticate(key),
                "allowed, cache off": lambda: cold_policy.allowed(user.id, tenant.id, "order", "write"),
                "allowed, cached": lambda: cached_policy.allowed(user.id, tenant.id, "order", "write"),
                "HMAC alone": lambda: apikeys.matches(secret, entry.salt, entry.secret_hash),
            }
            for fn in paths.values():  # warm-up
                per_call_us(fn, max(1, args.calls // 10))
            samples: dict[str, list[float]] = {name: [] for name in paths}
            for _ in range(args.rounds):
                for name, fn in paths.items():
                    # the cold authentication is ~100x slower: fewer calls keep rounds short
                    calls = args.calls // 10 if name.endswith("cache off") else args.calls
                    samples[name].append(per_call_us(fn, max(1, calls)))
        finally:
            rt.close()

    backend = url.split(":", 1)[0]
    print(f"auth cache bench: {backend}, {args.rounds} rounds, Python {sys.version.split()[0]}")
    median = {name: statistics.median(values) for name, values in samples.items()}
    for name, value in median.items():
        print(f"  {name:<26} {value:10.2f} µs/call")
    ratios = (("authenticate: cache off / cached", "authenticate, cache off", "authenticate, cached"),
              ("allowed:      cache off / cached", "allowed, cache off", "allowed, cached"),
              ("cached authenticate / HMAC alone", "authenticate, cached", "HMAC alone"))
    for label, slow, fast in ratios:
        print(f"  {label} = {median[slow] / median[fast]:.1f}x")

if __name__ == "__main__":
    main()
