"""Compose the domain modules into one Apollo Federation 2 subgraph schema."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import strawberry
from graphql import NoSchemaIntrospectionCustomRule
from strawberry.extensions import AddValidationRules, MaxTokensLimiter, ParserCache, ValidationCache
from strawberry.tools import merge_types

from gateway.http.limits import limits_rule
from gateway.settings import Settings
from plugins.sdk import SchemaExtension
from schema import (
    audit,
    defi,
    defi_lending,
    federated,
    fx,
    jobs,
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
from schema.errors import DomainErrorCodes

DOMAINS = (tenancy, vendor_role, jobs, markets, marketdata, fx, patterns, federated, quantum, audit,
           marketplace_publishing, orders, marketplace, defi, defi_lending, reports,
           strategies, strategy_ai)
FEDERATION_VERSION = "2.7"


def build_schema(settings: Settings, extensions: Sequence[SchemaExtension] = ()
                 ) -> strawberry.federation.Schema:
    """The core schema, or with `extensions` a tenant's (core + its installed plugins'
    SchemaExtensions; schema/tenant.py checks their names don't collide before calling)."""

    def merged(name: str) -> Any:
        parts = tuple(getattr(m, name) for m in DOMAINS if hasattr(m, name))
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
    return strawberry.federation.Schema(
        query=merged("Query"),
        mutation=merged("Mutation"),
        subscription=merged("Subscription"),
        federation_version=FEDERATION_VERSION,
        extensions=schema_extensions,
        types=[t for e in extensions for t in e.types],
    )
