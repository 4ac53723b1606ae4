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

import pytest
import websockets
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlmodel import select

from gateway.app import create_app
from gateway.cli import migrate_database
from gateway.runtime import build_runtime
from gateway.tenancy.models import User
from tests.support import GraphQLClient, LiveServer, TransportWS, onboard, user_key

ADMIN_URL = os.environ.get("ALPHINTRA_DRILL_POSTGRES",
                           "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
CREATE_USER = "mutation($i: CreateUserInput!) { createUser(input: $i) { id email } }"
JOBS = "{ jobs(first: 1) { edges { node { id } } } }"


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


def test_postgres_unreachable_answers_retryable_and_writes_nothing(settings, scratch_database):
    direct = make_url(scratch_database)
    proxy = CuttableProxy((direct.host or "127.0.0.1", direct.port or 5432))
    proxy.start()
    own = settings.with_(database_url=direct.set(host="127.0.0.1", port=proxy.port)
                         .render_as_string(hide_password=False), redis_url=None,
                         embedded_worker="off", redis_namespace=f"dbout-{uuid.uuid4().hex[:6]}")
    migrate_database(own)
    rt = build_runtime(own)
    try:
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
    finally:
        rt.close()
        proxy.cut()
