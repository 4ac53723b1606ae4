"""The federated schema: one subgraph SDL for every tenant, so a supergraph composed once can
route any tenant's plugin fields (issue 13).

`_service { sdl }` answers the same text to every caller: the core schema (as strawberry prints
it, federation directives included) followed by the types and root fields of every plugin a
shared supergraph may route to. That is, per plugin, its latest APPROVED version (by
publication) whose gateway range admits this gateway, of plugins that are neither PRIVATE (they
serve their vendor's tenant alone) nor delisted. A plugin's SDL is the one stored on the version
at publication (`PluginVersion.sdl`); a version published before SDLs were stored falls back to
what an installed worker of that version reported in this process, and is left out while none
runs. Plugin root fields are nullable, as in tenants' schemas, so a field a tenant has not
installed can answer null with PLUGIN_NOT_INSTALLED (gateway/http/graphql.py) while the rest of
the operation runs.

Plugins are composed with the tenants' composer (schema/tenant.py), in the order they first had
an approved version: one whose types or root fields collide with an earlier one's (or the
core's), or whose SDL does not build, is left out of the federated schema and logged; the
plugins already in keep their names.

The result (a `ComposedSchema` the HTTP endpoint validates against, and its SDL) is rebuilt only
when the approved set changes: publication events on the bus mark it stale, `_service` checks
the set every time (one query over the approved versions; a version's manifest is parsed
and its SDL read once), and the endpoint at most every `max_age_s`. Introspection per tenant is
untouched: a tenant's schema still holds only what it installed.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from graphql import (
    GraphQLObjectType,
    GraphQLSchema,
    build_ast_schema,
    is_specified_scalar_type,
    parse,
    print_type,
)
from sqlmodel import col, select
from strawberry.printer import print_schema

from gateway.events import Event
from gateway.marketplace.errors import PluginCallFailed
from gateway.marketplace.install import CHANGED_TOPIC
from gateway.marketplace.install_models import PluginInstallation
from gateway.marketplace.models import Plugin, PluginVersion, Tier, VersionStatus
from gateway.marketplace.publishing import DELISTED_TOPIC, VERSIONS_TOPIC
from gateway.marketplace.tenant_plugins import ComposedSchema, Composer, PluginSchema, SchemaConflict
from marketplace.manifest import is_compatible, parse_manifest

if TYPE_CHECKING:
    from gateway.runtime import Runtime

log = logging.getLogger(__name__)

ROOTS = ("query", "mutation", "subscription")
SCHEMA_HOOK = "alphintra_schema_extensions"


@dataclass(frozen=True)
class Contribution:
    """One plugin's part of the federated schema: the version chosen and its SDL."""

    plugin_id: str
    version_id: str
    version: str
    sdl: str | None  # None: unknown (published before SDLs were stored, installed nowhere here)


@dataclass(frozen=True)
class FederatedState:
    fingerprint: tuple[tuple[str, str, str | None], ...]
    schema: ComposedSchema
    sdl: str
    included: tuple[Contribution, ...]
    left_out: dict[str, str]  # plugin id -> why
    legacy: bool  # some SDL came from (or waits for) an installed worker
    checked_at: float = field(default_factory=time.monotonic)


