"""Verified wheels on disk, for plugin workers: verify, unpack, never import here.

Every activation re-verifies the version's signature (marketplace.signing.verify, against the
key the version was published with) and the wheel's SHA-256, then unpacks it into a directory
private to this store (made by `tempfile.mkdtemp` under `<root>`): `<private>/<sha256>/`. The
gateway never imports plugin code: the worker that serves the plugin (gateway/marketplace/
sandbox/) imports it from that directory under `alphintra_wheels.w<sha256[:20]>`, read-only.
Nothing already on disk is trusted: a shared, predictable directory could hold planted code
(or bytecode) under a verified wheel's hash, so each store writes its own copy from the
verified bytes. The tree is world-readable (the workers' uids read it) inside a private
directory that others may traverse but not list.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.errors import DomainError
from marketplace.wheel import WheelContents, WheelLimits, read_wheel

log = logging.getLogger(__name__)


class PluginLoadFailed(DomainError):
    """The wheel verified but cannot be unpacked to serve (no entry point, an unsafe path)."""

    code = "PLUGIN_FAILED"


@dataclass(frozen=True)
class UnpackedWheel:
    sha256: str
    plugin_id: str
    entry_point: str
    directory: Path


class WheelStore:
    """Verify-and-unpack, with one directory per wheel hash."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._private: Path | None = None  # made on first unpack (no side effect at construction)
        self._loaded: dict[str, UnpackedWheel] = {}
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
            self._private = Path(tempfile.mkdtemp(prefix="store-", dir=self.root))
            self._private.chmod(0o711)  # workers traverse to their own wheel; nobody lists
            atexit.register(shutil.rmtree, self._private, True)  # this process's copies only
        return self._private

    def load(self, *, plugin_id: str, wheel: bytes, wheel_sha256: str, manifest: dict[str, Any],
             signature: str | None, public_key: str) -> UnpackedWheel:
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
            entry_point = str(manifest.get("entry_point", ""))
            if not entry_point:
                raise PluginLoadFailed(f"{plugin_id}: the manifest names no entry point",
                                       details={"plugin": plugin_id})
            loaded = UnpackedWheel(actual, plugin_id, entry_point, directory)
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
            for path in [staging, *staging.rglob("*")]:  # the workers' uids read the tree
                path.chmod(0o755 if path.is_dir() else 0o644)
            if target.exists():
                shutil.rmtree(target)
            os.rename(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return target
