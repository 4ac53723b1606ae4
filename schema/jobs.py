"""Jobs: long work carried out by Dramatiq workers, followed by query or subscription."""

from __future__ import annotations

import enum
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import strawberry
from starlette.concurrency import run_in_threadpool
from strawberry.scalars import JSON
from strawberry.types import Info

from gateway.errors import NotFound
from gateway.http.context import RequestContext
from gateway.jobs import models
from gateway.jobs.runner import job_topic
from gateway.jobs.service import CREATOR
from schema.common import DEFAULT_PAGE, Connection, ctx, epoch_field
from schema.selection import Fields, children, connection_node_fields, node_fields, partial
from schema.tenancy import Tenant, User


@strawberry.enum
class JobStatus(enum.Enum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"


@strawberry.type
class JobError:
    code: str
    message: str


def _dt(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


@strawberry.federation.type(keys=["id"])
class Job:
    id: strawberry.ID
    kind: str
    status: JobStatus
    region: str
    progress: float = strawberry.field(description="0 to 1.")
    message: str
    params: JSON
    result: JSON | None
    error: JobError | None
    attempts: int
    cancel_requested: bool
    idempotency_key: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    tenant_id: strawberry.Private[str]
    created_by_id: strawberry.Private[str | None]
    # The creator read in the job's own statement (a selected read, below), when it was.
    creator_joined: strawberry.Private[bool] = False
    creator: strawberry.Private[User | None] = None

    @strawberry.field
    def tenant(self, info: Info) -> Tenant:
        c = ctx(info)
        return Tenant.from_row(c.runtime.tenancy.tenant(self.tenant_id))

    @strawberry.field
    def created_by(self, info: Info) -> User | None:
        if self.creator_joined:
            return self.creator
        if self.created_by_id is None:
            return None
        c = ctx(info)
        row = c.loader("users", lambda ids: c.runtime.tenancy.users_by_id(c.tenant_id, ids)).load(
            self.created_by_id)
        return User.from_row(row) if row else None

    @classmethod
    def from_snapshot(cls, s: dict[str, Any]) -> Job:
        error = JobError(code=s["error_code"], message=s["error_message"] or "") \
            if s.get("error_code") else None
        return cls(
            id=strawberry.ID(s["id"]), kind=s["kind"], status=JobStatus(s["status"]),
            region=s["region"], progress=s["progress"], message=s["message"], params=s["params"],
            result=s["result"], error=error, attempts=s["attempts"],
            cancel_requested=s["cancel_requested"], idempotency_key=s["idempotency_key"],
            created_at=_dt(s["created_at"]), started_at=_dt(s["started_at"]),  # type: ignore[arg-type]
            finished_at=_dt(s["finished_at"]), updated_at=_dt(s["updated_at"]),  # type: ignore[arg-type]
            tenant_id=s["tenant_id"], created_by_id=s["created_by"],
        )

    @classmethod
    def from_row(cls, row: models.Job) -> Job:
        # Straight from the row: a page of jobs is on the hot path, so no snapshot round trip.
        error = JobError(code=row.error_code, message=row.error_message or "") \
            if row.error_code else None
        return cls(
            id=strawberry.ID(row.id), kind=row.kind, status=JobStatus(row.status),
            region=row.region, progress=row.progress, message=row.message, params=row.params,
            result=row.result, error=error, attempts=row.attempts,
            cancel_requested=row.cancel_requested, idempotency_key=row.idempotency_key,
            created_at=row.created_at, started_at=row.started_at, finished_at=row.finished_at,
            updated_at=row.updated_at, tenant_id=row.tenant_id, created_by_id=row.created_by,
        )

    @classmethod
    def resolve_reference(cls, info: Info, id: strawberry.ID) -> Job:
        c = ctx(info)
        c.require("job", "read")
        return cls.from_row(c.runtime.jobs.get(c.tenant_id, str(id)))


@strawberry.type
class JobUpdate:
    sequence: int | None = strawberry.field(
        description="The event's number on this job's topic; null for the snapshot sent first. "
                    "A jump between two numbers means an update was missed: re-read the job.")
    job: Job
    epoch: str | None = epoch_field()


@strawberry.input
class RunDiagnosticsInput:
    steps: int = 5
    step_seconds: float = 0.2
    fail_at_step: int | None = None
    region: str | None = None
    idempotency_key: str | None = None


@strawberry.type
class Query:
    @strawberry.field
    def job(self, info: Info, id: strawberry.ID) -> Job:
        c = ctx(info)
        c.require("job", "read")
        read = JobRead.of(node_fields(info, "Job"))
        if read is None:
            return Job.from_row(c.runtime.jobs.get(c.tenant_id, str(id)))
        row = c.runtime.jobs.get_columns(c.tenant_id, str(id), read.columns,
                                         creator_columns=read.creator_columns)
        return read.builder(c.tenant_id)(row)

    @strawberry.field
    def jobs(self, info: Info, first: int = DEFAULT_PAGE, after: str | None = None,
             status: JobStatus | None = None, kind: str | None = None) -> Connection[Job]:
        c = ctx(info)
        c.require("job", "read")
        read = JobRead.of(connection_node_fields(info, "Job"))
        if read is None:
            page = c.runtime.jobs.list(c.tenant_id, first=first, after=after,
                                       status=status.value if status else None, kind=kind)
            _want_creators(c, (j.created_by for j in page.items))
            return Connection.of(page, Job.from_row)
        rows = c.runtime.jobs.page_columns(
            c.tenant_id, read.columns, creator_columns=read.creator_columns, first=first,
            after=after, status=status.value if status else None, kind=kind)
        if "created_by" in read.columns:
            _want_creators(c, (row.created_by for row in rows.items))
        return Connection.of(rows, read.builder(c.tenant_id))

    @strawberry.field
    def job_kinds(self, info: Info) -> list[str]:
        c = ctx(info)
        c.require("job", "read")
        return c.runtime.job_kinds.names()


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Start a diagnostics job: checks the job path in steps.")
    def run_diagnostics(self, info: Info, input: RunDiagnosticsInput | None = None) -> Job:
        c = ctx(info)
        me = c.require("job", "write")
        input = input or RunDiagnosticsInput()
        params = {"steps": input.steps, "step_seconds": input.step_seconds,
                  "fail_at_step": input.fail_at_step}
        return Job.from_row(c.runtime.jobs.start(me, "diagnostics", params, region=input.region,
                                                 idempotency_key=input.idempotency_key))

    @strawberry.mutation(description="Cancel a queued job at once, or ask a running one to stop.")
    def cancel_job(self, info: Info, id: strawberry.ID) -> Job:
        c = ctx(info)
        c.require("job", "write")
        return Job.from_row(c.runtime.jobs.cancel(c.tenant_id, str(id)))


@strawberry.type
class Subscription:
    @strawberry.subscription(description="The job now, then every change until it finishes.")
    async def job_updated(self, info: Info, id: strawberry.ID) -> AsyncGenerator[JobUpdate, None]:
        c = ctx(info)
        c.require("job", "read")
        # Subscribe before reading, so no change falls between the snapshot and the stream.
        subscription = await c.runtime.bus.subscribe(job_topic(str(id)))
        try:
            row = await run_in_threadpool(c.runtime.jobs.get, c.tenant_id, str(id))
            job = Job.from_row(row)
            yield JobUpdate(sequence=None, job=job)
            while job.status not in _TERMINAL:
                event = await subscription.__anext__()
                if event.payload.get("tenant_id") != c.tenant_id:
                    raise NotFound(f"no job {id}", code="JOB_NOT_FOUND")
                job = Job.from_snapshot(event.payload)
                yield JobUpdate(sequence=event.sequence, job=job, epoch=event.epoch)
        finally:
            await subscription.close()


_TERMINAL = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED}


def _want_creators(c: RequestContext, ids: Any) -> None:
    c.loader("users", lambda ids: c.runtime.tenancy.users_by_id(c.tenant_id, ids)).want(ids)


# A selected read: which columns each field of Job (and of its creator, when read in the same
# statement) needs. A field missing here (a new one, a plugin's) makes the read whole rows.
_JOB_COLUMNS: dict[str, tuple[str, ...]] = {
    "__typename": (), "tenant": (), "id": ("id",), "kind": ("kind",), "status": ("status",),
    "region": ("region",), "progress": ("progress",), "message": ("message",),
    "params": ("params",), "result": ("result",), "error": ("error_code", "error_message"),
    "attempts": ("attempts",), "cancelRequested": ("cancel_requested",),
    "idempotencyKey": ("idempotency_key",), "createdAt": ("created_at",),
    "startedAt": ("started_at",), "finishedAt": ("finished_at",), "updatedAt": ("updated_at",),
}
# Plain user columns only: anything else asked of the creator goes through the loader.
_USER_COLUMNS: dict[str, tuple[str, ...]] = {
    "__typename": (), "id": ("id",), "email": ("email",), "displayName": ("display_name",),
    "active": ("active",), "createdAt": ("created_at",), "roles": ("id",),
}


@dataclass(frozen=True)
class JobRead:
    """The job columns a selection needs, and the creator's when they come by a join (None:
    the creator, if asked for, comes from the users loader by `created_by`)."""

    columns: tuple[str, ...]
    creator_columns: tuple[str, ...] | None

    @classmethod
    def of(cls, fields: Fields | None) -> JobRead | None:
        """None when the selection is not one this can map to columns."""
        if fields is None:
            return None
        columns: list[str] = []
        creator_columns: tuple[str, ...] | None = None
        for name, occurrences in fields.items():
            if name == "createdBy":
                creator_columns = _user_columns(children(occurrences, "User"))
                if creator_columns is None:
                    columns.append("created_by")
            elif name in _JOB_COLUMNS:
                columns.extend(_JOB_COLUMNS[name])
            else:
                return None
        return cls(tuple(dict.fromkeys(columns)), creator_columns)

    def builder(self, tenant_id: str) -> Callable[[Any], Job]:
        """Row -> Job carrying only what was read (schema.selection.partial)."""
        creator_keys: tuple[str, ...] = ()
        if self.creator_columns is not None:
            creator_keys = tuple(dict.fromkeys(("id", *self.creator_columns)))
        status, error = "status" in self.columns, "error_code" in self.columns
        created_by = "created_by" in self.columns
        keys: tuple[str, ...] = ()  # the rows' column names: the same for every row of a read

        def build(row: Any) -> Job:
            nonlocal keys
            keys = keys or row._fields
            values = dict(zip(keys, row, strict=True))
            values["tenant_id"] = tenant_id
            if status:
                values["status"] = JobStatus(values["status"])
            if error:
                code, message = values.pop("error_code"), values.pop("error_message")
                values["error"] = JobError(code=code, message=message or "") if code else None
            if created_by:
                values["created_by_id"] = values.pop("created_by")
            if creator_keys:
                user = {key: values.pop(CREATOR + key) for key in creator_keys}
                user["tenant_id"] = tenant_id
                values["creator_joined"] = True
                values["creator"] = partial(User, user) if user["id"] is not None else None
            return partial(Job, values)

        return build


def _user_columns(fields: Fields | None) -> tuple[str, ...] | None:
    if fields is None or not set(fields) <= set(_USER_COLUMNS):
        return None
    return tuple(dict.fromkeys(c for name in fields for c in _USER_COLUMNS[name]))
