"""Publication: vendor keys, publishing signed versions, review, delisting, and re-verification.

`MarketplacePublishing` (Runtime.marketplace_publishing) is plain Python over the rows of
marketplace/models.py; GraphQL lives in schema/marketplace_publishing.py.

Publishing runs every check before anything is written, cheapest first, and a failure stores
nothing and answers its code with `details.reasons`:
 1. the wheel's safety and structure (marketplace/wheel.py): WHEEL_INVALID, WHEEL_UNSAFE,
    PACKAGE_TAMPERED;
 2. the manifest against its schema (MANIFEST_INVALID), the entry point against it;
 3. the caller's tenant is a registered vendor (VENDOR_NOT_REGISTERED), and the signature over
    the manifest and every file's SHA-256 with its key (PACKAGE_UNSIGNED, SIGNATURE_INVALID);
 4. the plugin id belongs to this vendor (PLUGIN_ID_TAKEN), is not delisted (PLUGIN_DELISTED),
    keeps its tier (TIER_MISMATCH); a new plugin id's prefix (its first segment) is not held
    by another vendor (PLUGIN_ID_PREFIX_TAKEN); the version is new (the same content again - the
    same bytes, or the same signature under the same key - answers the stored version:
    publishing is idempotent; other content under a published version is VERSION_EXISTS);
 5. import, hooks and the category's conformance kit in a separate process
    (gateway/marketplace/inspection.py, in the plugin sandbox): PLUGIN_IMPORT_FAILED, MANIFEST_HOOKS_MISMATCH,
    CONFORMANCE_FAILED, INSPECTION_TIMEOUT; a schema extension's root fields and types against
    the core schema's names (PLUGIN_SCHEMA_CONFLICT), when the app bound them (`bind_core_names`).
Then one transaction writes the plugin (first version), the version (with the SDL the plugin
reported), the vendor's prefix if it held none and the id's is free, and an audit record. A
PRIVATE version is APPROVED at once (only its vendor's tenant sees it); COMMUNITY and CERTIFIED
versions are SUBMITTED for review: SUBMITTED → IN_REVIEW → APPROVED or REJECTED (with
reasons), by platform administrators. Delisting marks the plugin and every version DELISTED
and publishes `marketplace.delisted` on the bus, on which installations are deactivated.

Prefixes: a vendor holds at most one, for good, reserved explicitly (`registerVendorKey(prefix:)`)
or by its first publication whose id's prefix is free. A prefix is free when no vendor holds it
and no other vendor published under it (plugins from before prefixes existed). Only its holder
creates new plugin ids under a held prefix; an existing plugin keeps taking versions from the
vendor that owns it.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from gateway.audit import AuditEntry, AuditTrail
from gateway.db import Database, utcnow
from gateway.errors import Conflict, InvalidInput, NotFound
from gateway.events import Bus
from gateway.marketplace.inspection import (
    DEFAULT_TIMEOUT_S,
    CoreNamesSource,
    InspectionReport,
    inspect_package,
)
from gateway.marketplace.models import Plugin, PluginVersion, Tier, Vendor, VersionStatus
from gateway.marketplace.sandbox.supervisor import Sandbox
from gateway.pagination import Page, check_page_size, keyset_page
from marketplace import signing
from marketplace.manifest import Manifest, parse_manifest
from marketplace.wheel import (
    PackageTampered,
    WheelLimits,
    WheelUnsafe,
    check_entry_point,
    read_wheel,
)

DELISTED_TOPIC = "marketplace.delisted"
VERSIONS_TOPIC = "marketplace.versions"  # every status change: published, reviewed, delisted
# Top-level names a wheel may not bring: they would shadow the platform or the SDK.
RESERVED_PACKAGES = frozenset({"gateway", "schema", "plugins", "marketplace", "strawberry",
                               "pluggy", "sqlmodel", "sqlalchemy"})
REVIEW_STEPS = {
    VersionStatus.SUBMITTED: {VersionStatus.IN_REVIEW},
    VersionStatus.IN_REVIEW: {VersionStatus.APPROVED, VersionStatus.REJECTED},
}
MAX_REASONS = 20
PREFIX = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")  # one segment of a manifest id


@dataclass(frozen=True)
class Published:
    version: PluginVersion
    plugin: Plugin
    created: bool  # False when the same bytes were published before (idempotent retry)
    inspection: InspectionReport | None = None


class MarketplacePublishing:
    def __init__(self, db: Database, bus: Bus, audit: AuditTrail, sandbox: Sandbox, *,
                 max_page_size: int = 100,
                 limits: WheelLimits = WheelLimits(),
                 inspection_timeout_s: float = DEFAULT_TIMEOUT_S, max_inspections: int = 2) -> None:
        self.db = db
        self.sandbox = sandbox
        # Each inspection is a fresh interpreter; more at once than cores only slows them all.
        self._inspections = threading.BoundedSemaphore(max_inspections)
        self.bus = bus
        self.audit = audit
        self.max_page_size = max_page_size
        self.limits = limits
        self.inspection_timeout_s = inspection_timeout_s
        self._core_names: CoreNamesSource | None = None

    # Wiring (the app, the composition root, hands in the core schema's names).
    def bind_core_names(self, core_names: CoreNamesSource) -> None:
        """`core_names()` answers the core schema's root fields and types, which a plugin's
        schema extension may not define; unbound, publication does not check them."""
        self._core_names = core_names

    # Vendors.

    def register_vendor_key(self, tenant_id: str, user_id: str | None, public_key: str,
                            name: str | None = None, prefix: str | None = None) -> Vendor:
        """Make the caller's tenant a vendor with this Ed25519 key, or replace its key, and
        reserve `prefix` for its plugin ids if given. Versions already published keep the key
        they were verified with."""
        signing.load_public_key(public_key)
        name = (name or "").strip()
        if len(name) > 200:
            raise InvalidInput("a vendor name has at most 200 characters", code="VENDOR_NAME_INVALID")
        if prefix is not None:
            prefix = prefix.strip().lower()
            if not PREFIX.match(prefix) or len(prefix) > 64:
                raise InvalidInput("a prefix is one segment of a plugin id: lowercase letters, digits "
                                   "and inner hyphens, at most 64 characters", code="VENDOR_PREFIX_INVALID")
        try:
            return self._store_vendor_key(tenant_id, user_id, public_key.strip(), name, prefix)
        except IntegrityError:  # a concurrent registration won: replace its key instead
            return self._store_vendor_key(tenant_id, user_id, public_key.strip(), name, prefix)

    def _store_vendor_key(self, tenant_id: str, user_id: str | None, public_key: str, name: str,
                          prefix: str | None) -> Vendor:
        with self.db.system_transaction() as session:
            vendor = session.exec(select(Vendor).where(Vendor.tenant_id == tenant_id)).first()
            if vendor is None:
                from gateway.tenancy.models import Tenant

                tenant = session.get(Tenant, tenant_id)
                vendor = Vendor(tenant_id=tenant_id, name=name or (tenant.name if tenant else tenant_id),
                                public_key=public_key)
                event = "marketplace.vendor_registered"
            else:
                vendor.public_key = public_key
                vendor.updated_at = utcnow()
                if name:
                    vendor.name = name
                event = "marketplace.vendor_key_changed"
            payload: dict[str, Any] = {
                "public_key_sha256": hashlib.sha256(vendor.public_key.encode()).hexdigest()}
            if prefix is not None and vendor.prefix != prefix:
                if vendor.prefix is not None:
                    raise Conflict(f"this vendor's prefix is {vendor.prefix}; it cannot change",
                                   code="VENDOR_PREFIX_FIXED", details={"prefix": vendor.prefix})
                if not self._prefix_free(session, prefix, vendor.id):
                    raise _prefix_taken(prefix)
                vendor.prefix = payload["prefix"] = prefix
            session.add(vendor)
            session.flush()
            self.audit.append(session, tenant_id, [AuditEntry(
                kind=event, subject=vendor.id, actor=user_id, payload=payload)])
        return vendor

    @staticmethod
    def _prefix_free(session: Session, prefix: str, vendor_id: str | None) -> bool:
        """No vendor holds `prefix`, and no vendor but `vendor_id` published a plugin under it."""
        if session.exec(select(Vendor.id).where(Vendor.prefix == prefix)).first() is not None:
            return False
        others = select(Plugin.id).where(col(Plugin.id).startswith(f"{prefix}.", autoescape=True))
        if vendor_id is not None:
            others = others.where(Plugin.vendor_id != vendor_id)
        return session.exec(others.limit(1)).first() is None

    @staticmethod
    def _check_prefix(session: Session, vendor: Vendor, plugin_id: str) -> None:
        """A new plugin id under a prefix another vendor holds: PLUGIN_ID_PREFIX_TAKEN. (An
        existing plugin's versions come from the vendor owning it: PLUGIN_ID_TAKEN.)"""
        if session.get(Plugin, plugin_id) is not None:
            return
        prefix = plugin_id.split(".", 1)[0]
        holder = session.exec(select(Vendor.id).where(Vendor.prefix == prefix)).first()
        if holder is not None and holder != vendor.id:
            raise _prefix_taken(prefix)

    def _reserve_prefix(self, session: Session, vendor: Vendor, plugin_id: str) -> str | None:
        """Give a vendor holding no prefix the id's, if free; answers it when reserved. A
        compare-and-set: of two publications at once, one reserves."""
        prefix = plugin_id.split(".", 1)[0]
        if vendor.prefix is not None or not self._prefix_free(session, prefix, vendor.id):
            return None
        done = session.execute(update(Vendor).where(col(Vendor.id) == vendor.id, col(Vendor.prefix).is_(None))
                               .values(prefix=prefix, updated_at=utcnow()))
        return prefix if done.rowcount == 1 else None  # type: ignore[attr-defined]

    def vendor_of(self, tenant_id: str) -> Vendor | None:
        with self.db.system_session() as session:
            return session.exec(select(Vendor).where(Vendor.tenant_id == tenant_id)).first()

    # Publication.

    def publish(self, tenant_id: str, user_id: str | None, wheel: bytes, signature: str | None,
                tier: str | Tier) -> Published:
        tier = _tier(tier)
        contents = read_wheel(wheel, self.limits)
        manifest = parse_manifest(contents.manifest_data)
        check_entry_point(contents, manifest.id, manifest.entry_point)
        _check_reserved(contents.files)
        vendor = self.vendor_of(tenant_id)
        if vendor is None:
            raise InvalidInput("register a vendor key (registerVendorKey) before publishing",
                               code="VENDOR_NOT_REGISTERED")
        signing.verify(contents, manifest, signature, vendor.public_key)
        digest = hashlib.sha256(wheel).hexdigest()
        existing = self._existing(vendor, manifest, tier, digest, signature)
        if existing is not None:
            return existing
        with self.db.system_session() as session:  # before inspection, the costly step
            self._check_prefix(session, vendor, manifest.id)
        with self._inspections:
            report = inspect_package(self.sandbox, wheel, contents.files, manifest.raw,
                                     timeout_s=self.inspection_timeout_s, core_names=self._core_names)
        now = utcnow()
        status = VersionStatus.APPROVED if tier is Tier.PRIVATE else VersionStatus.SUBMITTED
        version = PluginVersion(
            plugin_id=manifest.id, version=manifest.version, manifest=dict(manifest.raw),
            wheel=wheel, wheel_sha256=digest, wheel_filename=_wheel_filename(contents.dist_info),
            signature=signature.strip() if signature else "", public_key=vendor.public_key,
            status=status.value, reasons=[], published_by=user_id, published_at=now,
            reviewed_at=now if tier is Tier.PRIVATE else None, created_at=now, sdl=report.sdl)
        try:
            with self.db.system_transaction() as session:
                self._check_prefix(session, vendor, manifest.id)  # again: one reserved meanwhile counts
                plugin = session.get(Plugin, manifest.id)
                if plugin is None:
                    plugin = Plugin(id=manifest.id, vendor_id=vendor.id, name=manifest.name,
                                    category=manifest.category, tier=tier.value, created_at=now)
                else:
                    self._check_plugin(plugin, vendor, tier)
                    plugin.name, plugin.category = manifest.name, manifest.category
                session.add(plugin)
                session.flush()
                session.add(version)
                session.flush()
                entries = [AuditEntry(
                    kind="marketplace.version_published", subject=version.id, actor=user_id,
                    payload={"plugin_id": manifest.id, "version": manifest.version,
                             "tier": tier.value, "status": status.value,
                             "wheel_sha256": digest, "hooks": list(report.hooks),
                             "checks": list(report.checks)})]
                reserved = self._reserve_prefix(session, vendor, manifest.id)
                if reserved is not None:
                    entries.append(AuditEntry(kind="marketplace.vendor_prefix_reserved",
                                              subject=vendor.id, actor=user_id, payload={"prefix": reserved}))
                self.audit.append(session, tenant_id, entries)
        except IntegrityError:
            # Another request reserved the prefix, or published the same version, first.
            with self.db.system_session() as session:
                self._check_prefix(session, vendor, manifest.id)
            existing = self._existing(vendor, manifest, tier, digest, signature)
            if existing is None:
                raise Conflict("this version was published concurrently", code="VERSION_EXISTS") from None
            return existing
        self._announce("published", version, plugin)
        return Published(version=version, plugin=plugin, created=True, inspection=report)

    def _existing(self, vendor: Vendor, manifest: Manifest, tier: Tier, digest: str,
                  signature: str | None) -> Published | None:
        with self.db.system_session() as session:
            plugin = session.get(Plugin, manifest.id)
            if plugin is None:
                return None
            self._check_plugin(plugin, vendor, tier)
            version = session.exec(select(PluginVersion).where(
                PluginVersion.plugin_id == manifest.id,
                PluginVersion.version == manifest.version)).first()
        if version is None:
            return None
        # Ed25519 is deterministic: the same signature under the same key means the same
        # manifest and files, even when the zip around them was rebuilt (timestamps differ).
        same_content = (signature or "").strip() == version.signature \
            and vendor.public_key == version.public_key
        if version.wheel_sha256 != digest and not same_content:
            raise Conflict(f"{manifest.id} {manifest.version} is already published with other "
                           "contents; publish a new version", code="VERSION_EXISTS",
                           details={"versionId": version.id})
        return Published(version=version, plugin=plugin, created=False)

    @staticmethod
    def _check_plugin(plugin: Plugin, vendor: Vendor, tier: Tier) -> None:
        if plugin.vendor_id != vendor.id:
            raise Conflict(f"the plugin id {plugin.id} belongs to another vendor",
                           code="PLUGIN_ID_TAKEN")
        if plugin.delisted_at is not None:
            raise Conflict(f"{plugin.id} is delisted; it takes no new versions",
                           code="PLUGIN_DELISTED")
        if plugin.tier != tier.value:
            raise Conflict(f"{plugin.id} is published in tier {plugin.tier}, not {tier.value}",
                           code="TIER_MISMATCH")

    # Review and delisting (platform administrators; the resolver checks the role).

    def review(self, user_id: str | None, version_id: str, decision: str | VersionStatus,
               reasons: Sequence[str] = ()) -> PluginVersion:
        try:
            target = VersionStatus(decision)
        except ValueError:
            raise InvalidInput(f"decision must be IN_REVIEW, APPROVED or REJECTED, not {decision!r}",
                               code="REVIEW_DECISION_INVALID") from None
        reasons = [r.strip() for r in reasons if r and r.strip()]
        if len(reasons) > MAX_REASONS or any(len(r) > 1000 for r in reasons):
            raise InvalidInput(f"at most {MAX_REASONS} reasons of 1,000 characters each",
                               code="REVIEW_REASONS_INVALID")
        if target is VersionStatus.REJECTED and not reasons:
            raise InvalidInput("a rejection needs at least one reason", code="REVIEW_REASONS_REQUIRED")
        with self.db.system_transaction() as session:
            version = session.get(PluginVersion, version_id, with_for_update=True)
            if version is None:
                raise NotFound("no such plugin version", code="PLUGIN_VERSION_NOT_FOUND")
            current = VersionStatus(version.status)
            if target not in REVIEW_STEPS.get(current, set()):
                raise Conflict(f"a {current.value} version cannot become {target.value}",
                               code="REVIEW_TRANSITION_INVALID",
                               details={"status": current.value})
            plugin = session.get(Plugin, version.plugin_id)
            assert plugin is not None
            version.status = target.value
            version.reasons = reasons
            version.reviewed_at = utcnow()
            version.reviewed_by = user_id
            session.add(version)
            session.flush()
            self.audit.append(session, None, [AuditEntry(
                kind="marketplace.version_reviewed", subject=version.id, actor=user_id,
                payload={"plugin_id": version.plugin_id, "version": version.version,
                         "from": current.value, "to": target.value, "reasons": reasons})])
        self._announce("reviewed", version, plugin)
        return version

    def delist(self, user_id: str | None, plugin_id: str, reason: str = "") -> Plugin:
        """The kill switch: the plugin and every version DELISTED, for every tenant at once."""
        with self.db.system_transaction() as session:
            plugin = session.get(Plugin, plugin_id, with_for_update=True)
            if plugin is None:
                raise NotFound("no such plugin", code="PLUGIN_NOT_FOUND")
            if plugin.delisted_at is not None:
                return plugin  # idempotent
            now = utcnow()
            plugin.delisted_at = now
            versions = list(session.exec(select(PluginVersion).where(
                PluginVersion.plugin_id == plugin_id)
                .order_by(col(PluginVersion.published_at), col(PluginVersion.id))).all())
            for version in versions:
                version.reasons = [*version.reasons, f"delisted from {version.status}"
                                   + (f": {reason}" if reason else "")][-MAX_REASONS:]
                version.status = VersionStatus.DELISTED.value
                session.add(version)
            session.add(plugin)
            session.flush()
            self.audit.append(session, None, [AuditEntry(
                kind="marketplace.plugin_delisted", subject=plugin_id, actor=user_id,
                payload={"versions": [v.version for v in versions], "reason": reason})])
        self.bus.publish(DELISTED_TOPIC, {"pluginId": plugin_id, "at": now.isoformat(),
                                          "versions": [v.id for v in versions], "reason": reason})
        for version in versions:
            self._announce("delisted", version, plugin)
        return plugin

    def _announce(self, event: str, version: PluginVersion, plugin: Plugin) -> None:
        self.bus.publish(VERSIONS_TOPIC, {
            "event": event, "pluginId": plugin.id, "versionId": version.id,
            "version": version.version, "status": version.status, "tier": plugin.tier,
            "vendorId": plugin.vendor_id})

    # Reading.

    def vendor_versions(self, tenant_id: str, *, first: int, after: str | None
                        ) -> Page[PluginVersion]:
        """The caller's vendor's versions, newest first (any status)."""
        check_page_size(first, self.max_page_size)
        vendor = self.vendor_of(tenant_id)
        if vendor is None:
            return Page([], False)
        stmt = (select(PluginVersion).join(Plugin, col(Plugin.id) == col(PluginVersion.plugin_id))
                .where(Plugin.vendor_id == vendor.id))
        return self._page(stmt, first, after)

    def review_queue(self, *, first: int, after: str | None,
                     statuses: Sequence[str] = ("SUBMITTED", "IN_REVIEW")) -> Page[PluginVersion]:
        """Versions awaiting review, for platform administrators."""
        check_page_size(first, self.max_page_size)
        stmt = select(PluginVersion).where(col(PluginVersion.status).in_(list(statuses)))
        return self._page(stmt, first, after)

    def _page(self, stmt: Any, first: int, after: str | None) -> Page[PluginVersion]:
        return keyset_page(self.db, None, stmt, PluginVersion, first=first, after=after,
                           max_page_size=self.max_page_size)

    def plugins_of(self, ids: Sequence[str]) -> dict[str, Plugin]:
        with self.db.system_session() as session:
            rows = session.exec(select(Plugin).where(col(Plugin.id).in_(list(ids)))).all()
        return {row.id: row for row in rows}

    def get_version(self, version_id: str) -> PluginVersion | None:
        with self.db.system_session() as session:
            return session.get(PluginVersion, version_id)

    def can_see(self, tenant_id: str, is_platform_admin: bool, version: PluginVersion,
                plugin: Plugin) -> bool:
        """The visibility rule: platform admins see everything; a vendor's own tenant sees its
        plugins; other tenants see APPROVED versions of non-PRIVATE, non-delisted plugins."""
        if is_platform_admin:
            return True
        vendor = self.vendor_of(tenant_id)
        if vendor is not None and vendor.id == plugin.vendor_id:
            return True
        return (plugin.tier != Tier.PRIVATE.value and plugin.delisted_at is None
                and version.status == VersionStatus.APPROVED.value)

    # Loading.

    def verify_stored(self, version: PluginVersion | str, session: Session | None = None
                      ) -> Manifest:
        """Check a stored version again before it is loaded: it is not delisted, its bytes hash
        to what was published, the wheel is intact and safe, and the signature verifies with
        the key it was published under. Answers the manifest; raises PACKAGE_TAMPERED,
        SIGNATURE_INVALID, PLUGIN_DELISTED, PLUGIN_VERSION_NOT_FOUND."""
        if isinstance(version, str):
            found = (session.get(PluginVersion, version) if session is not None
                     else self.get_version(version))
            if found is None:
                raise NotFound("no such plugin version", code="PLUGIN_VERSION_NOT_FOUND")
            version = found
        if version.status == VersionStatus.DELISTED.value:
            raise Conflict(f"{version.plugin_id} {version.version} is delisted", code="PLUGIN_DELISTED")
        if hashlib.sha256(version.wheel).hexdigest() != version.wheel_sha256:
            raise PackageTampered(f"the stored wheel of {version.plugin_id} {version.version} "
                                  "changed since publication")
        contents = read_wheel(version.wheel, WheelLimits(max_bytes=1 << 62))
        manifest = parse_manifest(contents.manifest_data)
        if dict(manifest.raw) != dict(version.manifest) or manifest.id != version.plugin_id \
                or manifest.version != version.version:
            raise PackageTampered(f"the stored manifest of {version.plugin_id} {version.version} "
                                  "does not match its wheel")
        signing.verify(contents, manifest, version.signature, version.public_key)
        return manifest


def _prefix_taken(prefix: str) -> Conflict:
    return Conflict(f"plugin ids starting {prefix}. belong to another vendor; publish under your own "
                    "prefix", code="PLUGIN_ID_PREFIX_TAKEN", details={"prefix": prefix})


def _tier(value: str | Tier) -> Tier:
    try:
        return Tier(value)
    except ValueError:
        raise InvalidInput(f"tier must be PRIVATE, COMMUNITY or CERTIFIED, not {value!r}",
                           code="TIER_INVALID") from None


def _check_reserved(files: dict[str, bytes]) -> None:
    tops = {name.split("/", 1)[0].removesuffix(".py") for name in files}
    clash = sorted(tops & RESERVED_PACKAGES)
    if clash:
        raise WheelUnsafe(f"the wheel brings {', '.join(clash)}, which would shadow the platform",
                          details={"packages": clash})


_DIST = re.compile(r"^(?P<name>.+)-(?P<version>[^-]+)\.dist-info$")


def _wheel_filename(dist_info: str) -> str:
    match = _DIST.match(dist_info)
    if not match:
        return f"{dist_info}.whl"
    return f"{match['name']}-{match['version']}-py3-none-any.whl"
