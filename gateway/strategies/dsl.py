"""The strategy DSL: a JSON document, its published JSON Schema, and the parser.

A strategy is data, never code. `parse_strategy(doc)` checks a document in three passes and
returns a `Strategy` (frozen dataclasses) or raises `StrategyInvalid` (code STRATEGY_INVALID)
whose `.errors` lists every problem as {"path": JSON pointer, "message"}:

1. shape and caps, by an iterative walk (so a hostile nesting cannot exhaust the stack):
   only JSON values, nesting depth <= MAX_DEPTH, nodes <= MAX_NODES, encoded size <=
   MAX_DOCUMENT_BYTES;
2. the published schema (`STRATEGY_SCHEMA`, JSON Schema 2020-12, also served at
   GET /schemas/strategy.json and as the GraphQL field `strategySchema`), by `jsonschema`;
   every indicator, operator, sizing method and field name is an enum or a closed object, so
   no name outside the whitelist passes;
3. references: signal names unique and not reserved, a signal's `input` is a price field or
   an EARLIER signal (so there are no cycles), every operand names a price field or a signal,
   conditions nest at most MAX_CONDITION_DEPTH, instruments are not repeated and, when the
   caller passes `known_instruments`, exist.

The document (all fields but `universe`, `signals`, `entry`, `sizing`, `risk` are optional):

    {"dsl_version": 1, "name": "SMA cross", "description": "...", "interval": "1d",
     "side": "long",                                   # or "short"
     "universe": {"instruments": ["AAPL.XNAS", "SAP.XETR"]},
              # or {"screen": {"mic": "XNAS", "asset_class": "EQUITY", "currency": "USD", "limit": 5}}
     "signals": [{"name": "fast", "indicator": "sma", "input": "close", "window": 10},
                 {"name": "slow", "indicator": "sma", "window": 30},
                 {"name": "mood", "indicator": "news_sentiment", "max_age_hours": 72}],
     "entry": {"op": "and", "args": [{"op": "cross_over", "left": "fast", "right": "slow"},
                                     {"op": "ge", "left": "mood", "right": 0}]},
     "exit":  {"op": "cross_under", "left": "fast", "right": "slow"},
     "sizing": {"method": "fixed_fraction", "fraction": 0.2},
              # or {"method": "volatility_target", "target_volatility": 0.15, "window": 20,
              #     "max_fraction": 0.5}
     "risk": {"max_position": 0.25, "stop_loss": 0.05, "max_drawdown": 0.2}}

Indicators (interpreter.py defines each exactly): sma, ema, rsi, zscore, momentum,
volatility (of `input`, default "close", over `window` bars), and news_sentiment (the latest
sentiment score in [-1, 1] for the instrument from a series the caller supplies, 0 when none
is younger than `max_age_hours`). Operators: and/or (1-16 args), not, the comparisons
gt/ge/lt/le, cross_over/cross_under. An operand is a number, a price field (open, high, low,
close, volume) or a signal's name.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator

from gateway.errors import InvalidInput

DSL_VERSION = 1
MAX_DOCUMENT_BYTES = 64 * 1024
MAX_DEPTH = 24
MAX_NODES = 2_000
MAX_CONDITION_DEPTH = 8
MAX_SIGNALS = 32
MAX_INSTRUMENTS = 50
MAX_WINDOW = 500
MAX_ERRORS = 100

PRICE_FIELDS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
WINDOWED_INDICATORS: tuple[str, ...] = ("sma", "ema", "rsi", "zscore", "momentum", "volatility")
INDICATORS: tuple[str, ...] = (*WINDOWED_INDICATORS, "news_sentiment")
LOGICAL_OPS: tuple[str, ...] = ("and", "or")
COMPARISONS: tuple[str, ...] = ("gt", "ge", "lt", "le")
CROSSES: tuple[str, ...] = ("cross_over", "cross_under")
OPERATORS: tuple[str, ...] = (*LOGICAL_OPS, "not", *COMPARISONS, *CROSSES)
SIZING_METHODS: tuple[str, ...] = ("fixed_fraction", "volatility_target")
INTERVALS: tuple[str, ...] = ("1m", "5m", "15m", "1h", "1d")
SIDES: tuple[str, ...] = ("long", "short")
RESERVED_NAMES: frozenset[str] = frozenset(PRICE_FIELDS) | {"in_position"}

_NAME = {
    "type": "string",
    "pattern": "^[a-z][a-z0-9_]{0,31}$",
    "description": "lower-case letters, digits and _, starting with a letter",
}
_FORBIDDEN = {"not": {}, "description": "not allowed with this indicator"}
_INSTRUMENT = {
    "type": "string",
    "pattern": "^[A-Za-z0-9][A-Za-z0-9._/-]{0,23}\\.[A-Z0-9]{4}$",
    "description": "SYMBOL.MIC, e.g. AAPL.XNAS",
}


def _when(key: str, values: Iterable[str], then: dict[str, Any]) -> dict[str, Any]:
    return {"if": {"properties": {key: {"enum": list(values)}}, "required": [key]}, "then": then}


STRATEGY_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://alphintra.dev/schemas/strategy.json",
    "title": "Alphintra strategy",
    "description": "A trading strategy as data: universe, signals, entry and exit rules, "
    "position sizing and risk limits. Interpreted, never executed.",
    "type": "object",
    "required": ["name", "universe", "signals", "entry", "sizing", "risk"],
    "additionalProperties": False,
    "properties": {
        "dsl_version": {"const": DSL_VERSION},
        "name": {"type": "string", "minLength": 1, "maxLength": 120},
        "description": {"type": "string", "maxLength": 2000},
        "interval": {"enum": list(INTERVALS), "description": "bar interval (default 1d)"},
        "side": {"enum": list(SIDES), "description": "long (default) or short positions"},
        "universe": {
            "type": "object",
            "minProperties": 1,
            "maxProperties": 1,
            "additionalProperties": False,
            "description": "either named instruments or a screen over the instrument registry",
            "properties": {
                "instruments": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_INSTRUMENTS,
                    "items": _INSTRUMENT,
                },
                "screen": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["limit"],
                    "properties": {
                        "mic": {"type": "string", "pattern": "^[A-Z0-9]{4}$"},
                        "asset_class": {"enum": ["EQUITY", "CRYPTO", "FX", "ETF", "FUTURE", "BOND"]},
                        "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
                        "limit": {"type": "integer", "minimum": 1, "maximum": MAX_INSTRUMENTS},
                    },
                },
            },
        },
        "signals": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_SIGNALS,
            "items": {"$ref": "#/$defs/signal"},
        },
        "entry": {"$ref": "#/$defs/condition"},
        "exit": {"$ref": "#/$defs/condition"},
        "sizing": {
            "type": "object",
            "required": ["method"],
            "additionalProperties": False,
            "properties": {
                "method": {"enum": list(SIZING_METHODS)},
                "fraction": {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "maximum": 1,
                    "description": "fixed_fraction: share of equity per position",
                },
                "target_volatility": {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "maximum": 2,
                    "description": "volatility_target: annualised target",
                },
                "window": {"type": "integer", "minimum": 2, "maximum": MAX_WINDOW},
                "max_fraction": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            },
            "allOf": [
                _when("method", ["fixed_fraction"], {"required": ["fraction"]}),
                _when("method", ["volatility_target"], {"required": ["target_volatility", "window"]}),
            ],
        },
        "risk": {
            "type": "object",
            "required": ["max_position"],
            "additionalProperties": False,
            "properties": {
                "max_position": {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "maximum": 1,
                    "description": "largest share of equity in one instrument",
                },
                "stop_loss": {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "exclusiveMaximum": 1,
                    "description": "close a position this far (fraction) against entry",
                },
                "max_drawdown": {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "exclusiveMaximum": 1,
                    "description": "flatten and stop trading at this drawdown",
                },
            },
        },
    },
    "$defs": {
        "operand": {
            "oneOf": [{"type": "number"}, _NAME],
            "description": "a number, a price field (open/high/low/close/volume) or a signal name",
        },
        "signal": {
            "type": "object",
            "required": ["name", "indicator"],
            "additionalProperties": False,
            "properties": {
                "name": _NAME,
                "indicator": {"enum": list(INDICATORS)},
                "input": {**_NAME, "description": "a price field or an earlier signal (default close)"},
                "window": {"type": "integer", "minimum": 1, "maximum": MAX_WINDOW},
                "max_age_hours": {"type": "number", "exclusiveMinimum": 0, "maximum": 24 * 90},
            },
            "allOf": [
                _when(
                    "indicator",
                    WINDOWED_INDICATORS,
                    {"required": ["window"], "properties": {"max_age_hours": _FORBIDDEN}},
                ),
                _when(
                    "indicator",
                    ["news_sentiment"],
                    {"properties": {"window": _FORBIDDEN, "input": _FORBIDDEN}},
                ),
            ],
        },
        "condition": {
            "type": "object",
            "required": ["op"],
            "properties": {"op": {"enum": list(OPERATORS)}},
            "allOf": [
                _when(
                    "op",
                    LOGICAL_OPS,
                    {
                        "required": ["args"],
                        "additionalProperties": False,
                        "properties": {
                            "op": True,
                            "args": {
                                "type": "array",
                                "minItems": 1,
                                "maxItems": 16,
                                "items": {"$ref": "#/$defs/condition"},
                            },
                        },
                    },
                ),
                _when(
                    "op",
                    ["not"],
                    {
                        "required": ["arg"],
                        "additionalProperties": False,
                        "properties": {"op": True, "arg": {"$ref": "#/$defs/condition"}},
                    },
                ),
                _when(
                    "op",
                    (*COMPARISONS, *CROSSES),
                    {
                        "required": ["left", "right"],
                        "additionalProperties": False,
                        "properties": {
                            "op": True,
                            "left": {"$ref": "#/$defs/operand"},
                            "right": {"$ref": "#/$defs/operand"},
                        },
                    },
                ),
            ],
        },
    },
}

_VALIDATOR = Draft202012Validator(STRATEGY_SCHEMA)


class StrategyInvalid(InvalidInput):
    code = "STRATEGY_INVALID"

    def __init__(self, errors: list[dict[str, str]]) -> None:
        if len(errors) > MAX_ERRORS:  # a hostile document should not buy a huge answer
            errors = [
                *errors[:MAX_ERRORS],
                {"path": "", "message": f"and {len(errors) - MAX_ERRORS} more errors"},
            ]
        self.errors = errors
        head = "; ".join(f"{e['path'] or '/'}: {e['message']}" for e in errors[:3])
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        super().__init__(f"strategy document is invalid: {head}{more}", details={"errors": errors})


# -- the parsed form ----------------------------------------------------------------------------
Operand = float | str


@dataclass(frozen=True)
class Screen:
    limit: int
    mic: str | None = None
    asset_class: str | None = None
    currency: str | None = None


@dataclass(frozen=True)
class Universe:
    instruments: tuple[str, ...] = ()
    screen: Screen | None = None


@dataclass(frozen=True)
class Signal:
    name: str
    indicator: str
    input: str = "close"
    window: int = 0
    max_age_hours: float = 72.0


@dataclass(frozen=True)
class Logical:
    op: str  # and | or
    args: tuple[Condition, ...]


@dataclass(frozen=True)
class Not:
    arg: Condition


@dataclass(frozen=True)
class Compare:
    op: str  # gt ge lt le cross_over cross_under
    left: Operand
    right: Operand


Condition = Logical | Not | Compare


@dataclass(frozen=True)
class Sizing:
    method: str
    fraction: float = 0.0
    target_volatility: float = 0.0
    window: int = 20
    max_fraction: float = 1.0


@dataclass(frozen=True)
class Risk:
    max_position: float
    stop_loss: float | None = None
    max_drawdown: float | None = None


@dataclass(frozen=True)
class Strategy:
    name: str
    description: str
    interval: str
    side: str
    universe: Universe
    signals: tuple[Signal, ...]
    entry: Condition
    exit: Condition | None
    sizing: Sizing
    risk: Risk
    document: dict[str, Any]

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.signals)


def canonical_json(doc: Any) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def document_hash(doc: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(doc).encode()).hexdigest()


# -- pass 1: shape and caps ---------------------------------------------------------------------
def pointer(parts: Iterable[Any]) -> str:
    """RFC 6901 JSON pointer of a path."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _shape_errors(doc: Any) -> list[dict[str, str]]:
    errors: list[dict[str, str]] = []
    if not isinstance(doc, dict):
        return [{"path": "", "message": "a strategy document is a JSON object"}]
    stack: list[tuple[Any, tuple[Any, ...]]] = [(doc, ())]
    nodes = 0
    while stack:
        value, path = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            return [{"path": "", "message": f"more than {MAX_NODES} values in the document"}]
        if len(path) > MAX_DEPTH:
            return [
                {"path": pointer(path[: MAX_DEPTH + 1]), "message": f"nested deeper than {MAX_DEPTH} levels"}
            ]
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    errors.append({"path": pointer(path), "message": "object keys must be strings"})
                    continue
                stack.append((item, (*path, key)))
        elif isinstance(value, list):
            stack.extend((item, (*path, i)) for i, item in enumerate(value))
        elif isinstance(value, float) and not math.isfinite(value):
            errors.append({"path": pointer(path), "message": "numbers must be finite"})
        elif value is not None and not isinstance(value, str | int | float | bool):
            errors.append({"path": pointer(path), "message": f"{type(value).__name__} is not a JSON value"})
        if len(errors) >= 50:
            break
    if errors:
        return errors
    size = len(canonical_json(doc).encode())
    if size > MAX_DOCUMENT_BYTES:
        return [{"path": "", "message": f"document is {size} bytes; the limit is {MAX_DOCUMENT_BYTES}"}]
    return []


