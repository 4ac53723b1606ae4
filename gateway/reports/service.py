"""Regulatory reports as jobs, and the files they leave.

Three job kinds (casbin object "report", action "write" to start one): MiFID II transactions,
best execution, CFTC swap data. Parameters are checked when the job is requested (period,
format, the firm's and counterparty's LEIs), so bad input never reaches a queue. On the worker a
report is loaded, built, and checked field by field (and the XML against its XSD) before
anything is written: a report with problems fails the job with REPORT_INVALID and its list of
problems, and stores nothing. A good report is stored as a `ReportFile` in the same transaction
as its audit record ("report.generated"), and the job's result names it for download.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import defer
from sqlmodel import col, select

from gateway.audit import AuditEntry, AuditTrail
from gateway.db import Database, utcnow
from gateway.errors import DomainError, InvalidInput
from gateway.jobs.kinds import JobKind, Params
from gateway.pagination import Page, keyset_page
from gateway.reports import best_execution, cftc, loaders, mifid
from gateway.reports.common import Period
from gateway.reports.errors import ReportFileNotFound, ReportInvalid
from gateway.reports.identifiers import is_valid_lei
from gateway.reports.models import ReportFile

if TYPE_CHECKING:
    from gateway.jobs.runner import JobContext

MIFID_TRANSACTIONS = "MIFID_TRANSACTIONS"
BEST_EXECUTION = "BEST_EXECUTION"
CFTC_SWAPS = "CFTC_SWAPS"
MAX_PERIOD = timedelta(days=366)
MEDIA = {"XML": "application/xml", "CSV": "text/csv"}


@dataclass(frozen=True)
class ReportKind:
    name: str  # ReportKind as the API names it
    job_kind: str
    formats: tuple[str, ...]
    needs_counterparty: bool = False
    needs_reporting_lei: bool = True


KINDS = {k.name: k for k in (
    ReportKind(MIFID_TRANSACTIONS, "report.mifid_transactions", ("XML", "CSV")),
    ReportKind(BEST_EXECUTION, "report.best_execution", ("CSV",), needs_reporting_lei=False),
    ReportKind(CFTC_SWAPS, "report.cftc_swaps", ("CSV",), needs_counterparty=True),
)}


@dataclass(frozen=True)
class Rendered:
    filename: str
    media_type: str
    content: bytes
    rows: int
    summary: Any


def _instant(params: Params, name: str) -> datetime:
    value = params.get(name)
    try:
        at = datetime.fromisoformat(value) if isinstance(value, str) else value
    except ValueError:
        at = None
    if not isinstance(at, datetime):
        raise InvalidInput(f"'{name}' must be an ISO 8601 instant", code="REPORT_PERIOD_INVALID")
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def period_of(params: Params) -> Period:
    return Period(_instant(params, "from"), _instant(params, "to"))


class RegulatoryReports:
    def __init__(self, db: Database, audit: AuditTrail, instrument_class: loaders.InstrumentClass,
                 max_page_size: int, now: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.audit = audit
        self.instrument_class = instrument_class
        self.max_page_size = max_page_size
        self.now = now

    # Requests.
    def validate(self, kind: ReportKind, params: Params) -> Params:
        period = period_of(params)
        if period.end <= period.start:
            raise InvalidInput("'to' must be after 'from'", code="REPORT_PERIOD_INVALID")
        if period.end - period.start > MAX_PERIOD:
            raise InvalidInput("a report covers at most 366 days", code="REPORT_PERIOD_INVALID")
        fmt = str(params.get("format") or kind.formats[0]).upper()
        if fmt not in kind.formats:
            raise InvalidInput(f"{kind.name} is written as {' or '.join(kind.formats)}",
                               code="REPORT_FORMAT_UNSUPPORTED")
        checked: Params = {"from": period.start.isoformat(), "to": period.end.isoformat(),
                           "format": fmt}
        for name, needed in (("reportingLei", kind.needs_reporting_lei),
                             ("counterpartyLei", kind.needs_counterparty)):
            value = params.get(name)
            if not needed:
                continue
            if not isinstance(value, str) or not is_valid_lei(value):
                raise InvalidInput(f"'{name}' must be an LEI with valid ISO 17442 check digits",
                                   code="LEI_INVALID")
            checked[name] = value
        return checked

    def job_kinds(self) -> list[JobKind]:
        def make(kind: ReportKind) -> JobKind:
            return JobKind(name=kind.job_kind,
                           description=f"{kind.name} report for a period, as a downloadable file.",
                           run=lambda ctx, params: self.run(ctx, kind, params),
                           validate=lambda params: self.validate(kind, params),
                           permission="report")
        return [make(k) for k in KINDS.values()]

    # The work, on a worker.
    def run(self, ctx: JobContext, kind: ReportKind, params: Params) -> dict[str, Any]:
        ctx.progress(0.1, "reading the period's records")
        rendered = self.render(ctx.tenant_id, kind, params, ctx.progress)
        ctx.progress(0.9, "storing")
        stored = self.store(ctx.tenant_id, ctx.job_id, kind, rendered, params)
        return {"kind": kind.name, "rows": rendered.rows, "summary": rendered.summary,
                "files": [file_entry(stored)]}

    def render(self, tenant_id: str, kind: ReportKind, params: Params,
               progress: Callable[[float, str], None] = lambda f, m: None) -> Rendered:
        period = period_of(params)
        stamp = f"{period.start:%Y%m%dT%H%M%SZ}-{period.end:%Y%m%dT%H%M%SZ}"
        if kind.name == MIFID_TRANSACTIONS:
            lei = params["reportingLei"]
            rows = mifid.build_transactions(loaders.executed_trades(self.db, tenant_id, period), lei)
            progress(0.5, f"checking {len(rows)} transactions")
            _raise_if(mifid.problems(rows))
            if params["format"] == "XML":
                content = mifid.to_xml(rows, lei, period, self.now())
                _raise_if(mifid.xml_problems(content))
            else:
                content = mifid.to_csv(rows)
            return Rendered(f"mifid-transactions-{stamp}.{params['format'].lower()}",
                            MEDIA[params["format"]], content, len(rows), {"transactions": len(rows)})
        if kind.name == BEST_EXECUTION:
            quality = best_execution.build_quality(
                loaders.order_outcomes(self.db, tenant_id, period, self.instrument_class))
            return Rendered(f"best-execution-{stamp}.csv", MEDIA["CSV"],
                            best_execution.to_csv(quality), len(quality),
                            {"venues": best_execution.summary(quality)})
        swaps = cftc.build_swaps(loaders.fx_forwards(self.db, tenant_id, period),
                                 params["reportingLei"], params["counterpartyLei"])
        progress(0.5, f"checking {len(swaps)} swaps")
        _raise_if(cftc.problems(swaps))
        return Rendered(f"cftc-fx-forwards-{stamp}.csv", MEDIA["CSV"], cftc.to_csv(swaps),
                        len(swaps), {"swaps": len(swaps)})

    def store(self, tenant_id: str, job_id: str, kind: ReportKind, rendered: Rendered,
              params: Params) -> ReportFile:
        with self.db.tenant_transaction(tenant_id) as session:
            existing = session.exec(select(ReportFile).where(
                ReportFile.job_id == job_id, ReportFile.filename == rendered.filename)).first()
            if existing is not None:  # a retried job: the first write stands
                return existing
            row = ReportFile(tenant_id=tenant_id, job_id=job_id, kind=kind.name,
                             media_type=rendered.media_type, filename=rendered.filename,
                             sha256=hashlib.sha256(rendered.content).hexdigest(),
                             size=len(rendered.content), rows=rendered.rows,
                             content=rendered.content)
            session.add(row)
            session.flush()
            self.audit.append(session, tenant_id, [AuditEntry("report.generated", row.id, {
                "kind": kind.name, "jobId": job_id, "filename": row.filename, "sha256": row.sha256,
                "rows": row.rows, "from": params["from"], "to": params["to"]})])
        return row

    # Reading files.
    def files(self, tenant_id: str, *, first: int, after: str | None = None,
              kind: str | None = None) -> Page[ReportFile]:
        stmt = select(ReportFile).options(defer(ReportFile.content))  # type: ignore[arg-type]
        if kind is not None:
            stmt = stmt.where(ReportFile.kind == kind)
        return keyset_page(self.db, tenant_id, stmt, ReportFile, first=first, after=after,
                           max_page_size=self.max_page_size)

    def file(self, tenant_id: str, file_id: str) -> ReportFile:
        with self.db.tenant_session(tenant_id) as session:
            row = session.exec(select(ReportFile).where(col(ReportFile.id) == file_id)).first()
        if row is None:
            raise ReportFileNotFound(f"no report file {file_id}")
        return row


def instrument_classes(lookup: Callable[[str], Any]) -> loaders.InstrumentClass:
    """(symbol, mic) -> the instrument's asset class from market data, "UNKNOWN" if unlisted."""
    def classify(symbol: str, mic: str) -> str:
        try:
            return str(lookup(f"{symbol}.{mic}").asset_class)
        except DomainError:
            return "UNKNOWN"
    return classify


def _raise_if(problems: list[str]) -> None:
    if problems:
        raise ReportInvalid(problems)


def download_url(row: ReportFile) -> str:
    return f"/reports/{row.id}"


def file_entry(row: ReportFile) -> dict[str, Any]:
    return {"id": row.id, "filename": row.filename, "mediaType": row.media_type, "size": row.size,
            "sha256": row.sha256, "rows": row.rows, "downloadUrl": download_url(row)}
