"""The marketplace as tenants use it: the catalogue, installing plugins, branding, usage.

Permissions (casbin object "plugin_install"): admin may do everything (install, configure,
upgrade, roll back, uninstall, rate); trader, compliance_officer, viewer and vendor read.
`vendorStatement` needs "vendor_statement" read (admin and vendor). Configuration secrets are
never returned: `secretFields` lists which are set ("configured"), never their values.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncGenerator
from datetime import datetime
from decimal import Decimal
from typing import Any

import strawberry
from starlette.concurrency import run_in_threadpool
from strawberry.scalars import JSON
from strawberry.types import Info

from gateway.http.context import RequestContext
from gateway.marketplace.catalogue import CatalogueEntry, StatementLine
from gateway.marketplace.install import events_topic
from gateway.marketplace.install_models import PluginInstallation as InstallationRow
from gateway.marketplace.install_models import PluginInstallationEvent
from gateway.marketplace.models import PluginVersion as VersionRow
from schema.common import DEFAULT_PAGE, Connection, ctx, epoch_field
from schema.marketdata import Bar, Instrument


def _allowed(info: Info, act: str) -> RequestContext:
    c = ctx(info)
    c.require("plugin_install", act)
    return c



def _installed(c: Any) -> set[str]:
    view = c.runtime.marketplace.view(c.tenant_id)
    return set(view.by_id) if view is not None else set()

@strawberry.type(description="How a plugin is priced (amount a decimal string, per call or per month).")
class PluginPricing:
    model: str
    amount: str | None
    currency: str | None

    @classmethod
    def of(cls, manifest: dict[str, Any]) -> PluginPricing:
        pricing = manifest.get("pricing") or {"model": "free"}
        return cls(model=str(pricing.get("model", "free")), amount=pricing.get("amount"),
                   currency=pricing.get("currency"))


@strawberry.type
class MarketplacePluginVersion:
    id: strawberry.ID
    version: str
    status: str
    gateway_range: str
    hooks: list[str]
    capabilities: list[str]
    pricing: PluginPricing
    config_schema: JSON
    published_at: datetime

    @classmethod
    def of(cls, row: VersionRow) -> MarketplacePluginVersion:
        m = dict(row.manifest)
        return cls(id=strawberry.ID(row.id), version=row.version, status=str(row.status),
                   gateway_range=str(m.get("gateway", "")), hooks=list(m.get("hooks") or []),
                   capabilities=list(m.get("capabilities") or []), pricing=PluginPricing.of(m),
                   config_schema=m.get("config_schema") or {}, published_at=row.published_at)


@strawberry.type
class PluginRatings:
    average: str | None = strawberry.field(description="Mean of 1-5 stars, two decimals.")
    count: int


@strawberry.type(description="The caller's tenant's metered use of a plugin on one UTC day.")
class PluginUsageDay:
    day: str
    version: str
    calls: int
    bytes: int


@strawberry.type
class MarketplacePlugin:
    id: strawberry.ID
    name: str
    vendor: str
    category: str
    tier: str
    description: str
    versions: list[MarketplacePluginVersion]
    pricing: PluginPricing | None
    latest_version: str | None

    @strawberry.field
    def install_count(self, info: Info) -> int:
        c = _allowed(info, "read")
        counts = c.loader("plugin.install_counts", c.runtime.marketplace.install_counts)
        return int(counts.load(str(self.id)) or 0)

    @strawberry.field
    def ratings(self, info: Info) -> PluginRatings:
        c = _allowed(info, "read")
        summary = c.loader("plugin.ratings", c.runtime.marketplace.rating_summaries).load(str(self.id))
        if summary is None:
            return PluginRatings(average=None, count=0)
        return PluginRatings(average=str(summary[0]), count=summary[1])

    @strawberry.field(description="The caller's tenant's own use, per day and version.")
    def usage(self, info: Info) -> list[PluginUsageDay]:
        c = _allowed(info, "read")
        return [PluginUsageDay(day=u.day, version=u.version, calls=u.calls, bytes=u.bytes)
                for u in c.runtime.marketplace.meter.usage(c.tenant_id, str(self.id))]

    @strawberry.field(description="The caller's tenant's installation, if any.")
    def installation(self, info: Info) -> PluginInstallation | None:
        c = _allowed(info, "read")
        rows = c.loader("plugin.installations", lambda ids: {
            r.plugin_id: r for r in c.runtime.marketplace.installed(c.tenant_id) if r.plugin_id in ids})
        row = rows.load(str(self.id))
        return PluginInstallation.of(row, c) if row is not None else None

    @classmethod
    def of(cls, entry: CatalogueEntry, c: RequestContext) -> MarketplacePlugin:
        latest = entry.latest
        c.loader("plugin.install_counts", c.runtime.marketplace.install_counts).want([entry.id])
        c.loader("plugin.ratings", c.runtime.marketplace.rating_summaries).want([entry.id])
        return cls(id=strawberry.ID(entry.id), name=entry.plugin.name, vendor=entry.vendor.name,
                   category=entry.plugin.category, tier=str(entry.plugin.tier),
                   description=str((latest.manifest if latest else {}).get("description", "")),
                   versions=[MarketplacePluginVersion.of(v) for v in entry.versions],
                   pricing=PluginPricing.of(latest.manifest) if latest else None,
                   latest_version=latest.version if latest else None)


@strawberry.type(description="A configuration secret: whether it is set; its value is never returned.")
class PluginSecretField:
    path: str
    configured: bool


@strawberry.type
class PluginInstallation:
    id: strawberry.ID
    plugin_id: str
    version: str
    previous_version: str | None
    active: bool = strawberry.field(description="False once delisted or when it failed to load.")
    config: JSON = strawberry.field(description="The configuration without its secret fields.")
    secret_fields: list[PluginSecretField]
    installed_at: datetime
    updated_at: datetime

    @strawberry.field(description="Every change to this installation, oldest first.")
    def history(self, info: Info) -> list[PluginHistoryEvent]:
        c = _allowed(info, "read")
        return [PluginHistoryEvent.of(e) for e in c.runtime.marketplace.history(c.tenant_id, self.plugin_id)]

    @classmethod
    def of(cls, row: InstallationRow, c: RequestContext) -> PluginInstallation:
        previous = (c.runtime.marketplace.version_label(row.previous_version_id)
                    if row.previous_version_id else None)
        return cls(id=strawberry.ID(row.id), plugin_id=row.plugin_id, version=row.version,
                   previous_version=previous,
                   active=c.runtime.marketplace.is_active(c.tenant_id, row.plugin_id),
                   config=dict(row.config),
                   secret_fields=[PluginSecretField(path=p, configured=True) for p in row.secret_fields],
                   installed_at=row.created_at, updated_at=row.updated_at)


@strawberry.type
class PluginHistoryEvent:
    action: str
    version: str | None
    previous_version: str | None
    actor: str | None
    at: datetime

    @classmethod
    def of(cls, row: PluginInstallationEvent) -> PluginHistoryEvent:
        return cls(action=row.action, version=row.version, previous_version=row.previous_version,
                   actor=row.actor, at=row.created_at)


@strawberry.type
class FeatureFlag:
    name: str
    enabled: bool
    plugin_id: str


@strawberry.type(description="A help link of the tenant's white label.")
class SupportLink:
    label: str
    url: str


@strawberry.type(description="The tenant's branding: its installed white-label theme, or the default.")
class WhiteLabel:
    name: str
    product_name: str
    primary_colour: str
    secondary_colour: str
    background_colour: str
    text_colour: str
    logo_url: str | None
    plugin_id: str | None = strawberry.field(description="The plugin that gave it; null for the default.")
    support_links: list[SupportLink] = strawberry.field(
        default_factory=list, description="Where the tenant's users get help (https or mailto URLs only); "
                                          "empty when the theme gives none.")


@strawberry.type
class Marketplace:
    @strawberry.field(description="Plugins this tenant may install, newest first.")
    def plugins(self, info: Info, search: str | None = None, category: str | None = None,
                capability: str | None = None, first: int = DEFAULT_PAGE, after: str | None = None
                ) -> Connection[MarketplacePlugin]:
        c = _allowed(info, "read")
        page = c.runtime.marketplace_catalogue.search(c.tenant_id, search=search, category=category,
                                                      capability=capability, first=first, after=after)
        return Connection.of(page, lambda e: MarketplacePlugin.of(e, c))

    @strawberry.field
    def plugin(self, info: Info, id: strawberry.ID) -> MarketplacePlugin:
        c = _allowed(info, "read")
        return MarketplacePlugin.of(c.runtime.marketplace_catalogue.get(c.tenant_id, str(id)), c)

    @strawberry.field(description="Instruments of this tenant's installed data-source plugins "
                                  "(manifest capability marketdata:publish); `source` names the plugin.")
    def instruments(self, info: Info, search: str | None = None) -> list[Instrument]:
        c = _allowed(info, "read")
        found = c.runtime.market_data.instruments_of(_installed(c), search)
        return [Instrument.of(i, plugin_id, plugin_id) for plugin_id, i in found]

    @strawberry.field(description="Bars of an instrument (SYMBOL.MIC) from this tenant's installed "
                                  "data-source plugins; metered per call and byte.")
    def bars(self, info: Info, instrument: str, start: datetime, end: datetime, interval: str = "1h"
             ) -> list[Bar]:
        c = _allowed(info, "read")
        _, bars = c.runtime.market_data.bars_of(_installed(c), instrument, start, end, interval)
        return [Bar.of(b) for b in bars]

    @strawberry.field(description="Feature flags the tenant's installed plugins switch.")
    def feature_flags(self, info: Info) -> list[FeatureFlag]:
        c = _allowed(info, "read")
        return [FeatureFlag(name=k, enabled=v, plugin_id=p)
                for k, (v, p) in sorted(c.runtime.marketplace.feature_flags(c.tenant_id).items())]


@strawberry.type
class VendorStatementLine:
    plugin_id: str
    version: str
    customer: str = strawberry.field(description="An opaque reference per customer tenant.")
    calls: int
    bytes: int
    pricing_model: str
    currency: str | None
    revenue: str

    @classmethod
    def of(cls, line: StatementLine) -> VendorStatementLine:
        return cls(plugin_id=line.plugin_id, version=line.version, customer=line.customer,
                   calls=line.calls, bytes=line.bytes, pricing_model=line.pricing_model,
                   currency=line.currency, revenue=str(line.revenue))


@strawberry.type
class VendorStatement:
    vendor: str
    period: str
    lines: list[VendorStatementLine]
    total_calls: int
    total_bytes: int
    revenue_by_currency: JSON


@strawberry.input
class InstallPluginInput:
    plugin_id: str
    version: str
    config: JSON | None = None
    idempotency_key: str | None = None


@strawberry.type(description="A built-in plugin (the platform's own, in process) and whether it "
                             "serves this tenant.")
class BuiltinPlugin:
    name: str
    hooks: list[str]
    enabled: bool
    required: bool = strawberry.field(description="The platform's compliance: cannot be switched off.")

    @classmethod
    def of(cls, b: Any) -> BuiltinPlugin:
        return cls(name=b.name, hooks=list(b.hooks), enabled=b.enabled, required=b.required)


@strawberry.type
class Query:
    @strawberry.field(description="The built-in plugins and which of them serve this tenant.")
    def builtin_plugins(self, info: Info) -> list[BuiltinPlugin]:
        c = _allowed(info, "read")
        return [BuiltinPlugin.of(b) for b in c.runtime.builtin_plugins.list(c.tenant_id)]

    @strawberry.field(description="The plugin catalogue.")
    def marketplace(self, info: Info) -> Marketplace:
        _allowed(info, "read")
        return Marketplace()

    @strawberry.field(description="Plugins this tenant installed, oldest first.")
    def installed_plugins(self, info: Info) -> list[PluginInstallation]:
        c = _allowed(info, "read")
        return [PluginInstallation.of(r, c) for r in c.runtime.marketplace.installed(c.tenant_id)]

    @strawberry.field
    def white_label(self, info: Info) -> WhiteLabel:
        c = ctx(info)
        _ = c.me  # any authenticated principal: branding is what every user of the tenant sees
        theme, plugin_id = c.runtime.marketplace.white_label(c.tenant_id)
        return WhiteLabel(name=theme.name, product_name=theme.product_name,
                          primary_colour=theme.primary_colour, secondary_colour=theme.secondary_colour,
                          background_colour=theme.background_colour, text_colour=theme.text_colour,
                          logo_url=theme.logo_url, plugin_id=plugin_id,
                          support_links=[SupportLink(label=link.label, url=link.url)
                                         for link in theme.usable_support_links()])

    @strawberry.field(description="The caller's vendor's usage and revenue in a month (YYYY-MM).")
    def vendor_statement(self, info: Info, period: str) -> VendorStatement:
        c = ctx(info)
        c.require("vendor_statement", "read")
        c.runtime.marketplace.meter.flush()
        vendor, lines = c.runtime.marketplace_catalogue.statement(c.tenant_id, period)
        revenue: dict[str, Decimal] = {}
        for line in lines:
            if line.currency:
                revenue[line.currency] = revenue.get(line.currency, Decimal(0)) + line.revenue
        return VendorStatement(vendor=vendor.name, period=period,
                               lines=[VendorStatementLine.of(x) for x in lines],
                               total_calls=sum(x.calls for x in lines),
                               total_bytes=sum(x.bytes for x in lines),
                               revenue_by_currency={k: str(v) for k, v in sorted(revenue.items())})


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Switch a built-in plugin off (or on again) for this tenant: its "
                                     "providers stop serving its requests and jobs (tenant admins).")
    def set_builtin_plugin(self, info: Info, name: str, enabled: bool) -> BuiltinPlugin:
        c = _allowed(info, "install")
        return BuiltinPlugin.of(c.runtime.builtin_plugins.switch(c.tenant_id, c.me.user_id, name, enabled))

    @strawberry.mutation(description="Install a plugin version for this tenant (tenant admins).")
    def install_plugin(self, info: Info, input: InstallPluginInput) -> PluginInstallation:
        c = _allowed(info, "install")
        row = c.runtime.marketplace.install(c.tenant_id, c.me.user_id, input.plugin_id, input.version,
                                            input.config, input.idempotency_key)
        return PluginInstallation.of(row, c)

    @strawberry.mutation(description="Replace the configuration; a secret left out keeps its value.")
    def configure_plugin(self, info: Info, plugin_id: str, config: JSON) -> PluginInstallation:
        c = _allowed(info, "install")
        return PluginInstallation.of(c.runtime.marketplace.configure(c.tenant_id, c.me.user_id, plugin_id,
                                                                     config), c)

    @strawberry.mutation
    def upgrade_plugin(self, info: Info, plugin_id: str, version: str, config: JSON | None = None
                       ) -> PluginInstallation:
        c = _allowed(info, "install")
        return PluginInstallation.of(c.runtime.marketplace.upgrade(c.tenant_id, c.me.user_id, plugin_id,
                                                                   version, config), c)

    @strawberry.mutation(description="Back to the version installed before the last upgrade or rollback, "
                                     "with the configuration in force with it (or `config`; a secret "
                                     "left out keeps its value).")
    def rollback_plugin(self, info: Info, plugin_id: str, config: JSON | None = None) -> PluginInstallation:
        c = _allowed(info, "install")
        return PluginInstallation.of(c.runtime.marketplace.rollback(c.tenant_id, c.me.user_id, plugin_id,
                                                                    config), c)

    @strawberry.mutation
    def uninstall_plugin(self, info: Info, plugin_id: str) -> PluginInstallation:
        c = _allowed(info, "install")
        row = c.runtime.marketplace.uninstall(c.tenant_id, c.me.user_id, plugin_id)
        out = PluginInstallation.of(row, c)
        out.active = False
        return out

    @strawberry.mutation(description="Rate a plugin 1-5 with an optional comment (one rating per tenant).")
    def rate_plugin(self, info: Info, plugin_id: str, rating: int, comment: str | None = None
                    ) -> PluginRatings:
        c = _allowed(info, "install")
        c.runtime.marketplace.rate(c.tenant_id, c.me.user_id, plugin_id, rating, comment)
        summary = c.runtime.marketplace.rating_summaries([plugin_id]).get(plugin_id)
        return PluginRatings(average=str(summary[0]) if summary else None, count=summary[1] if summary else 0)


@strawberry.enum
class PluginEventAction(enum.Enum):
    INSTALLED = "INSTALLED"
    CONFIGURED = "CONFIGURED"
    UPGRADED = "UPGRADED"
    ROLLED_BACK = "ROLLED_BACK"
    UNINSTALLED = "UNINSTALLED"
    DELISTED = "DELISTED"
    FAILED = "FAILED"
    QUARANTINED = "QUARANTINED"


@strawberry.type
class PluginEvent:
    sequence: int
    action: PluginEventAction
    plugin_id: str
    version: str | None
    previous_version: str | None
    at: datetime
    epoch: str | None = epoch_field()


@strawberry.type
class Subscription:
    @strawberry.subscription(description="This tenant's plugin changes as they happen.")
    async def plugin_events(self, info: Info) -> AsyncGenerator[PluginEvent, None]:
        c = ctx(info)
        await run_in_threadpool(c.require, "plugin_install", "read")
        subscription = await c.runtime.bus.subscribe(events_topic(c.tenant_id))
        try:
            async for event in subscription:
                p = event.payload
                if p.get("tenant_id") != c.tenant_id:
                    continue
                yield PluginEvent(sequence=event.sequence, action=PluginEventAction(p["action"]),
                                  plugin_id=p["plugin_id"], version=p.get("version"),
                                  previous_version=p.get("previous_version"),
                                  at=datetime.fromisoformat(p["at"]), epoch=event.epoch)
        finally:
            await subscription.close()