# -- pass 2: the schema -------------------------------------------------------------------------
def _schema_errors(doc: dict[str, Any]) -> list[dict[str, str]]:
    found: dict[tuple[str, str], None] = {}
    for error in _VALIDATOR.iter_errors(doc):
        # An `if`/`then` failure is reported at its real place; `oneOf` of an operand says
        # what an operand may be instead of echoing both branches.
        message = error.message
        if error.validator == "oneOf":
            message = "must be a number, a price field or a signal name"
        elif error.validator == "enum":
            message = f"{_short(error.instance)} is not one of {', '.join(map(str, error.validator_value))}"
        elif error.validator in ("additionalProperties", "unevaluatedProperties"):
            message = _short(message, 300)
        elif error.validator == "not":
            message = "not allowed here"
        found[(pointer(error.absolute_path), _short(message, 300))] = None
    return [{"path": p, "message": m} for p, m in sorted(found)]


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value)[:limit]
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- pass 3: references and building ------------------------------------------------------------
def _condition(
    node: dict[str, Any], path: tuple[Any, ...], names: set[str], depth: int, errors: list[dict[str, str]]
) -> Condition | None:
    if depth > MAX_CONDITION_DEPTH:
        errors.append(
            {"path": pointer(path), "message": f"conditions nest at most {MAX_CONDITION_DEPTH} deep"}
        )
        return None
    op = node["op"]
    if op in LOGICAL_OPS:
        args = [
            _condition(a, (*path, "args", i), names, depth + 1, errors) for i, a in enumerate(node["args"])
        ]
        return Logical(op, tuple(a for a in args if a is not None))
    if op == "not":
        inner = _condition(node["arg"], (*path, "arg"), names, depth + 1, errors)
        return Not(inner) if inner is not None else None
    sides: list[Operand] = []
    for side in ("left", "right"):
        value = node[side]
        if isinstance(value, str):
            if value not in names and value not in PRICE_FIELDS:
                errors.append(
                    {
                        "path": pointer((*path, side)),
                        "message": f"{value!r} is neither a price field nor a signal",
                    }
                )
            sides.append(value)
        else:
            sides.append(float(value))
    if op in CROSSES and all(not isinstance(s, str) for s in sides):
        errors.append({"path": pointer(path), "message": "a cross needs at least one series"})
    return Compare(op, sides[0], sides[1])


