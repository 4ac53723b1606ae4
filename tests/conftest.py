"""The suite runs against whatever ALPHINTRA_DATABASE_URL and ALPHINTRA_REDIS_URL name (CI:
PostgreSQL and Redis, and an unreachable one is an error, never a skip), else against a SQLite
file and the in-process broker."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from gateway.app import create_app
from gateway.cli import migrate_database
from gateway.db import make_engine
from gateway.runtime import Runtime, build_runtime
from gateway.settings import Settings
from tests.support import JWT_SECRET, GraphQLClient, LiveServer, TenantHandle, onboard

REDIS_URL = os.environ.get("ALPHINTRA_REDIS_URL")
# Every query the suite sends runs on the compiled plan and on graphql-core, and any difference
# fails it (gateway/http/plan/); child processes (servers, workers) read it from here.
os.environ.setdefault("ALPHINTRA_EXECUTION", "verify")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if REDIS_URL:
        return
    skip = pytest.mark.skip(reason="needs ALPHINTRA_REDIS_URL (cross-process bus and broker)")
    for item in items:
        if "redis" in item.keywords:
            item.add_marker(skip)


def reset_database(url: str) -> None:
    if url.startswith("sqlite"):
        return
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    url = os.environ.get("ALPHINTRA_DATABASE_URL") or \
        f"sqlite:///{tmp_path_factory.mktemp('db') / 'alphintra.db'}"
    return Settings(
        database_url=url,
        redis_url=REDIS_URL,
        redis_namespace=f"alphintra-test-{uuid.uuid4().hex[:8]}",
        jwt_secret=JWT_SECRET,
        worker_threads=2,
        embedded_worker="on",  # with Redis too: the test process consumes its own namespace
        job_min_backoff_ms=50,
        job_max_backoff_ms=200,
        # Tests place orders on manual clocks in the past, on the database every runtime of the
        # suite shares: another app's venue clock, on the real clock, would take a batch still
        # being sent for one whose process died and reject it (tests call the sweep themselves).
        orders_unsent_after_ms=10 * 365 * 24 * 3600 * 1000,
        log_json=False,
        warm_on_start=False,  # each test server would spend seconds loading calendars
        secret_key=base64.b64encode(os.urandom(32)).decode(),
        execution=os.environ["ALPHINTRA_EXECUTION"],
    )


@pytest.fixture(scope="session")
def migrated(settings: Settings) -> Settings:
    reset_database(settings.database_url)
    migrate_database(settings)
    return settings


@pytest.fixture(scope="session")
def runtime(migrated: Settings) -> Iterator[Runtime]:
    rt = build_runtime(migrated)
    yield rt
    rt.close()


@pytest.fixture(scope="session")
def server(runtime: Runtime) -> Iterator[LiveServer]:
    with LiveServer(create_app(runtime=runtime)) as live:
        yield live


@pytest.fixture(scope="session")
def gql(server: LiveServer) -> GraphQLClient:
    return GraphQLClient(server.url)


@pytest.fixture
def single_execution(monkeypatch: pytest.MonkeyPatch) -> None:
    """For a test that counts what one request does (SQL statements, plugin calls): each query
    runs once, on its compiled plan, not again on graphql-core as verify would."""
    from gateway.http import plan
    monkeypatch.setattr(plan.verification, "enabled", False)


@pytest.fixture
def tenant(runtime: Runtime) -> TenantHandle:
    return onboard(runtime)


@pytest.fixture
def other_tenant(runtime: Runtime) -> TenantHandle:
    return onboard(runtime)
