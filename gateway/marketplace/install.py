"""Installation per tenant: install, configure, upgrade, roll back, uninstall, rate.

`Installations` (Runtime.marketplace) holds each tenant's `TenantView` (marketplace/
tenant_plugins.py) and changes it in one order, so nothing is ever half-installed:

1. check: the version is visible to the tenant (a PRIVATE plugin to its vendor's own tenant
   only), APPROVED, not delisted, and compatible with this gateway's version; the
   configuration passes the manifest's JSON Schema (PLUGIN_CONFIG_INVALID with JSON paths);
2. load: verify the signature again and unpack the wheel (gateway/marketplace/wheels.py),
   start the plugin's sandboxed worker for this tenant (gateway/marketplace/sandbox/), which
   imports it; read what it offers (its SDL, theme, flags, providers; only hooks the manifest
   declares and capabilities it holds), compose the tenant's new schema (conflicts refuse:
   PLUGIN_SCHEMA_CONFLICT) and call `alphintra_activated`;
3. commit: the installation row, its history event and the audit entry in one transaction;
4. swap: the tenant's view is replaced by one dict assignment; requests already running keep
   the view (and schema) they started with;
5. tell: `alphintra_deactivated` for a replaced version, an event on the tenant's
   `pluginEvents` topic, and a bus message so other gateway processes reload the tenant.

A failure in 1-3 leaves the old view in place and nothing stored (a commit that fails after
activation calls `alphintra_deactivated` on the new plugin). Secrets in the configuration are
sealed with runtime.secrets under f"plugin-config:{tenant_id}:{plugin_id}" and opened only
into the first message to that tenant's worker; no read returns them (`secret_fields` tells
which are set). The gateway never imports plugin code.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from jsonschema import Draft202012Validator
from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from gateway.audit import AuditEntry, AuditTrail
from gateway.db import Database, utcnow
from gateway.errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound
from gateway.events import Bus, Event
from gateway.marketplace.errors import PluginCallFailed
from gateway.marketplace.install_models import PluginInstallation, PluginInstallationEvent, PluginRating
from gateway.marketplace.metering import Meter
from gateway.marketplace.models import Plugin, PluginVersion, Tier, Vendor, VersionStatus
from gateway.marketplace.sandbox.asks import answerer
from gateway.marketplace.sandbox.egress import EgressProxy
from gateway.marketplace.sandbox.proxies import HOOK_CAPABILITIES, PROXIES, RemoteProvider, describe
from gateway.marketplace.sandbox.supervisor import Limits, ManagedPlugin, PluginSpec, Sandbox
from gateway.marketplace.tenant_plugins import (
    ActivePlugin,
    ComposedSchema,
    Composer,
    PluginSchema,
    SchemaCache,
    TenantView,
    config_digest,
)
from gateway.marketplace.wheels import WheelStore
from gateway.secrets import SecretBox
from marketplace.manifest import gateway_version, is_compatible, parse_manifest
from plugins.sdk import DEFAULT_THEME, Theme, VenueDirectory

log = logging.getLogger(__name__)

FAILURE_EVENT_INTERVAL_S = 10.0
DELISTED_TOPIC = "marketplace.delisted"
RESTORE_THREADS = 8  # tenants whose plugins start at once when the gateway starts
CHANGED_TOPIC = "marketplace.installations.changed"  # other processes reload the tenant
# Plugins on the order path: their workers start at activation and never stop for idleness.
STOP_GRACE_S = 30.0  # a replaced worker finishes the requests already using it
KEEP_WARM_HOOKS = ("alphintra_exchange_connectors", "alphintra_compliance_rule_packs")


def events_topic(tenant_id: str) -> str:
    return f"marketplace.plugin-events.{tenant_id}"


class ConfigInvalid(InvalidInput):
    code = "PLUGIN_CONFIG_INVALID"


@dataclass(frozen=True)
class VersionRef:
    """What installing needs of a published version (read from the publication tables)."""

    plugin_id: str
    plugin_name: str
    version_id: str
    version: str
    manifest: dict[str, Any]
    wheel: bytes
    wheel_sha256: str
    signature: str
    public_key: str


class Installations:
    def __init__(self, db: Database, bus: Bus, secrets: SecretBox, audit: AuditTrail, store: WheelStore,
                 meter: Meter, sandbox: Sandbox, egress: EgressProxy, max_page_size: int,
                 version_of_gateway: Callable[[], str] = gateway_version,
                 venues: VenueDirectory | None = None) -> None:
        self.db = db
        self.bus = bus
        self.secrets = secrets
        self.audit = audit
        self.store = store
        self.meter = meter
        self.sandbox = sandbox
        self.sandbox.on_quarantine = self._quarantined
        self.sandbox.on_use = self._used
        self.egress = egress
        self.max_page_size = max_page_size
        self.gateway_version = version_of_gateway
        self.venues = venues
        self.schemas: SchemaCache | None = None
        self._views: dict[str, TenantView] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._last_failure: dict[tuple[str, str], float] = {}
        self._digest_key = uuid.uuid4().bytes  # worker keys: a configuration change is a new worker
        self.origin = uuid.uuid4().hex  # this process, on CHANGED_TOPIC messages

    # Wiring (the app, the composition root, hands in the schema composer).
    def bind_composer(self, composer: Composer) -> None:
        self.schemas = SchemaCache(composer, self)

    def restore(self, wait_s: float = 3.0) -> int:
        """Load every tenant's installations (start-up) on a few threads of their own: a plugin
        that hangs at import (bounded by its start deadline) delays only the tenants queued
        behind it on that thread, never the gateway's start, and a gateway with many tenants
        does not start all their workers at once. Waits at most `wait_s`; returns how many
        tenants."""
        with self.db.system_session() as session:
            tenants = sorted(set(session.exec(select(PluginInstallation.tenant_id)).all()))
        waiting: queue.SimpleQueue[str] = queue.SimpleQueue()
        for tenant_id in tenants:
            waiting.put(tenant_id)

        def drain() -> None:
            while True:
                try:
                    tenant_id = waiting.get_nowait()
                except queue.Empty:
                    return
                self._restore_tenant(tenant_id)

        threads = [threading.Thread(target=drain, daemon=True, name="plugin-restore")
                   for _ in range(min(RESTORE_THREADS, len(tenants)))]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + wait_s
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return len(tenants)

    def _restore_tenant(self, tenant_id: str) -> None:
        try:
            self.reload(tenant_id)
        except Exception:
            log.exception("could not restore a tenant's plugins", extra={"tenant_id": tenant_id})

    def reload(self, tenant_id: str) -> None:
        with self._tenant_lock(tenant_id):
            rows = self._installed_rows(tenant_id)
            plugins = []
            for row in rows:
                try:
                    ref = self._version_by_id(row.version_id)
                    if ref is None:
                        continue
                    plugins.append(self._activate(tenant_id, ref, row, call_activated=False))
                except DomainError as exc:
                    log.error("installed plugin failed to load", extra={
                        "tenant_id": tenant_id, "plugin": row.plugin_id, "code": exc.code})
            replaced = self._views.get(tenant_id)
            self._swap(tenant_id, plugins)
            kept = {id(p.managed) for p in plugins}
            for old in replaced.plugins if replaced else ():
                if id(old.managed) not in kept:
                    self.sandbox.forget(old.managed)

    def on_changed(self, event: Event) -> None:
        if event.payload.get("origin") != self.origin:
            threading.Thread(target=self.reload, name="plugin-reload", daemon=True,
                             args=(str(event.payload["tenant_id"]),)).start()

    def stop(self) -> None:
        """Shutdown: write pending metering and stop every worker. The unpacked wheels stay
        until the process exits (wheels.py): a runtime served again restarts workers from them."""
        try:
            self.meter.flush()
        except Exception:
            log.exception("metering flush failed at shutdown")
        self.sandbox.close()

    # Reads for the request path.
    def view(self, tenant_id: str) -> TenantView | None:
        return self._views.get(tenant_id)

    def schema_for(self, tenant_id: str) -> ComposedSchema | None:
        view = self._views.get(tenant_id)
        return view.schema if view is not None else None

    def tenant_count(self) -> int:
        return len(self._views)

    # A plugin's own GraphQL fields: the schema layer forwards each field's sub-document here
    # (schema/plugin_fields.py). `view` is the one the request started with, when it has one.
    def plugin_graphql(self, tenant_id: str, plugin_id: str, document: str, variables: dict[str, Any],
                       view: TenantView | None = None) -> dict[str, Any]:
        active = self._active(tenant_id, plugin_id, view)
        try:
            answer = active.managed.call("graphql", {"document": document, "variables": variables})
        except PluginCallFailed as exc:
            self._failed(active, exc.reason)
            raise
        return self._metered(active, answer)

    async def aplugin_graphql(self, tenant_id: str, plugin_id: str, document: str,
                              variables: dict[str, Any], view: TenantView | None = None) -> dict[str, Any]:
        active = self._active(tenant_id, plugin_id, view)
        try:
            answer = await active.managed.acall("graphql", {"document": document, "variables": variables})
        except PluginCallFailed as exc:
            self._failed(active, exc.reason)
            raise
        return self._metered(active, answer)

    async def plugin_subscribe(self, tenant_id: str, plugin_id: str, document: str,
                               variables: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """No deadline: a stream lives as long as its client; a crash ends it with PLUGIN_FAILED."""
        active = self._active(tenant_id, plugin_id, None)
        try:
            async for item in active.managed.stream("subscribe", {"document": document,
                                                                  "variables": variables}):
                yield self._metered(active, item)
        except PluginCallFailed as exc:
            self._failed(active, exc.reason)
            raise

    def _used(self, spec: PluginSpec, size: int) -> None:
        """A tenant's provider call answered: metered (durably) for its vendor's statement."""
        if spec.tenant_id:
            self.meter.record(spec.tenant_id, spec.plugin_id, spec.version, size=size)

    def _metered(self, active: ActivePlugin, answer: Any) -> dict[str, Any]:
        if not isinstance(answer, dict):
            raise PluginCallFailed(active.plugin_id, "its GraphQL answer has the wrong shape")
        if answer.get("errors"):
            kinds = sorted({str(e.get("type")) for e in answer["errors"] if isinstance(e, dict)})
            self._failed(active, ", ".join(kinds))
        self.meter.record(active.context_tenant, active.plugin_id, active.version,
                          size=_size(answer.get("data")))
        return answer

    def _failed(self, active: ActivePlugin, reason: str) -> None:
        """Tell the tenant (pluginEvents FAILED), at most once per plugin every 10 seconds."""
        key = (active.context_tenant, active.plugin_id)
        now = time.monotonic()
        with self._locks_guard:
            if now - self._last_failure.get(key, -1e9) < FAILURE_EVENT_INTERVAL_S:
                return
            self._last_failure[key] = now
        self.bus.publish(events_topic(key[0]), {
            "tenant_id": key[0], "action": "FAILED", "plugin_id": active.plugin_id,
            "version": active.version, "previous_version": None, "reason": reason,
            "at": utcnow().isoformat()})

    def _quarantined(self, managed: ManagedPlugin, reason: str) -> None:
        """A plugin crash-looped for a tenant: tell the tenant and the vendor."""
        spec = managed.spec
        payload = {"tenant_id": spec.tenant_id, "action": "QUARANTINED", "plugin_id": spec.plugin_id,
                   "version": spec.version, "previous_version": None, "reason": reason,
                   "at": utcnow().isoformat()}
        if spec.tenant_id:
            self.bus.publish(events_topic(spec.tenant_id), payload)
        vendor_tenant = self._vendor_tenant(spec.plugin_id)
        if vendor_tenant and vendor_tenant != spec.tenant_id:
            # The vendor learns which of its plugins failed, never which tenant or why in detail.
            self.bus.publish(events_topic(vendor_tenant), {**payload, "tenant_id": vendor_tenant,
                                                           "reason": "quarantined for a tenant"})

    def _vendor_tenant(self, plugin_id: str) -> str | None:
        with self.db.system_session() as session:
            found = session.exec(select(Vendor.tenant_id)
                                 .join(Plugin, col(Plugin.vendor_id) == col(Vendor.id))
                                 .where(Plugin.id == plugin_id)).first()
        return found

    def _active(self, tenant_id: str, plugin_id: str, view: TenantView | None) -> ActivePlugin:
        if view is None or view.tenant_id != tenant_id:
            view = self._views.get(tenant_id)
        active = view.by_id.get(plugin_id) if view is not None else None
        if active is None:  # deactivated (uninstalled, delisted) since the request began
            raise PluginCallFailed(plugin_id, "the plugin is no longer active for this tenant")
        return active

    # Installation.
    def install(self, tenant_id: str, actor: str | None, plugin_id: str, version: str,
                config: Mapping[str, Any] | None, idempotency_key: str | None = None
                ) -> PluginInstallation:
        with self._tenant_lock(tenant_id):
            if idempotency_key:
                done = self._by_idempotency_key(tenant_id, idempotency_key)
                if done is not None:
                    if done.plugin_id != plugin_id or done.version != version:
                        raise Conflict("this idempotency key was used for another install",
                                       code="IDEMPOTENCY_KEY_REUSED")
                    row = self._installation(tenant_id, plugin_id, required=False)
                    if row is not None:
                        return row
                    raise Conflict("the install made with this idempotency key was since undone; "
                                   "use a new key", code="IDEMPOTENCY_KEY_REUSED")
            if self._installation(tenant_id, plugin_id, required=False) is not None:
                if self._visible_plugin(tenant_id, plugin_id)[0].delisted_at is not None:
                    # The row a delisting left inactive: installing again is refused as delisted.
                    raise InvalidInput(f"{plugin_id} was delisted", code="PLUGIN_DELISTED")
                raise Conflict(f"{plugin_id} is already installed; upgrade or configure it",
                               code="PLUGIN_ALREADY_INSTALLED")
            ref = self._installable(tenant_id, plugin_id, version)
            plain, sealed, secret_paths = self._config(tenant_id, ref, dict(config or {}), None)
            row = PluginInstallation(tenant_id=tenant_id, plugin_id=plugin_id, version_id=ref.version_id,
                                     version=ref.version, config=plain, sealed_secrets=sealed,
                                     secret_fields=secret_paths, installed_by=actor)
            return self._change(tenant_id, actor, ref, row, "INSTALLED", None, idempotency_key,
                                replaced=None)

    def configure(self, tenant_id: str, actor: str | None, plugin_id: str, config: Mapping[str, Any]
                  ) -> PluginInstallation:
        with self._tenant_lock(tenant_id):
            row = self._installation(tenant_id, plugin_id)
            ref = self._require_version(row.version_id)
            plain, sealed, secret_paths = self._config(tenant_id, ref, dict(config), row)
            new = _copy_row(row, config=plain, sealed_secrets=sealed, secret_fields=secret_paths)
            return self._change(tenant_id, actor, ref, new, "CONFIGURED", row.version, None,
                                replaced=self._current(tenant_id, plugin_id))

    def upgrade(self, tenant_id: str, actor: str | None, plugin_id: str, version: str,
                config: Mapping[str, Any] | None = None) -> PluginInstallation:
        with self._tenant_lock(tenant_id):
            row = self._installation(tenant_id, plugin_id)
            if row.version == version:
                raise InvalidInput(f"{plugin_id} {version} is already installed",
                                   code="PLUGIN_VERSION_INSTALLED")
            ref = self._installable(tenant_id, plugin_id, version)
            return self._switch_version(tenant_id, actor, plugin_id, ref, row, row, config, "UPGRADED")

    def rollback(self, tenant_id: str, actor: str | None, plugin_id: str,
                 config: Mapping[str, Any] | None = None) -> PluginInstallation:
        """Back to the previous version with the configuration in force with it (kept at the
        upgrade), unless `config` is given; secrets `config` leaves out keep their values."""
        with self._tenant_lock(tenant_id):
            row = self._installation(tenant_id, plugin_id)
            if row.previous_version_id is None:
                raise InvalidInput(f"{plugin_id} has no previous version to roll back to",
                                   code="PLUGIN_NO_PREVIOUS_VERSION")
            previous = self._require_version(row.previous_version_id)
            ref = self._installable(tenant_id, plugin_id, previous.version)
            # Rows written before previous_config existed fall back to the current configuration.
            kept = (_copy_row(row, config=row.previous_config, sealed_secrets=row.previous_sealed_secrets)
                    if row.previous_config is not None else row)
            return self._switch_version(tenant_id, actor, plugin_id, ref, row, kept, config,
                                        "ROLLED_BACK")

    def _switch_version(self, tenant_id: str, actor: str | None, plugin_id: str, ref: VersionRef,
                        row: PluginInstallation, configured: PluginInstallation,
                        config: Mapping[str, Any] | None, action: str) -> PluginInstallation:
        """Move the installation to `ref`, configured by `config` or else by `configured`'s
        configuration; the version left behind, with its configuration, becomes the previous."""
        merged = self._open_config(tenant_id, configured) if config is None else dict(config)
        plain, sealed, secret_paths = self._config(tenant_id, ref, merged, configured)
        new = _copy_row(row, version_id=ref.version_id, version=ref.version, config=plain,
                        sealed_secrets=sealed, secret_fields=secret_paths,
                        previous_version_id=row.version_id, previous_config=row.config,
                        previous_sealed_secrets=row.sealed_secrets)
        return self._change(tenant_id, actor, ref, new, action, row.version, None,
                            replaced=self._current(tenant_id, plugin_id))

    def uninstall(self, tenant_id: str, actor: str | None, plugin_id: str) -> PluginInstallation:
        with self._tenant_lock(tenant_id):
            row = self._installation(tenant_id, plugin_id)
            view = self._views.get(tenant_id)
            remaining = [p for p in (view.plugins if view else ()) if p.plugin_id != plugin_id]
            self._compose(remaining)
            with self.db.tenant_session(tenant_id) as session:
                stored = session.get(PluginInstallation, row.id)
                if stored is None:
                    raise NotFound(f"{plugin_id} is not installed", code="PLUGIN_NOT_INSTALLED")
                session.delete(stored)
                self._record(session, tenant_id, actor, plugin_id, "UNINSTALLED", row.version_id,
                             None, row.version, None)
                session.commit()
            replaced = self._current(tenant_id, plugin_id)
            self._swap(tenant_id, remaining)
            if replaced is not None:
                self._deactivated(replaced)
            self._tell(tenant_id, "UNINSTALLED", plugin_id, row.version, None)
            return row

    def rate(self, tenant_id: str, actor: str | None, plugin_id: str, rating: int,
             comment: str | None) -> PluginRating:
        if not 1 <= rating <= 5:
            raise InvalidInput("a rating is from 1 to 5", code="RATING_INVALID")
        if comment is not None and len(comment) > 2000:
            raise InvalidInput("a comment is at most 2,000 characters", code="RATING_INVALID")
        _, vendor = self._visible_plugin(tenant_id, plugin_id)
        if vendor.tenant_id == tenant_id:
            raise Forbidden("a vendor does not rate its own plugin", code="RATING_OWN_PLUGIN")
        with self.db.tenant_session(tenant_id) as session:
            if not self._ever_installed(session, plugin_id):
                raise NotFound(f"rate {plugin_id} once this tenant has installed it",
                               code="PLUGIN_NOT_INSTALLED")
            row = session.exec(select(PluginRating).where(PluginRating.plugin_id == plugin_id)).first()
            if row is None:
                row = PluginRating(tenant_id=tenant_id, plugin_id=plugin_id, rating=rating,
                                   comment=comment, rated_by=actor)
            else:
                row.rating, row.comment, row.rated_by, row.updated_at = rating, comment, actor, utcnow()
            session.add(row)
            self.audit.append(session, tenant_id, [AuditEntry(
                kind="plugin.rated", subject=plugin_id, payload={"rating": rating}, actor=actor)])
            session.commit()
            session.refresh(row)
            return row

    # Delisting: the platform's kill switch, for every tenant at once.
    def on_delisted(self, event: Event) -> None:
        plugin_id = str(event.payload.get("pluginId") or event.payload.get("plugin_id") or "")
        version_id = event.payload.get("versionId")  # publication delists whole plugins: None
        if plugin_id:
            # Not in the publisher's thread: the in-process bus delivers under its lock, and
            # deactivating publishes events of its own.
            threading.Thread(target=self.deactivate_everywhere, name="plugin-delisting", daemon=True,
                             args=(plugin_id, str(version_id) if version_id else None)).start()

    def deactivate_everywhere(self, plugin_id: str, version_id: str | None = None) -> int:
        """Drop the plugin (or only that version) from every tenant's view and schema now. The
        installation rows stay (with a DELISTED history event), so the tenant sees why.

        Every tenant with a view or a lock (an install in progress takes the lock first) is
        looked at under its lock, so an install that passed its checks before the delisting is
        waited for and then removed; one that commits later refuses itself (`_change`). One
        tenant failing does not stop the others."""
        count = 0
        with self._locks_guard:
            tenants = sorted(set(self._views) | set(self._locks))
        for tenant_id in tenants:
            try:
                with self._tenant_lock(tenant_id):
                    view = self._views.get(tenant_id)
                    active = view.by_id.get(plugin_id) if view is not None else None
                    if active is None or (version_id is not None and active.version_id != version_id):
                        continue
                    remaining = [p for p in view.plugins if p.plugin_id != plugin_id]
                    try:
                        self._swap(tenant_id, remaining)
                    except DomainError:
                        log.exception("recomposing after a delisting failed", extra={"tenant_id": tenant_id})
                        self._views[tenant_id] = TenantView.of(tenant_id, [], None)
                    with self.db.tenant_session(tenant_id) as session:
                        self._record(session, tenant_id, None, plugin_id, "DELISTED", active.version_id,
                                     active.version, None, None)
                        session.commit()
                self._deactivated(active, grace_s=0.0)
                self._tell(tenant_id, "DELISTED", plugin_id, active.version, None)
                count += 1
            except Exception:
                log.exception("deactivating a delisted plugin failed for a tenant",
                              extra={"tenant_id": tenant_id, "plugin": plugin_id})
        return count

    # Reads.
    def installed(self, tenant_id: str) -> list[PluginInstallation]:
        return self._installed_rows(tenant_id)

    def installation(self, tenant_id: str, plugin_id: str) -> PluginInstallation:
        return self._installation(tenant_id, plugin_id)

    def is_active(self, tenant_id: str, plugin_id: str) -> bool:
        view = self._views.get(tenant_id)
        return view is not None and plugin_id in view.by_id

    def history(self, tenant_id: str, plugin_id: str) -> list[PluginInstallationEvent]:
        with self.db.tenant_session(tenant_id) as session:
            return list(session.exec(select(PluginInstallationEvent)
                                     .where(PluginInstallationEvent.plugin_id == plugin_id)
                                     .order_by(col(PluginInstallationEvent.created_at),
                                               col(PluginInstallationEvent.id))).all())

    def white_label(self, tenant_id: str) -> tuple[Theme, str | None]:
        """The tenant's theme and the plugin that gave it (None: the built-in default): the
        most recently installed plugin with a theme (read once, at its activation)."""
        view = self._views.get(tenant_id)
        for active in reversed(view.plugins if view else ()):
            if active.theme is not None:
                return active.theme, active.plugin_id
        return DEFAULT_THEME, None

    def feature_flags(self, tenant_id: str) -> dict[str, tuple[bool, str]]:
        """flag → (enabled, plugin that set it); the most recently installed wins."""
        flags: dict[str, tuple[bool, str]] = {}
        view = self._views.get(tenant_id)
        for active in view.plugins if view else ():
            flags.update({k: (v, active.plugin_id) for k, v in active.flags.items()})
        return flags

    def providers(self, tenant_id: str, hook: str) -> list[tuple[str, RemoteProvider]]:
        """(plugin id, provider) of the tenant's installed plugins for a provider hook."""
        view = self._views.get(tenant_id)
        return [(active.plugin_id, provider) for active in (view.plugins if view else ())
                for provider in active.providers.get(hook, ())]

    # Internals.
    @contextmanager
    def _tenant_lock(self, tenant_id: str) -> Iterator[None]:
        with self._locks_guard:
            lock = self._locks.setdefault(tenant_id, threading.Lock())
        with lock:
            yield

    def _change(self, tenant_id: str, actor: str | None, ref: VersionRef, row: PluginInstallation,
                action: str, previous_version: str | None, idempotency_key: str | None,
                replaced: ActivePlugin | None) -> PluginInstallation:
        view = self._views.get(tenant_id)
        others = [p for p in (view.plugins if view else ()) if p.plugin_id != ref.plugin_id]
        active = self._activate(tenant_id, ref, row, call_activated=False)
        plugins = [*others, active]
        schema = self._compose(plugins)  # conflicts refuse here, before anything is stored
        if action != "CONFIGURED" or replaced is None or replaced.sha256 != active.sha256:
            self._call_lifecycle(active, "alphintra_activated", strict=True)
        try:
            with self.db.tenant_session(tenant_id) as session:
                self._refuse_if_delisted(session, ref)
                if action == "INSTALLED":
                    session.add(row)
                else:
                    stored = session.get(PluginInstallation, row.id)
                    if stored is None:
                        raise NotFound(f"{ref.plugin_id} is not installed", code="PLUGIN_NOT_INSTALLED")
                    for name in ("version_id", "version", "previous_version_id", "config",
                                 "sealed_secrets", "secret_fields", "previous_config",
                                 "previous_sealed_secrets"):
                        setattr(stored, name, getattr(row, name))
                    stored.updated_at = utcnow()
                    session.add(stored)
                    row = stored
                self._record(session, tenant_id, actor, ref.plugin_id, action, ref.version_id,
                             ref.version, previous_version, idempotency_key)
                session.commit()
                session.refresh(row)
                session.expunge(row)
        except IntegrityError:
            self._deactivated(active)
            if action != "INSTALLED":
                raise
            # Another gateway process installed it (or used the key) between our check and commit.
            raise Conflict(f"{ref.plugin_id} was installed meanwhile (another request); upgrade or "
                           "configure it", code="PLUGIN_ALREADY_INSTALLED") from None
        except Exception:
            self._deactivated(active)
            raise
        self._views[tenant_id] = TenantView.of(tenant_id, plugins, schema)
        self._forget_unused_schemas()
        if replaced is not None and replaced.managed is not active.managed:
            self._deactivated(replaced, call_hook=replaced.sha256 != active.sha256)
        self._tell(tenant_id, action, ref.plugin_id, ref.version, previous_version)
        return row

    @staticmethod
    def _refuse_if_delisted(session: Session, ref: VersionRef) -> None:
        """Checked again in the committing transaction: a delisting that landed after the first
        check (while the wheel loaded) must not leave this tenant running the plugin."""
        plugin = session.exec(select(Plugin).where(Plugin.id == ref.plugin_id)).first()
        version = session.exec(select(PluginVersion.status).where(PluginVersion.id == ref.version_id)).first()
        if plugin is None or plugin.delisted_at is not None or version == VersionStatus.DELISTED:
            raise InvalidInput(f"{ref.plugin_id} was delisted", code="PLUGIN_DELISTED")

    def _compose(self, plugins: Sequence[ActivePlugin]) -> ComposedSchema | None:
        if self.schemas is None:
            return None
        try:
            return self.schemas.for_plugins(plugins)
        except DomainError:
            raise
        except Exception as exc:  # the plugin's types do not build into a schema
            blamed = plugins[-1].plugin_id if plugins else "?"
            log.error("schema composition failed", exc_info=exc, extra={"plugin": blamed})
            raise PluginCallFailed(blamed, f"its schema extension does not compose ({type(exc).__name__})"
                                   ) from None

    def _swap(self, tenant_id: str, plugins: Sequence[ActivePlugin]) -> None:
        schema = self._compose(plugins)
        if plugins:
            self._views[tenant_id] = TenantView.of(tenant_id, plugins, schema)
        else:
            self._views.pop(tenant_id, None)
        self._forget_unused_schemas()

    def _forget_unused_schemas(self) -> None:
        """Drop cached schemas no tenant uses any more (requests holding one keep it alive)."""
        if self.schemas is not None:
            self.schemas.forget_unused({v.schema.key for v in list(self._views.values())
                                        if v.schema is not None})

    def _activate(self, tenant_id: str, ref: VersionRef, row: PluginInstallation,
                  call_activated: bool) -> ActivePlugin:
        """Start (or reuse) the tenant's worker for this version and configuration and read
        what the plugin offers. Only hooks the manifest declares, the plugin implements and
        whose capability the manifest holds are ever called."""
        unpacked = self.store.load(plugin_id=ref.plugin_id, wheel=ref.wheel, wheel_sha256=ref.wheel_sha256,
                                   manifest=ref.manifest, signature=ref.signature, public_key=ref.public_key)
        config = dict(row.config)
        if row.sealed_secrets:
            _merge_secrets(config, json.loads(self.secrets.open(
                row.sealed_secrets, secret_context(tenant_id, ref.plugin_id))))
        manifest = parse_manifest(ref.manifest)
        capabilities = frozenset(manifest.capabilities)
        declared = tuple(manifest.hooks)
        key = f"{tenant_id}|{ref.version_id}|{config_digest(config, self._digest_key)}"
        managed = self.sandbox.managed(PluginSpec(
            key=key, plugin_id=ref.plugin_id, version=ref.version, tenant_id=tenant_id,
            directory=unpacked.directory, sha256=unpacked.sha256, entry_point=unpacked.entry_point,
            hooks=declared, capabilities=capabilities, config=config,
            keep_warm=any(h in declared for h in KEEP_WARM_HOOKS)))
        try:
            active = self._read_offer(tenant_id, ref, unpacked.sha256, managed, capabilities, declared)
            if call_activated:
                self._call_lifecycle(active, "alphintra_activated", strict=True)
        except BaseException:
            if not self._in_use(managed):
                self.sandbox.forget(managed)
            raise
        return active

    def _read_offer(self, tenant_id: str, ref: VersionRef, sha256: str, managed: ManagedPlugin,
                    capabilities: frozenset[str], declared: Sequence[str]) -> ActivePlugin:
        worker = managed.ensure_worker()  # imports the plugin, under the start deadline
        implemented = set(worker.implemented)
        usable = []
        for hook in declared:
            needed = HOOK_CAPABILITIES.get(hook)
            if hook not in implemented:
                continue
            if needed is not None and needed not in capabilities:
                log.warning("a plugin hook needs a capability its manifest lacks; never called",
                            extra={"plugin": ref.plugin_id, "hook": hook, "capability": needed})
                continue
            usable.append(hook)
        undeclared = sorted(implemented - set(declared))
        if undeclared:
            log.warning("a plugin implements hooks its manifest does not declare; never called",
                        extra={"plugin": ref.plugin_id, "hooks": undeclared})
        schema = None
        if "alphintra_schema_extensions" in usable:
            answer = managed.call("schema")
            if (not isinstance(answer, dict) or not isinstance(answer.get("sdl"), str)
                    or not isinstance(answer.get("roots"), dict)):
                raise PluginCallFailed(ref.plugin_id, "alphintra_schema_extensions must answer a list "
                                                      "of plugins.sdk.SchemaExtension")
            schema = PluginSchema(answer["sdl"], {str(k): tuple(v) for k, v in answer["roots"].items()})
        theme = None
        if "alphintra_white_label" in usable:
            value = self._value(managed, "alphintra_white_label")
            if isinstance(value, Theme):
                theme = value
            elif value is not None:
                log.error("white-label hook answered the wrong shape", extra={"plugin": ref.plugin_id})
        flags: dict[str, bool] = {}
        if "alphintra_feature_flags" in usable:
            value = self._value(managed, "alphintra_feature_flags")
            if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, bool)
                                               for k, v in value.items()):
                flags = value
            else:
                log.error("feature-flag hook answered the wrong shape", extra={"plugin": ref.plugin_id})
        providers = {hook: tuple(describe(managed, hook)) for hook in usable if hook in PROXIES}
        connectors = providers.get("alphintra_exchange_connectors", ())
        venues = self._venues_of(tenant_id, ref.plugin_id, connectors)
        return ActivePlugin(ref.plugin_id, ref.version, ref.version_id, sha256, managed, tenant_id,
                            hooks=frozenset(usable), schema=schema, theme=theme, flags=flags,
                            providers=providers, venues=venues)

    def _venues_of(self, tenant_id: str, plugin_id: str, connectors: Sequence[Any]) -> tuple[Any, ...]:
        """The venues a plugin's connectors bring: each MIC new to the gateway and to the
        tenant's other plugins (PLUGIN_VENUE_TAKEN naming who has it otherwise)."""
        found: dict[str, Any] = {}
        taken = {mic: owner for mic, (owner, _) in self.installed_venues(tenant_id).items()
                 if owner != plugin_id}
        for connector in connectors:
            for definition in connector.venues():
                mic = definition.info.mic
                owner = taken.get(mic) or ("the gateway" if self._known_venue(mic) else None)
                if owner is not None or mic in found:
                    raise Conflict(f"{plugin_id} brings venue {mic}, which {owner or plugin_id} already "
                                   "has", code="PLUGIN_VENUE_TAKEN",
                                   details={"plugin": plugin_id, "mic": mic})
                found[mic] = definition
        return tuple(found.values())

    def _known_venue(self, mic: str) -> bool:
        if self.venues is None:
            return False
        try:
            self.venues.venue(mic)
        except DomainError:
            return False
        return True

    def installed_venues(self, tenant_id: str) -> dict[str, tuple[str, Any]]:
        """MIC -> (plugin id, VenueDefinition) of the venues the tenant's connectors bring."""
        view = self._views.get(tenant_id)
        return {d.info.mic: (active.plugin_id, d) for active in (view.plugins if view else ())
                for d in active.venues}

    def tenants_with(self, hook: str) -> list[str]:
        """Tenants whose installed plugins offer providers of `hook` (the venue clock's round)."""
        return [t for t, view in list(self._views.items())
                if any(active.providers.get(hook) for active in view.plugins)]

    @staticmethod
    def _value(managed: ManagedPlugin, hook: str) -> Any:
        """A value hook, read once at activation; a failing one is left out (logged)."""
        try:
            return managed.call("value", {"hook": hook})
        except PluginCallFailed as exc:
            log.error("plugin hook failed at activation", extra={"plugin": managed.plugin_id,
                                                                 "hook": hook, "reason": exc.reason})
            return None

    def _in_use(self, managed: ManagedPlugin) -> bool:
        return any(p.managed is managed for v in list(self._views.values()) for p in v.plugins)

    def _call_lifecycle(self, active: ActivePlugin, name: str, strict: bool) -> None:
        if name not in active.hooks:
            return
        try:
            active.managed.call("value", {"hook": name})
        except PluginCallFailed:
            if strict:
                raise
            log.error("plugin lifecycle hook failed", extra={"plugin": active.plugin_id, "hook": name})

    def _deactivated(self, active: ActivePlugin, call_hook: bool = True, grace_s: float = STOP_GRACE_S
                     ) -> None:
        """The plugin no longer serves this tenant: its hook (when asked), then its worker stops,
        after `grace_s` for requests that started on the old view (none for a delisting)."""
        if call_hook:
            self._call_lifecycle(active, "alphintra_deactivated", strict=False)
        if not self._in_use(active.managed):
            self.sandbox.forget(active.managed, grace_s)

    def _tell(self, tenant_id: str, action: str, plugin_id: str, version: str | None,
              previous: str | None) -> None:
        payload = {"tenant_id": tenant_id, "action": action, "plugin_id": plugin_id,
                   "version": version, "previous_version": previous, "at": utcnow().isoformat()}
        self.bus.publish(events_topic(tenant_id), payload)
        self.bus.publish(CHANGED_TOPIC, {"tenant_id": tenant_id, "origin": self.origin})

    def _record(self, session: Session, tenant_id: str, actor: str | None, plugin_id: str, action: str,
                version_id: str | None, version: str | None, previous: str | None,
                idempotency_key: str | None) -> None:
        session.add(PluginInstallationEvent(
            tenant_id=tenant_id, plugin_id=plugin_id, action=action, version_id=version_id,
            version=version, previous_version=previous, actor=actor, idempotency_key=idempotency_key))
        self.audit.append(session, tenant_id, [AuditEntry(
            kind=f"plugin.{action.lower()}", subject=plugin_id, actor=actor,
            payload={"version": version, "previous_version": previous})])

    def _config(self, tenant_id: str, ref: VersionRef, config: dict[str, Any],
                existing: PluginInstallation | None) -> tuple[dict[str, Any], str | None, list[str]]:
        """Validate; split into (non-secret values, sealed secrets, paths of the secrets set).
        A secret left out of a new configuration keeps its stored value."""
        manifest = parse_manifest(ref.manifest)
        secret_paths = list(manifest.secret_fields)
        if existing is not None and existing.sealed_secrets:
            kept = json.loads(self.secrets.open(existing.sealed_secrets,
                                                secret_context(tenant_id, ref.plugin_id)))
            for path, value in kept.items():
                if path in secret_paths and _get(config, path) is _MISSING:
                    _put(config, path, value)
        errors = [{"path": _json_path(e.absolute_path), "message": _describe(e)}
                  for e in Draft202012Validator(manifest.config_schema).iter_errors(config)]
        if errors:
            errors.sort(key=lambda e: e["path"])
            summary = "; ".join(f"{e['path']}: {e['message']}" for e in errors[:5])
            raise ConfigInvalid(f"the configuration of {ref.plugin_id} is invalid: {summary}",
                                details={"errors": errors, "plugin": ref.plugin_id})
        plain = copy.deepcopy(config)
        secrets: dict[str, Any] = {}
        for path in secret_paths:
            value = _pop(plain, path)
            if value is not _MISSING:
                secrets[path] = value
        sealed = (self.secrets.seal(json.dumps(secrets).encode(), secret_context(tenant_id, ref.plugin_id))
                  if secrets else None)
        return plain, sealed, sorted(secrets)

    def _open_config(self, tenant_id: str, row: PluginInstallation) -> dict[str, Any]:
        config = copy.deepcopy(dict(row.config))
        if row.sealed_secrets:
            _merge_secrets(config, json.loads(self.secrets.open(
                row.sealed_secrets, secret_context(tenant_id, row.plugin_id))))
        return config

    def _current(self, tenant_id: str, plugin_id: str) -> ActivePlugin | None:
        view = self._views.get(tenant_id)
        return view.by_id.get(plugin_id) if view is not None else None

    def _installed_rows(self, tenant_id: str) -> list[PluginInstallation]:
        with self.db.tenant_session(tenant_id) as session:
            rows = list(session.exec(select(PluginInstallation).order_by(
                col(PluginInstallation.created_at), col(PluginInstallation.id))).all())
            for row in rows:
                session.expunge(row)
            return rows

    def _installation(self, tenant_id: str, plugin_id: str, required: bool = True
                      ) -> PluginInstallation:
        with self.db.tenant_session(tenant_id) as session:
            row = session.exec(select(PluginInstallation)
                               .where(PluginInstallation.plugin_id == plugin_id)).first()
            if row is not None:
                session.expunge(row)
        if row is None and required:
            raise NotFound(f"{plugin_id} is not installed for this tenant", code="PLUGIN_NOT_INSTALLED")
        return row  # type: ignore[return-value]

    def _by_idempotency_key(self, tenant_id: str, key: str) -> PluginInstallationEvent | None:
        with self.db.tenant_session(tenant_id) as session:
            return session.exec(select(PluginInstallationEvent)
                                .where(PluginInstallationEvent.idempotency_key == key)).first()

    def _visible_plugin(self, tenant_id: str, plugin_id: str) -> tuple[Plugin, Vendor]:
        with self.db.system_session() as session:
            found = session.exec(select(Plugin, Vendor).join(Vendor, col(Vendor.id) == col(Plugin.vendor_id))
                                 .where(Plugin.id == plugin_id)).first()
        if found is None or (found[0].tier == Tier.PRIVATE and found[1].tenant_id != tenant_id):
            raise NotFound(f"no plugin {plugin_id}", code="PLUGIN_NOT_FOUND")
        return found[0], found[1]

    def _installable(self, tenant_id: str, plugin_id: str, version: str) -> VersionRef:
        plugin, vendor = self._visible_plugin(tenant_id, plugin_id)
        if plugin.delisted_at is not None:
            raise InvalidInput(f"{plugin_id} was delisted", code="PLUGIN_DELISTED")
        with self.db.system_session() as session:
            row = session.exec(select(PluginVersion).where(PluginVersion.plugin_id == plugin_id,
                                                           PluginVersion.version == version)).first()
        own_private = plugin.tier == Tier.PRIVATE and vendor.tenant_id == tenant_id
        if row is None or (row.status != VersionStatus.APPROVED and not (
                own_private and row.status not in (VersionStatus.REJECTED, VersionStatus.DELISTED))):
            if row is not None and row.status == VersionStatus.DELISTED:
                raise InvalidInput(f"{plugin_id} {version} was delisted", code="PLUGIN_DELISTED")
            if row is not None and own_private is False and row.status in (
                    VersionStatus.SUBMITTED, VersionStatus.IN_REVIEW, VersionStatus.REJECTED):
                raise InvalidInput(f"{plugin_id} {version} is {row.status}, not approved",
                                   code="PLUGIN_VERSION_NOT_APPROVED",
                                   details={"status": str(row.status)})
            raise NotFound(f"no version {version} of {plugin_id}", code="PLUGIN_VERSION_NOT_FOUND")
        manifest = parse_manifest(row.manifest)
        running = self.gateway_version()
        if not is_compatible(manifest, running):
            raise InvalidInput(f"{plugin_id} {version} needs gateway {manifest.gateway}; this is {running}",
                               code="PLUGIN_INCOMPATIBLE",
                               details={"required": manifest.gateway, "gateway": running})
        return _ref(plugin, row)

    def _version_by_id(self, version_id: str) -> VersionRef | None:
        with self.db.system_session() as session:
            found = session.exec(select(Plugin, PluginVersion)
                                 .join(PluginVersion, col(PluginVersion.plugin_id) == col(Plugin.id))
                                 .where(PluginVersion.id == version_id)).first()
        if found is None:
            return None
        plugin, row = found
        if plugin.delisted_at is not None or row.status == VersionStatus.DELISTED:
            return None
        return _ref(plugin, row)

    def version_label(self, version_id: str) -> str | None:
        with self.db.system_session() as session:
            row = session.get(PluginVersion, version_id)
            return row.version if row is not None else None

    def _require_version(self, version_id: str) -> VersionRef:
        ref = self._version_by_id(version_id)
        if ref is None:
            raise InvalidInput("that version is no longer available (delisted)", code="PLUGIN_DELISTED")
        return ref

    # Catalogue aggregates (across tenants; answers counts only).
    def install_counts(self, plugin_ids: Sequence[str]) -> dict[str, int]:
        with self.db.system_session() as session:
            rows = session.exec(select(PluginInstallation.plugin_id, func.count())
                                .where(col(PluginInstallation.plugin_id).in_(list(plugin_ids)))
                                .group_by(col(PluginInstallation.plugin_id))).all()
        return {plugin_id: int(count) for plugin_id, count in rows}

    def rating_summaries(self, plugin_ids: Sequence[str]) -> dict[str, tuple[Decimal, int]]:
        with self.db.system_session() as session:
            rows = session.exec(select(PluginRating.plugin_id, func.sum(PluginRating.rating), func.count())
                                .where(col(PluginRating.plugin_id).in_(list(plugin_ids)))
                                .group_by(col(PluginRating.plugin_id))).all()
        return {pid: ((Decimal(int(total)) / Decimal(int(count))).quantize(Decimal("0.01")), int(count))
                for pid, total, count in rows}

    @staticmethod
    def _ever_installed(session: Session, plugin_id: str) -> bool:
        """The session's tenant has the plugin installed, or its history shows an install."""
        if session.exec(select(PluginInstallation.id)
                        .where(PluginInstallation.plugin_id == plugin_id)).first() is not None:
            return True
        return session.exec(select(PluginInstallationEvent.id).where(
            PluginInstallationEvent.plugin_id == plugin_id,
            PluginInstallationEvent.action == "INSTALLED")).first() is not None


