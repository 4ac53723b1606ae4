"""Metering plugin use: calls and bytes of results per tenant, plugin, version and UTC day.

`record` only adds to an in-memory counter under a lock (the request path pays a dict update);
`flush` writes the counters in one transaction per tenant, adding to `plugin_usage` rows. A
flush happens when `flush_every` seconds have passed since the last one (by whichever call
records next), before anything reads usage, and at shutdown. A crash loses at most the
counters since the last flush: metering for billing, not an audit record.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from datetime import UTC, datetime

from sqlalchemy import update
from sqlmodel import col, select

from gateway.db import Database
from gateway.marketplace.install_models import PluginUsage

Key = tuple[str, str, str, str]  # tenant, plugin, version, day


class Meter:
    def __init__(self, db: Database, flush_every: float = 5.0) -> None:
        self.db = db
        self.flush_every = flush_every
        self._counts: dict[Key, list[int]] = defaultdict(lambda: [0, 0])
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._last_flush = time.monotonic()

    def record(self, tenant_id: str, plugin_id: str, version: str, calls: int = 1, size: int = 0,
               at: datetime | None = None) -> None:
        day = (at or datetime.now(UTC)).date().isoformat()
        with self._lock:
            counter = self._counts[(tenant_id, plugin_id, version, day)]
            counter[0] += calls
            counter[1] += size
            due = time.monotonic() - self._last_flush >= self.flush_every
        if due:
            self.flush()

    def pending(self) -> int:
        with self._lock:
            return len(self._counts)

    def flush(self) -> int:
        """Write the pending counters; returns how many (tenant, plugin, version, day) rows."""
        with self._flush_lock:
            with self._lock:
                counts, self._counts = self._counts, defaultdict(lambda: [0, 0])
                self._last_flush = time.monotonic()
            by_tenant: dict[str, list[tuple[Key, list[int]]]] = defaultdict(list)
            for key, value in counts.items():
                by_tenant[key[0]].append((key, value))
            for tenant_id, items in by_tenant.items():
                try:
                    self._write(tenant_id, items)
                except Exception:
                    with self._lock:  # keep them for the next flush
                        for key, (calls, size) in items:
                            self._counts[key][0] += calls
                            self._counts[key][1] += size
                    raise
            return len(counts)

    def _write(self, tenant_id: str, items: list[tuple[Key, list[int]]]) -> None:
        with self.db.tenant_session(tenant_id) as session:
            for (_, plugin_id, version, day), (calls, size) in items:
                done = session.execute(
                    update(PluginUsage)
                    .where(col(PluginUsage.tenant_id) == tenant_id,
                           col(PluginUsage.plugin_id) == plugin_id,
                           col(PluginUsage.version) == version, col(PluginUsage.day) == day)
                    .values(calls=col(PluginUsage.calls) + calls, bytes=col(PluginUsage.bytes) + size))
                if done.rowcount == 0:  # type: ignore[attr-defined]
                    session.add(PluginUsage(tenant_id=tenant_id, plugin_id=plugin_id, version=version,
                                            day=day, calls=calls, bytes=size))
            session.commit()

    def usage(self, tenant_id: str, plugin_id: str) -> list[PluginUsage]:
        self.flush()
        with self.db.tenant_session(tenant_id) as session:
            return list(session.exec(select(PluginUsage).where(PluginUsage.plugin_id == plugin_id)
                                     .order_by(col(PluginUsage.day), col(PluginUsage.version))).all())
