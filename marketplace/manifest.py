"""The plugin manifest: its JSON Schema, the parsed form, and the gateway compatibility check.

A manifest is `alphintra_manifest.json` inside the plugin's top-level package (see
marketplace/wheel.py). Example (marketplace/examples/news_sentiment/):

    {"id": "acme.news-sentiment", "name": "News sentiment", "vendor": "Acme Data",
     "version": "1.0.0", "gateway": ">=0.1,<1.0", "category": "data-source",
     "entry_point": "acme_news.plugin",
     "hooks": ["alphintra_market_data_sources"],
     "capabilities": ["marketdata:publish", "network:egress:api.acme.example"],
     "config_schema": {"type": "object", "properties": {"api_key": {"type": "string",
                       "x-secret": true}}},
     "pricing": {"model": "per_call", "amount": "0.002", "currency": "USD"},
     "licence": "Proprietary", "conformance": {"config": {"api_key": "test"}}}

`gateway` is a PEP 440 specifier set ("," is AND); versions themselves are semver. The
optional `conformance` object tells the conformance kit how to exercise the plugin: `config`
(validated against `config_schema`), and for exchange connectors `symbol`, `limit_price` (a
price at which a buy rests), `at` (an instant at which its venue is open), `quantity` and
`currency`. The manifest is public (the catalogue shows it), so `conformance.config` must hold
test values, never a real secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import semver
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from marketplace.errors import ToolkitError

CATEGORIES = ("data-source", "exchange", "white-label", "analytics", "compliance", "llm")
PRICING_MODELS = ("free", "flat", "per_call")
# Capabilities a manifest may declare; `network:egress:<host>` names one host (optional port).
CAPABILITY = (r"^(orders:(submit|read)|marketdata:(publish|read)|fx:publish|compliance:rules"
              r"|schema:extend|branding:theme|llm:complete"
              r"|network:egress:[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:[0-9]{1,5})?)$")
PLUGIN_ID = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$"
ENTRY_POINT = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*(:[A-Za-z_][A-Za-z0-9_]*)?$"

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "name", "vendor", "version", "gateway", "category", "entry_point",
                 "hooks", "capabilities", "config_schema", "pricing", "licence"],
    "properties": {
        "id": {"type": "string", "maxLength": 100, "pattern": PLUGIN_ID},
        "name": {"type": "string", "minLength": 1, "maxLength": 200},
        "vendor": {"type": "string", "minLength": 1, "maxLength": 200},
        "description": {"type": "string", "maxLength": 4000},
        "version": {"type": "string", "maxLength": 64},
        "gateway": {"type": "string", "minLength": 1, "maxLength": 100},
        "category": {"enum": list(CATEGORIES)},
        "entry_point": {"type": "string", "maxLength": 200, "pattern": ENTRY_POINT},
        "hooks": {"type": "array", "minItems": 1, "uniqueItems": True,
                  "items": {"type": "string", "pattern": "^alphintra_[a-z0-9_]+$"}},
        "capabilities": {"type": "array", "uniqueItems": True,
                         "items": {"type": "string", "pattern": CAPABILITY}},
        "config_schema": {"type": "object"},
        "pricing": {
            "type": "object", "additionalProperties": False, "required": ["model"],
            "properties": {
                "model": {"enum": list(PRICING_MODELS)},
                # A decimal string, never a JSON number (a binary float).
                "amount": {"type": "string", "pattern": r"^[0-9]{1,12}(\.[0-9]{1,6})?$"},
                "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
            },
            "if": {"properties": {"model": {"enum": ["flat", "per_call"]}}},
            "then": {"required": ["amount", "currency"]},
        },
        "licence": {"type": "string", "minLength": 1, "maxLength": 200},
        "homepage": {"type": "string", "maxLength": 500},
        "conformance": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "config": {"type": "object"},
                "symbol": {"type": "string", "maxLength": 64},
                "limit_price": {"type": "string", "pattern": r"^[0-9]{1,12}(\.[0-9]{1,8})?$"},
                "at": {"type": "string", "format": "date-time"},
                "quantity": {"type": "string", "pattern": r"^[0-9]{1,12}(\.[0-9]{1,8})?$"},
                "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
            },
        },
    },
}
_VALIDATOR = Draft202012Validator(SCHEMA)


class ManifestInvalid(ToolkitError):
    """`details.errors` lists each problem as {path, message}; paths are JSONPath ($.pricing.model)."""

    code = "MANIFEST_INVALID"


@dataclass(frozen=True)
class Pricing:
    model: str
    amount: Decimal = Decimal(0)
    currency: str | None = None


@dataclass(frozen=True)
class Manifest:
    id: str
    name: str
    vendor: str
    version: str
    gateway: str
    category: str
    entry_point: str
    hooks: tuple[str, ...]
    capabilities: tuple[str, ...]
    config_schema: Mapping[str, Any]
    pricing: Pricing
    licence: str
    description: str = ""
    conformance: Mapping[str, Any] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict)  # exactly what was signed

    @property
    def secret_fields(self) -> tuple[str, ...]:
        """JSONPaths of the configuration fields marked `"x-secret": true`."""
        return tuple(_secret_paths(self.config_schema, "$"))

    @property
    def module(self) -> str:
        return self.entry_point.split(":", 1)[0]

    @property
    def package(self) -> str:
        """The top-level package, where the manifest lives."""
        return self.module.split(".", 1)[0]


def _secret_paths(schema: Any, path: str) -> list[str]:
    if not isinstance(schema, Mapping):
        return []
    found = [path] if schema.get("x-secret") is True else []
    for name, sub in (schema.get("properties") or {}).items():
        found += _secret_paths(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), Mapping):
        found += _secret_paths(schema["items"], f"{path}[*]")
    return found


def _json_path(parts: Any) -> str:
    out = "$"
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _problem(path: str, message: str) -> dict[str, str]:
    return {"path": path, "message": message}


def parse_manifest(data: Any) -> Manifest:
    """Validate `data` (the decoded JSON) and return the Manifest; ManifestInvalid lists every
    problem found, each with its JSON path."""
    if not isinstance(data, Mapping):
        raise ManifestInvalid("the manifest is not a JSON object",
                              details={"errors": [_problem("$", "expected an object")]})
    problems = [_problem(_json_path(e.absolute_path), e.message)
                for e in sorted(_VALIDATOR.iter_errors(data), key=lambda e: list(e.absolute_path))]
    version = data.get("version")
    if isinstance(version, str) and not semver.Version.is_valid(version):
        problems.append(_problem("$.version", f"{version!r} is not a semantic version (1.2.3)"))
    gateway_range = data.get("gateway")
    if isinstance(gateway_range, str):
        try:
            SpecifierSet(gateway_range)
        except InvalidSpecifier:
            problems.append(_problem("$.gateway", f"{gateway_range!r} is not a version range "
                                                  "such as \">=0.1,<1.0\""))
    config_schema = data.get("config_schema")
    if isinstance(config_schema, Mapping):
        try:
            Draft202012Validator.check_schema(config_schema)
        except SchemaError as exc:
            problems.append(_problem(_json_path(["config_schema", *exc.absolute_path]),
                                     f"not a valid JSON Schema: {exc.message}"))
        else:
            problems += _check_secret_marks(config_schema) + _check_secret_refs(config_schema)
            conformance = data.get("conformance")
            config = conformance.get("config") if isinstance(conformance, Mapping) else None
            if isinstance(config, Mapping):
                problems += [_problem(_json_path(["conformance", "config", *e.absolute_path]),
                                      e.message)
                             for e in Draft202012Validator(config_schema).iter_errors(config)]
    if problems:
        summary = "; ".join(f"{p['path']}: {p['message']}" for p in problems[:5])
        raise ManifestInvalid(f"the manifest is invalid: {summary}", details={"errors": problems})
    pricing = data["pricing"]
    return Manifest(
        id=data["id"], name=data["name"], vendor=data["vendor"], version=data["version"],
        gateway=data["gateway"], category=data["category"], entry_point=data["entry_point"],
        hooks=tuple(data["hooks"]), capabilities=tuple(data["capabilities"]),
        config_schema=dict(data["config_schema"]),
        pricing=Pricing(pricing["model"], Decimal(pricing.get("amount", "0")),
                        pricing.get("currency")),
        licence=data["licence"], description=data.get("description", ""),
        conformance=dict(data.get("conformance") or {}), raw=dict(data))


# Keywords whose values are sub-schemas (one, a list, or a name → schema map). A secret may be
# reached from the root only through `properties`: that is the one place the installer seals.
_SUBSCHEMA = ("items", "additionalProperties", "unevaluatedItems", "unevaluatedProperties", "contains",
              "propertyNames", "not", "if", "then", "else")
_SUBSCHEMA_LISTS = ("prefixItems", "allOf", "anyOf", "oneOf")
_SUBSCHEMA_MAPS = ("$defs", "definitions", "patternProperties", "dependentSchemas")
_PATH_UNSAFE = set(".[]*$")


def _check_secret_marks(schema: Mapping[str, Any], path: str = "$.config_schema",
                        sealable: bool = False) -> list[dict[str, str]]:
    """`x-secret` must be a boolean on a string field (secrets are sealed as text), on a property
    reached from the root only through `properties` (named without . [ ] * $): the installer
    seals exactly those; one under items, $ref, $defs or a combinator would be stored and
    answered in clear."""
    problems = []
    if "x-secret" in schema:
        if not isinstance(schema["x-secret"], bool):
            problems.append(_problem(f"{path}.x-secret", "must be true or false"))
        elif schema["x-secret"] and schema.get("type") != "string":
            problems.append(_problem(path, "a field marked x-secret must have type string"))
        elif schema["x-secret"] and not sealable:
            problems.append(_problem(path, "x-secret is allowed only on a property reached from the root "
                                           "through 'properties' alone, named without . [ ] * $ (not "
                                           "inside items, $ref, $defs, allOf/anyOf/oneOf, "
                                           "patternProperties...)"))
    for name, sub in (schema.get("properties") or {}).items():
        if isinstance(sub, Mapping):
            named_safely = (sealable or path == "$.config_schema") and not _PATH_UNSAFE & set(str(name))
            problems += _check_secret_marks(sub, f"{path}.properties.{name}", named_safely)
    for keyword in _SUBSCHEMA:
        if isinstance(schema.get(keyword), Mapping):
            problems += _check_secret_marks(schema[keyword], f"{path}.{keyword}")
    for keyword in _SUBSCHEMA_LISTS:
        if isinstance(schema.get(keyword), list):
            for index, sub in enumerate(schema[keyword]):
                if isinstance(sub, Mapping):
                    problems += _check_secret_marks(sub, f"{path}.{keyword}[{index}]")
    for keyword in _SUBSCHEMA_MAPS:
        if isinstance(schema.get(keyword), Mapping):
            for name, sub in schema[keyword].items():
                if isinstance(sub, Mapping):
                    problems += _check_secret_marks(sub, f"{path}.{keyword}.{name}")
    return problems


def _has_secret(node: Any) -> bool:
    if isinstance(node, Mapping):
        return node.get("x-secret") is True or any(_has_secret(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_secret(v) for v in node)
    return False


def _check_secret_refs(root: Mapping[str, Any]) -> list[dict[str, str]]:
    """A `$ref` into a secret field (or a subtree holding one) would copy the mark to a place
    the installer does not seal: refused, as is any non-local `$ref` in a schema with secrets."""
    if not _has_secret(root):
        return []
    problems: list[dict[str, str]] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, list):
            for index, item in enumerate(node):
                walk(item, f"{path}[{index}]")
            return
        if not isinstance(node, Mapping):
            return
        for keyword in ("$ref", "$dynamicRef"):
            ref = node.get(keyword)
            if isinstance(ref, str):
                target: Any = _MISSING_REF
                if ref.startswith("#"):
                    target = root
                    for part in [p for p in ref[1:].split("/") if p]:
                        part = part.replace("~1", "/").replace("~0", "~")
                        target = (target.get(part, _MISSING_REF) if isinstance(target, Mapping) else
                                  target[int(part)] if isinstance(target, list) and part.isdigit()
                                  and int(part) < len(target) else _MISSING_REF)
                if target is _MISSING_REF or _has_secret(target):
                    problems.append(_problem(f"{path}.{keyword}", "a $ref may not lead to a secret field "
                                                                  "(x-secret) nor outside this schema"))
        for name, value in node.items():
            walk(value, f"{path}.{name}")

    walk(root, "$.config_schema")
    return problems


_MISSING_REF: Any = object()


def is_compatible(manifest: Manifest, gateway_version: str) -> bool:
    """Whether `gateway_version` lies in the manifest's range (pre-releases included)."""
    try:
        return SpecifierSet(manifest.gateway).contains(Version(gateway_version), prereleases=True)
    except (InvalidSpecifier, InvalidVersion):
        return False


def gateway_version() -> str:
    """The running gateway's version, as installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("alphintra")
    except PackageNotFoundError:
        return "0.0.0"


def version_key(version: str) -> semver.Version:
    """Sort key for versions (semver precedence)."""
    return semver.Version.parse(version)
