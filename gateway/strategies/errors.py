"""Codes of the strategy lab (STRATEGY_INVALID lives with the parser in dsl.py)."""

from __future__ import annotations

from gateway.errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound


class StrategyNotFound(NotFound):
    code = "STRATEGY_NOT_FOUND"


class StrategyVersionNotFound(NotFound):
    code = "STRATEGY_VERSION_NOT_FOUND"


class BacktestNotFound(NotFound):
    code = "BACKTEST_NOT_FOUND"


class ExplanationNotFound(NotFound):
    code = "EXPLANATION_NOT_FOUND"


class StrategyNameInvalid(InvalidInput):
    code = "STRATEGY_NAME_INVALID"


class ApprovalForbidden(Forbidden):
    """Approving needs the casbin object "strategy_approval" (admin, compliance_officer)."""

    code = "APPROVAL_FORBIDDEN"


class SelfApproval(Forbidden):
    """Four eyes: whoever created a version may not approve it."""

    code = "APPROVAL_SELF"


class AlreadyApproved(Conflict):
    code = "STRATEGY_VERSION_ALREADY_APPROVED"


class BacktestNoData(DomainError):
    code = "BACKTEST_NO_DATA"


class BacktestParamsInvalid(InvalidInput):
    code = "BACKTEST_PARAMS_INVALID"


class ReportFormatInvalid(InvalidInput):
    code = "REPORT_FORMAT_INVALID"
