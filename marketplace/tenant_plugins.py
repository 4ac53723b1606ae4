"""Per-tenant plugin views and schemas: immutable values swapped whole.

A tenant's view is the built-ins (the runtime's PluginHost, shared) plus the plugins it
installed (`ActivePlugin`: the loaded wheel, the tenant's own context, its schema extensions),
and the schema composed from them. Views live in one dict keyed by tenant id; a change builds a
new view (schema composed first) and replaces the entry with one assignment, so a request that
picked the old view finishes on it. Composed schemas are cached by the hash of the installed set
(plugin id and wheel hash of each), so tenants with the same set share one schema object.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import DomainError
from plugins.sdk import MarketDataSource, PluginContext, SchemaExtension

# guard(plugin_id, resolver, where) -> resolver; where is "query", "mutation", "subscription"
# or "field" (a field of a type the plugin defines).
Guard = Callable[[str, Any, str], Any]


class SchemaConflict(DomainError):
    code = "PLUGIN_SCHEMA_CONFLICT"

    def __init__(self, plugin_id: str, message: str) -> None:
        super().__init__(f"plugin {plugin_id} cannot be added to this tenant's schema: {message}",
                         details={"plugin": plugin_id})


@dataclass(frozen=True, eq=False)
class ComposedSchema:
    """A schema ready to serve: the strawberry schema (for subscriptions), its graphql-core
    schema (for HTTP), and which plugin owns each root field it adds."""

    schema: Any
    gql: Any
    root_fields: dict[tuple[str, str], str]
    execution_context_class: Any = None
    key: str = "core"


@dataclass(frozen=True, eq=False)
class ActivePlugin:
    plugin_id: str
    version: str
    version_id: str
    sha256: str
    plugin: Any  # the imported entry point object
    context: PluginContext
    extensions: tuple[SchemaExtension, ...] = ()
    # Market data sources, when the manifest declared marketdata:publish (else never asked).
    sources: tuple[MarketDataSource, ...] = ()


@dataclass(frozen=True, eq=False)
class TenantView:
    tenant_id: str
    plugins: tuple[ActivePlugin, ...]  # install order
    schema: ComposedSchema | None = None
    by_id: dict[str, ActivePlugin] = field(default_factory=dict)

    @staticmethod
    def of(tenant_id: str, plugins: Sequence[ActivePlugin], schema: ComposedSchema | None) -> TenantView:
        return TenantView(tenant_id, tuple(plugins), schema, {p.plugin_id: p for p in plugins})


def set_hash(plugins: Sequence[ActivePlugin]) -> str:
    """The installed set's identity: the same plugins at the same wheels hash the same."""
    text = "\n".join(sorted(f"{p.plugin_id}@{p.sha256}" for p in plugins))
    return hashlib.sha256(text.encode()).hexdigest()


Composer = Callable[[Sequence[tuple[str, Sequence[SchemaExtension]]], Guard], ComposedSchema]


class SchemaCache:
    """Composed schemas by installed-set hash. Compositions run one at a time (one lock), so
    two tenants installing the same set at once compose it once; reads of the request path
    never take this lock (they read the tenant's view)."""

    def __init__(self, composer: Composer, guard: Guard) -> None:
        self.composer = composer
        self.guard = guard
        self._schemas: dict[str, ComposedSchema] = {}
        self._lock = threading.Lock()

    def for_plugins(self, plugins: Sequence[ActivePlugin]) -> ComposedSchema | None:
        if not any(p.extensions for p in plugins):
            return None  # the core schema serves
        key = set_hash(plugins)
        with self._lock:
            found = self._schemas.get(key)
            if found is not None:
                return found
            composed = self.composer([(p.plugin_id, p.extensions) for p in plugins], self.guard)
            composed = ComposedSchema(composed.schema, composed.gql, composed.root_fields,
                                      composed.execution_context_class, key)
            self._schemas[key] = composed
            return composed

    def check(self, plugins: Sequence[ActivePlugin]) -> None:
        """Compose without keeping (conflicts raise)."""
        self.for_plugins(plugins)

    def forget_unused(self, in_use: set[str]) -> None:
        with self._lock:
            for key in [k for k in self._schemas if k not in in_use]:
                del self._schemas[key]

    def __len__(self) -> int:
        return len(self._schemas)
