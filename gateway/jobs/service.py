"""What resolvers call for jobs: start (idempotent by key), read, list, cancel.

`start` commits the Job row, its Dramatiq message and its first event in one transaction (the
message and the event as outbox rows): the broker is never called while a client waits, so a
broker outage cannot turn a committed job into an error answer, and the job runs once the
outbox dispatcher reaches the broker."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import dramatiq
from sqlalchemy import Row, Select, Table, and_, bindparam
from sqlalchemy import select as core_select
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from gateway.auth.principal import Principal
from gateway.db import Database, utcnow
from gateway.errors import Conflict, InvalidInput, NotFound
from gateway.events import Bus
from gateway.jobs.delivery import JobMessages
from gateway.jobs.kinds import JobKinds
from gateway.jobs.models import Job, JobStatus
from gateway.jobs.runner import JobRows
from gateway.pagination import Page, keyset_page, keyset_rows, keyset_select
from gateway.tenancy.models import Tenant, User

CREATOR = "creator_"
"""Prefix of the creator's columns in rows read by `page_columns` and `get_columns`."""

log = logging.getLogger(__name__)


class JobService:
    def __init__(self, db: Database, bus: Bus, kinds: JobKinds, actor: dramatiq.Actor,
                 regions: tuple[str, ...], max_page_size: int, *, rows: JobRows,
                 messages: JobMessages) -> None:
        self.db = db
        self.bus = bus
        self.kinds = kinds
        self.actor = actor
        self.regions = regions
        self.max_page_size = max_page_size
        self.rows = rows
        self.messages = messages

    def start(self, principal: Principal, kind_name: str, params: dict[str, Any], *,
              region: str | None = None, idempotency_key: str | None = None) -> Job:
        kind = self.kinds.get(kind_name)
        params = kind.validate(dict(params))
        if region is not None and region not in self.regions:
            raise InvalidInput(f"unknown region {region!r}; one of {', '.join(self.regions)}",
                               code="REGION_UNKNOWN")
        if idempotency_key is not None and not (1 <= len(idempotency_key) <= 128):
            raise InvalidInput("idempotencyKey must be 1 to 128 characters",
                               code="IDEMPOTENCY_KEY_INVALID")
        with self.db.tenant_session(principal.tenant_id) as session:
            if idempotency_key is not None:
                existing = self._by_key(session, idempotency_key)
                if existing is not None:
                    return self._same_request(existing, kind_name, params)
            tenant = session.exec(select(Tenant)).one()
            job = Job(kind=kind_name, params=params, region=region or tenant.home_region,
                      idempotency_key=idempotency_key, created_by=principal.user_id,
                      tenant_id=principal.tenant_id)
            session.add(job)
            self.messages.send(session, job)
            self.rows.event(session, job)
            try:
                session.commit()
            except IntegrityError:
                # A concurrent request with the same key won the race: answer with its job.
                session.rollback()
                existing = self._by_key(session, idempotency_key or "")
                if existing is None:
                    raise
                return self._same_request(existing, kind_name, params)
        return job

    @staticmethod
    def _by_key(session: Any, key: str) -> Job | None:
        return session.exec(select(Job).where(Job.idempotency_key == key)).first()

    @staticmethod
    def _same_request(existing: Job, kind: str, params: dict[str, Any]) -> Job:
        if existing.kind != kind or existing.params != params:
            raise Conflict("idempotencyKey was used for a different request",
                           code="IDEMPOTENCY_KEY_REUSED")
        return existing

    def get(self, tenant_id: str, job_id: str) -> Job:
        with self.db.tenant_session(tenant_id) as session:
            job = session.exec(select(Job).where(Job.id == job_id)).first()
        if job is None:
            raise NotFound(f"no job {job_id}", code="JOB_NOT_FOUND")
        return job

    def get_many(self, tenant_id: str, job_ids: list[str]) -> dict[str, Job]:
        with self.db.tenant_session(tenant_id) as session:
            rows = session.exec(select(Job).where(col(Job.id).in_(job_ids))).all()
        return {job.id: job for job in rows}

    def list(self, tenant_id: str, *, first: int, after: str | None = None,
             status: str | None = None, kind: str | None = None) -> Page[Job]:
        stmt = select(Job)
        if status is not None:
            stmt = stmt.where(Job.status == status)
        if kind is not None:
            stmt = stmt.where(Job.kind == kind)
        return keyset_page(self.db, tenant_id, stmt, Job, first=first, after=after,
                           max_page_size=self.max_page_size)

    def page_columns(self, tenant_id: str, columns: Sequence[str], *,
                     creator_columns: Sequence[str] | None = None, first: int,
                     after: str | None = None, status: str | None = None,
                     kind: str | None = None) -> Page[Row[Any]]:
        """`list`, reading only `columns` of each job (and always id and created_at, the
        cursor's) in one statement; with `creator_columns`, the creator's columns too (and its
        id), named `creator_<column>`, by a LEFT JOIN (None where there is no such user in the
        tenant)."""
        stmt = _page_statement(tuple(columns), _tuple(creator_columns), status is not None,
                               kind is not None, after is not None)
        return keyset_rows(self.db, stmt, tenant_id, first=first, after=after,
                           max_page_size=self.max_page_size,
                           params={"status": status, "kind": kind})

    def get_columns(self, tenant_id: str, job_id: str, columns: Sequence[str], *,
                    creator_columns: Sequence[str] | None = None) -> Row[Any]:
        """`get`, reading only `columns` (and the creator's) as `page_columns` does."""
        stmt = _get_statement(tuple(columns), _tuple(creator_columns))
        with self.db.engine.connect() as conn:
            row = conn.execute(stmt, {"tenant": tenant_id, "id": job_id}).first()
        if row is None:
            raise NotFound(f"no job {job_id}", code="JOB_NOT_FOUND")
        return row

    def cancel(self, tenant_id: str, job_id: str) -> Job:
        with self.db.tenant_transaction(tenant_id) as session:
            job = session.exec(select(Job).where(Job.id == job_id).with_for_update()).first()
            if job is None:
                raise NotFound(f"no job {job_id}", code="JOB_NOT_FOUND")
            if JobStatus(job.status).is_terminal:
                raise Conflict(f"job is already {job.status}", code="JOB_ALREADY_FINISHED")
            now = utcnow()
            if job.status == JobStatus.QUEUED.value:
                # The queued message will find a terminal job and drop itself.
                job.status, job.message, job.finished_at = JobStatus.CANCELED.value, "canceled", now
            else:
                job.cancel_requested, job.message = True, "cancel requested"
            job.updated_at = now
            session.add(job)
            self.rows.event(session, job)
        return job


