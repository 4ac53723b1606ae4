"""Regulatory reports: start one as a job, list the files, download them at `downloadUrl`.

Permissions (casbin object "report"): "write" to start a report (admin, compliance_officer),
"read" to list and download files (also trader). A report is a Job (`job(id)`,
`jobUpdated(id)`); its result names the file(s) written and, for MIFID_TRANSACTIONS, the
instruments left out and why (`summary.excluded`); a report whose fields break the format's
rules fails with REPORT_INVALID and the problems (REPORT_IDENTIFIER_MISSING for a client or
decision maker the standard's identifier is missing for), and no file is stored.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated

import strawberry
from strawberry.types import Info

from gateway.reports import KINDS, ReportFile, download_url
from schema.common import DEFAULT_PAGE, Connection, ctx
from schema.jobs import Job


@strawberry.enum
class RegulatoryReportKind(enum.Enum):
    MIFID_TRANSACTIONS = "MIFID_TRANSACTIONS"
    BEST_EXECUTION = "BEST_EXECUTION"
    CFTC_SWAPS = "CFTC_SWAPS"


@strawberry.enum
class ReportFormat(enum.Enum):
    XML = "XML"
    CSV = "CSV"


@strawberry.input(description="Which trades a report covers besides the period; each list "
                               "empty or absent is no filter.")
class ReportScopeInput:
    instrument_classes: list[str] | None = strawberry.field(
        default=None, description="Market data's asset classes: EQUITY, ETF, BOND, FUTURE, "
                                  "CRYPTO, FX...")
    venues: list[str] | None = strawberry.field(default=None, description="MICs (ISO 10383).")
    accounts: list[str] | None = strawberry.field(default=None, description="Account codes.")

    def params(self) -> dict[str, list[str]]:
        return {"instrumentClasses": self.instrument_classes or [], "venues": self.venues or [],
                "accounts": self.accounts or []}


@strawberry.type(name="ReportFile")
class ReportFileType:
    id: strawberry.ID
    job_id: strawberry.ID
    kind: RegulatoryReportKind
    filename: str
    media_type: str
    size: int
    rows: int
    sha256: str
    created_at: datetime
    download_url: str = strawberry.field(
        description="GET with the same Authorization header as GraphQL.")

    @classmethod
    def of(cls, row: ReportFile) -> ReportFileType:
        return cls(id=strawberry.ID(row.id), job_id=strawberry.ID(row.job_id),
                   kind=RegulatoryReportKind(row.kind), filename=row.filename,
                   media_type=row.media_type, size=row.size, rows=row.rows, sha256=row.sha256,
                   created_at=row.created_at, download_url=download_url(row))


@strawberry.type
class Query:
    @strawberry.field(description="Report files of the tenant, newest first.")
    def report_files(self, info: Info, first: int = DEFAULT_PAGE, after: str | None = None,
                     kind: RegulatoryReportKind | None = None) -> Connection[ReportFileType]:
        c = ctx(info)
        c.require("report", "read")
        page = c.runtime.reports.files(c.tenant_id, first=first, after=after,
                                       kind=kind.value if kind else None)
        return Connection.of(page, ReportFileType.of)


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Start a regulatory report over [from, to) as a job. "
                                     "MIFID_TRANSACTIONS (XML or CSV) and CFTC_SWAPS need the "
                                     "firm's `reportingLei`; CFTC_SWAPS also the dealer's "
                                     "`counterpartyLei`. BEST_EXECUTION is CSV. `scope` "
                                     "narrows MIFID_TRANSACTIONS and BEST_EXECUTION to "
                                     "instrument classes, venues and accounts "
                                     "(REPORT_SCOPE_UNSUPPORTED for CFTC_SWAPS).")
    def start_regulatory_report(
            self, info: Info, kind: RegulatoryReportKind,
            from_: Annotated[datetime, strawberry.argument(name="from")], to: datetime,
            format: ReportFormat | None = None, reporting_lei: str | None = None,
            counterparty_lei: str | None = None, idempotency_key: str | None = None,
            scope: ReportScopeInput | None = None) -> Job:
        c = ctx(info)
        me = c.require("report", "write")
        params = {"from": from_.isoformat(), "to": to.isoformat(),
                  "format": format.value if format else None, "reportingLei": reporting_lei,
                  "counterpartyLei": counterparty_lei,
                  "scope": scope.params() if scope is not None else None}
        return Job.from_row(c.runtime.jobs.start(me, KINDS[kind.value].job_kind, params,
                                                 idempotency_key=idempotency_key))
