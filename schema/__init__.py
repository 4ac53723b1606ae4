"""The GraphQL surface: one module per domain, composed by `build_schema`."""

from schema.compose import build_schema

__all__ = ["build_schema"]