def parse_strategy(doc: Any, *, known_instruments: Callable[[str], bool] | None = None) -> Strategy:
    """The validated Strategy, or StrategyInvalid listing every error with its JSON path."""
    errors = _shape_errors(doc)
    if errors:
        raise StrategyInvalid(errors)
    errors = _schema_errors(doc)
    if errors:
        raise StrategyInvalid(errors)

    universe_doc = doc["universe"]
    if "instruments" in universe_doc:
        seen: set[str] = set()
        for i, key in enumerate(universe_doc["instruments"]):
            if key.upper() in seen:
                errors.append({"path": f"/universe/instruments/{i}", "message": f"{key} is listed twice"})
            elif known_instruments is not None and not known_instruments(key):
                errors.append({"path": f"/universe/instruments/{i}", "message": f"no instrument {key}"})
            seen.add(key.upper())
        universe = Universe(instruments=tuple(universe_doc["instruments"]))
    else:
        s = universe_doc["screen"]
        universe = Universe(
            screen=Screen(
                limit=s["limit"],
                mic=s.get("mic"),
                asset_class=s.get("asset_class"),
                currency=s.get("currency"),
            )
        )

    names: set[str] = set()
    signals: list[Signal] = []
    for i, item in enumerate(doc["signals"]):
        name = item["name"]
        if name in RESERVED_NAMES:
            errors.append({"path": f"/signals/{i}/name", "message": f"{name!r} is reserved"})
        elif name in names:
            errors.append({"path": f"/signals/{i}/name", "message": f"{name!r} is defined twice"})
        source = item.get("input", "close")
        if source not in PRICE_FIELDS and source not in names:
            errors.append(
                {
                    "path": f"/signals/{i}/input",
                    "message": f"{source!r} is neither a price field nor an earlier signal",
                }
            )
        names.add(name)
        signals.append(
            Signal(
                name=name,
                indicator=item["indicator"],
                input=source,
                window=int(item.get("window", 0)),
                max_age_hours=float(item.get("max_age_hours", 72.0)),
            )
        )

    entry = _condition(doc["entry"], ("entry",), names, 1, errors)
    exit_ = _condition(doc["exit"], ("exit",), names, 1, errors) if "exit" in doc else None
    if errors:
        raise StrategyInvalid(sorted(errors, key=lambda e: e["path"]))
    assert entry is not None

    s = doc["sizing"]
    sizing = Sizing(
        method=s["method"],
        fraction=float(s.get("fraction", 0.0)),
        target_volatility=float(s.get("target_volatility", 0.0)),
        window=int(s.get("window", 20)),
        max_fraction=float(s.get("max_fraction", 1.0)),
    )
    r = doc["risk"]
    risk = Risk(
        max_position=float(r["max_position"]),
        stop_loss=float(r["stop_loss"]) if "stop_loss" in r else None,
        max_drawdown=float(r["max_drawdown"]) if "max_drawdown" in r else None,
    )
    return Strategy(
        name=doc["name"],
        description=doc.get("description", ""),
        interval=doc.get("interval", "1d"),
        side=doc.get("side", "long"),
        universe=universe,
        signals=tuple(signals),
        entry=entry,
        exit=exit_,
        sizing=sizing,
        risk=risk,
        document=json.loads(canonical_json(doc)),
    )
