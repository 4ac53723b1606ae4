"""Inspect a submitted plugin in the same sandbox it will run in, driven by the gateway.

`inspect_package` unpacks the already safety-checked wheel into a fresh directory and starts a
worker for it exactly as an installation would (gateway/marketplace/sandbox/): the same uid,
namespaces, Landlock, seccomp and limits, the same module name
(`alphintra_wheels.w<sha256[:20]>`, so a plugin cannot tell inspection from service by it), no
tenant and the manifest's `conformance.config`. The worker imports the plugin under the start
deadline (PLUGIN_IMPORT_FAILED, INSPECTION_TIMEOUT) and reports which hooks it implements; the
gateway compares them with the manifest (MANIFEST_HOOKS_MISMATCH), then runs the category's
conformance kit (marketplace/conformance.py) itself, calling the plugin through the same
proxies the services use and judging every answer here (CONFORMANCE_FAILED). The plugin never
sees the verdict, let alone writes it.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.errors import InvalidInput
from gateway.marketplace.errors import PluginCallFailed, PluginStartFailed
from gateway.marketplace.sandbox.proxies import PROXIES, describe
from gateway.marketplace.sandbox.supervisor import ManagedPlugin, PluginSpec, Sandbox
from marketplace.conformance import KitVenues, hook_problems, run_kit

DEFAULT_TIMEOUT_S = 30.0


class InspectionFailed(InvalidInput):
    """`code` is PLUGIN_IMPORT_FAILED, MANIFEST_HOOKS_MISMATCH, CONFORMANCE_FAILED or
    INSPECTION_TIMEOUT; `details.reasons` says why."""


@dataclass(frozen=True)
class InspectionReport:
    hooks: tuple[str, ...]
    checks: tuple[str, ...]  # what the conformance kit exercised, for the record
    seconds: float
    layers: tuple[str, ...] = ()  # the sandbox layers the plugin ran under
    extra: Mapping[str, Any] = field(default_factory=dict)


def inspect_package(sandbox: Sandbox, wheel: bytes, files: Mapping[str, bytes], manifest: Mapping[str, Any],
                    *, timeout_s: float = DEFAULT_TIMEOUT_S) -> InspectionReport:
    """Run inspection and conformance on the wheel's `files` (names already checked safe by
    marketplace.wheel) for `manifest` (already validated). Raises InspectionFailed."""
    started = time.perf_counter()
    sha256 = hashlib.sha256(wheel).hexdigest()
    workdir = Path(tempfile.mkdtemp(prefix="alphintra-inspect-"))
    managed: ManagedPlugin | None = None
    try:
        root = workdir / "wheel"
        for name, data in files.items():
            target = root / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        for path in [workdir, *workdir.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        managed = sandbox.managed(PluginSpec(
            key=f"inspect-{uuid.uuid4().hex}", plugin_id=str(manifest["id"]),
            version=str(manifest.get("version", "")), tenant_id=None, directory=root, sha256=sha256,
            entry_point=str(manifest["entry_point"]), hooks=tuple(manifest["hooks"]),
            capabilities=frozenset(manifest.get("capabilities") or ()),
            config=dict((manifest.get("conformance") or {}).get("config") or {}), venues=KitVenues()))
        worker = _start(managed, timeout_s)
        problems = hook_problems(worker.implemented, manifest["hooks"])
        if problems:
            raise InspectionFailed("MANIFEST_HOOKS_MISMATCH: " + "; ".join(problems[:3]),
                                   code="MANIFEST_HOOKS_MISMATCH", details={"reasons": problems[:20]})
        deadline = time.monotonic() + timeout_s
        outcome = run_kit(manifest, lambda hook: _call_hook(managed, hook, deadline), str(manifest["id"]))
        if outcome.failures:
            reasons = [str(r) for r in outcome.failures][:20]
            raise InspectionFailed("CONFORMANCE_FAILED: " + "; ".join(reasons[:3]), code="CONFORMANCE_FAILED",
                                   details={"reasons": reasons})
        return InspectionReport(hooks=tuple(worker.implemented), checks=tuple(outcome.checks),
                                seconds=time.perf_counter() - started, layers=tuple(worker.layers))
    finally:
        if managed is not None:
            sandbox.forget(managed)
        shutil.rmtree(workdir, ignore_errors=True)


def _start(managed: ManagedPlugin, timeout_s: float) -> Any:
    try:
        return managed.ensure_worker(start_timeout_s=timeout_s)
    except PluginStartFailed as exc:
        if exc.timed_out:
            raise InspectionFailed(
                f"inspecting the plugin took longer than {timeout_s:g} s (its import hung)",
                code="INSPECTION_TIMEOUT",
                details={"reasons": [f"no answer within {timeout_s:g} s"]}) from None
        code = ("MANIFEST_HOOKS_MISMATCH" if exc.error_type == "PluginValidationError"
                else "PLUGIN_IMPORT_FAILED")
        raise InspectionFailed(f"{code}: {exc.detail[:300]}", code=code,
                               details={"reasons": [exc.detail[:500]]}) from None


def _call_hook(managed: ManagedPlugin, hook: str, deadline: float) -> Any:
    """What the kit gets for a hook: proxies for provider hooks, the value for the others."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the conformance kit ran out of time")
    try:
        if hook in PROXIES:
            return describe(managed, hook)
        if hook == "alphintra_schema_extensions":
            return managed.call("schema", timeout_s=left)
        return managed.call("value", {"hook": hook}, timeout_s=left)
    except PluginCallFailed as exc:
        raise RuntimeError(exc.reason) from None
