"""A tenant's own market data files: with `ALPHINTRA_MARKETDATA_TENANT_DIR` set, the files under
`<dir>/<tenant id>/` (the file source's layout, plugins/builtin/file_source.py) serve that tenant
only, before any other source of the same instrument (its own real data wins). The folder is
confined: nothing under it, a symlink included, may lead outside it. Loaded on first use and
again when a file in it changes; a folder with a bad file serves nothing and logs why, and the
tenant's other sources still serve."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.marketdata.service import OWN_FILES
from plugins.builtin.file_source import FileSource
from plugins.sdk import MarketDataSource, VenueDirectory

log = logging.getLogger(__name__)
PLUGIN = OWN_FILES
RECHECK_S = 2.0  # a changed folder is seen within this


class TenantFiles:
    def __init__(self, root: str, venues: VenueDirectory | None, adjust: bool = False) -> None:
        self.root = Path(root).resolve() if root else None
        self.venues = venues
        self.adjust = adjust
        # tenant -> (files and mtimes, when read, the source, what it serves)
        self._sources: dict[str, tuple[Any, float, FileSource | None,
                                       tuple[tuple[str, MarketDataSource], ...]]] = {}
        self._lock = threading.Lock()

    def sources(self, tenant_id: str) -> Sequence[tuple[str, MarketDataSource]]:
        if self.root is None or not tenant_id or "/" in tenant_id or tenant_id.startswith("."):
            return ()
        now = time.monotonic()
        with self._lock:
            found = self._sources.get(tenant_id)
        if found is not None and now - found[1] < RECHECK_S:  # market data asks on every lookup
            return found[3]
        folder = self.root / tenant_id
        stamp = (tuple(sorted((str(p), p.stat().st_mtime) for p in folder.iterdir() if p.is_file()))
                 if folder.is_dir() else ())
        source: FileSource | None = None
        if not stamp:
            pass  # no folder, or an empty one: nothing of its own
        elif found is None or found[0] != stamp:
            try:
                source = FileSource([folder], adjust=self.adjust, venues=self.venues, root=folder,
                                    name=f"files-{tenant_id[:8]}")
            except (OSError, ValueError) as exc:
                log.error("a tenant's market data files do not load",
                          extra={"tenant_id": tenant_id, "code": getattr(exc, "code", type(exc).__name__),
                                 "detail": str(exc)[:500]})
        else:
            source = found[2]
        served: tuple[tuple[str, MarketDataSource], ...] = ((PLUGIN, source),) if source is not None else ()
        with self._lock:
            self._sources[tenant_id] = (stamp, now, source, served)
        return served

