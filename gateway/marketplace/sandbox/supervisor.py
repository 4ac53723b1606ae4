"""The lifecycle of sandboxed plugins: one `ManagedPlugin` per (tenant, plugin version,
configuration), each with at most one live worker process.

- Start on first use (or at activation, which needs the plugin's hooks and schema), under the
  start deadline: a plugin that hangs at import fails its own start only. No lock is shared
  across plugins or tenants: each ManagedPlugin has its own.
- Every call has a deadline; past it the worker is killed, the call answers PLUGIN_FAILED, and
  the next call starts a new worker, after an exponential backoff (0.25 s doubling, at most
  30 s) once it has failed more than once.
- `quarantine_failures` failures (crashes, timeouts, failed starts) within ten minutes
  quarantine the plugin for that tenant: every call answers PLUGIN_QUARANTINED until it is
  configured, upgraded, rolled back or reinstalled (a new ManagedPlugin), and the installation
  service tells the tenant and the vendor.
- Workers idle longer than `idle_s` stop, except those kept warm (exchange connectors and rule
  packs, which are on the order path): those are pinged when quiet and restarted when down.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.marketplace.errors import (
    PluginCallFailed,
    PluginQuarantined,
    PluginStartFailed,
    PoolStateGone,
    SandboxUnavailable,
)
from gateway.marketplace.sandbox.launch import UID_BASE, UID_COUNT, LaunchSpec, prepare
from gateway.marketplace.sandbox.layers import HostLayers, detect_layers
from gateway.marketplace.sandbox.worker import CallTimedOut, RemoteError, Worker, WorkerGone
from plugins import wire

log = logging.getLogger(__name__)
SDK_DIR = Path(__file__).resolve().parents[3] / "plugins"
GUEST_MAIN = SDK_DIR / "guest" / "main.py"
FAILURE_WINDOW_S = 600.0
HEALTH_INTERVAL_S = 30.0  # a quiet worker on the order path is pinged this often
HEALTH_TIMEOUT_S = 2.0
_SERIAL = itertools.count(1)
MAX_BACKOFF_S = 30.0
# System files a Python worker reads (shared libraries, time zones); nothing of the gateway's.
SYSTEM_READ = ("/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/share/zoneinfo", "/etc/ld.so.cache",
               "/dev/null", "/dev/urandom", "/dev/zero")


@dataclass(frozen=True)
class PluginSpec:
    """What a worker is started with. `config` holds the tenant's secrets: it goes to the
    worker's first message only, never into its environment, arguments or files."""

    key: str  # unique per (tenant, version, configuration)
    plugin_id: str
    version: str
    tenant_id: str | None
    directory: Path  # the unpacked, verified wheel
    sha256: str
    entry_point: str
    hooks: tuple[str, ...]  # declared by the manifest: nothing else is ever called
    capabilities: frozenset[str]
    config: Mapping[str, Any] = field(repr=False, default_factory=dict)
    keep_warm: bool = False
    venues: Any = field(default=None, repr=False, compare=False)  # the directory it is answered from
    builtin: bool = False  # a built-in plugin (plugins.builtin), run sandboxed to test the contract


@dataclass(frozen=True)
class Limits:
    call_timeout_s: float = 5.0
    start_timeout_s: float = 10.0
    idle_s: float = 300.0
    memory_bytes: int = 512 << 20
    cpu_fraction: float = 0.5
    pids: int = 64
    quarantine_failures: int = 5
    required: bool = True  # refuse to run plugins without the minimum layers


