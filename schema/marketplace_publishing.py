"""Publishing plugins: vendor keys, signed versions, review and delisting.

Permissions: casbin object "plugin" — "write" to register a vendor key and publish (role
vendor), "read" to list one's own versions (vendor, admin); review, delisting and the review
queue are for platform administrators. The service is marketplace/service.py.

Uploads: `wheelBase64` travels in the JSON body, so a wheel must fit the HTTP body limit
(`ALPHINTRA_MAX_BODY_BYTES`, 1 MB by default) once base64-encoded (4/3 of its size); the wheel
limit (700 kB) keeps it under. A larger body is refused with 413 REQUEST_TOO_LARGE.

The enums `PluginTier` and `PluginVersionStatus` are defined here once for the marketplace;
the catalogue imports them from this module.
"""

from __future__ import annotations

import base64
import binascii
import enum
from datetime import datetime

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from gateway.marketplace.models import Plugin, PluginVersion, Vendor
from gateway.marketplace.publishing import MarketplacePublishing
from marketplace.wheel import WheelInvalid
from schema.common import DEFAULT_PAGE, Connection, ctx


@strawberry.enum(description="PRIVATE: only the vendor's own tenant sees it; approved at once. "
                             "COMMUNITY and CERTIFIED: reviewed by the platform first.")
class PluginTier(enum.Enum):
    PRIVATE = "PRIVATE"
    COMMUNITY = "COMMUNITY"
    CERTIFIED = "CERTIFIED"


@strawberry.enum
class PluginVersionStatus(enum.Enum):
    SUBMITTED = "SUBMITTED"
    IN_REVIEW = "IN_REVIEW"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    DELISTED = "DELISTED"


@strawberry.enum(description="IN_REVIEW starts a review of a SUBMITTED version; APPROVED or "
                             "REJECTED (with reasons) ends it.")
class ReviewDecision(enum.Enum):
    IN_REVIEW = "IN_REVIEW"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"


@strawberry.type(description="A tenant that publishes plugins, with its Ed25519 public key.")
class PluginVendor:
    id: strawberry.ID
    name: str
    public_key: str = strawberry.field(description="Ed25519, 32 raw bytes in base64.")
    prefix: str | None = strawberry.field(description="The first segment of plugin ids only this "
                                                      "vendor may create (\"acme\" for "
                                                      "\"acme.news-sentiment\"); null until reserved.")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: Vendor) -> PluginVendor:
        return cls(id=strawberry.ID(row.id), name=row.name, public_key=row.public_key,
                   prefix=row.prefix, created_at=row.created_at, updated_at=row.updated_at)


@strawberry.type(description="One published version of a plugin, as its vendor and reviewers "
                             "see it.")
class PublishedPluginVersion:
    id: strawberry.ID
    plugin_id: str
    version: str
    status: PluginVersionStatus
    tier: PluginTier
    name: str
    category: str
    hooks: list[str]
    capabilities: list[str]
    reasons: list[str] = strawberry.field(description="Why it was rejected or delisted.")
    wheel_sha256: str
    wheel_size: int
    manifest: JSON
    published_at: datetime
    reviewed_at: datetime | None
    created: bool = strawberry.field(description="False when these bytes had been published "
                                                 "before (a retry answers the stored version).")

    @classmethod
    def of(cls, row: PluginVersion, plugin: Plugin, created: bool = False) -> PublishedPluginVersion:
        manifest = row.manifest
        return cls(id=strawberry.ID(row.id), plugin_id=row.plugin_id, version=row.version,
                   status=PluginVersionStatus(row.status), tier=PluginTier(plugin.tier),
                   name=manifest.get("name", plugin.name), category=plugin.category,
                   hooks=list(manifest.get("hooks", [])),
                   capabilities=list(manifest.get("capabilities", [])), reasons=list(row.reasons),
                   wheel_sha256=row.wheel_sha256, wheel_size=len(row.wheel), manifest=manifest,
                   published_at=row.published_at, reviewed_at=row.reviewed_at, created=created)


@strawberry.type
class DelistedPlugin:
    plugin_id: str
    delisted_at: datetime