class FederatedSchema:
    """The federated schema of one runtime (one app): built on demand, rebuilt on change."""

    topics = (VERSIONS_TOPIC, DELISTED_TOPIC, CHANGED_TOPIC)

    def __init__(self, runtime: Runtime, core: Any, composer: Composer, *, max_age_s: float = 60.0) -> None:
        self.runtime = runtime
        self.core = core  # the strawberry core schema the app serves
        self.composer = composer
        self.max_age_s = max_age_s
        self._state: FederatedState | None = None
        self._stale = True
        self._lock = threading.Lock()
        self._sdls: dict[str, str] = {}  # version id -> stored SDL (set at publication, kept)
        self._runs: dict[str, bool] = {}  # version id -> this gateway is in its manifest's range
        self._core_sdl: str | None = None
        self._generation = 0

    # What the app wires: the endpoint's hook and the bus listener.
    def current(self, refresh: bool = False) -> ComposedSchema:
        """The federated schema; `refresh` checks the approved set now (else at most every
        `max_age_s`, or after a publication event)."""
        return self.state(refresh).schema

    def sdl(self) -> str:
        """What `_service { sdl }` answers, for every caller alike."""
        return self.state(refresh=True).sdl

    def on_event(self, event: Event) -> None:
        """A version was published, reviewed or delisted (or, for SDLs that come from installed
        workers, an installation changed): rebuild at the next read."""
        state = self._state
        if event.topic == CHANGED_TOPIC and state is not None and not state.legacy:
            return
        self._stale = True

    def state(self, refresh: bool = False) -> FederatedState:
        state = self._state
        if (state is not None and not refresh and not self._stale
                and time.monotonic() - state.checked_at < self.max_age_s):
            return state
        with self._lock:
            self._stale = False  # an event from here on marks the next read stale again
            contributions = self._contributions()
            fingerprint = tuple((c.plugin_id, c.version_id, _digest(c.sdl)) for c in contributions)
            state = self._state
            if state is not None and state.fingerprint == fingerprint:
                state = FederatedState(state.fingerprint, state.schema, state.sdl, state.included,
                                       state.left_out, state.legacy)
            else:
                state = self._build(contributions, fingerprint)
            self._state = state
            return state

    # Reading the marketplace.
    def _contributions(self) -> list[Contribution]:
        """Per plugin, its latest approved version this gateway can run, in the order plugins
        first had an approved version."""
        running = self.runtime.marketplace.gateway_version()
        with self.runtime.db.system_session() as session:
            rows = session.exec(
                select(PluginVersion.id, PluginVersion.plugin_id, PluginVersion.version,
                       PluginVersion.manifest, PluginVersion.created_at, PluginVersion.reviewed_at,
                       PluginVersion.published_at)
                .join(Plugin, col(Plugin.id) == col(PluginVersion.plugin_id))
                .where(PluginVersion.status == VersionStatus.APPROVED.value,
                       Plugin.tier != Tier.PRIVATE.value, col(Plugin.delisted_at).is_(None))).all()
        first_approved: dict[str, datetime] = {}  # plugin -> when it first had an approved version
        latest: dict[str, Any] = {}  # plugin -> its newest approved version this gateway runs
        for row in rows:
            approved_at = row.reviewed_at or row.published_at
            if row.plugin_id not in first_approved or approved_at < first_approved[row.plugin_id]:
                first_approved[row.plugin_id] = approved_at
            newest = latest.get(row.plugin_id)
            if ((newest is None or (row.created_at, row.id) > (newest.created_at, newest.id))
                    and self._runs_here(row.id, row.manifest, running)):
                latest[row.plugin_id] = row
        chosen = sorted((row for row in latest.values() if SCHEMA_HOOK in (row.manifest.get("hooks") or ())),
                        key=lambda row: (first_approved[row.plugin_id], row.plugin_id))
        sdls = self._stored_sdls([row.id for row in chosen])
        return [Contribution(row.plugin_id, row.id, row.version,
                             sdls.get(row.id) or self._installed_sdl(row.plugin_id, row.id))
                for row in chosen]

    def _runs_here(self, version_id: str, manifest: dict[str, Any], running: str) -> bool:
        """Whether this gateway may install the version (remembered: parsing costs ~1 ms)."""
        found = self._runs.get(version_id)
        if found is None:
            try:
                found = is_compatible(parse_manifest(manifest), running)
            except Exception:  # a stored manifest that no longer parses: not routable
                found = False
            self._runs[version_id] = found
        return found

    def _stored_sdls(self, version_ids: Sequence[str]) -> dict[str, str | None]:
        """The SDL stored on each version at publication (read once per version that has one)."""
        wanted = [v for v in version_ids if v not in self._sdls]
        column = getattr(PluginVersion, "sdl", None)  # versions from before the column: none
        if wanted and column is not None:
            with self.runtime.db.system_session() as session:
                for version_id, sdl in session.exec(
                        select(PluginVersion.id, column).where(col(PluginVersion.id).in_(wanted))).all():
                    if sdl:
                        self._sdls[version_id] = sdl
        return {v: self._sdls.get(v) for v in version_ids}

    def _installed_sdl(self, plugin_id: str, version_id: str) -> str | None:
        """For a version stored without its SDL: what a running worker of it reported."""
        with self.runtime.db.system_session() as session:
            tenants = sorted(set(session.exec(select(PluginInstallation.tenant_id).where(
                PluginInstallation.plugin_id == plugin_id,
                PluginInstallation.version_id == version_id)).all()))
        for tenant_id in tenants:
            view = self.runtime.marketplace.view(tenant_id)
            active = view.by_id.get(plugin_id) if view is not None else None
            if active is not None and active.version_id == version_id and active.schema is not None:
                return active.schema.sdl
        return None

    # Composing.
    def _build(self, contributions: list[Contribution],
               fingerprint: tuple[tuple[str, str, str | None], ...]) -> FederatedState:
        left_out: dict[str, str] = {}
        accepted = []
        for c in contributions:
            if c.sdl is None:
                left_out[c.plugin_id] = (f"{c.version} was published before SDLs were stored "
                                         "and runs for no tenant here")
            else:
                accepted.append(c)
        composed: ComposedSchema | None = None
        while accepted:
            try:
                composed = self.composer([(c.plugin_id, PluginSchema(c.sdl or "", {})) for c in accepted],
                                         self.runtime.marketplace)
                break
            except (SchemaConflict, PluginCallFailed) as exc:
                ids = [c.plugin_id for c in accepted]
                blamed = exc.details.get("plugin")
                blamed = blamed if blamed in ids else ids[-1]
                left_out[blamed] = exc.message
                accepted = [c for c in accepted if c.plugin_id != blamed]
        for plugin_id, reason in left_out.items():
            log.warning("plugin left out of the federated schema: %s", reason,
                        extra={"plugin": plugin_id})
        core_gql: GraphQLSchema = self.core._schema
        self._generation += 1
        key = f"federated:{hashlib.sha256(repr(fingerprint).encode()).hexdigest()}.{self._generation}"
        if composed is None:
            schema = ComposedSchema(self.core, core_gql, {}, key=key, content="federated")
        else:
            schema = ComposedSchema(composed.schema, composed.gql, dict(composed.root_fields),
                                    composed.execution_context_class, key=key, content="federated")
        sdl = self._print(schema, accepted, core_gql)
        legacy = any(not self._sdls.get(c.version_id) for c in contributions)
        return FederatedState(fingerprint, schema, sdl, tuple(accepted), left_out, legacy)

    def core_sdl(self) -> str:
        if self._core_sdl is None:
            self._core_sdl = print_schema(self.core)
        return self._core_sdl

    def _print(self, schema: ComposedSchema, accepted: Sequence[Contribution], core: GraphQLSchema) -> str:
        """The core's SDL, then each plugin's types (its own SDL's order; scalars the core
        defines are the core's), then one `extend type` per root with the plugins' fields."""
        blocks = [self.core_sdl().rstrip("\n")]
        for c in accepted:
            own = build_ast_schema(parse(c.sdl or ""))
            own_roots = {t.name for t in (own.query_type, own.mutation_type, own.subscription_type) if t}
            for name, named in own.type_map.items():
                if (name.startswith("__") or name in own_roots or is_specified_scalar_type(named)
                        or name in core.type_map):
                    continue
                blocks.append(print_type(named))
        for root in ROOTS:
            root_type = getattr(schema.gql, f"{root}_type")
            if root_type is None:
                continue
            fields = {name: f for name, f in root_type.fields.items() if (root, name) in schema.root_fields}
            if fields:
                blocks.append("extend " + print_type(GraphQLObjectType(root_type.name, fields)))
        return "\n\n".join(blocks) + "\n"


