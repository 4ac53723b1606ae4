"""Engine and sessions, and the one place where rows are filtered by tenant.

A session is opened for a scope: one tenant (`Database.tenant_session`) or, explicitly, all of
them (`Database.system_session`, for migrations, authentication look-ups, metrics and the
platform's own work). In a tenant session every ORM query on a tenant-owned model gets
`tenant_id = <scope>` added by a `do_orm_execute` hook, and every row it writes is stamped or
checked in `before_flush`. A session opened with no scope refuses to touch tenant-owned rows,
so forgetting the scope fails loudly instead of leaking.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, event
from sqlalchemy.engine import Engine, create_engine
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker, with_loader_criteria
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.util import find_tables
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel
from sqlmodel import Session as SQLModelSession

from gateway.errors import Forbidden

SCOPE_KEY = "alphintra.tenant_scope"
ALL_TENANTS = "*"


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on every back-end (SQLite stores no offset, so it is restored here)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime; use timezone-aware UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        zone = value.tzinfo
        if zone is UTC:  # PostgreSQL's sessions are in UTC (make_engine): as read
            return value
        return value.replace(tzinfo=UTC) if zone is None else value.astimezone(UTC)


class TenantOwned(SQLModel):
    """Mixin for every row that belongs to one tenant."""

    tenant_id: str = Field(foreign_key="tenant.id", index=True, max_length=36)


class TenantRoot:
    """Marker for the Tenant model itself: a tenant session sees only its own tenant."""

    id: Any


def _add_tenant_criteria(state: ORMExecuteState) -> None:
    if not (state.is_select or state.is_update or state.is_delete):
        return
    if state.execution_options.get("include_all_tenants"):
        return
    scope = state.session.info.get(SCOPE_KEY)
    if scope == ALL_TENANTS:
        return
    if scope is None:
        # Read the tables off the statement itself, not its entities: `select(func.count())
        # .select_from(Job)` names no entity but reads tenant rows all the same.
        tenant_tables = {cls.__table__ for cls in _tenant_classes()}
        if tenant_tables & set(find_tables(state.statement, check_columns=True,
                                           include_joins=True, include_crud=True)):
            raise RuntimeError("tenant-owned rows queried in a session without a tenant scope")
        return
    # Criteria only for the tenant tables this statement reads (selected, joined, select_from,
    # subquery), one per mapped class because SQLModel mixins have no SQL columns for a lambda.
    tables = set(find_tables(state.statement, check_columns=True, include_joins=True,
                             include_crud=True))
    options = [with_loader_criteria(cls, column(cls) == scope, include_aliases=True)
               for cls in _tenant_classes() if cls.__table__ in tables]
    if options:
        state.statement = state.statement.options(*options)


def _tenant_classes() -> list[Any]:
    return _mapped_subclasses(TenantOwned) + _mapped_subclasses(TenantRoot)


def column(cls: Any) -> Any:
    """The column that names a row's tenant: `tenant_id`, or `id` on the Tenant table itself."""
    return cls.id if issubclass(cls, TenantRoot) else cls.tenant_id


def _mapped_subclasses(base: type) -> list[type]:
    found, todo = [], list(base.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if hasattr(cls, "__table__"):
            found.append(cls)
    return found


def _stamp_tenant(session: Session, flush_context: Any, instances: Any) -> None:
    scope = session.info.get(SCOPE_KEY)
    for obj in list(session.new) + list(session.dirty):
        if not isinstance(obj, TenantOwned):
            continue
        if scope is None:
            raise RuntimeError("tenant-owned row written in a session without a tenant scope")
        if scope == ALL_TENANTS:
            if not obj.tenant_id:
                raise RuntimeError(f"{type(obj).__name__} written without tenant_id")
            continue
        if not obj.tenant_id:
            obj.tenant_id = scope
        elif obj.tenant_id != scope:
            raise Forbidden("row belongs to another tenant", code="TENANT_FORBIDDEN")


def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
        if url in {"sqlite://", "sqlite:///:memory:"}:
            kwargs["poolclass"] = StaticPool
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # A bounded connect: a database that does not answer fails a request in seconds
    # (SERVICE_UNAVAILABLE, retryable) instead of holding it and its thread.
    engine = create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True, pool_timeout=10,
                           connect_args={"connect_timeout": 5})
    if engine.dialect.name == "postgresql":
        event.listen(engine, "connect", _utc_session)
    return engine


def _utc_session(dbapi_connection: Any, record: Any) -> None:
    # psycopg then reads timestamps with datetime.UTC itself, which UTCDateTime keeps as they
    # are, where a server zone such as 'Etc/UTC' costs a conversion per value (~1.5 µs).
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SET TIME ZONE 'UTC'")
    dbapi_connection.commit()