def _service(info: Info) -> MarketplacePublishing:
    return ctx(info).runtime.marketplace_publishing


def _versions(service: MarketplacePublishing, page_items: list[PluginVersion]
              ) -> dict[str, Plugin]:
    return service.plugins_of(sorted({v.plugin_id for v in page_items}))


@strawberry.type
class Query:
    @strawberry.field(description="The caller's vendor's plugin versions, newest first.")
    def vendor_plugin_versions(self, info: Info, first: int = DEFAULT_PAGE, after: str | None = None
                               ) -> Connection[PublishedPluginVersion]:
        c = ctx(info)
        c.require("plugin", "read")
        service = _service(info)
        page = service.vendor_versions(c.tenant_id, first=first, after=after)
        plugins = _versions(service, page.items)
        return Connection.of(page, lambda v: PublishedPluginVersion.of(v, plugins[v.plugin_id]))

    @strawberry.field(description="Versions awaiting review (SUBMITTED, IN_REVIEW), newest first; "
                                  "platform administrators only.")
    def plugin_review_queue(self, info: Info, first: int = DEFAULT_PAGE, after: str | None = None
                            ) -> Connection[PublishedPluginVersion]:
        c = ctx(info)
        c.require_platform_admin()
        service = _service(info)
        page = service.review_queue(first=first, after=after)
        plugins = _versions(service, page.items)
        return Connection.of(page, lambda v: PublishedPluginVersion.of(v, plugins[v.plugin_id]))


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Make the caller's tenant a plugin vendor with this Ed25519 "
                                     "public key (32 raw bytes, base64), or replace its key; "
                                     "`prefix` reserves the first segment of its plugin ids (else "
                                     "its first publication does, if free; it never changes).")
    def register_vendor_key(self, info: Info, public_key: str, name: str | None = None,
                            prefix: str | None = None) -> PluginVendor:
        c = ctx(info)
        me = c.require("plugin", "write")
        return PluginVendor.of(_service(info).register_vendor_key(c.tenant_id, me.user_id,
                                                                  public_key, name, prefix))

    @strawberry.mutation(description="Publish a signed wheel (base64; at most 700 kB). Every check "
                                     "runs before anything is stored; publishing the same bytes "
                                     "again answers the stored version.")
    def publish_plugin_version(self, info: Info, wheel_base64: str, signature: str | None = None,
                               tier: PluginTier = PluginTier.COMMUNITY) -> PublishedPluginVersion:
        c = ctx(info)
        me = c.require("plugin", "write")
        try:
            wheel = base64.b64decode(wheel_base64, validate=True)
        except (binascii.Error, ValueError):
            raise WheelInvalid("wheelBase64 is not base64") from None
        done = _service(info).publish(c.tenant_id, me.user_id, wheel, signature, tier.value)
        return PublishedPluginVersion.of(done.version, done.plugin, done.created)

    @strawberry.mutation(description="Platform administrators: start (IN_REVIEW) or end (APPROVED, "
                                     "REJECTED with reasons) the review of a version.")
    def review_plugin_version(self, info: Info, version_id: strawberry.ID, decision: ReviewDecision,
                              reasons: list[str] | None = None) -> PublishedPluginVersion:
        c = ctx(info)
        me = c.require_platform_admin()
        service = _service(info)
        version = service.review(me.user_id, str(version_id), decision.value, reasons or [])
        return PublishedPluginVersion.of(version, service.plugins_of([version.plugin_id])[version.plugin_id])

    @strawberry.mutation(description="Platform administrators: the kill switch. The plugin and "
                                     "every version become DELISTED and are deactivated for every "
                                     "tenant at once.")
    def delist_plugin(self, info: Info, plugin_id: strawberry.ID, reason: str = "") -> DelistedPlugin:
        c = ctx(info)
        me = c.require_platform_admin()
        plugin = _service(info).delist(me.user_id, str(plugin_id), reason[:1000])
        assert plugin.delisted_at is not None
        return DelistedPlugin(plugin_id=plugin.id, delisted_at=plugin.delisted_at)