class ManagedPlugin:
    def __init__(self, sandbox: Sandbox, spec: PluginSpec) -> None:
        self.sandbox = sandbox
        self.spec = spec
        self.worker: Worker | None = None
        self.failures: collections.deque[float] = collections.deque()
        self.quarantined: str | None = None
        self.retry_at = 0.0
        self.stopped = False
        self.stop_at = 0.0
        self._lock = threading.Lock()

    @property
    def plugin_id(self) -> str:
        return self.spec.plugin_id

    # Calls (sync, from request and job threads; async, from the event loop).
    def call(self, method: str, args: dict[str, Any] | None = None, timeout_s: float | None = None) -> Any:
        worker = self.ensure_worker()
        limit = self.sandbox.limits.call_timeout_s if timeout_s is None else timeout_s
        try:
            return worker.call(method, args or {}, limit)
        except (CallTimedOut, WorkerGone) as exc:
            raise self._failed(worker, str(exc)) from None
        except RemoteError as exc:
            raise _raised(self.plugin_id, exc) from None

    async def acall(self, method: str, args: dict[str, Any] | None = None,
                    timeout_s: float | None = None) -> Any:
        worker = self.ensure_worker()  # a start blocks at most start_timeout_s, rarely
        limit = self.sandbox.limits.call_timeout_s if timeout_s is None else timeout_s
        try:
            return await worker.acall(method, args or {}, limit)
        except (CallTimedOut, WorkerGone) as exc:
            raise self._failed(worker, str(exc)) from None
        except RemoteError as exc:
            raise _raised(self.plugin_id, exc) from None

    async def stream(self, method: str, args: dict[str, Any]) -> AsyncIterator[Any]:
        worker = self.ensure_worker()
        try:
            async for item in worker.stream(method, args):
                yield item
        except WorkerGone as exc:
            raise self._failed(worker, str(exc)) from None
        except RemoteError as exc:
            raise _raised(self.plugin_id, exc) from None

    def used(self, size: int = 0) -> None:
        if self.sandbox.on_use is not None:
            self.sandbox.on_use(self.spec, size)

    # Lifecycle.
    def ensure_worker(self, start_timeout_s: float | None = None) -> Worker:
        worker = self.worker
        if worker is not None and worker.alive and (not self.stopped or time.monotonic() < self.stop_at):
            return worker
        with self._lock:
            if self.quarantined is not None:
                raise PluginQuarantined(self.plugin_id, f"quarantined after repeated failures "
                                                        f"({self.quarantined})")
            worker = self.worker
            if worker is not None and worker.alive and (not self.stopped or time.monotonic() < self.stop_at):
                return worker
            if self.stopped:
                raise PluginCallFailed(self.plugin_id, "the plugin is no longer active for this tenant")
            wait = self.retry_at - time.monotonic()
            if wait > 0:
                raise PluginCallFailed(self.plugin_id, f"restarting after a failure; retry in {wait:.1f} s")
            try:
                self.worker = self.sandbox.start(self, start_timeout_s)
            except PluginCallFailed as exc:
                self._record_failure(exc.reason)
                raise
            return self.worker

    def _failed(self, worker: Worker, reason: str) -> PluginCallFailed:
        if worker.oom_killed():
            reason = "it ran out of memory"
        worker.kill(reason)
        with self.sandbox.guard:  # one death is one failure, however many calls it took down
            first, worker.counted = not worker.counted, True
        if first:
            self._record_failure(reason)
        if self.quarantined is not None:
            return PluginQuarantined(self.plugin_id, f"quarantined after repeated failures ({reason})")
        return PluginCallFailed(self.plugin_id, reason)

    def _record_failure(self, reason: str) -> None:
        now = time.monotonic()
        quarantine = False
        with self.sandbox.guard:
            self.failures.append(now)
            while self.failures and now - self.failures[0] > FAILURE_WINDOW_S:
                self.failures.popleft()
            count = len(self.failures)
            if count >= self.sandbox.limits.quarantine_failures and self.quarantined is None:
                self.quarantined = reason
                quarantine = True
            elif count > 1:
                self.retry_at = now + min(MAX_BACKOFF_S, 0.25 * 2 ** (count - 2))
        log.error("plugin worker failed", extra={"plugin": self.plugin_id, "tenant_id": self.spec.tenant_id,
                                                 "reason": reason, "failures": count})
        if quarantine and self.sandbox.on_quarantine is not None:
            self.sandbox.on_quarantine(self, reason)

    def stop(self, grace_s: float = 0.0) -> None:
        """For good: the plugin was deactivated for this tenant. A live worker keeps answering
        for `grace_s` (requests that began on the old view), then the reaper stops it."""
        self.stopped = True
        self.stop_at = time.monotonic() + grace_s
        if grace_s <= 0:
            self.idle_stop()

    def idle_stop(self) -> None:
        worker, self.worker = self.worker, None
        if worker is not None and worker.alive:
            worker.kill("stopped")