def is_unavailable(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it) says the database could not be used right now (down,
    restarting, failing over, read-only on a standby, the connection lost, the pool exhausted,
    SQLite busy) rather than that the statement was wrong. The transaction did not commit (or,
    lost during COMMIT itself, its outcome is unknown)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _unavailable(current):
            return True
        current = current.__cause__ or current.__context__
    return False


# SQLSTATEs that say "not now" rather than "not this": connection exceptions (class 08),
# operator intervention (57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect
# now), too many connections (53300), read-only transaction (25006: a standby after failover).
_UNAVAILABLE_STATES = ("57P01", "57P02", "57P03", "53300", "25006")


def _unavailable(exc: BaseException) -> bool:
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, sa_exc.TimeoutError):  # no connection free in the pool in time
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated or isinstance(exc, sa_exc.InterfaceError):
            return True
        exc = exc.orig if exc.orig is not None else exc
    module = type(exc).__module__
    if module.startswith("psycopg"):
        import psycopg

        state = getattr(exc, "sqlstate", None) or ""
        if state.startswith("08") or state in _UNAVAILABLE_STATES:
            return True
        # No SQLSTATE: a failure of the connection itself (refused, reset, closed).
        return not state and type(exc) in (psycopg.OperationalError, psycopg.InterfaceError)
    if module == "sqlite3":
        text = str(exc).lower()
        return "locked" in text or "busy" in text
    return False


# Whether the request being served has committed a write: an error after that point must not
# tell the client the operation failed (gateway/http/errors.py).
_WROTE = "alphintra.wrote"
_request_commits: ContextVar[list[int] | None] = ContextVar("alphintra_request_commits",
                                                            default=None)


@contextmanager
def counting_commits() -> Iterator[None]:
    """Count, for `committed_a_write`, the commits with writes made inside (this thread and
    what it calls)."""
    token = _request_commits.set([0])
    try:
        yield
    finally:
        _request_commits.reset(token)


def committed_a_write() -> bool:
    counted = _request_commits.get()
    return bool(counted and counted[0])


def _note_write(session: Session, flush_context: Any) -> None:
    session.info[_WROTE] = True


def _note_statement_write(state: ORMExecuteState) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        state.session.info[_WROTE] = True


def _forget_write(session: Session) -> None:
    session.info.pop(_WROTE, None)


def on_outermost_commit(listener: Callable[[Session], None]) -> Callable[[Session], None]:
    """`listener` as a session's `after_commit` hook that runs only when the outermost transaction
    commits: SQLAlchemy fires `after_commit` for a released savepoint too, and what the savepoint
    wrote may still roll back with the transaction around it."""

    def on_commit(session: Session) -> None:
        if not session.in_nested_transaction():
            listener(session)

    return on_commit


def _count_commit(session: Session) -> None:
    if session.info.pop(_WROTE, False):
        counted = _request_commits.get()
        if counted is not None:
            counted[0] += 1


class Database:
    """An engine and a session factory with the tenant hooks installed on it (not globally)."""

    def __init__(self, url: str, engine: Engine | None = None) -> None:
        self.url = url
        self.engine = engine or make_engine(url)
        self._sessions = sessionmaker(
            self.engine, class_=SQLModelSession, expire_on_commit=False
        )
        event.listen(self._sessions, "do_orm_execute", _add_tenant_criteria)
        event.listen(self._sessions, "before_flush", _stamp_tenant)
        event.listen(self._sessions, "after_flush", _note_write)
        event.listen(self._sessions, "do_orm_execute", _note_statement_write)
        event.listen(self._sessions, "after_commit", on_outermost_commit(_count_commit))
        event.listen(self._sessions, "after_rollback", _forget_write)

    def tenant_session(self, tenant_id: str) -> SQLModelSession:
        if not tenant_id or tenant_id == ALL_TENANTS:
            raise ValueError("a tenant session needs one tenant id")
        return self._sessions(info={SCOPE_KEY: tenant_id})

    def system_session(self) -> SQLModelSession:
        return self._sessions(info={SCOPE_KEY: ALL_TENANTS})

    def unscoped_session(self) -> SQLModelSession:
        return self._sessions()

    @contextmanager
    def tenant_transaction(self, tenant_id: str) -> Iterator[SQLModelSession]:
        with self.tenant_session(tenant_id) as session, session.begin():
            yield session

    @contextmanager
    def system_transaction(self) -> Iterator[SQLModelSession]:
        with self.system_session() as session, session.begin():
            yield session

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    def dispose(self) -> None:
        self.engine.dispose()
