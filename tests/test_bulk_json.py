"""JSON columns written by COPY (gateway/bulk.py): orjson's text where it is the same JSON value
json.dumps would write, json.dumps's own (and its refusals) everywhere else."""

from __future__ import annotations

import enum
import json
import math
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from sqlalchemy import JSON, Column, Integer, MetaData, Table, text
from sqlalchemy.engine import Engine
from sqlmodel import Session

from gateway.bulk import _json_text, _plain_json_text, bulk_insert
from gateway.db import make_engine
from gateway.settings import Settings


class Colour(enum.Enum):
    RED = "red"


class Side(enum.StrEnum):
    BUY = "BUY"


SAME = [
    {"a": 1, "b": "x", "c": None, "d": [1.5, -0.0, 1e16, 2.5e-9], "e": {"f": True}},
    {"text": "é ü 中 \x7f \u2028 \"quoted\" \\ back", "nested": [[[]], {}]},
    {"side": Side.BUY, "n": 2 ** 63 - 1, "m": -(2 ** 63)},
    [1, "two", None, False],
    {"tuple": (1, 2)},  # read back as a list: json.dumps's way
    {1: "int key", None: "none key"},  # orjson refuses: json.dumps's way
    {"big": 2 ** 70},  # past 64 bits: json.dumps's way
    "plain string",
    0,
]


@pytest.mark.parametrize("value", SAME)
def test_the_same_json_value_as_json_dumps(value: Any) -> None:
    written = _json_text(value)
    assert json.loads(written) == json.loads(json.dumps(value))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_floats_take_json_dumps_text(value: float) -> None:
    # json.dumps writes NaN/Infinity, which PostgreSQL refuses; orjson would write null.
    assert _json_text({"x": [value]}) == json.dumps({"x": [value]})
    assert _json_text(value) == json.dumps(value)


@pytest.mark.parametrize("value", [uuid.uuid4(), Colour.RED, datetime.now(UTC), Decimal("1.5"),
                                   {1, 2}, object()])
def test_what_json_dumps_refuses_is_refused(value: Any) -> None:
    with pytest.raises(TypeError):
        json.dumps({"v": value})
    with pytest.raises(TypeError):
        _json_text({"v": value})


def test_plain_values_unchecked_are_the_same_json_value() -> None:
    value = {"a": [1, 2.25, None, "é"], "b": {"c": 2 ** 70}}
    assert json.loads(_plain_json_text(value)) == json.loads(json.dumps(value))


@pytest.fixture
def probe(settings: Settings) -> Iterator[tuple[Engine, Table]]:
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("COPY is PostgreSQL's (SQLite keeps the executemany INSERT)")
    engine = make_engine(settings.database_url)
    table = Table(f"bulk_json_probe_{uuid.uuid4().hex[:8]}", MetaData(),
                  Column("id", Integer, primary_key=True), Column("doc", JSON, nullable=False))
    table.create(engine)
    try:
        yield engine, table
    finally:
        table.drop(engine)
        engine.dispose()


def test_copy_stores_the_same_json_values(probe: tuple[Engine, Table]) -> None:
    engine, table = probe
    values = [v for v in SAME if not isinstance(v, dict) or
              all(isinstance(k, str) for k in v)] + [{1: "int key"}]
    with Session(engine) as session, session.begin():
        bulk_insert(session, table, [{"id": i, "doc": v} for i, v in enumerate(values)])
    with engine.connect() as conn:
        stored = dict(conn.execute(text(f"SELECT id, doc::text FROM {table.name}")).all())
    assert {i: json.loads(t) for i, t in stored.items()} == \
        {i: json.loads(json.dumps(v)) for i, v in enumerate(values)}


def test_copy_refuses_non_finite_floats_as_before(probe: tuple[Engine, Table]) -> None:
    engine, table = probe
    with Session(engine) as session, pytest.raises(psycopg.errors.InvalidTextRepresentation), \
            session.begin():
        bulk_insert(session, table, [{"id": 1, "doc": {"ok": 1.0}},
                                     {"id": 2, "doc": {"bad": math.nan}}])