class Sandbox:
    """Starts workers inside the host's layers and keeps the registry of managed plugins."""

    def __init__(self, limits: Limits, answer: Callable[[ManagedPlugin, str, dict[str, Any]], Any],
                 use_bwrap: bool = True, use_cgroups: bool = True) -> None:
        self.limits = limits
        self.answer = answer
        wire.warm()
        self.use_bwrap = use_bwrap
        self.use_cgroups = use_cgroups
        self.on_quarantine: Callable[[ManagedPlugin, str], None] | None = None
        self.on_use: Callable[[PluginSpec, int], None] | None = None  # metering of provider calls
        self.guard = threading.Lock()
        self._plugins: dict[str, ManagedPlugin] = {}
        self._free_uids = collections.deque(range(UID_BASE, UID_BASE + UID_COUNT))
        self._uids: dict[str, int] = {}
        self._stopping: list[ManagedPlugin] = []
        self._layers: HostLayers | None = None
        self._reaper: threading.Thread | None = None
        self._closed = threading.Event()

    @property
    def layers(self) -> HostLayers:
        if self._layers is None:
            self._layers = detect_layers(use_bwrap=self.use_bwrap, use_cgroups=self.use_cgroups)
        return self._layers

    def describe_layers(self) -> str:
        layers = self.layers
        missing = layers.missing_minimum()
        text = f"plugin sandbox layers: {', '.join(layers.active()) or 'none'}"
        return text + (f"; missing from the minimum: {', '.join(missing)}" if missing else "")

    def managed(self, spec: PluginSpec) -> ManagedPlugin:
        with self.guard:
            found = self._plugins.get(spec.key)
            if found is None or found.stopped:
                found = ManagedPlugin(self, spec)
                self._plugins[spec.key] = found
            self._ensure_reaper()
            return found

    def forget(self, managed: ManagedPlugin, grace_s: float = 0.0) -> None:
        managed.stop(grace_s)
        with self.guard:
            if self._plugins.get(managed.spec.key) is managed:
                del self._plugins[managed.spec.key]
            if grace_s > 0:
                self._stopping.append(managed)
            else:
                self._release(managed)

    def _release(self, managed: ManagedPlugin) -> None:
        """Its uid back to the pool, unless another live plugin object took over the key."""
        if managed.spec.key not in self._plugins:
            uid = self._uids.pop(managed.spec.key, None)
            if uid is not None:
                self._free_uids.append(uid)

    def start(self, managed: ManagedPlugin, timeout_s: float | None = None) -> Worker:
        layers = self.layers
        missing = layers.missing_minimum()
        if missing and self.limits.required:
            raise SandboxUnavailable(f"plugins cannot run here: the sandbox lacks {', '.join(missing)} "
                                     "(docs/sandbox.md)", details={"plugin": managed.plugin_id,
                                                                   "missing": missing})
        spec = managed.spec
        uid = self._uid_for(spec.key) if layers.dedicated_uid else None
        if uid is not None:
            _grant_read(spec.directory, uid)
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        name = f"w{os.getpid()}-{next(_SERIAL)}"  # never reused in this process: an old cgroup may linger
        site = _site_packages()
        try:
            launch = self._prepare(managed, name, uid, child, site, layers)
        except (OSError, ValueError) as exc:  # a layer that cannot be set up, a path gone
            parent.close()
            child.close()
            raise PluginStartFailed(spec.plugin_id, f"its worker could not be set up ({type(exc).__name__})",
                                    error_type=type(exc).__name__, detail=str(exc)[:500]) from None
        worker = Worker.spawn(name, launch, child, parent,
                              lambda method, args: self.answer(managed, method, args))
        return self._init(managed, worker, launch, site, layers, timeout_s)

    def _prepare(self, managed: ManagedPlugin, name: str, uid: int | None, child: socket.socket,
                 site: list[str], layers: HostLayers) -> Any:
        spec = managed.spec
        return prepare(LaunchSpec(
            name=name, uid=uid, python=sys.executable,
            argv=("-I", "-S", str(GUEST_MAIN), "--fd", str(child.fileno()), "--sdk", str(SDK_DIR),
                  *(arg for path in site for arg in ("--path", path))),
            fd=child.fileno(),
            ro_binds=tuple(dict.fromkeys((sys.prefix, sys.base_prefix, str(SDK_DIR), str(spec.directory),
                                          *site))),
            memory_bytes=self.limits.memory_bytes, cpu_fraction=self.limits.cpu_fraction,
            pids=self.limits.pids, env=_worker_env()), layers)

    def _init(self, managed: ManagedPlugin, worker: Worker, launch: Any, site: list[str],
              layers: HostLayers, timeout_s: float | None) -> Worker:
        """The first message: the tenant's context of the plugin (secrets included) and the
        confinement; the worker imports the plugin and answers what it implements."""
        spec = managed.spec
        limit = self.limits.start_timeout_s if timeout_s is None else timeout_s
        read_paths = [sys.prefix, sys.base_prefix, str(SDK_DIR), str(spec.directory), *site, *SYSTEM_READ]
        try:
            reply = worker.call("init", {
                "plugin_id": spec.plugin_id, "version": spec.version, "tenant_id": spec.tenant_id,
                "directory": str(spec.directory), "sha256": spec.sha256, "entry_point": spec.entry_point,
                "hooks": list(spec.hooks), "capabilities": sorted(spec.capabilities),
                "config": dict(spec.config), "read_paths": read_paths,
                "memory_bytes": self.limits.memory_bytes,
                "landlock": layers.landlock_abi > 0, "seccomp": layers.seccomp, "builtin": spec.builtin,
            }, limit)
        except CallTimedOut:
            raise PluginStartFailed(spec.plugin_id, f"it did not finish importing within {limit:g} s",
                                    timed_out=True) from None
        except WorkerGone as exc:
            raise PluginStartFailed(spec.plugin_id, f"its worker exited while starting ({exc.reason})",
                                    error_type="WorkerGone") from None
        except RemoteError as exc:
            worker.kill("start failed")
            detail = str(exc)[:500]
            raise PluginStartFailed(spec.plugin_id, f"it failed to start: {exc.type_name}: {detail[:300]}",
                                    error_type=exc.type_name, detail=detail) from None
        worker.layers = [*launch.layers, *(reply.get("layers") or ())]
        worker.implemented = list(reply.get("implemented") or ())
        return worker

    def _uid_for(self, key: str) -> int:
        with self.guard:
            uid = self._uids.get(key)
            if uid is None:
                if not self._free_uids:
                    raise SandboxUnavailable("no free sandbox uid left")
                uid = self._free_uids.popleft()
                self._uids[key] = uid
            return uid

    def _ensure_reaper(self) -> None:
        if self._reaper is None:
            self._reaper = threading.Thread(target=self._reap_idle, name="plugin-idle", daemon=True)
            self._reaper.start()

    def _reap_idle(self) -> None:
        while not self._closed.wait(min(10.0, max(0.5, self.limits.idle_s / 4))):
            now = time.monotonic()
            with self.guard:
                plugins = list(self._plugins.values())
                for managed in [m for m in self._stopping if now >= m.stop_at]:
                    managed.idle_stop()
                    self._stopping.remove(managed)
                    self._release(managed)
            for managed in plugins:
                worker = managed.worker
                if managed.spec.keep_warm:
                    self._keep_warm(managed, now)
                    continue
                if worker is None or not worker.alive:
                    continue
                if not managed.spec.keep_warm and now - worker.last_used > self.limits.idle_s:
                    managed.idle_stop()

    @staticmethod
    def _keep_warm(managed: ManagedPlugin, now: float) -> None:
        """Plugins on the order path: a health check when quiet, a restart when down (within
        the backoff and never once quarantined), so an order does not wait for a start."""
        if managed.stopped or managed.quarantined is not None:
            return
        worker = managed.worker
        try:
            if worker is None or not worker.alive:
                if now >= managed.retry_at:
                    managed.ensure_worker()
            elif now - worker.last_used > HEALTH_INTERVAL_S:
                managed.call("ping", timeout_s=HEALTH_TIMEOUT_S)
        except PluginCallFailed:
            pass  # counted as a failure by the call; quarantine follows repeated ones

    def workers(self) -> list[ManagedPlugin]:
        with self.guard:
            return list(self._plugins.values())

    def close(self) -> None:
        """Shutdown: every worker stops. The managed plugins stay as they are, so a runtime that
        is served again (tests run several apps on one) starts workers anew on use."""
        self._closed.set()
        with self.guard:
            stopping, self._stopping = self._stopping, []
            reaper, self._reaper = self._reaper, None
        for managed in stopping:
            managed.stop()
        for managed in self.workers():
            managed.idle_stop()
        if reaper is not None:
            reaper.join(timeout=5)
        self._closed = threading.Event()


