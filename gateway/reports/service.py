"""Regulatory reports as jobs, and the files they leave.

Three job kinds (casbin object "report", action "write" to start one): MiFID II transactions,
best execution, CFTC swap data. Parameters are checked when the job is requested (period,
format, the firm's and counterparty's LEIs, the scope: instrument classes, venues, accounts),
so bad input never reaches a queue. On the worker a report is loaded within its scope, the
instruments outside MiFIR are listed and left out, and the rest is built and checked field by
field (and the XML against its XSD) before anything is written: a report with problems fails
the job with REPORT_INVALID and its list of problems (REPORT_IDENTIFIER_MISSING when a client or
decision maker cannot be identified as the standard requires), and stores nothing. A good
report is stored as a `ReportFile` in the same transaction as its audit record
("report.generated"), and the job's result names it for download; a MiFID XML report with no
transaction to report has no document (auth.016 holds at least one), only its result and audit
record.
"""

from __future__ import annotations

import hashlib
import re
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
from gateway.reports.common import Period, Scope
from gateway.reports.errors import ReportFileNotFound, ReportIdentifierMissing, ReportInvalid
from gateway.reports.identifiers import is_mic, is_valid_lei
from gateway.reports.models import ReportFile

if TYPE_CHECKING:
    from gateway.jobs.runner import JobContext

MIFID_TRANSACTIONS = "MIFID_TRANSACTIONS"
BEST_EXECUTION = "BEST_EXECUTION"
CFTC_SWAPS = "CFTC_SWAPS"
MAX_PERIOD = timedelta(days=366)
MEDIA = {"XML": "application/xml", "CSV": "text/csv"}
MAX_SCOPE_ITEMS = 100
_CLASS = re.compile(r"[A-Z][A-Z0-9_]{0,31}")


@dataclass(frozen=True)
class ReportKind:
    name: str  # ReportKind as the API names it
    job_kind: str
    formats: tuple[str, ...]
    needs_counterparty: bool = False
    needs_reporting_lei: bool = True
    scoped: bool = True  # takes instrument classes, venues and accounts


KINDS = {k.name: k for k in (
    ReportKind(MIFID_TRANSACTIONS, "report.mifid_transactions", ("XML", "CSV")),
    ReportKind(BEST_EXECUTION, "report.best_execution", ("CSV",), needs_reporting_lei=False),
    ReportKind(CFTC_SWAPS, "report.cftc_swaps", ("CSV",), needs_counterparty=True, scoped=False),
)}


@dataclass(frozen=True)
class Rendered:
    filename: str
    media_type: str
    content: bytes | None  # None: nothing to write (an auth.016 document with no transaction)
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


