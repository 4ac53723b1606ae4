"""Installation per tenant: install, configure, upgrade, roll back, uninstall, rate.

`Installations` (Runtime.marketplace) holds each tenant's `TenantView` (marketplace/
tenant_plugins.py) and changes it in one order, so nothing is ever half-installed:

1. check: the version is visible to the tenant (a PRIVATE plugin to its vendor's own tenant
   only), APPROVED, not delisted, and compatible with this gateway's version; the
   configuration passes the manifest's JSON Schema (PLUGIN_CONFIG_INVALID with JSON paths);
2. load: verify the signature again and import the wheel (marketplace/loader.py), call
   `alphintra_schema_extensions` with the tenant's context, compose the tenant's new schema
   (conflicts refuse: PLUGIN_SCHEMA_CONFLICT) and call `alphintra_activated`;
3. commit: the installation row, its history event and the audit entry in one transaction;
4. swap: the tenant's view is replaced by one dict assignment; requests already running keep
   the view (and schema) they started with;
5. tell: `alphintra_deactivated` for a replaced version, an event on the tenant's
   `pluginEvents` topic, and a bus message so other gateway processes reload the tenant.

A failure in 1-3 leaves the old view in place and nothing stored (a commit that fails after
activation calls `alphintra_deactivated` on the new plugin). Secrets in the configuration are
sealed with runtime.secrets under f"plugin-config:{tenant_id}:{plugin_id}" and opened only
into the plugin's PluginContext; no read returns them (`secret_fields` tells which are set).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from jsonschema import Draft202012Validator
from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from gateway.audit import AuditEntry, AuditTrail
from gateway.db import Database, utcnow
from gateway.errors import Conflict, DomainError, InvalidInput, NotFound
from gateway.events import Bus, Event
from gateway.secrets import SecretBox
from marketplace.install_models import PluginInstallation, PluginInstallationEvent, PluginRating
from marketplace.loader import WheelLoader
from marketplace.manifest import gateway_version, is_compatible, parse_manifest
from marketplace.metering import Meter
from marketplace.models import Plugin, PluginVersion, Tier, Vendor, VersionStatus
from marketplace.tenant_plugins import ActivePlugin, ComposedSchema, Composer, SchemaCache, TenantView
from plugins.host import PluginCalls, PluginFailed
from plugins.sdk import (
    DEFAULT_THEME,
    Bar,
    Instrument,
    MarketDataSource,
    PluginContext,
    SchemaExtension,
    Theme,
    VenueDirectory,
    bind_context,
    unbind_context,
)

log = logging.getLogger(__name__)

INTERVALS = {"1m": timedelta(minutes=1), "5m": timedelta(minutes=5), "15m": timedelta(minutes=15),
             "1h": timedelta(hours=1), "1d": timedelta(days=1)}
MAX_BARS = 10_000
FAILURE_EVENT_INTERVAL_S = 10.0
DELISTED_TOPIC = "marketplace.delisted"
CHANGED_TOPIC = "marketplace.installations.changed"  # other processes reload the tenant


# The view a request started with: the HTTP endpoint sets it when it picks the tenant's schema,
# so a request in flight keeps its plugins (and their contexts) even if an uninstall, upgrade or
# delisting swaps the tenant's view meanwhile. Plugin threads inherit it (PluginCalls copies
# context variables).
REQUEST_VIEW: ContextVar[TenantView | None] = ContextVar("alphintra_request_view", default=None)


def events_topic(tenant_id: str) -> str:
    return f"marketplace.plugin-events.{tenant_id}"


class PluginCallFailed(DomainError):
    """A plugin raised, hung or answered the wrong shape; `details.plugin` names it."""

    code = "PLUGIN_FAILED"
    http_status = 502

    def __init__(self, plugin_id: str, message: str) -> None:
        super().__init__(f"plugin {plugin_id} failed: {message}", details={"plugin": plugin_id})


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
    def __init__(self, db: Database, bus: Bus, secrets: SecretBox, audit: AuditTrail, loader: WheelLoader,
                 meter: Meter, calls: PluginCalls, max_page_size: int,
                 version_of_gateway: Callable[[], str] = gateway_version,
                 venues: VenueDirectory | None = None) -> None:
        self.db = db
        self.bus = bus
        self.secrets = secrets
        self.audit = audit
        self.loader = loader
        self.meter = meter
        self.calls = calls
        self.max_page_size = max_page_size
        self.gateway_version = version_of_gateway
        self.venues = venues
        self.schemas: SchemaCache | None = None
        self._views: dict[str, TenantView] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._last_failure: dict[tuple[str, str], float] = {}
        self.origin = uuid.uuid4().hex  # this process, on CHANGED_TOPIC messages

    # Wiring (the app, the composition root, hands in the schema composer).
    def bind_composer(self, composer: Composer) -> None:
        self.schemas = SchemaCache(composer, self.guard)

    def restore(self) -> int:
        """Load every tenant's installations (start-up). Returns how many tenants."""
        with self.db.system_session() as session:
            tenants = sorted(set(session.exec(select(PluginInstallation.tenant_id)).all()))
        for tenant_id in tenants:
            try:
                self.reload(tenant_id)
            except Exception:
                log.exception("could not restore a tenant's plugins", extra={"tenant_id": tenant_id})
        return len(tenants)

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
            self._swap(tenant_id, plugins)

    def on_changed(self, event: Event) -> None:
        if event.payload.get("origin") != self.origin:
            threading.Thread(target=self.reload, name="plugin-reload", daemon=True,
                             args=(str(event.payload["tenant_id"]),)).start()

    def stop(self) -> None:
        """Shutdown: write pending metering and release the plugins' threads."""
        try:
            self.meter.flush()
        except Exception:
            log.exception("metering flush failed at shutdown")
        self.calls.close()
        self.loader.close()

    # Reads for the request path.
    def view(self, tenant_id: str) -> TenantView | None:
        return self._views.get(tenant_id)

    def schema_for(self, tenant_id: str) -> ComposedSchema | None:
        view = self._views.get(tenant_id)
        return view.schema if view is not None else None

    def tenant_count(self) -> int:
        return len(self._views)

    # The guard every plugin resolver runs inside (handed to the composer).
    def guard(self, plugin_id: str, resolver: Any, where: str) -> Any:
        if resolver is None:
            return None
        service = self

        if where == "subscription":  # no timeout: a stream lives as long as its client
            async def subscribe(source: Any, info: Any, **kwargs: Any) -> Any:
                active = service._active(info, plugin_id)
                token = bind_context(active.context)
                try:
                    stream = resolver(source, info, **kwargs)
                    if hasattr(stream, "__await__"):
                        stream = await stream
                    async for item in stream:
                        service.meter.record(active.context.tenant_id or "", plugin_id, active.version)
                        yield item
                except DomainError:
                    raise
                except Exception as exc:
                    log.error("plugin subscription failed", exc_info=exc, extra={"plugin": plugin_id})
                    raise PluginCallFailed(plugin_id, type(exc).__name__) from None
                finally:
                    unbind_context(token)
            return subscribe

        def resolve(source: Any, info: Any, **kwargs: Any) -> Any:
            active = service._active(info, plugin_id)
            token = bind_context(active.context)
            try:
                if where == "field":  # a field of the plugin's own type: no extra thread
                    try:
                        return resolver(source, info, **kwargs)
                    except DomainError:
                        raise
                    except Exception as exc:
                        log.error("plugin field failed", exc_info=exc, extra={"plugin": plugin_id})
                        service._failed(active, type(exc).__name__)
                        raise PluginCallFailed(plugin_id, type(exc).__name__) from None
                try:
                    result = service.calls.call(plugin_id, resolver, source, info, **kwargs)
                except PluginFailed as exc:
                    if isinstance(exc.__cause__, DomainError):
                        raise exc.__cause__ from None
                    reason = exc.message.split(": ", 1)[-1]
                    service._failed(active, reason)
                    raise PluginCallFailed(plugin_id, reason) from None
                service.meter.record(active.context.tenant_id or "", plugin_id, active.version,
                                     size=_size(result))
                return result
            finally:
                unbind_context(token)

        return resolve

    def _failed(self, active: ActivePlugin, reason: str) -> None:
        """Tell the tenant (pluginEvents FAILED), at most once per plugin every 10 seconds."""
        key = (active.context.tenant_id or "", active.plugin_id)
        now = time.monotonic()
        with self._locks_guard:
            if now - self._last_failure.get(key, -1e9) < FAILURE_EVENT_INTERVAL_S:
                return
            self._last_failure[key] = now
        self.bus.publish(events_topic(key[0]), {
            "tenant_id": key[0], "action": "FAILED", "plugin_id": active.plugin_id,
            "version": active.version, "previous_version": None, "reason": reason,
            "at": utcnow().isoformat()})

    def _active(self, info: Any, plugin_id: str) -> ActivePlugin:
        tenant_id = info.context.tenant_id
        view = REQUEST_VIEW.get()
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
        self._visible_plugin(tenant_id, plugin_id)
        with self.db.tenant_session(tenant_id) as session:
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
                self._deactivated(active)
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
        """The tenant's theme and the plugin that gave it (None: the built-in default)."""
        view = self._views.get(tenant_id)
        for active in reversed(view.plugins if view else ()):
            hook = getattr(active.plugin, "alphintra_white_label", None)
            if hook is None:
                continue
            try:
                theme = self._call_hook(active, hook)
            except PluginCallFailed:
                continue
            if isinstance(theme, Theme):
                return theme, active.plugin_id
            if theme is not None:
                log.error("white-label hook answered the wrong shape", extra={"plugin": active.plugin_id})
        return DEFAULT_THEME, None

    def feature_flags(self, tenant_id: str) -> dict[str, tuple[bool, str]]:
        """flag → (enabled, plugin that set it)."""
        flags: dict[str, tuple[bool, str]] = {}
        view = self._views.get(tenant_id)
        for active in view.plugins if view else ():
            hook = getattr(active.plugin, "alphintra_feature_flags", None)
            if hook is None:
                continue
            try:
                answer = self._call_hook(active, hook)
            except PluginCallFailed:
                continue
            if not isinstance(answer, dict) or not all(isinstance(k, str) and isinstance(v, bool)
                                                       for k, v in answer.items()):
                log.error("feature-flag hook answered the wrong shape", extra={"plugin": active.plugin_id})
                continue
            flags.update({k: (v, active.plugin_id) for k, v in answer.items()})
        return flags

    # The tenant's own market data: its installed data-source plugins (marketdata:publish).
    def instruments(self, tenant_id: str, search: str | None = None) -> list[tuple[str, Instrument]]:
        """(plugin id, instrument) of every installed source; a failing source is left out."""
        out: list[tuple[str, Instrument]] = []
        view = self._views.get(tenant_id)
        for active in view.plugins if view else ():
            for source in active.sources:
                try:
                    found = self._call_source(active, source.instruments)
                except PluginCallFailed:
                    continue
                out.extend((active.plugin_id, i) for i in found if isinstance(i, Instrument)
                           and (not search or search.lower() in f"{i.key} {i.name}".lower()))
        return out

    def bars(self, tenant_id: str, key: str, start: datetime, end: datetime, interval: str
             ) -> tuple[str, list[Bar]]:
        if start.tzinfo is None or end.tzinfo is None:
            raise InvalidInput("start and end need a time zone", code="INSTANT_NOT_AWARE")
        if interval not in INTERVALS:
            raise InvalidInput(f"interval is one of {', '.join(INTERVALS)}", code="INTERVAL_INVALID")
        if end <= start or (end - start) / INTERVALS[interval] > MAX_BARS:
            raise InvalidInput(f"end must follow start, at most {MAX_BARS} bars", code="RANGE_INVALID")
        view = self._views.get(tenant_id)
        for active in view.plugins if view else ():
            for source in active.sources:
                try:
                    known = {i.key: i for i in self._call_source(active, source.instruments)}
                except PluginCallFailed:
                    continue
                if key in known:
                    bars = self._call_source(active, source.bars, known[key], start, end, interval)
                    if not isinstance(bars, list | tuple) or not all(isinstance(b, Bar) for b in bars):
                        raise PluginCallFailed(active.plugin_id, "bars() answered the wrong shape")
                    self.meter.record(tenant_id, active.plugin_id, active.version, size=_size(list(bars)))
                    return active.plugin_id, list(bars)
        raise NotFound(f"no installed data source serves {key}", code="INSTRUMENT_UNKNOWN")

    def _call_source(self, active: ActivePlugin, fn: Callable[..., Any], *args: Any) -> Any:
        def run() -> Any:
            token = bind_context(active.context)
            try:
                return fn(*args)
            finally:
                unbind_context(token)
        try:
            return self.calls.call(active.plugin_id, run)
        except PluginFailed as exc:
            raise PluginCallFailed(active.plugin_id, exc.message.split(": ", 1)[-1]) from None

    def open_secret_paths(self, row: PluginInstallation) -> list[str]:
        return list(row.secret_fields)

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
            self._call_lifecycle(active, "alphintra_deactivated", strict=False)
            if action != "INSTALLED":
                raise
            # Another gateway process installed it (or used the key) between our check and commit.
            raise Conflict(f"{ref.plugin_id} was installed meanwhile (another request); upgrade or "
                           "configure it", code="PLUGIN_ALREADY_INSTALLED") from None
        except Exception:
            self._call_lifecycle(active, "alphintra_deactivated", strict=False)
            raise
        self._views[tenant_id] = TenantView.of(tenant_id, plugins, schema)
        self._forget_unused_schemas()
        if replaced is not None and replaced.sha256 != active.sha256:
            self._deactivated(replaced)
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
        loaded = self.loader.load(plugin_id=ref.plugin_id, wheel=ref.wheel, wheel_sha256=ref.wheel_sha256,
                                  manifest=ref.manifest, signature=ref.signature, public_key=ref.public_key)
        config = dict(row.config)
        if row.sealed_secrets:
            _merge_secrets(config, json.loads(self.secrets.open(
                row.sealed_secrets, _secret_context(tenant_id, ref.plugin_id))))
        context = PluginContext(
            plugin_id=ref.plugin_id, config=config, tenant_id=tenant_id, version=ref.version,
            venues=self.venues,
            capabilities=frozenset(ref.manifest.get("capabilities") or ()),
            logger=logging.getLogger(f"alphintra.plugin.{ref.plugin_id}"))
        active = ActivePlugin(ref.plugin_id, ref.version, ref.version_id, loaded.sha256, loaded.plugin,
                              context)
        hook = getattr(loaded.plugin, "alphintra_schema_extensions", None)
        extensions: tuple[SchemaExtension, ...] = ()
        if hook is not None:
            answer = self._call_hook(active, hook)
            if not isinstance(answer, list) or not all(isinstance(e, SchemaExtension) for e in answer):
                raise PluginCallFailed(ref.plugin_id, "alphintra_schema_extensions must answer a list "
                                                      "of plugins.sdk.SchemaExtension")
            extensions = tuple(answer)
        sources: tuple[MarketDataSource, ...] = ()
        hook = getattr(loaded.plugin, "alphintra_market_data_sources", None)
        if hook is not None and context.has("marketdata:publish"):
            answer = self._call_hook(active, hook)
            if not isinstance(answer, list) or not all(isinstance(s, MarketDataSource) for s in answer):
                raise PluginCallFailed(ref.plugin_id, "alphintra_market_data_sources must answer a list "
                                                      "of plugins.sdk.MarketDataSource")
            sources = tuple(answer)
        active = dataclasses.replace(active, extensions=extensions, sources=sources)
        if call_activated:
            self._call_lifecycle(active, "alphintra_activated", strict=True)
        return active

    def _call_hook(self, active: ActivePlugin, hook: Callable[..., Any]) -> Any:
        def run() -> Any:
            token = bind_context(active.context)
            try:
                return hook(context=active.context)
            finally:
                unbind_context(token)
        try:
            return self.calls.call(active.plugin_id, run)
        except PluginFailed as exc:
            raise PluginCallFailed(active.plugin_id, exc.message.split(": ", 1)[-1]) from None

    def _call_lifecycle(self, active: ActivePlugin, name: str, strict: bool) -> None:
        hook = getattr(active.plugin, name, None)
        if hook is None:
            return
        try:
            self._call_hook(active, hook)
        except PluginCallFailed:
            if strict:
                raise
            log.error("plugin lifecycle hook failed", extra={"plugin": active.plugin_id, "hook": name})

    def _deactivated(self, active: ActivePlugin) -> None:
        self._call_lifecycle(active, "alphintra_deactivated", strict=False)

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
                                                _secret_context(tenant_id, ref.plugin_id)))
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
        sealed = (self.secrets.seal(json.dumps(secrets).encode(), _secret_context(tenant_id, ref.plugin_id))
                  if secrets else None)
        return plain, sealed, sorted(secrets)

    def _open_config(self, tenant_id: str, row: PluginInstallation) -> dict[str, Any]:
        config = copy.deepcopy(dict(row.config))
        if row.sealed_secrets:
            _merge_secrets(config, json.loads(self.secrets.open(
                row.sealed_secrets, _secret_context(tenant_id, row.plugin_id))))
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


def _ref(plugin: Plugin, row: PluginVersion) -> VersionRef:
    return VersionRef(plugin_id=plugin.id, plugin_name=plugin.name, version_id=row.id, version=row.version,
                      manifest=dict(row.manifest), wheel=row.wheel, wheel_sha256=row.wheel_sha256,
                      signature=row.signature, public_key=row.public_key)


def _copy_row(row: PluginInstallation, **changes: Any) -> PluginInstallation:
    data = row.model_dump()
    data.update(changes)
    return PluginInstallation(**data)


def _secret_context(tenant_id: str, plugin_id: str) -> str:
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
                        venues: VenueDirectory | None = None) -> Installations:
    """Construct the service; nothing is loaded or written until it is used. Wheels unpack under
    the system temporary directory, each process into its own private directory."""
    import tempfile
    from pathlib import Path

    loader = WheelLoader(Path(tempfile.gettempdir()) / "alphintra-plugins")
    return Installations(db, bus, secrets, audit, loader, Meter(db), PluginCalls(timeout_s=5.0),
                         settings.max_page_size, venues=venues)
