"""The strategy DSL: schema, validator (errors with JSON paths), caps, and a fuzz test showing no
document reaches code execution."""

from __future__ import annotations

import builtins
import contextlib
import copy
import json
import random
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from gateway.strategies import dsl, interpreter
from gateway.strategies.dsl import STRATEGY_SCHEMA, StrategyInvalid, parse_strategy
from plugins.sdk import Bar

GOOD: dict[str, Any] = {
    "dsl_version": 1,
    "name": "SMA cross with news",
    "interval": "1d",
    "universe": {"instruments": ["AAPL.XNAS", "SAP.XETR"]},
    "signals": [
        {"name": "fast", "indicator": "sma", "input": "close", "window": 5},
        {"name": "slow", "indicator": "ema", "window": 20},
        {"name": "strength", "indicator": "rsi", "window": 14},
        {"name": "mom_z", "indicator": "zscore", "input": "strength", "window": 10},
        {"name": "mood", "indicator": "news_sentiment", "max_age_hours": 48},
    ],
    "entry": {
        "op": "and",
        "args": [
            {"op": "cross_over", "left": "fast", "right": "slow"},
            {"op": "not", "arg": {"op": "lt", "left": "mood", "right": -0.5}},
        ],
    },
    "exit": {
        "op": "or",
        "args": [
            {"op": "cross_under", "left": "fast", "right": "slow"},
            {"op": "gt", "left": "strength", "right": 80},
        ],
    },
    "sizing": {"method": "volatility_target", "target_volatility": 0.15, "window": 20, "max_fraction": 0.5},
    "risk": {"max_position": 0.25, "stop_loss": 0.05, "max_drawdown": 0.2},
}


def errors_of(doc: Any, **kwargs: Any) -> list[dict[str, str]]:
    with pytest.raises(StrategyInvalid) as caught:
        parse_strategy(doc, **kwargs)
    assert caught.value.code == "STRATEGY_INVALID"
    return caught.value.errors


def test_the_published_schema_is_valid_json_schema_and_accepts_the_example():
    Draft202012Validator.check_schema(STRATEGY_SCHEMA)
    json.dumps(STRATEGY_SCHEMA)  # plain JSON, servable as is
    strategy = parse_strategy(GOOD)
    assert strategy.feature_names == ("fast", "slow", "strength", "mom_z", "mood")
    assert strategy.signals[3].input == "strength" and strategy.sizing.method == "volatility_target"
    assert isinstance(strategy.entry, dsl.Logical) and isinstance(strategy.entry.args[1], dsl.Not)
    assert strategy.risk.stop_loss == 0.05 and strategy.universe.instruments == ("AAPL.XNAS", "SAP.XETR")


@pytest.mark.parametrize(
    "doc, expected",
    [
        ({}, {("", "'entry' is a required property"), ("", "'name' is a required property")}),
        ([], {("", "a strategy document is a JSON object")}),
    ],
)
def test_empty_or_wrong_documents(doc, expected):
    got = {(e["path"], e["message"]) for e in errors_of(doc)}
    assert expected <= got


def test_each_error_names_its_json_path():
    doc = copy.deepcopy(GOOD)
    doc["signals"][0]["indicator"] = "shell"  # not whitelisted
    doc["signals"][1]["window"] = 0  # below minimum
    doc["entry"]["args"][0]["op"] = "__import__"  # not an operator
    doc["exit"]["args"][1]["right"] = {"code": "os.system('x')"}  # not an operand
    doc["sizing"]["fraction"] = 2
    doc["risk"]["leverage"] = 3  # unknown field
    paths = {e["path"] for e in errors_of(doc)}
    assert {
        "/signals/0/indicator",
        "/signals/1/window",
        "/entry/args/0/op",
        "/exit/args/1/right",
        "/sizing/fraction",
        "/risk",
    } <= paths


def test_references_are_checked_after_the_schema():
    doc = copy.deepcopy(GOOD)
    doc["signals"][3]["input"] = "later"  # not an earlier signal
    doc["signals"].append({"name": "fast", "indicator": "sma", "window": 3})  # defined twice
    doc["signals"].append({"name": "close", "indicator": "sma", "window": 3})  # reserved
    doc["entry"]["args"][0]["right"] = "slowest"  # unknown operand
    doc["universe"]["instruments"].append("AAPL.XNAS")  # repeated
    errors = errors_of(doc)
    assert [e["path"] for e in errors] == [
        "/entry/args/0/right",
        "/signals/3/input",
        "/signals/5/name",
        "/signals/6/name",
        "/universe/instruments/2",
    ]


def test_unknown_instruments_when_the_caller_knows_the_registry():
    errors = errors_of(GOOD, known_instruments=lambda key: key == "AAPL.XNAS")
    assert errors == [{"path": "/universe/instruments/1", "message": "no instrument SAP.XETR"}]


def test_caps_on_depth_nodes_and_size():
    deep: dict[str, Any] = {"op": "gt", "left": "fast", "right": 1}
    for _ in range(10):
        deep = {"op": "not", "arg": deep}
    doc = copy.deepcopy(GOOD)
    doc["entry"] = deep
    assert any("nest at most" in e["message"] for e in errors_of(doc))

    hostile: Any = 1
    for _ in range(100_000):  # far beyond Python's recursion limit: the walk is iterative
        hostile = [hostile]
    assert "nested deeper" in errors_of({"name": hostile})[0]["message"]
    assert "values in the document" in errors_of({"x": list(range(dsl.MAX_NODES + 1))})[0]["message"]
    assert "bytes" in errors_of({"description": "x" * (dsl.MAX_DOCUMENT_BYTES + 1)})[0]["message"]
    assert errors_of({"name": float("nan")})[0] == {"path": "/name", "message": "numbers must be finite"}
    many = errors_of(
        {
            **GOOD,
            "signals": [{"name": "S!", "indicator": "x", "window": 0, "input": 5, "y": 1}] * dsl.MAX_SIGNALS,
            "extra": 1,
        }
    )
    assert len(many) == dsl.MAX_ERRORS + 1 and many[-1]["message"].endswith("more errors")


