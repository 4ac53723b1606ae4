"""Loading a published wheel into the gateway: verify, unpack, import.

Every load re-verifies the version's signature (marketplace.signing.verify, against the key the
version was published with) and the wheel's SHA-256, then unpacks it into a directory private to
this loader (made by `tempfile.mkdtemp` under `<root>`, mode 0700): `<private>/<sha256>/`, and
imports it, with bytecode writing off, under a namespace unique to that hash:
`alphintra_wheels.w<sha256[:20]>.<package>`. Two versions of one plugin (an upgrade and its
rollback) therefore never collide in `sys.modules`, and loading the same wheel twice (two
tenants) imports it once. Nothing already on disk is trusted: a shared, predictable directory
could hold planted code (or bytecode) under a verified wheel's hash, so each loader writes its
own copy from the verified bytes. A plugin refers to its own modules with relative imports
(`from . import feed`); an absolute `import <its package>` would not resolve under the namespace.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import shutil
import sys
import tempfile
import threading
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.errors import DomainError
from marketplace.wheel import WheelContents, WheelLimits, read_wheel

log = logging.getLogger(__name__)
NAMESPACE = "alphintra_wheels"


class PluginLoadFailed(DomainError):
    """The wheel verified but importing it (or finding its plugin object) raised."""

    code = "PLUGIN_FAILED"


@dataclass(frozen=True)
class LoadedWheel:
    sha256: str
    plugin_id: str
    module_name: str  # where the entry point's module lives in sys.modules
    plugin: Any  # the entry point's object: the module or the attribute it names
    directory: Path


class WheelLoader:
    """Verify-and-import, with one cache entry per wheel hash."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._private: Path | None = None  # made on first unpack (no side effect at construction)
        self._loaded: dict[str, LoadedWheel] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        """Remove this loader's unpacked wheels (shutdown; the modules stay imported)."""
        with self._lock:
            if self._private is not None:
                shutil.rmtree(self._private, ignore_errors=True)
                self._private = None
                self._loaded.clear()

    def _directory(self) -> Path:
        if self._private is None:
            self.root.mkdir(parents=True, exist_ok=True)
            self._private = Path(tempfile.mkdtemp(prefix="loader-", dir=self.root))  # mode 0700
        return self._private

    def load(self, *, plugin_id: str, wheel: bytes, wheel_sha256: str, manifest: dict[str, Any],
             signature: str | None, public_key: str) -> LoadedWheel:
        from marketplace.signing import verify

        # Verified at every load, cached or not: a row changed in the database since the last
        # load (another wheel, another signature) is refused here.
        contents = read_wheel(wheel, WheelLimits(max_bytes=1 << 62))
        actual = hashlib.sha256(wheel).hexdigest()
        if actual != wheel_sha256:
            from marketplace.wheel import PackageTampered

            raise PackageTampered("the stored wheel does not match its recorded SHA-256",
                                  details={"plugin": plugin_id})
        if contents.manifest_data != manifest:
            from marketplace.wheel import PackageTampered

            raise PackageTampered("the stored manifest does not match the wheel's",
                                  details={"plugin": plugin_id})
        verify(contents, manifest, signature, public_key)
        with self._lock:
            cached = self._loaded.get(actual)
            if cached is not None:
                return cached
            directory = self._unpack(actual, contents)
            loaded = self._import(plugin_id, actual, directory, str(manifest.get("entry_point", "")))
            self._loaded[actual] = loaded
            return loaded

    def _unpack(self, sha256: str, contents: WheelContents) -> Path:
        """Write the verified files into a fresh directory of this loader's private one; a
        directory left by an earlier attempt is replaced, never reused."""
        private = self._directory()
        target = private / sha256
        staging = Path(tempfile.mkdtemp(prefix=f".{sha256[:12]}-", dir=private))
        try:
            for name, data in contents.files.items():
                path = (staging / name).resolve()
                if staging.resolve() not in path.parents:  # read_wheel refused these already
                    raise PluginLoadFailed(f"unsafe path {name!r} in the wheel")
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            if target.exists():
                shutil.rmtree(target)
            os.rename(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return target

    def _import(self, plugin_id: str, sha256: str, directory: Path, entry_point: str) -> LoadedWheel:
        if not entry_point:
            raise PluginLoadFailed(f"{plugin_id}: the manifest names no entry point",
                                   details={"plugin": plugin_id})
        module_path, _, attribute = entry_point.partition(":")
        root = sys.modules.get(NAMESPACE)
        if root is None:
            root = types.ModuleType(NAMESPACE)
            root.__path__ = []
            sys.modules[NAMESPACE] = root
        package = f"{NAMESPACE}.w{sha256[:20]}"
        holder = sys.modules.get(package)
        if holder is None:
            holder = types.ModuleType(package)
            holder.__path__ = [str(directory)]
            sys.modules[package] = holder
        elif not all(os.path.isdir(p) for p in holder.__path__):  # another loader's copy, closed
            holder.__path__ = [str(directory)]
        name = f"{package}.{module_path}"
        # No .pyc beside the sources: the only code run is the verified source just written.
        writes_bytecode = sys.dont_write_bytecode
        sys.dont_write_bytecode = True
        try:
            module = importlib.import_module(name)
            plugin = getattr(module, attribute) if attribute else module
        except Exception as exc:
            for key in [k for k in sys.modules if k.startswith(package + ".")]:
                del sys.modules[key]
            log.error("plugin import failed", exc_info=exc, extra={"plugin": plugin_id})
            raise PluginLoadFailed(f"plugin {plugin_id} failed on import: {type(exc).__name__}",
                                   details={"plugin": plugin_id}) from None
        finally:
            sys.dont_write_bytecode = writes_bytecode
        return LoadedWheel(sha256=sha256, plugin_id=plugin_id, module_name=name, plugin=plugin,
                           directory=directory)
