"""Commit hooks and savepoints: SQLAlchemy fires `after_commit` when a savepoint is released,
but what the savepoint wrote still rolls back with the transaction around it. Whatever runs
"after commit" (the committed-write count, the outbox, the audit checkpoints) runs on the
outermost commit only (`gateway.db.on_outermost_commit`)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlmodel import delete, select

from gateway.db import Database, committed_a_write, counting_commits
from gateway.runtime import Runtime
from gateway.tenancy.models import Tenant


@pytest.fixture
def db(runtime: Runtime) -> Iterator[tuple[Database, list[str]]]:
    if runtime.db.engine.dialect.name == "sqlite":
        # pysqlite's own transaction handling commits a released savepoint's rows for good
        # (SQLAlchemy's pysqlite notes); the gateway opens no savepoints.
        pytest.skip("savepoints need PostgreSQL here")
    slugs: list[str] = []
    yield runtime.db, slugs
    with runtime.db.system_transaction() as session:
        session.exec(delete(Tenant).where(Tenant.slug.in_(slugs)))


def _slug(slugs: list[str]) -> str:
    slugs.append(f"hooks-{uuid.uuid4().hex[:12]}")
    return slugs[-1]


def test_a_released_savepoint_in_a_transaction_that_rolls_back_is_no_committed_write(db):
    database, slugs = db
    gone, kept = _slug(slugs), _slug(slugs)
    with counting_commits():
        with pytest.raises(RuntimeError), database.system_transaction() as session:
            with session.begin_nested():
                session.add(Tenant(slug=gone, name="Gone"))
            raise RuntimeError("the transaction fails after its savepoint was released")
        # An error now must not be answered as "your write committed": nothing did.
        assert not committed_a_write()
        with database.system_transaction() as session:
            assert session.exec(select(Tenant).where(Tenant.slug == gone)).all() == []
            session.add(Tenant(slug=kept, name="Kept"))
        assert committed_a_write()


def test_a_write_in_a_released_savepoint_counts_when_the_transaction_commits(db):
    database, slugs = db
    with counting_commits():
        with database.system_transaction() as session, session.begin_nested():
            session.add(Tenant(slug=_slug(slugs), name="Inner"))
        assert committed_a_write()
