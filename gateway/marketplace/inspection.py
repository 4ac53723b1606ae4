"""Inspect a submitted plugin in the same sandbox it will run in, driven by the gateway.

`inspect_package` unpacks the already safety-checked wheel into a fresh directory and starts a
worker for it exactly as an installation would (gateway/marketplace/sandbox/): the same uid,
namespaces, Landlock, seccomp and limits, the same module name
(`alphintra_wheels.w<sha256[:20]>`, so a plugin cannot tell inspection from service by it), no
tenant and the manifest's `conformance.config`. The worker imports the plugin under the start
deadline (PLUGIN_IMPORT_FAILED, INSPECTION_TIMEOUT) and reports which hooks it implements; the
gateway compares them with the manifest (MANIFEST_HOOKS_MISMATCH), then runs the category's
conformance kit (marketplace/conformance.py) itself, calling the plugin through the same
proxies the services use and judging every answer here (CONFORMANCE_FAILED). A plugin declaring
`alphintra_schema_extensions` reports its SDL, which the report carries (stored on the version);
when the caller passes the core schema's names (`core_names`, bound by the app), a root field or
type the core already defines is refused (PLUGIN_SCHEMA_CONFLICT naming them), as an install
would be. The plugin never sees the verdict, let alone writes it.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from graphql import GraphQLScalarType, build_ast_schema, parse

from gateway.errors import InvalidInput
from gateway.marketplace.errors import PluginCallFailed, PluginStartFailed
from gateway.marketplace.sandbox.proxies import PROXIES, describe
from gateway.marketplace.sandbox.supervisor import ManagedPlugin, PluginSpec, Sandbox
from marketplace.conformance import KitVenues, hook_problems, run_kit
from plugins.wire import PLACEHOLDER_FIELD

DEFAULT_TIMEOUT_S = 30.0
MAX_SDL_CHARS = 1 << 20
SCHEMA_HOOK = "alphintra_schema_extensions"
ROOTS = ("query", "mutation", "subscription")


class CoreNames(NamedTuple):
    """The core schema's names a plugin may not define: its root fields by root ("query",
    "mutation", "subscription"), its named types other than scalars, and its scalars (a
    plugin's own scalar of the same name shares the core's)."""

    roots: Mapping[str, frozenset[str]]
    types: frozenset[str]
    scalars: frozenset[str] = frozenset()


CoreNamesSource = Callable[[], CoreNames]


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
    sdl: str | None = None  # what the worker reported for alphintra_schema_extensions


def inspect_package(sandbox: Sandbox, wheel: bytes, files: Mapping[str, bytes], manifest: Mapping[str, Any],
                    *, timeout_s: float = DEFAULT_TIMEOUT_S,
                    core_names: CoreNamesSource | None = None) -> InspectionReport:
    """Run inspection and conformance on the wheel's `files` (names already checked safe by
    marketplace.wheel) for `manifest` (already validated), and check a schema extension's names
    against `core_names()` when given. Raises InspectionFailed."""
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
        reported: dict[str, Any] = {}

        def call(hook: str) -> Any:
            value = _call_hook(managed, hook, deadline)
            if hook == SCHEMA_HOOK:
                reported[hook] = value  # the kit asks for the SDL; the check below reuses it
            return value

        outcome = run_kit(manifest, call, str(manifest["id"]))
        if outcome.failures:
            reasons = [str(r) for r in outcome.failures][:20]
            raise InspectionFailed("CONFORMANCE_FAILED: " + "; ".join(reasons[:3]), code="CONFORMANCE_FAILED",
                                   details={"reasons": reasons})
        sdl = None
        if SCHEMA_HOOK in manifest["hooks"]:
            answer = reported.get(SCHEMA_HOOK)
            if answer is None:
                answer = _schema_answer(managed, deadline)
            sdl = _checked_sdl(answer, core_names)
        return InspectionReport(hooks=tuple(worker.implemented), checks=tuple(outcome.checks),
                                seconds=time.perf_counter() - started, layers=tuple(worker.layers),
                                sdl=sdl)
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


def _schema_answer(managed: ManagedPlugin, deadline: float) -> Any:
    try:
        return _call_hook(managed, SCHEMA_HOOK, deadline)
    except (RuntimeError, TimeoutError) as exc:
        raise InspectionFailed(f"CONFORMANCE_FAILED: {SCHEMA_HOOK} failed ({str(exc)[:200]})",
                               code="CONFORMANCE_FAILED", details={"reasons": [str(exc)[:500]]}) from None


def _checked_sdl(answer: Any, core_names: CoreNamesSource | None) -> str:
    """The SDL the worker reported; refused when too large, when it does not build, or (with
    `core_names`) when it defines a root field or type of the core schema."""
    sdl = answer.get("sdl") if isinstance(answer, dict) else None
    if not isinstance(sdl, str):
        raise InspectionFailed(f"CONFORMANCE_FAILED: {SCHEMA_HOOK} reported no SDL",
                               code="CONFORMANCE_FAILED", details={"reasons": ["no SDL reported"]})
    if len(sdl) > MAX_SDL_CHARS:
        reason = f"its SDL has {len(sdl)} characters, more than {MAX_SDL_CHARS}"
        raise InspectionFailed(f"CONFORMANCE_FAILED: {reason}", code="CONFORMANCE_FAILED",
                               details={"reasons": [reason]})
    if core_names is None:
        return sdl
    fields, types = schema_clashes(sdl, core_names())
    if fields or types:
        reasons = ([f"{root} field {name!r} is defined by the core schema"
                    for root, _, name in (f.partition(".") for f in fields)]
                   + [f"type {name!r} is defined by the core schema" for name in types])
        raise InspectionFailed("PLUGIN_SCHEMA_CONFLICT: " + "; ".join(reasons[:3]),
                               code="PLUGIN_SCHEMA_CONFLICT",
                               details={"reasons": reasons[:20], "fields": fields, "types": types})
    return sdl


def schema_clashes(sdl: str, core: CoreNames) -> tuple[list[str], list[str]]:
    """(root fields as "root.name", type names) of a plugin's SDL that the core schema defines,
    by the rules tenant schemas are composed with: a plugin's scalar may share a core scalar's
    name, nothing else may share a core name. Raises InspectionFailed if the SDL does not build."""
    try:
        own = build_ast_schema(parse(sdl))
    except Exception as exc:
        reason = f"its SDL does not build ({str(exc)[:200]})"
        raise InspectionFailed(f"CONFORMANCE_FAILED: {reason}", code="CONFORMANCE_FAILED",
                               details={"reasons": [reason]}) from None
    fields: list[str] = []
    own_roots = set()
    for root in ROOTS:
        root_type = getattr(own, f"{root}_type")
        if root_type is None:
            continue
        own_roots.add(root_type.name)
        taken = core.roots.get(root, frozenset())
        fields.extend(f"{root}.{name}" for name in sorted(root_type.fields)
                      if name != PLACEHOLDER_FIELD and name in taken)
    types = sorted(name for name, named in own.type_map.items()
                   if not name.startswith("__") and name not in own_roots
                   and (name in core.types
                        or (name in core.scalars and not isinstance(named, GraphQLScalarType))))
    return fields, types
