"""PostgreSQL unreachable: a request answers SERVICE_UNAVAILABLE (retryable, `Retry-After`) and
writes nothing, and the gateway recovers by itself when the database is back.

The gateway reaches a scratch database of this test's own through a TCP proxy the test can cut
(every open connection reset, new ones refused) and restore: the network between a gateway and
its database failing, as a restart or failover of the database looks from the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import websockets
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlmodel import select

from gateway.app import create_app
from gateway.auth.models import CasbinRule
from gateway.cli import migrate_database
from gateway.runtime import Runtime, build_runtime
from gateway.tenancy.models import User
from tests.support import GraphQLClient, LiveServer, TransportWS, onboard, user_key

ADMIN_URL = os.environ.get("ALPHINTRA_DRILL_POSTGRES",
                           "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
CREATE_USER = "mutation($i: CreateUserInput!) { createUser(input: $i) { id email } }"
JOBS = "{ jobs(first: 1) { edges { node { id } } } }"
GRANT = "mutation($u: ID!, $r: String!) { grantRole(userId: $u, role: $r) { roles } }"


class CuttableProxy:
    """A TCP forwarder to PostgreSQL; `cut()` resets every connection and refuses new ones."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept in its thread
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                # shutdown wakes the pump blocked in recv (close alone would not, in another
                # thread); linger 0 makes the close a reset, as a dead server's host answers.
                conn.shutdown(socket.SHUT_RDWR)
                conn.close()


@pytest.fixture(scope="module")
def scratch_database() -> Iterator[str]:
    name = f"alphintra_dbout_{uuid.uuid4().hex[:10]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        admin.dispose()
        if os.environ.get("CI"):
            raise
        pytest.skip(f"needs a PostgreSQL server ({ADMIN_URL}): {exc.orig}")
    yield admin.url.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def behind_proxy(settings, scratch_database) -> Iterator[tuple[CuttableProxy, Runtime]]:
    """A runtime whose every database connection goes through a proxy the test can cut."""
    direct = make_url(scratch_database)
    proxy = CuttableProxy((direct.host or "127.0.0.1", direct.port or 5432))
    proxy.start()
    own = settings.with_(database_url=direct.set(host="127.0.0.1", port=proxy.port)
                         .render_as_string(hide_password=False), redis_url=None,
                         embedded_worker="off", redis_namespace=f"dbout-{uuid.uuid4().hex[:6]}")
    migrate_database(own)
    rt = build_runtime(own)
    try:
        yield proxy, rt
    finally:
        rt.close()
        proxy.cut()


def test_a_write_committed_before_the_database_went_away_is_not_answered_as_a_failure(
        behind_proxy):
    """The grant commits, then the database goes away before its answer is read back: the
    client is told the change was committed, never that it failed or may be retried blindly."""
    proxy, rt = behind_proxy
    tenant = onboard(rt)
    user = rt.tenancy.create_user(tenant.id, f"grantee@{tenant.slug}.test", roles=["viewer"])
    cut_once: list[bool] = []

    def cut_after_commit(session: Any) -> None:
        if not cut_once:
            cut_once.append(True)
            proxy.cut()

    with LiveServer(create_app(runtime=rt)) as live:
        gql = GraphQLClient(live.url)
        gql.data("{ viewer { authenticatedBy } }", key=tenant.key)  # the key's touch, done
        event.listen(rt.db._sessions, "after_commit", cut_after_commit)
        try:
            body = gql(GRANT, {"u": user.id, "r": "trader"}, key=tenant.key)
        finally:
            event.remove(rt.db._sessions, "after_commit", cut_after_commit)
        assert cut_once
        [error] = body["errors"]
        assert error["extensions"]["code"] == "COMMITTED_ANSWER_UNAVAILABLE", body
        assert error["extensions"]["committed"] is True
        assert error["extensions"]["retryable"] is False
        proxy.start()
        with rt.db.system_session() as session:  # it was committed
            granted = session.exec(select(CasbinRule.v1).where(
                CasbinRule.v0 == f"user:{user.id}", CasbinRule.v2 == tenant.id)).all()
        assert "role:trader" in granted