def test_screens_and_sizing_variants():
    doc = copy.deepcopy(GOOD)
    doc["universe"] = {"screen": {"mic": "XNAS", "asset_class": "EQUITY", "limit": 3}}
    doc["sizing"] = {"method": "fixed_fraction", "fraction": 0.1}
    strategy = parse_strategy(doc)
    assert strategy.universe.screen == dsl.Screen(limit=3, mic="XNAS", asset_class="EQUITY")
    doc["universe"] = {"screen": {"limit": 3}, "instruments": ["AAPL.XNAS"]}
    assert {e["path"] for e in errors_of(doc)} == {"/universe"}


# -- fuzz -----------------------------------------------------------------------------------------
NAMES = [
    "sma",
    "ema",
    "rsi",
    "zscore",
    "momentum",
    "volatility",
    "news_sentiment",
    "and",
    "or",
    "not",
    "gt",
    "lt",
    "cross_over",
    "close",
    "fast",
    "slow",
    "__import__",
    "exec",
    "eval",
    "compile",
    "os.system('rm -rf /')",
    "lambda: 0",
    "{{7*7}}",
    "${jndi:x}",
    "__class__",
    "",
    "x" * 40,
]


def random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 6 else 5)
    if kind == 0:
        return rng.choice(NAMES)
    if kind == 1:
        return rng.randint(-10, 600)
    if kind == 2:
        return rng.choice([0.0, 0.5, -1e300, 1e-9, 2.5])
    if kind == 3:
        return rng.choice([True, False, None])
    if kind == 4:
        return rng.choice(["fast", "slow", 0.1, 20])
    if kind in (5, 6):
        return {
            rng.choice([*NAMES, "op", "args", "left", "right", "window", "input"]): random_value(
                rng, depth + 1
            )
            for _ in range(rng.randrange(4))
        }
    return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]


def mutate(rng: random.Random, doc: Any) -> Any:
    doc = copy.deepcopy(doc)
    for _ in range(rng.randrange(1, 4)):
        node, parent, key = doc, None, None
        for _ in range(rng.randrange(1, 6)):
            if isinstance(node, dict) and node:
                key = rng.choice(list(node))
            elif isinstance(node, list) and node:
                key = rng.randrange(len(node))
            else:
                break
            parent, node = node, node[key]
        if parent is None:
            continue
        action = rng.randrange(3)
        if action == 0:
            parent[key] = random_value(rng)
        elif action == 1 and isinstance(parent, dict):
            del parent[key]
        elif isinstance(parent, dict):
            parent[rng.choice(NAMES)] = random_value(rng)
        else:
            parent.append(random_value(rng))
    return doc


def resolve(doc: Any, path: str) -> Any:
    node = doc
    for part in path.split("/")[1:] if path else []:
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def bars(n: int = 60) -> list[Bar]:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    out, price = [], Decimal(100)
    rng = random.Random(3)
    for i in range(n):
        price = price * Decimal(str(1 + rng.uniform(-0.02, 0.02))).quantize(Decimal("0.0001"))
        out.append(Bar("AAPL", "XNAS", t0 + timedelta(days=i), "1d", price, price, price, price, Decimal(10)))
    return out


def fuzz(rng: random.Random, rounds: int) -> tuple[int, int, list[str]]:
    series = bars()
    ends = [b.start + timedelta(days=1) for b in series]
    parsed = invalid = 0
    problems: list[str] = []
    for i in range(rounds):
        doc = mutate(rng, GOOD) if i % 3 else random_value(rng)
        try:
            strategy = parse_strategy(doc)
        except StrategyInvalid as exc:
            invalid += 1
            if not exc.errors:
                problems.append(f"no errors for {doc!r:.200}")
            for error in exc.errors:
                try:
                    resolve(doc, error["path"])  # every path points into the document
                except (KeyError, IndexError, ValueError, TypeError):
                    problems.append(f"path {error['path']} not in {doc!r:.200}")
            continue
        parsed += 1
        evaluation = interpreter.evaluate(strategy, series, ends)
        if evaluation.entry.dtype != bool or len(evaluation.entry) != len(series):
            problems.append("entry is not a boolean series")
    return parsed, invalid, problems


def test_fuzz_no_document_reaches_code_execution():
    parse_strategy(GOOD)  # warm imports before code execution is forbidden
    fuzz(random.Random(1), 30)
    reached: list[str] = []
    saved = {name: getattr(builtins, name) for name in ("exec", "eval", "compile")}

    fuzzing = threading.current_thread()

    def forbidden(name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            if threading.current_thread() is not fuzzing:  # another test's server thread
                return saved[name](*args, **kwargs)
            reached.append(name)
            raise RuntimeError(f"{name} called")

        return call

    try:
        for name in saved:
            setattr(builtins, name, forbidden(name))
        with contextlib.suppress(RuntimeError):
            eval("1")  # shows the patch is in force
        probe = list(reached)
        reached.clear()
        parsed, invalid, problems = fuzz(random.Random(20261124), 1500)
    finally:
        for name, original in saved.items():
            setattr(builtins, name, original)
    assert probe == ["eval"]
    assert reached == [], f"code execution reached: {reached}"
    assert problems == []
    assert parsed > 30 and invalid > 500, (parsed, invalid)
