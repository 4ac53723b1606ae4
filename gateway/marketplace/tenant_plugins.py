"""Per-tenant plugin views and schemas: immutable values swapped whole.

A tenant's view is the plugins it installed (`ActivePlugin`: its sandboxed worker, what the
plugin offers as read at activation: hooks, SDL, theme, flags, provider proxies), and the schema
composed from the core and their SDL. Views live in one dict keyed by tenant id; a change builds a
new view (schema composed first) and replaces the entry with one assignment, so a request that
picked the old view finishes on it. Composed schemas are cached by the hash of the
installed set's SDL (the plugin ids and what each worker reported), so tenants whose plugins
report the same SDL share one schema object: the schema holds no tenant's data (its plugin
fields forward to the calling tenant's own worker). Each composition gets a key never used by
another schema object (content hash plus a generation), so caches keyed by it (the HTTP
document cache) never cross objects.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import DomainError
from plugins.sdk import Theme

# The service the composed schema forwards plugin fields to (Installations): plugin_graphql,
# aplugin_graphql and plugin_subscribe.
Forwarder = Any


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
    key: str = "core"  # unique to this object: `content` plus a generation
    content: str = "core"  # the installed set's hash (same plugins, wheels and configurations)


@dataclass(frozen=True)
class PluginSchema:
    """What a plugin's worker reports of its GraphQL: its SDL and its root fields."""

    sdl: str
    roots: dict[str, tuple[str, ...]]


@dataclass(frozen=True, eq=False)
class ActivePlugin:
    plugin_id: str
    version: str
    version_id: str
    sha256: str
    managed: Any  # gateway.marketplace.sandbox.supervisor.ManagedPlugin: the tenant's worker
    context_tenant: str
    hooks: frozenset[str] = frozenset()  # declared, implemented and granted: all that is called
    schema: PluginSchema | None = None
    theme: Theme | None = None
    flags: dict[str, bool] = field(default_factory=dict)
    providers: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # hook -> proxies
    venues: tuple[Any, ...] = ()  # plugins.sdk.VenueDefinition its connectors bring


@dataclass(frozen=True, eq=False)
class TenantView:
    tenant_id: str
    plugins: tuple[ActivePlugin, ...]  # install order
    schema: ComposedSchema | None = None
    by_id: dict[str, ActivePlugin] = field(default_factory=dict)

    @staticmethod
    def of(tenant_id: str, plugins: Sequence[ActivePlugin], schema: ComposedSchema | None) -> TenantView:
        return TenantView(tenant_id, tuple(plugins), schema, {p.plugin_id: p for p in plugins})


def config_digest(config: Any, secret: bytes) -> str:
    """A keyed digest of a plugin's effective configuration (secrets included): equal configs
    digest equal; the key (process-local) keeps a low-entropy secret from being guessed back."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hmac.new(secret, text.encode(), hashlib.sha256).hexdigest()


def set_hash(plugins: Sequence[ActivePlugin]) -> str:
    """The installed set's schema identity: the same plugins reporting the same SDL."""
    text = "\n".join(sorted(f"{p.plugin_id}@{hashlib.sha256(p.schema.sdl.encode()).hexdigest()}"
                            for p in plugins if p.schema is not None))
    return hashlib.sha256(text.encode()).hexdigest()


Composer = Callable[[Sequence[tuple[str, PluginSchema]], Forwarder], ComposedSchema]


class SchemaCache:
    """Composed schemas by installed-set hash. Compositions run one at a time (one lock), so
    two tenants installing the same set at once compose it once; reads of the request path
    never take this lock (they read the tenant's view)."""

    def __init__(self, composer: Composer, forwarder: Forwarder) -> None:
        self.composer = composer
        self.forwarder = forwarder
        self._schemas: dict[str, ComposedSchema] = {}
        self._lock = threading.Lock()
        self._nonce = os.urandom(4).hex()  # two caches in one process never share a key
        self._generations = itertools.count(1)

    def for_plugins(self, plugins: Sequence[ActivePlugin]) -> ComposedSchema | None:
        if not any(p.schema for p in plugins):
            return None  # the core schema serves
        content = set_hash(plugins)
        with self._lock:
            found = self._schemas.get(content)
            if found is not None:
                return found
            composed = self.composer([(p.plugin_id, p.schema) for p in plugins if p.schema is not None],
                                     self.forwarder)
            key = f"{content}.{self._nonce}.{next(self._generations)}"
            composed = ComposedSchema(composed.schema, composed.gql, composed.root_fields,
                                      composed.execution_context_class, key, content)
            self._schemas[content] = composed
            return composed

    def check(self, plugins: Sequence[ActivePlugin]) -> None:
        """Compose without keeping (conflicts raise)."""
        self.for_plugins(plugins)

    def forget_unused(self, in_use: set[str]) -> None:
        """Drop schemas whose `key` no view holds."""
        with self._lock:
            for content in [c for c, s in self._schemas.items() if s.key not in in_use]:
                del self._schemas[content]

    def __len__(self) -> int:
        return len(self._schemas)