def test_postgres_unreachable_answers_retryable_and_writes_nothing(behind_proxy):
    proxy, rt = behind_proxy
    tenant = onboard(rt)
    _, fresh_key = user_key(rt, tenant, "viewer")
    with LiveServer(create_app(runtime=rt)) as live:
        gql = GraphQLClient(live.url)
        gql.data(CREATE_USER, {"i": {"email": f"before@{tenant.slug}.test", "roles": ["trader"]}},
                 key=tenant.key)

        proxy.cut()
        down = []
        for i, (query, variables) in enumerate([
                (CREATE_USER, {"i": {"email": f"during@{tenant.slug}.test", "roles": ["trader"]}}),
                (JOBS, None), (CREATE_USER, {"i": {"email": f"during2@{tenant.slug}.test",
                                                   "roles": ["viewer"]}})]):
            response = gql.post(query, variables, key=tenant.key)
            body = response.json()
            codes = [e["extensions"]["code"] for e in body.get("errors", ())]
            assert codes == ["SERVICE_UNAVAILABLE"], (i, response.status_code, body)
            assert all(e["extensions"]["retryable"] is True for e in body["errors"])
            assert not (body.get("data") or {}).get("createUser"), body
            down.append(response)
        # Before execution (a key not verified yet: authentication needs the database), the
        # whole request is refused: 503 with Retry-After.
        response = gql.post(JOBS, key=fresh_key)
        assert (response.status_code, response.headers.get("retry-after")) == (503, "1")
        assert response.json()["errors"][0]["extensions"] == {"code": "SERVICE_UNAVAILABLE",
                                                              "retryable": True}

        async def connect() -> tuple[int | None, str | None]:
            # A socket cannot be accepted either: 1013 (try again later), not 4403.
            ws = TransportWS(live.ws_url, fresh_key)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.__aenter__()
            return closed.value.rcvd.code, closed.value.rcvd.reason

        assert asyncio.run(connect()) == (1013, "SERVICE_UNAVAILABLE")

        proxy.start()  # the database is back: the next requests work, no restart needed
        gql.data(CREATE_USER, {"i": {"email": f"after@{tenant.slug}.test", "roles": ["trader"]}},
                 key=tenant.key)
        with rt.db.tenant_session(tenant.id) as session:
            emails = set(session.exec(select(User.email)).all())
        assert {f"before@{tenant.slug}.test", f"after@{tenant.slug}.test"} <= emails
        assert not {e for e in emails if e.startswith("during")}  # nothing half-written


def test_what_counts_as_the_database_unavailable():
    import sqlite3

    import psycopg
    from sqlalchemy import exc as sa_exc

    from gateway.db import is_unavailable

    def wrapped(orig: Exception, kind: type = sa_exc.OperationalError) -> Exception:
        return kind("SELECT 1", {}, orig)

    unavailable = [
        wrapped(psycopg.OperationalError("connection refused")),
        wrapped(psycopg.errors.AdminShutdown()),
        wrapped(psycopg.errors.CannotConnectNow()),
        wrapped(psycopg.errors.TooManyConnections()),
        wrapped(psycopg.errors.ReadOnlySqlTransaction(), sa_exc.InternalError),  # a standby
        wrapped(psycopg.errors.ConnectionFailure()),
        sa_exc.TimeoutError("QueuePool limit reached"),
        wrapped(sqlite3.OperationalError("database is locked")),
    ]
    chained = RuntimeError("while reading back")
    chained.__cause__ = unavailable[0]
    unavailable.append(chained)
    bugs = [
        wrapped(psycopg.errors.UniqueViolation(), sa_exc.IntegrityError),
        wrapped(psycopg.errors.UndefinedTable(), sa_exc.ProgrammingError),
        wrapped(psycopg.errors.QueryCanceled()),  # a statement timeout: not the database's state
        wrapped(sqlite3.OperationalError("no such table: job")),
        ValueError("not a database error"),
    ]
    assert [is_unavailable(e) for e in unavailable] == [True] * len(unavailable)
    assert [is_unavailable(e) for e in bugs] == [False] * len(bugs)
