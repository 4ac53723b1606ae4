"""Import a submitted plugin and check it, in a separate process the gateway can kill.

`inspect_package` (the gateway side) unpacks the already safety-checked wheel into a temporary
directory and runs `python -I -m gateway.marketplace.inspection <dir> <request> <result>` with a clean
environment (no ALPHINTRA_* settings, so no database URL or keys), the temporary directory as
working directory, CPU and memory limits, and a wall-clock timeout; the child is killed with
its process group when the time is up. The plugin is imported as the gateway's loader imports
it, under a namespace package whose path is the unpacked wheel (never from sys.path), so a
wheel cannot shadow `plugins` or the standard library, and a plugin that imports its own
package absolutely fails here exactly as it would at load.

The child (`main`) imports the entry point (PLUGIN_IMPORT_FAILED when that raises), registers
it on a pluggy manager carrying plugins/hookspecs.py, which refuses hooks that do not exist and
argument names a hookspec does not have, compares the implemented hooks with the manifest's
`hooks` (MANIFEST_HOOKS_MISMATCH), then runs the category's conformance kit
(marketplace/conformance.py; CONFORMANCE_FAILED). It writes its verdict as JSON to a result
file, never to stdout, which the plugin may print on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy

from gateway.errors import InvalidInput

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOADER_NAMESPACE = "alphintra_wheels"  # as marketplace/loader.py
DEFAULT_TIMEOUT_S = 30.0
MEMORY_LIMIT_BYTES = 4 << 30  # address space; numpy and BLAS reserve generously


class InspectionFailed(InvalidInput):
    """`code` is PLUGIN_IMPORT_FAILED, MANIFEST_HOOKS_MISMATCH, CONFORMANCE_FAILED or
    INSPECTION_TIMEOUT; `details.reasons` says why."""


@dataclass(frozen=True)
class InspectionReport:
    hooks: tuple[str, ...]
    checks: tuple[str, ...]  # what the conformance kit exercised, for the record
    seconds: float
    extra: Mapping[str, Any] = field(default_factory=dict)


def _child_env(workdir: str) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": workdir, "TMPDIR": workdir,
           "LANG": "C.UTF-8", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    return env


def inspect_package(files: Mapping[str, bytes], manifest: Mapping[str, Any], *,
                    timeout_s: float = DEFAULT_TIMEOUT_S) -> InspectionReport:
    """Run inspection and conformance on the wheel's `files` (names already checked safe by
    marketplace.wheel) for `manifest` (already validated). Raises InspectionFailed."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="alphintra-inspect-") as workdir:
        root = Path(workdir) / "wheel"
        for name, data in files.items():
            target = root / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        request = Path(workdir) / "request.json"
        result = Path(workdir) / "result.json"
        request.write_text(json.dumps({"manifest": dict(manifest), "timeout_s": timeout_s}))
        command = [sys.executable, "-I", "-m", "gateway.marketplace.inspection", str(root), str(request),
                   str(result)]
        process = subprocess.Popen(command, cwd=workdir, env=_child_env(workdir),
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            output, _ = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise InspectionFailed(
                f"inspecting the plugin took longer than {timeout_s:g} s (import or conformance "
                "kit hung)", code="INSPECTION_TIMEOUT",
                details={"reasons": [f"no verdict within {timeout_s:g} s"]}) from None
        verdict = _read_verdict(result)
        if verdict is None:
            tail = output.decode("utf-8", "replace")[-800:]
            raise InspectionFailed(
                f"the inspection process ended without a verdict (exit {process.returncode})",
                code="PLUGIN_IMPORT_FAILED",
                details={"reasons": [f"exit status {process.returncode}", tail]})
    if not verdict.get("ok"):
        reasons = [str(r) for r in verdict.get("reasons", [])][:20]
        code = str(verdict.get("code") or "PLUGIN_IMPORT_FAILED")
        raise InspectionFailed(f"{code}: " + "; ".join(reasons[:3]), code=code,
                               details={"reasons": reasons})
    return InspectionReport(hooks=tuple(verdict.get("hooks", ())),
                            checks=tuple(verdict.get("checks", ())),
                            seconds=time.perf_counter() - started)


def _read_verdict(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# The child side: runs in the separate process only.

def compare_hooks(plugin: object, plugin_id: str, declared: Sequence[str]
                  ) -> tuple[pluggy.PluginManager, list[str], list[str]]:
    """Register `plugin` against the hookspecs; answer (manager, implemented hooks, problems)."""
    from plugins import hookspecs
    from plugins.sdk import PROJECT

    manager = pluggy.PluginManager(PROJECT)
    manager.add_hookspecs(hookspecs)
    try:
        manager.register(plugin, name=plugin_id)
        manager.check_pending()
    except pluggy.PluginValidationError as exc:
        return manager, [], [f"a hook implementation does not match plugins/hookspecs.py: {exc}"]
    implemented = sorted(caller.name for caller in manager.get_hookcallers(plugin) or [])
    problems = []
    known = {name for name in dir(hookspecs) if name.startswith("alphintra_")}
    for name in sorted(set(declared) - known):
        problems.append(f"the manifest declares {name}, which is not a hook of the gateway")
    for name in sorted(set(declared) & known - set(implemented)):
        problems.append(f"the manifest declares {name} but the plugin does not implement it")
    for name in sorted(set(implemented) - set(declared)):
        problems.append(f"the plugin implements {name} but the manifest does not declare it")
    return manager, implemented, problems


def _limit_resources(timeout_s: float) -> None:
    try:
        import resource

        cpu = int(timeout_s) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))
    except (ImportError, ValueError, OSError):  # not on every platform; the timeout still holds
        pass


