"""A tenant's own market data files: with `ALPHINTRA_MARKETDATA_TENANT_DIR` set, the files under
`<dir>/<tenant id>/` (the file source's layout, plugins/builtin/file_source.py) serve that tenant
only, before any other source of the same instrument (its own real data wins). The folder is
confined: nothing under it, a symlink included, may lead outside it. Loaded on first use and
again when a file in it changes; a folder with a bad file serves nothing and logs why, and the
tenant's other sources still serve."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

from plugins.builtin.file_source import FileSource
from plugins.sdk import MarketDataSource, VenueDirectory

log = logging.getLogger(__name__)
PLUGIN = "file-source"


class TenantFiles:
    def __init__(self, root: str, venues: VenueDirectory | None, adjust: bool = False) -> None:
        self.root = Path(root).resolve() if root else None
        self.venues = venues
        self.adjust = adjust
        self._sources: dict[str, tuple[tuple[tuple[str, float], ...], FileSource | None]] = {}
        self._lock = threading.Lock()

    def sources(self, tenant_id: str) -> Sequence[tuple[str, MarketDataSource]]:
        if self.root is None or not tenant_id or "/" in tenant_id or tenant_id.startswith("."):
            return ()
        folder = self.root / tenant_id
        if not folder.is_dir():
            return ()
        stamp = tuple(sorted((str(p), p.stat().st_mtime) for p in folder.iterdir() if p.is_file()))
        with self._lock:
            found = self._sources.get(tenant_id)
        if found is None or found[0] != stamp:
            source: FileSource | None
            try:
                source = FileSource([folder], adjust=self.adjust, venues=self.venues, root=folder,
                                    name=f"files-{tenant_id[:8]}")
            except (OSError, ValueError) as exc:
                log.error("a tenant's market data files do not load",
                          extra={"tenant_id": tenant_id, "code": getattr(exc, "code", type(exc).__name__),
                                 "detail": str(exc)[:500]})
                source = None
            found = (stamp, source)
            with self._lock:
                self._sources[tenant_id] = found
        return ((PLUGIN, found[1]),) if found[1] is not None else ()