def _ref(plugin: Plugin, row: PluginVersion) -> VersionRef:
    return VersionRef(plugin_id=plugin.id, plugin_name=plugin.name, version_id=row.id, version=row.version,
                      manifest=dict(row.manifest), wheel=row.wheel, wheel_sha256=row.wheel_sha256,
                      signature=row.signature, public_key=row.public_key)


def _copy_row(row: PluginInstallation, **changes: Any) -> PluginInstallation:
    data = row.model_dump()
    data.update(changes)
    return PluginInstallation(**data)


def secret_context(tenant_id: str, plugin_id: str) -> str:
    return f"plugin-config:{tenant_id}:{plugin_id}"


_MISSING: Any = object()


def _parts(path: str) -> list[str]:
    # "$.a.b" → ["a", "b"]; array secrets ("[*]") are kept whole under their object's key.
    return [p for p in path.removeprefix("$").split(".") if p and "[" not in p]


def _get(config: Mapping[str, Any], path: str) -> Any:
    node: Any = config
    for part in _parts(path):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _put(config: dict[str, Any], path: str, value: Any) -> None:
    parts = _parts(path)
    node = config
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def _pop(config: dict[str, Any], path: str) -> Any:
    parts = _parts(path)
    node: Any = config
    for part in parts[:-1]:
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    if not isinstance(node, dict) or parts[-1] not in node:
        return _MISSING
    return node.pop(parts[-1])