def _digest(sdl: str | None) -> str | None:
    return hashlib.sha256(sdl.encode()).hexdigest() if sdl is not None else None


# The app binds its runtime's federated schema; `_service` finds it through the request's
# context (the same for the core schema and every tenant's, which share the core's fields).
# Several apps may share one runtime (a second app for a while): each binding is held weakly,
# and the newest still alive answers, so an app gone does not unbind the one still serving.
_BOUND: dict[int, list[weakref.ref[FederatedSchema]]] = {}
_BOUND_LOCK = threading.Lock()


def bind(runtime: Runtime, core: Any, composer: Composer) -> FederatedSchema:
    """The federated schema of `runtime`, served by `_service` for every request of it."""
    federated = FederatedSchema(runtime, core, composer)
    with _BOUND_LOCK:
        for key in [k for k, refs in _BOUND.items() if all(r() is None for r in refs)]:
            del _BOUND[key]  # runtimes whose apps are all gone
        _BOUND.setdefault(id(runtime), []).append(weakref.ref(federated))
    return federated


def bound(runtime: Runtime) -> FederatedSchema | None:
    """The federated schema the newest live app bound for `runtime`, if any."""
    with _BOUND_LOCK:
        refs = list(_BOUND.get(id(runtime), ()))
    for ref in reversed(refs):
        federated = ref()
        if federated is not None and federated.runtime is runtime:
            return federated
    return None


def service_sdl(context: Any, fallback: Callable[[], str]) -> str:
    """`_service { sdl }`: the bound runtime's federated SDL; the core's alone (`fallback`)
    for a schema served without the app (tests executing it directly)."""
    runtime = getattr(context, "runtime", None)
    federated = bound(runtime) if runtime is not None else None
    return federated.sdl() if federated is not None else fallback()
