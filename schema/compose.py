"""Compose the domain modules into one Apollo Federation 2 subgraph schema."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache, partial
from typing import Any

import strawberry
from graphql import NoSchemaIntrospectionCustomRule
from strawberry.extensions import AddValidationRules, MaxTokensLimiter, ParserCache, ValidationCache
from strawberry.federation.schema import FederationAny
from strawberry.printer import print_schema
from strawberry.tools import merge_types

from gateway.http.limits import limits_rule
from gateway.settings import Settings
from plugins.sdk import SchemaExtension
from schema import (
    audit,
    data_files,
    defi,
    defi_lending,
    desk,
    federated,
    fx,
    jobs,
    market_state,
    marketdata,
    marketplace,
    marketplace_publishing,
    markets,
    orders,
    patterns,
    quantum,
    reports,
    strategies,
    strategy_ai,
    tenancy,
    vendor_role,
)
from schema.decimals import OVERRIDES as DECIMAL_OVERRIDES
from schema.errors import DomainErrorCodes
from schema.federation import service_sdl

DOMAINS = (tenancy, vendor_role, jobs, markets, marketdata, market_state, fx, patterns, federated,
           quantum, audit, marketplace_publishing, orders, desk, marketplace, data_files, defi,
           defi_lending, reports, strategies, strategy_ai)
FEDERATION_VERSION = "2.7"


@strawberry.type(name="_Service")
class Service:
    sdl: str


def _service_query(core_sdl: Callable[[], str], introspection: bool) -> type:
    """Federation's `_service` field, answering the federated SDL (schema/federation.py: the
    core plus every approved plugin's fields, the same for every caller) instead of strawberry's
    print of this schema object, which a tenant's plugins would never reach. With introspection
    off it is the schema in full, so only the supergraph's composer reads it (role router, or a
    platform administrator: casbin object "schema", "read")."""

    @strawberry.type
    class ServiceQuery:
        @strawberry.field(name="_service")
        def service(self, info: strawberry.Info) -> Service:
            if not introspection:
                info.context.require("schema", "read")
            return Service(sdl=service_sdl(info.context, core_sdl))

    return ServiceQuery


class FederatedSchema(strawberry.federation.Schema):
    """strawberry's federation schema, its `_entities` given copies of the representations:
    strawberry pops `__typename` out of each one in place, so a second `_entities` field on the
    same variable would find it gone."""

    # strawberry reads this signature to build the `_entities` field: its own types, not Any
    def entities_resolver(self, info: strawberry.Info, representations: list[FederationAny]
                          ) -> list[FederationAny]:
        return super().entities_resolver(info, [dict(r) if isinstance(r, dict) else r
                                                for r in representations])


def build_schema(settings: Settings, extensions: Sequence[SchemaExtension] = ()
                 ) -> strawberry.federation.Schema:
    """The core schema, or with `extensions` a tenant's (core + its installed plugins'
    SchemaExtensions; schema/tenant.py checks their names don't collide before calling)."""

    built: list[strawberry.federation.Schema] = []
    core_sdl = cache(lambda: print_schema(built[0]))

    def merged(name: str) -> Any:
        parts = tuple(getattr(m, name) for m in DOMAINS if hasattr(m, name))
        if name == "Query":
            parts += (_service_query(core_sdl, settings.introspection),)
        parts += tuple(part for e in extensions if (part := getattr(e, name.lower())) is not None)
        return merge_types(name, parts) if parts else None

    rules: list[Any] = [limits_rule(settings.max_depth, settings.max_aliases, settings.max_cost,
                                    settings.max_page_size)]
    if not settings.introspection:
        rules.append(NoSchemaIntrospectionCustomRule)
    # These extensions guard the WebSocket path, which runs through strawberry; the HTTP path
    # applies the same rules in gateway/http/graphql.py.
    schema_extensions = [
        partial(MaxTokensLimiter, max_token_count=settings.max_tokens),
        partial(ParserCache, maxsize=settings.parse_cache_size),
        partial(ValidationCache, maxsize=settings.validation_cache_size),
        partial(AddValidationRules, rules),
        DomainErrorCodes,
    ]
    schema = FederatedSchema(
        query=merged("Query"),
        mutation=merged("Mutation"),
        subscription=merged("Subscription"),
        federation_version=FEDERATION_VERSION,
        extensions=schema_extensions,
        types=[t for e in extensions for t in e.types],
        scalar_overrides=DECIMAL_OVERRIDES,
    )
    built.append(schema)
    return schema
