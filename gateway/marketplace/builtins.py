"""A tenant's switches for the built-in plugins: a tenant may turn off a built-in provider it
does not want serving it (the market twin, once it installed real data; the offline LLM), and
the per-tenant plugin view leaves that plugin's providers out of its requests and jobs. The
platform's compliance rule packs cannot be switched off (BUILTIN_REQUIRED): a tenant only ever
adds restrictions. Switches are read through a short cache, so every replica sees a change
within `CACHE_S`."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from sqlmodel import select

from gateway.audit import AuditEntry, AuditTrail
from gateway.db import Database, utcnow
from gateway.errors import InvalidInput, NotFound
from gateway.marketplace.install_models import TenantBuiltinPlugin
from plugins.host import PluginHost

CACHE_S = 2.0
REQUIRED_HOOKS = frozenset({"alphintra_compliance_rule_packs"})


@dataclass(frozen=True)
class BuiltinPlugin:
    name: str
    hooks: tuple[str, ...]
    enabled: bool
    required: bool  # the platform's: cannot be switched off


class BuiltinSwitches:
    def __init__(self, db: Database, host: PluginHost, audit: AuditTrail) -> None:
        self.db = db
        self.host = host
        self.audit = audit
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}
        self._lock = threading.Lock()

    def _hooks(self) -> dict[str, tuple[str, ...]]:
        manager = self.host.manager
        return {name: tuple(sorted(c.name for c in manager.get_hookcallers(plugin) or []))
                for name, plugin in manager.list_name_plugin()}

    def disabled(self, tenant_id: str) -> frozenset[str]:
        now = time.monotonic()
        with self._lock:
            found = self._cache.get(tenant_id)
        if found is not None and now - found[0] < CACHE_S:
            return found[1]
        with self.db.tenant_session(tenant_id) as session:
            off = frozenset(r.plugin for r in session.exec(
                select(TenantBuiltinPlugin).where(TenantBuiltinPlugin.enabled == False)))  # noqa: E712
        with self._lock:
            self._cache[tenant_id] = (now, off)
        return off

    def list(self, tenant_id: str) -> list[BuiltinPlugin]:
        off = self.disabled(tenant_id)
        return [BuiltinPlugin(name, hooks, name not in off, bool(REQUIRED_HOOKS & set(hooks)))
                for name, hooks in self._hooks().items()]

    def switch(self, tenant_id: str, actor: str | None, name: str, enabled: bool) -> BuiltinPlugin:
        hooks = self._hooks()
        if name not in hooks:
            raise NotFound(f"no built-in plugin {name!r}", code="BUILTIN_NOT_FOUND")
        if not enabled and REQUIRED_HOOKS & set(hooks[name]):
            raise InvalidInput(f"{name} is the platform's compliance: it cannot be switched off",
                               code="BUILTIN_REQUIRED")
        with self.db.tenant_session(tenant_id) as session:
            row = session.exec(select(TenantBuiltinPlugin).where(TenantBuiltinPlugin.plugin == name)).first()
            if row is None:
                row = TenantBuiltinPlugin(tenant_id=tenant_id, plugin=name)
            row.enabled, row.updated_by, row.updated_at = enabled, actor, utcnow()
            session.add(row)
            self.audit.append(session, tenant_id, [AuditEntry(
                kind="plugin.builtin_switched", subject=name, actor=actor, payload={"enabled": enabled})])
            session.commit()
        with self._lock:
            self._cache.pop(tenant_id, None)
        return BuiltinPlugin(name, hooks[name], enabled, False)
