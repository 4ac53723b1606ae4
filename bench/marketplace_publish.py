"""How long publishing a plugin takes, stage by stage, for the three example plugins.

    .venv/bin/python bench/marketplace_publish.py [--repeat 5]

Prints, per example: the build (pip, once), then the median over the repeats of reading and
checking the wheel, validating the manifest, signing, verifying the signature, and the
inspection in the plugin sandbox (a worker started, the import, hook comparison, the
conformance kit driven by the gateway). Nothing is stored: this is the
work `MarketplacePublishing.publish` does before its one transaction.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.marketplace.inspection import inspect_package
from gateway.marketplace.sandbox.asks import answerer
from gateway.marketplace.sandbox.egress import EgressProxy
from gateway.marketplace.sandbox.supervisor import Limits, Sandbox
from marketplace import signing
from marketplace.build import build_wheel
from marketplace.manifest import parse_manifest
from marketplace.wheel import read_wheel

EXAMPLES = Path(__file__).resolve().parent.parent / "marketplace" / "examples"


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, value = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), value


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    private, public = signing.generate_key()
    sandbox = Sandbox(Limits(), answerer(None, EgressProxy()))
    print(sandbox.describe_layers())
    print(f"{'example':16} {'wheel kB':>8} {'build s':>8} {'read ms':>8} {'manifest ms':>11} "
          f"{'sign ms':>8} {'verify ms':>9} {'inspect ms':>10}")
    with tempfile.TemporaryDirectory() as out:
        for name in ("news_sentiment", "lion_exchange", "harbour_theme"):
            start = time.perf_counter()
            wheel = build_wheel(EXAMPLES / name, Path(out)).read_bytes()
            build_s = time.perf_counter() - start
            read_s, contents = timed(lambda w=wheel: read_wheel(w), args.repeat)
            parse_s, manifest = timed(lambda c=contents: parse_manifest(c.manifest_data), args.repeat)
            sign_s, signature = timed(lambda c=contents, m=manifest: signing.sign(c, m, private),
                                      args.repeat)
            verify_s, _ = timed(lambda c=contents, m=manifest, s=signature:
                                signing.verify(c, m, s, public), args.repeat)
            inspect_s, _ = timed(lambda w=wheel, c=contents, m=manifest:
                                 inspect_package(sandbox, w, c.files, m.raw), args.repeat)
            print(f"{name:16} {len(wheel) / 1000:8.1f} {build_s:8.2f} {read_s * 1e3:8.2f} "
                  f"{parse_s * 1e3:11.2f} {sign_s * 1e3:8.2f} {verify_s * 1e3:9.2f} "
                  f"{inspect_s * 1e3:10.0f}")
    sandbox.close()


if __name__ == "__main__":
    main()
