"""Errors of the regulatory reports."""

from __future__ import annotations

from gateway.errors import DomainError, NotFound


class ReportInvalid(DomainError):
    """The report's rows break the rules of its format; nothing was written.
    `details.problems` lists each, naming the row."""

    code = "REPORT_INVALID"
    http_status = 422

    def __init__(self, problems: list[str]) -> None:
        shown = "; ".join(problems[:20]) + (f"; and {len(problems) - 20} more" if len(problems) > 20 else "")
        super().__init__(f"{len(problems)} problem(s): {shown}", details={"problems": problems})
        self.problems = problems


class ReportIdentifierMissing(DomainError):
    """In-scope transactions whose client or decision maker the platform cannot identify as
    the standard requires (a natural-person client; a user without a national identifier);
    nothing was written. `details.missing` lists each with its transaction count."""

    code = "REPORT_IDENTIFIER_MISSING"
    http_status = 422

    def __init__(self, missing: list[str]) -> None:
        shown = "; ".join(missing[:10]) + (f"; and {len(missing) - 10} more" if len(missing) > 10 else "")
        super().__init__(f"{len(missing)} identifier(s) missing: {shown}",
                         details={"missing": missing})
        self.missing = missing


class ReportFileNotFound(NotFound):
    code = "REPORT_NOT_FOUND"
