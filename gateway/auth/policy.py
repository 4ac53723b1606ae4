"""Authorisation with casbin: the model file sits beside this module, the policy lines in the
`casbin_rule` table. A change made through `AccessPolicy` is written to the database and
applied at once in this process; other processes reload when the bus tells them
(`policy.changed`), so no restart is ever needed.

Decisions (`allowed`) and role look-ups (`roles`) are cached per argument tuple. The cache is
one dict per policy generation: every change to the enforcer's policy (a reload, the fingerprint
moving, `grant`/`revoke`) installs a new, empty dict *after* the enforcer holds the new policy,
so a decision computed against the old policy can only land in the discarded dict and no answer
is older than the policy the enforcer holds."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable
from importlib import resources
from typing import Any

import casbin
from casbin import persist
from sqlmodel import delete, func, select

from gateway.auth.models import CasbinRule
from gateway.db import ALL_TENANTS, Database
from gateway.errors import InvalidInput

ROLES: tuple[str, ...] = ("admin", "trader", "compliance_officer", "viewer", "vendor", "router")
PLATFORM_ADMIN = "platform_admin"
VENDOR = "vendor"
# Reads the federated SDL (`_service`) when introspection is off: the supergraph's composer.
ROUTER = "router"
# Roles a tenant admin may not grant: only the platform (the CLI) or a platform administrator.
# The router's SDL holds every approved plugin's fields, not only the tenant's.
PLATFORM_GRANTED_ROLES: frozenset[str] = frozenset({VENDOR, ROUTER})
POLICY_TOPIC = "policy.changed"
# Credentials that stopped being valid (a key revoked, a user deactivated): every replica closes
# the WebSockets they opened. Payload: tenantId and apiKeyId or userId, and the reason's code;
# with neither, the tenant's own state changed (its trusted-documents mode): every replica forgets
# its cached credential look-ups for that tenant (gateway/auth/cache.py), no socket closes.
CREDENTIALS_TOPIC = "credentials.revoked"
# Roles granted only with a second person: a platform administrator, or a tenant admin's request
# that another, independent, tenant admin approves (gateway/tenancy/service.py).
APPROVAL_ROLES: frozenset[str] = frozenset({"compliance_officer"})


def subject(user_id: str) -> str:
    return f"user:{user_id}"


def role_subject(role: str) -> str:
    return f"role:{role}"


class SQLModelAdapter(persist.Adapter):
    """Casbin adapter over the `casbin_rule` table, in system sessions (policy spans tenants)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def load_policy(self, model: Any) -> None:
        with self._db.system_session() as session:
            for rule in session.exec(select(CasbinRule).order_by(CasbinRule.id)):
                values = [rule.ptype, rule.v0, rule.v1, rule.v2, rule.v3, rule.v4, rule.v5]
                while values and values[-1] == "":
                    values.pop()
                persist.load_policy_line(", ".join(values), model)

    def save_policy(self, model: Any) -> bool:
        with self._db.system_transaction() as session:
            session.exec(delete(CasbinRule))
            for sec in ("p", "g"):
                for ptype, ast in model.model.get(sec, {}).items():
                    for rule in ast.policy:
                        session.add(_row(ptype, rule))
        return True

    def add_policy(self, sec: str, ptype: str, rule: list[str]) -> None:
        with self._db.system_transaction() as session:
            session.add(_row(ptype, rule))

    def add_policies(self, sec: str, ptype: str, rules: Iterable[list[str]]) -> None:
        with self._db.system_transaction() as session:
            session.add_all([_row(ptype, r) for r in rules])

    def remove_policy(self, sec: str, ptype: str, rule: list[str]) -> bool:
        return self.remove_filtered_policy(sec, ptype, 0, *rule)

    def remove_policies(self, sec: str, ptype: str, rules: Iterable[list[str]]) -> bool:
        return all([self.remove_policy(sec, ptype, r) for r in rules])

    def remove_filtered_policy(
        self, sec: str, ptype: str, field_index: int, *field_values: str
    ) -> bool:
        stmt = delete(CasbinRule).where(CasbinRule.ptype == ptype)
        for offset, value in enumerate(field_values):
            if value:
                column = getattr(CasbinRule, f"v{field_index + offset}")
                stmt = stmt.where(column == value)
        with self._db.system_transaction() as session:
            result = session.exec(stmt)
        return bool(result.rowcount)


def _row(ptype: str, rule: list[str]) -> CasbinRule:
    values = {f"v{i}": v for i, v in enumerate(rule)}
    return CasbinRule(ptype=ptype, **values)


def _remember(cache: dict[Any, Any], key: Any, value: Any, size: int) -> None:
    """Bounded insert: the oldest entry goes first (dicts keep insertion order)."""
    if len(cache) >= size:
        # Another thread may insert meanwhile; losing this eviction race only overshoots by one.
        with contextlib.suppress(RuntimeError, StopIteration, KeyError):
            del cache[next(iter(cache))]
    cache[key] = value