_JOB: Table = Job.__table__  # type: ignore[assignment]
_USER: Table = User.__table__  # type: ignore[assignment]


def _tuple(names: Sequence[str] | None) -> tuple[str, ...] | None:
    return None if names is None else tuple(names)


# Selected reads' statements, built once per shape (building one costs about as much as
# running it on SQLite) and bound per call: `tenant` on every tenant table they read, because
# a Core statement does not go through the session's tenant hook.
@lru_cache(maxsize=512)
def _page_statement(columns: tuple[str, ...], creator_columns: tuple[str, ...] | None,
                    status: bool, kind: bool, after: bool) -> Select[Any]:
    stmt = _select(columns, creator_columns)
    if status:
        stmt = stmt.where(_JOB.c.status == bindparam("status"))
    if kind:
        stmt = stmt.where(_JOB.c.kind == bindparam("kind"))
    return keyset_select(stmt, _JOB, after=after)


@lru_cache(maxsize=512)
def _get_statement(columns: tuple[str, ...], creator_columns: tuple[str, ...] | None
                   ) -> Select[Any]:
    return _select(columns, creator_columns).where(_JOB.c.id == bindparam("id"),
                                                   _JOB.c.tenant_id == bindparam("tenant"))


def _select(columns: tuple[str, ...], creator_columns: tuple[str, ...] | None) -> Select[Any]:
    picked = [_JOB.c[name] for name in dict.fromkeys(("id", "created_at", *columns))]
    if creator_columns is None:
        return core_select(*picked)
    picked += [_USER.c[name].label(CREATOR + name)
               for name in dict.fromkeys(("id", *creator_columns))]
    joined = _JOB.outerjoin(_USER, and_(_USER.c.id == _JOB.c.created_by,
                                        _USER.c.tenant_id == bindparam("tenant")))
    return core_select(*picked).select_from(joined)
