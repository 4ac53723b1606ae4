"""The append-only, hash-chained audit trail (issue 4)."""

from gateway.audit.chain import GENESIS, AuditVerification, verify_records
from gateway.audit.models import PLATFORM_CHAIN, AuditHead, AuditRecord
from gateway.audit.trail import AppendedRecord, AuditEntry, AuditPage, AuditTrail

__all__ = ["GENESIS", "PLATFORM_CHAIN", "AppendedRecord", "AuditEntry", "AuditHead", "AuditPage",
           "AuditRecord",
           "AuditTrail", "AuditVerification", "verify_records"]