class AccessPolicy:
    """Who may do what, where. `allowed` is on every request's path, so it stays in memory.

    Freshness: a change made here applies at once; one made by another process arrives by the
    bus (`policy.changed`), and, should no bus carry it (the CLI beside an embedded gateway, a
    lost message), a cheap fingerprint of the table is compared at most every
    `refresh_seconds` and the policy reloaded when it moved.
    """

    def __init__(self, db: Database, refresh_seconds: float = 1.0, cache_size: int = 50_000
                 ) -> None:
        model_path = resources.files("gateway.auth").joinpath("rbac_with_domains.conf")
        self._db = db
        self._lock = threading.Lock()
        self._refresh_seconds = refresh_seconds
        self._checked_at = time.monotonic()
        self._fingerprint = self._read_fingerprint()
        self._enforcer = casbin.SyncedEnforcer(str(model_path), SQLModelAdapter(db))
        self._cache_size = cache_size  # 0: no cache (every call asks casbin)
        # Bumped with each new policy: holders of values derived from it (a cached Principal's
        # roles) compare it to know when to derive them again.
        self.generation = 0
        self._decisions: dict[tuple[str, ...], Any] = {}

    def _policy_moved(self) -> None:
        """The enforcer holds a new policy: answers from here on come from a fresh cache. The
        cache is swapped before the generation moves: a reader that sees the new generation
        reads the new cache (the other order let a Principal carry old roles under it)."""
        self._decisions = {}
        self.generation += 1

    def _read_fingerprint(self) -> tuple[int, int]:
        with self._db.system_session() as session:
            count, top = session.exec(select(func.count(), func.max(CasbinRule.id))).one()
        return int(count), int(top or 0)

    def reload(self) -> None:
        with self._lock:
            self._fingerprint = self._read_fingerprint()
            self._checked_at = time.monotonic()
            self._enforcer.load_policy()
            self._policy_moved()

    def current_generation(self) -> int:
        """The policy generation, after the periodic fingerprint check (a change made by
        another process without a bus)."""
        self._refresh()
        return self.generation

    def generation_nowait(self) -> int | None:
        """The policy generation when it is known without the database: None when the periodic
        fingerprint check is due (the caller then takes a path that may block, which runs it)."""
        if time.monotonic() - self._checked_at >= self._refresh_seconds:
            return None
        return self.generation

    def cached_roles(self, user_id: str, tenant_id: str) -> tuple[str, ...] | None:
        """`roles` from the decision cache alone, never asking casbin or the database (for the
        event loop); None when not cached or the freshness check is due."""
        if self.generation_nowait() is None:
            return None
        found = self._decisions.get(("roles", user_id, tenant_id))
        return tuple(found) if found is not None else None

    def _refresh(self) -> None:
        if time.monotonic() - self._checked_at < self._refresh_seconds:
            return
        with self._lock:
            if time.monotonic() - self._checked_at < self._refresh_seconds:
                return
            self._checked_at = time.monotonic()
            fingerprint = self._read_fingerprint()
            if fingerprint == self._fingerprint:
                return
            self._fingerprint = fingerprint
            self._enforcer.load_policy()
            self._policy_moved()

    def allowed(self, user_id: str, tenant_id: str, obj: str, act: str) -> bool:
        self._refresh()
        decisions = self._decisions  # taken before asking casbin: see the module's docstring
        key = ("allowed", user_id, tenant_id, obj, act)
        found = decisions.get(key)
        if found is not None:
            return bool(found)
        allowed = bool(self._enforcer.enforce(subject(user_id), tenant_id, obj, act))
        if self._cache_size:
            _remember(decisions, key, allowed, self._cache_size)
        return allowed

    def is_platform_admin(self, user_id: str) -> bool:
        return self.allowed(user_id, ALL_TENANTS, "platform", "admin")

    def roles(self, user_id: str, tenant_id: str) -> list[str]:
        self._refresh()
        decisions = self._decisions
        key = ("roles", user_id, tenant_id)
        found = decisions.get(key)
        if found is None:
            held = set(self._enforcer.get_roles_for_user_in_domain(subject(user_id), tenant_id))
            held |= set(self._enforcer.get_roles_for_user_in_domain(subject(user_id), ALL_TENANTS))
            found = tuple(sorted(r.removeprefix("role:") for r in held))
            if self._cache_size:
                _remember(decisions, key, found, self._cache_size)
        return list(found)

    def grant_rows(self, user_id: str, roles: list[str] | tuple[str, ...], tenant_id: str
                   ) -> list[CasbinRule]:
        """Grouping rows to add in the caller's own transaction; `reload()` after commit."""
        for role in roles:
            self.check_role(role, tenant_id)
        return [_row("g", [subject(user_id), role_subject(r), tenant_id]) for r in dict.fromkeys(roles)]

    def grant(self, user_id: str, role: str, tenant_id: str) -> bool:
        self.check_role(role, tenant_id)
        with self._lock:
            added = self._enforcer.add_role_for_user_in_domain(
                subject(user_id), role_subject(role), tenant_id)
            self._policy_moved()
        return bool(added)

    def revoke(self, user_id: str, role: str, tenant_id: str) -> bool:
        self.check_role(role, tenant_id)
        with self._lock:
            removed = self._enforcer.delete_roles_for_user_in_domain(
                subject(user_id), role_subject(role), tenant_id)
            self._policy_moved()
        return bool(removed)

    @staticmethod
    def check_role(role: str, tenant_id: str) -> None:
        if role == PLATFORM_ADMIN:
            if tenant_id != ALL_TENANTS:
                raise InvalidInput("platform_admin is granted platform-wide only",
                                   code="ROLE_INVALID")
        elif role not in ROLES:
            raise InvalidInput(f"unknown role {role!r}; one of {', '.join(ROLES)}",
                               code="ROLE_INVALID")
