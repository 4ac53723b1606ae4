"""The catalogue as a tenant sees it, and a vendor's statement.

Visibility, the same rule as publication's: a PRIVATE plugin only to its vendor's own tenant;
other plugins once they have an APPROVED version; a delisted plugin to nobody but its vendor.
A vendor's own tenant sees every version of its plugins, others only APPROVED ones. The
catalogue is small (hundreds of plugins), so filtering by capability (a manifest property)
happens in memory and pages are keyset-cut in memory with the usual opaque cursors.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from sqlmodel import col, select

from gateway.db import Database
from gateway.errors import InvalidInput, NotFound
from gateway.marketplace.install_models import PluginUsage
from gateway.marketplace.models import Plugin, PluginVersion, Tier, Vendor, VersionStatus
from gateway.pagination import Page, check_page_size, decode_cursor

PERIOD = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


@dataclass(frozen=True)
class CatalogueEntry:
    plugin: Plugin
    vendor: Vendor
    versions: tuple[PluginVersion, ...]  # newest first, those the tenant may see

    @property
    def id(self) -> str:
        return self.plugin.id

    @property
    def created_at(self) -> Any:
        return self.plugin.created_at

    @property
    def latest(self) -> PluginVersion | None:
        approved = [v for v in self.versions if v.status == VersionStatus.APPROVED]
        return (approved or list(self.versions) or [None])[0]


@dataclass(frozen=True)
class StatementLine:
    plugin_id: str
    version: str
    customer: str  # an opaque reference per (vendor, tenant): the vendor bills it, never learns who
    calls: int
    bytes: int
    pricing_model: str
    currency: str | None
    revenue: Decimal


class Catalogue:
    def __init__(self, db: Database, max_page_size: int) -> None:
        self.db = db
        self.max_page_size = max_page_size

    def _entries(self, tenant_id: str, plugin_id: str | None = None) -> list[CatalogueEntry]:
        with self.db.system_session() as session:
            stmt = select(Plugin, Vendor).join(Vendor, col(Vendor.id) == col(Plugin.vendor_id))
            if plugin_id is not None:
                stmt = stmt.where(Plugin.id == plugin_id)
            pairs = list(session.exec(stmt).all())
            ids = [p.id for p, _ in pairs]
            versions: dict[str, list[PluginVersion]] = defaultdict(list)
            if ids:
                for row in session.exec(select(PluginVersion)
                                        .where(col(PluginVersion.plugin_id).in_(ids))
                                        .order_by(col(PluginVersion.created_at).desc())).all():
                    versions[row.plugin_id].append(row)
            session.expunge_all()
        out = []
        for plugin, vendor in pairs:
            own = vendor.tenant_id == tenant_id
            seen = tuple(v for v in versions[plugin.id] if own or v.status == VersionStatus.APPROVED)
            if not own and (plugin.tier == Tier.PRIVATE or plugin.delisted_at is not None or not seen):
                continue
            out.append(CatalogueEntry(plugin, vendor, seen))
        return out

    def get(self, tenant_id: str, plugin_id: str) -> CatalogueEntry:
        found = self._entries(tenant_id, plugin_id)
        if not found:
            raise NotFound(f"no plugin {plugin_id}", code="PLUGIN_NOT_FOUND")
        return found[0]

    def search(self, tenant_id: str, *, search: str | None = None, category: str | None = None,
               capability: str | None = None, first: int = 20, after: str | None = None
               ) -> Page[CatalogueEntry]:
        check_page_size(first, self.max_page_size)
        entries = self._entries(tenant_id)
        if search:
            needle = search.lower()
            entries = [e for e in entries if needle in e.plugin.name.lower() or needle in e.plugin.id
                       or needle in _description(e).lower()]
        if category:
            entries = [e for e in entries if e.plugin.category == category]
        if capability:
            entries = [e for e in entries if e.latest is not None
                       and capability in (e.latest.manifest.get("capabilities") or ())]
        entries.sort(key=lambda e: (e.created_at, e.id), reverse=True)
        if after is not None:
            stamp, last_id = decode_cursor(after)
            entries = [e for e in entries if (e.created_at, e.id) < (stamp, last_id)]
        return Page(entries[:first], len(entries) > first)

    def statement(self, tenant_id: str, period: str) -> tuple[Vendor, list[StatementLine]]:
        """The caller's vendor's usage and revenue in `period` (YYYY-MM), per plugin, version
        and customer, from metered use only: billing follows use. Per-call: calls times amount;
        flat: the amount once per customer and plugin with at least one metered call in the
        period (a plugin installed but never called is not billed); free: nothing."""
        match = PERIOD.match(period or "")
        if match is None:
            raise InvalidInput("period is a month: YYYY-MM", code="PERIOD_INVALID")
        year, month = int(match.group(1)), int(match.group(2))
        start = date(year, month, 1).isoformat()
        end = (date(year + month // 12, month % 12 + 1, 1)).isoformat()
        with self.db.system_session() as session:
            vendor = session.exec(select(Vendor).where(Vendor.tenant_id == tenant_id)).first()
            if vendor is None:
                raise NotFound("this tenant is not a vendor", code="VENDOR_NOT_FOUND")
            session.expunge(vendor)
            plugins = {p.id: p for p in session.exec(
                select(Plugin).where(Plugin.vendor_id == vendor.id)).all()}
            usage = list(session.exec(select(PluginUsage).where(
                col(PluginUsage.plugin_id).in_(list(plugins)), col(PluginUsage.day) >= start,
                col(PluginUsage.day) < end)).all())
            pricing = {(v.plugin_id, v.version): dict(v.manifest.get("pricing") or {"model": "free"})
                       for v in session.exec(select(PluginVersion).where(
                           col(PluginVersion.plugin_id).in_(list(plugins)))).all()}
        totals: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
        for row in usage:
            counter = totals[(row.plugin_id, row.version, row.tenant_id)]
            counter[0] += row.calls
            counter[1] += row.bytes
        lines = []
        charged_flat: set[tuple[str, str]] = set()
        for (plugin_id, version, customer_tenant), (calls, size) in sorted(totals.items()):
            price = pricing.get((plugin_id, version), {"model": "free"})
            model = str(price.get("model", "free"))
            amount = Decimal(str(price.get("amount", "0")))
            revenue = Decimal(0)
            if model == "per_call":
                revenue = amount * calls
            elif model == "flat" and calls > 0 and (plugin_id, customer_tenant) not in charged_flat:
                charged_flat.add((plugin_id, customer_tenant))
                revenue = amount
            customer = hashlib.sha256(f"{vendor.id}|{customer_tenant}".encode()).hexdigest()[:16]
            lines.append(StatementLine(plugin_id, version, customer, calls, size, model,
                                       price.get("currency"), revenue))
        return vendor, lines


def _description(entry: CatalogueEntry) -> str:
    return str((entry.latest.manifest if entry.latest else {}).get("description", ""))