def scope_of(value: Any) -> Scope:
    """A request's scope, checked: lists of at most 100 instrument classes (capitals, digits,
    underscores), MICs and account codes; duplicates dropped."""
    if value is None:
        return Scope()
    if not isinstance(value, dict):
        raise InvalidInput("'scope' must be an object", code="REPORT_SCOPE_INVALID")
    parts: dict[str, frozenset[str]] = {}
    for name, check, what in (
            ("instrumentClasses", lambda v: bool(_CLASS.fullmatch(v)), "an instrument class"),
            ("venues", is_mic, "an ISO 10383 MIC"),
            ("accounts", lambda v: 0 < len(v) <= 64, "an account code")):
        items = value.get(name) or []
        if not isinstance(items, list) or len(items) > MAX_SCOPE_ITEMS:
            raise InvalidInput(f"scope '{name}' is a list of at most {MAX_SCOPE_ITEMS}",
                               code="REPORT_SCOPE_INVALID")
        for item in items:
            if not isinstance(item, str) or not check(item):
                raise InvalidInput(f"scope '{name}': {item!r} is not {what}",
                                   code="REPORT_SCOPE_INVALID")
        parts[name] = frozenset(items)
    return Scope(parts["instrumentClasses"], parts["venues"], parts["accounts"])


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
        scope = scope_of(params.get("scope"))
        if scope.as_json():
            if not kind.scoped:
                raise InvalidInput(f"{kind.name} takes no scope", code="REPORT_SCOPE_UNSUPPORTED")
            checked["scope"] = scope.as_json()
        for name, needed in (("reportingLei", kind.needs_reporting_lei),
                             ("counterpartyLei", kind.needs_counterparty)):
            value = params.get(name)
            if not needed:
                continue
            if value is None or (isinstance(value, str) and not value.strip()):
                raise InvalidInput(f"'{name}' is required for {kind.name}", code="LEI_MISSING")
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
                "files": [file_entry(stored)] if stored is not None else []}

    def render(self, tenant_id: str, kind: ReportKind, params: Params,
               progress: Callable[[float, str], None] = lambda f, m: None) -> Rendered:
        period = period_of(params)
        stamp = f"{period.start:%Y%m%dT%H%M%SZ}-{period.end:%Y%m%dT%H%M%SZ}"
        scope = Scope.of(params.get("scope"))
        if kind.name == MIFID_TRANSACTIONS:
            return self._mifid(tenant_id, params, period, scope, stamp, progress)
        if kind.name == BEST_EXECUTION:
            quality = best_execution.build_quality(
                loaders.order_outcomes(self.db, tenant_id, period, self.instrument_class, scope))
            return Rendered(f"best-execution-{stamp}.csv", MEDIA["CSV"],
                            best_execution.to_csv(quality), len(quality),
                            {"venues": best_execution.summary(quality), "scope": scope.as_json()})
        swaps = cftc.build_swaps(loaders.fx_forwards(self.db, tenant_id, period),
                                 params["reportingLei"], params["counterpartyLei"])
        progress(0.5, f"checking {len(swaps)} swaps")
        _raise_if(cftc.problems(swaps))
        return Rendered(f"cftc-fx-forwards-{stamp}.csv", MEDIA["CSV"], cftc.to_csv(swaps),
                        len(swaps), {"swaps": len(swaps)})

    def _mifid(self, tenant_id: str, params: Params, period: Period, scope: Scope, stamp: str,
               progress: Callable[[float, str], None]) -> Rendered:
        lei = params["reportingLei"]
        trades, excluded = mifid.split_reportable(loaders.executed_trades(
            self.db, tenant_id, period, self.instrument_class, scope))
        missing = mifid.missing_identifiers(trades)
        if missing:
            raise ReportIdentifierMissing([m.text() for m in missing])
        rows = mifid.build_transactions(trades, lei)
        progress(0.5, f"checking {len(rows)} transactions")
        _raise_if(mifid.problems(rows))
        summary = {"transactions": len(rows), "excluded": [e.as_json() for e in excluded],
                   "scope": scope.as_json()}
        if params["format"] == "XML":
            if not rows:
                return Rendered("", MEDIA["XML"], None, 0, summary)
            content = mifid.to_xml(rows)
            _raise_if(mifid.xml_problems(content))
        else:
            content = mifid.to_csv(rows)
        return Rendered(f"mifid-transactions-{stamp}.{params['format'].lower()}",
                        MEDIA[params["format"]], content, len(rows), summary)

    def store(self, tenant_id: str, job_id: str, kind: ReportKind, rendered: Rendered,
              params: Params) -> ReportFile | None:
        if rendered.content is None:  # nothing to write: the run is on the trail all the same
            with self.db.tenant_transaction(tenant_id) as session:
                self.audit.append(session, tenant_id, [AuditEntry("report.generated", job_id, {
                    "kind": kind.name, "jobId": job_id, "filename": None, "sha256": None,
                    "rows": 0, "from": params["from"], "to": params["to"],
                    "scope": params.get("scope") or {}})])
            return None
        content = rendered.content
        with self.db.tenant_transaction(tenant_id) as session:
            existing = session.exec(select(ReportFile).where(
                ReportFile.job_id == job_id, ReportFile.filename == rendered.filename)).first()
            if existing is not None:  # a retried job: the first write stands
                return existing
            row = ReportFile(tenant_id=tenant_id, job_id=job_id, kind=kind.name,
                             media_type=rendered.media_type, filename=rendered.filename,
                             sha256=hashlib.sha256(content).hexdigest(),
                             size=len(content), rows=rendered.rows, content=content)
            session.add(row)
            session.flush()
            self.audit.append(session, tenant_id, [AuditEntry("report.generated", row.id, {
                "kind": kind.name, "jobId": job_id, "filename": row.filename, "sha256": row.sha256,
                "rows": row.rows, "from": params["from"], "to": params["to"],
                "scope": params.get("scope") or {}})])
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
