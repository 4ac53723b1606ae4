"""Many rows into one table inside the caller's transaction: COPY on PostgreSQL (psycopg),
an executemany INSERT elsewhere.

COPY costs about half the CPU of psycopg's pipelined executemany (about 10 µs a row against
20 in order intake: no statement, parameter dumping and result per row). The values go through
the same SQLAlchemy bind processors as an INSERT's (UTCDateTime, JSON), so the stored rows are
the same, and a unique violation surfaces as SQLAlchemy's IntegrityError, as the INSERT's does.
A multi-row VALUES statement was tried too: compiling it per batch cost more than the round
trips it saved.

JSON columns are serialised by orjson (about a tenth of `json.dumps`'s CPU) whenever its text
is the same JSON value `json.dumps` would write, otherwise by `json.dumps` as before, so that
what is refused (NaN, objects JSON has no form for) is refused as before (see `_json_text`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from operator import itemgetter
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Json
from sqlalchemy import JSON, Table, insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session


def bulk_insert(session: Session, table: Table, rows: list[dict[str, Any]],
                plain_json: bool = False) -> None:
    """Insert `rows` (each with the same keys, as an executemany takes them). `plain_json`:
    the rows' JSON values hold only str, int, bool, None, finite floats, lists and dicts with
    str keys (the audit trail's `plain` makes them so), and skip `_json_text`'s check."""
    if not rows:
        return
    connection = session.connection()
    dialect = connection.dialect
    names = list(rows[0])
    # A column default SQLAlchemy computes itself would be skipped by COPY: keep the INSERT then.
    python_defaults = any(c.default is not None for c in table.columns if c.name not in rows[0])
    if dialect.name != "postgresql" or dialect.driver != "psycopg" or python_defaults:
        session.execute(insert(table), rows)
        return
    dumps = _plain_json_text if plain_json else _json_text
    processors = [(name, _processor(table, name, dialect, dumps)) for name in names]
    quote = dialect.identifier_preparer
    statement = (f"COPY {quote.format_table(table)} ({', '.join(quote.quote(n) for n in names)}) "
                 "FROM STDIN")
    raw = connection.connection.driver_connection
    assert raw is not None
    # The row's values in one C call; only the columns with a processor are touched again.
    get = itemgetter(*names)
    single = len(names) == 1  # itemgetter of one name gives the value, not a tuple
    converted = [(k, process) for k, (_, process) in enumerate(processors) if process is not None]
    try:
        with raw.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                values = [get(row)] if single else list(get(row))
                for k, process in converted:
                    values[k] = process(values[k])
                copy.write_row(values)
    except psycopg.errors.IntegrityError as exc:
        raise IntegrityError(statement, None, exc) from exc


def _processor(table: Table, name: str, dialect: Any, dumps: Callable[[Any], bytes | str]
               ) -> Callable[[Any], Any] | None:
    column_type = table.c[name].type
    process = column_type.dialect_impl(dialect).bind_processor(dialect)
    if not isinstance(column_type, JSON) or process is None:
        return process
    json_null = column_type.NULL

    def process_json(value: Any) -> Any:
        if value is None or value is json_null:
            return process(value)  # SQL NULL or JSON null, as SQLAlchemy decides
        return Json(value, dumps)

    return process_json


# datetime and dataclass objects go to `default` (json.dumps refuses them, so must this).
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def _refuse(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _json_text(value: Any) -> bytes | str:
    """`value` as JSON text, the same JSON value as `json.dumps(value)` (psycopg's default).

    orjson's text is read back and compared with `value` (the two together cost about a
    third of json.dumps's CPU). Where they differ, `value` goes to json.dumps: NaN and
    infinities (orjson writes null, json.dumps NaN/Infinity, which PostgreSQL refuses with the
    same error as before), UUIDs and enums that are not str or int (orjson writes them,
    json.dumps raises TypeError as before), and tuples (read back as lists: just the slow
    way). What orjson refuses and json.dumps takes (keys that are not strings, integers past
    64 bits, deep nesting) goes to json.dumps too, as does what both refuse."""
    try:
        text = orjson.dumps(value, default=_refuse, option=_ORJSON_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(value)
    return text if orjson.loads(text) == value else json.dumps(value)


def _plain_json_text(value: Any) -> bytes | str:
    """`_json_text` for a value known plain: no NaN or infinity, nothing but JSON's types."""
    try:
        return orjson.dumps(value, option=_ORJSON_OPTIONS)
    except TypeError:  # integers past 64 bits, deep nesting
        return json.dumps(value)