def _verdict(result: Path, **values: Any) -> None:
    result.write_text(json.dumps(values, default=str))


def main(argv: Sequence[str]) -> int:
    wheel_root, request_path, result_path = Path(argv[0]), Path(argv[1]), Path(argv[2])
    request = json.loads(request_path.read_text())
    manifest = request["manifest"]
    _limit_resources(float(request.get("timeout_s", DEFAULT_TIMEOUT_S)))
    if str(PROJECT_ROOT) not in sys.path:
        sys.path.insert(0, str(PROJECT_ROOT))
    import importlib
    import traceback
    import types

    # Imported as the gateway's loader imports it (marketplace/loader.py): under a namespace
    # package whose path is the unpacked wheel, never from sys.path, so the plugin shadows
    # nothing and an absolute import of its own package fails here as it would at load.
    holder = f"{LOADER_NAMESPACE}.inspected"
    for name, path in ((LOADER_NAMESPACE, []), (holder, [str(wheel_root)])):
        module = types.ModuleType(name)
        module.__path__ = path
        sys.modules[name] = module
    module_name, _, attr = manifest["entry_point"].partition(":")
    try:
        plugin: Any = importlib.import_module(f"{holder}.{module_name}")
        if attr:
            plugin = getattr(plugin, attr)
    except BaseException as exc:
        frames = traceback.format_exception_only(type(exc), exc)
        _verdict(result_path, ok=False, code="PLUGIN_IMPORT_FAILED",
                 reasons=[f"importing {manifest['entry_point']} raised "
                          f"{''.join(frames).strip()[:500]}"])
        return 0
    manager, implemented, problems = compare_hooks(plugin, manifest["id"], manifest["hooks"])
    if problems:
        _verdict(result_path, ok=False, code="MANIFEST_HOOKS_MISMATCH", reasons=problems,
                 hooks=implemented)
        return 0
    from marketplace.conformance import run_kit

    outcome = run_kit(manifest, manager, manifest["id"])
    if outcome.failures:
        _verdict(result_path, ok=False, code="CONFORMANCE_FAILED", reasons=outcome.failures,
                 hooks=implemented, checks=outcome.checks)
        return 0
    _verdict(result_path, ok=True, hooks=implemented, checks=outcome.checks)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
