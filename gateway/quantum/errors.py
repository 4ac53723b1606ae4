"""Stable error codes of portfolio optimisation."""

from __future__ import annotations

from gateway.errors import DomainError, InvalidInput


class OptimisationParamsInvalid(InvalidInput):
    """An unknown parameter, or one of the wrong type or out of range (details.parameter)."""

    code = "JOB_PARAMS_INVALID"


class InstrumentsInvalid(InvalidInput):
    """None named, one named twice, or more than an optimisation takes."""

    code = "INSTRUMENTS_INVALID"


class BudgetInvalid(InvalidInput):
    """The budget (how many assets to hold) is not a positive integer."""

    code = "BUDGET_INVALID"


class AssetsFewerThanBudget(InvalidInput):
    code = "ASSETS_FEWER_THAN_BUDGET"


class BackendUnknown(InvalidInput):
    """No optimiser plugin has that name; details.backends lists those that exist."""

    code = "BACKEND_UNKNOWN"


class BoundsInvalid(InvalidInput):
    """A weight bound names an instrument not in the request, or is not 0 <= min <= max, max > 0."""

    code = "BOUNDS_INVALID"


class SectorCapsInvalid(InvalidInput):
    """A sector cap names an unknown instrument, puts one in two sectors, or has a bad cap."""

    code = "SECTOR_CAPS_INVALID"


class CvarAlphaInvalid(InvalidInput):
    code = "CVAR_ALPHA_INVALID"


class HistoryInsufficient(InvalidInput):
    """Too few daily returns over the lookback to estimate mu and Sigma (details.instrument
    names the one without enough bars, when one is to blame)."""

    code = "HISTORY_INSUFFICIENT"


class CovarianceSingular(InvalidInput):
    """The estimated covariance is singular or not positive semi-definite (its smallest
    eigenvalue in details); shrinkage makes it definite, when the request allows it."""

    code = "COVARIANCE_SINGULAR"


class PortfolioInfeasible(InvalidInput):
    """No subset of `budget` instruments satisfies the sector caps and weight bounds."""

    code = "PORTFOLIO_INFEASIBLE"


class OptimisationFailed(DomainError):
    """Neither the requested backend nor a classical fallback could answer."""

    code = "OPTIMISATION_FAILED"
    http_status = 502