def _raised(plugin_id: str, exc: RemoteError) -> Exception:
    """What the plugin raised, as the gateway's caller sees it: an SDK error the contract
    names is raised again (an optimiser's refusal, an LLM's rate limit); anything else is
    PLUGIN_FAILED with the exception's type (its text goes to the log only)."""
    from plugins import sdk, wire

    payload = exc.payload
    if payload.get("sdk"):
        name, message = str(payload.get("type")), str(payload.get("message", ""))
        if name == "DefiQuoteRefused":
            return sdk.DefiQuoteRefused(str(payload.get("code", "")), message)
        cls = wire.SDK_ERRORS.get(name)
        if cls is not None:
            return cls(message)
    if payload.get("type") in ("CallRefused",):
        return PluginCallFailed(plugin_id, str(payload.get("message", "")))
    if payload.get("type") == "StateGone":  # raised by plugins/guest/defi.py, not the plugin
        return PoolStateGone(plugin_id, str(payload.get("message", "")))
    log.warning("plugin call raised", extra={"plugin": plugin_id, "type": payload.get("type"),
                                             "plugin_message": str(payload.get("message", ""))[:500]})
    return PluginCallFailed(plugin_id, str(payload.get("type", "an exception")))


def _site_packages() -> list[str]:
    import sysconfig

    paths = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    return sorted(p for p in paths if os.path.isdir(p))


def _worker_env() -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp", "TMPDIR": "/tmp",
            "PYTHONDONTWRITEBYTECODE": "1", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "random"}


def _grant_read(directory: Path, uid: int) -> None:
    """The worker's uid must read its plugin's files: the unpacked tree is world-readable and
    its parents traversable (not listable) by others; nothing else of the gateway is."""
    for parent in [directory, *directory.parents]:
        if str(parent) in ("/", "/tmp"):
            break
        try:
            mode = parent.stat().st_mode & 0o777
            wanted = mode | (0o755 if parent == directory else 0o711)
            if wanted != mode and parent.stat().st_uid == os.getuid():
                parent.chmod(wanted)
        except OSError:
            break