def _merge_secrets(config: dict[str, Any], secrets: Mapping[str, Any]) -> None:
    for path, value in secrets.items():
        _put(config, path, value)


def _json_path(parts: Any) -> str:
    out = "$"
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


# Keywords whose schema value is worth showing (it comes from the manifest, never the config).
_SHOWN = {"minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
          "multipleOf", "minItems", "maxItems", "uniqueItems", "minProperties", "maxProperties",
          "pattern", "format", "enum", "const"}


def _describe(error: Any) -> str:
    """A message built from the failing keyword and the schema alone: jsonschema's own quote the
    offending value (at object level, the whole configuration with its secrets), so never used,
    except for `required`, which names a property of the schema."""
    keyword, expected = error.validator, error.validator_value
    if keyword == "required":
        return str(error.message)
    if keyword == "type":
        return f"is not of type {expected!r}"
    if keyword in ("additionalProperties", "unevaluatedProperties") and isinstance(error.instance, Mapping):
        known = set(error.schema.get("properties") or {})
        extra = sorted(str(k) for k in error.instance if k not in known)[:10]
        return f"has properties the schema does not allow: {', '.join(extra)}"
    if keyword in _SHOWN:
        shown = json.dumps(expected, default=str)
        return f"does not satisfy {keyword} {shown if len(shown) <= 200 else shown[:200] + '...'}"
    return f"does not satisfy {keyword!r}"


