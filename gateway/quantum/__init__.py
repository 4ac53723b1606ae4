"""Portfolio optimisation on optimiser plugins (quantum and classical); no GraphQL types here.

`service.PortfolioOptimisationService` (`Runtime.portfolio`) estimates mu and Sigma from
daily bars, runs the requested backend next to the exact classical reference, falls back to
a classical answer when the backend cannot give one, and sets weights by mean-variance.
`job.portfolio_optimisation_kind` makes it the `portfolio.optimize` job kind.
"""

from gateway.quantum.service import PortfolioOptimisationService

__all__ = ["PortfolioOptimisationService"]
