"""Compliance's own codes (the rules' codes are the rule packs', plugins/builtin/compliance)."""

from __future__ import annotations

from gateway.errors import DomainError

PACK_FAILED = "COMPLIANCE_PACK_FAILED"
NO_RULE_PACK = "COMPLIANCE_NO_RULE_PACK"
ORDER_INVALID = "COMPLIANCE_ORDER_INVALID"
# The account's credit in use cannot be valued: an open order's currency has no FX rate into
# the account's (fail closed: an order that uses credit is denied).
CREDIT_FX_UNAVAILABLE = "COMPLIANCE_CREDIT_FX_UNAVAILABLE"


class ComplianceDenied(DomainError):
    """An order compliance denied. `code` is the first denial's; `details["denials"]` lists
    all of them with their rule, jurisdiction, limit and value."""

    code = "COMPLIANCE_DENIED"
    http_status = 422