def _size(value: Any) -> int:
    """Bytes of a resolver's result as JSON (approximately what the client receives)."""
    try:
        return len(json.dumps(_plain(value), default=str, separators=(",", ":")))
    except (TypeError, ValueError, RecursionError):
        return 0


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def build_installations(settings: Any, db: Database, bus: Bus, secrets: SecretBox, audit: AuditTrail,
                        venues: VenueDirectory | None = None, chains: Any = None) -> Installations:
    """Construct the service; nothing is loaded, started or written until it is used. Wheels
    unpack under the system temporary directory, each process into its own private directory."""
    import tempfile
    from pathlib import Path

    egress = EgressProxy(settings.plugin_egress_allow_private)
    sandbox = Sandbox(Limits(
        call_timeout_s=settings.plugin_call_timeout_s, start_timeout_s=settings.plugin_start_timeout_s,
        idle_s=settings.plugin_idle_s, memory_bytes=settings.plugin_memory_mb << 20,
        cpu_fraction=settings.plugin_cpu_fraction, pids=settings.plugin_pids,
        quarantine_failures=settings.plugin_quarantine_failures,
        required=settings.plugin_sandbox == "required"),
        answerer(venues, egress, chains),
        use_bwrap=settings.plugin_bwrap, use_cgroups=settings.plugin_cgroups)
    store = WheelStore(Path(tempfile.gettempdir()) / "alphintra-plugins")
    return Installations(db, bus, secrets, audit, store, Meter(db), sandbox, egress, settings.max_page_size,
                         venues=venues)
