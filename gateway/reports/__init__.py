"""Regulatory reports (issue 4): MiFID II transactions, best execution, CFTC swap data."""

from gateway.reports.errors import ReportFileNotFound, ReportInvalid
from gateway.reports.models import ReportFile
from gateway.reports.service import KINDS, RegulatoryReports, ReportKind, download_url

__all__ = ["KINDS", "RegulatoryReports", "ReportFile", "ReportFileNotFound", "ReportInvalid",
           "ReportKind", "download_url"]
