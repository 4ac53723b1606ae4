"""Models and migrations agree, on the suite's database (PostgreSQL in CI's first pass) and on a
fresh SQLite file every time; migrations go down and up again cleanly."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from gateway.cli import downgrade_database, migrate_database
from gateway.db import make_engine
from gateway.models import metadata


def differences(url):
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return compare_metadata(context, metadata())
    finally:
        engine.dispose()


def test_models_match_migrations_on_the_suite_database(migrated):
    assert differences(migrated.database_url) == []


def test_models_match_migrations_on_fresh_sqlite(tmp_path, settings):
    fresh = settings.with_(database_url=f"sqlite:///{tmp_path / 'fresh.db'}")
    migrate_database(fresh)
    assert differences(fresh.database_url) == []
    downgrade_database(fresh, "base")
    engine = make_engine(fresh.database_url)
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    engine.dispose()
    migrate_database(fresh)
    assert differences(fresh.database_url) == []
