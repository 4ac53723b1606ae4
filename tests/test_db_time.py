"""Timestamps read back: timezone-aware UTC on every back-end, and on PostgreSQL read in a UTC
session, so the driver hands `datetime.UTC` itself and no value needs converting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from gateway.db import UTCDateTime
from gateway.runtime import Runtime


def test_postgres_sessions_read_timestamps_in_utc(runtime: Runtime):
    if runtime.db.engine.dialect.name != "postgresql":
        pytest.skip("a PostgreSQL session's zone")
    with runtime.db.engine.connect() as connection:
        assert connection.exec_driver_sql("SHOW TIME ZONE").scalar() == "UTC"
        at = connection.exec_driver_sql("SELECT TIMESTAMPTZ '2026-01-02 03:04:05+02'").scalar()
    assert at.tzinfo is UTC and at == datetime(2026, 1, 2, 1, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize("value", [
    datetime(2026, 1, 2, 3, 4, 5),  # SQLite: no offset stored
    datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    datetime(2026, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2))),
])
def test_every_timestamp_read_is_aware_utc(value: datetime):
    read = UTCDateTime().process_result_value(value, None)
    assert read is not None and read.tzinfo is UTC
    assert read == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
