"""DeFi error codes (stable; they surface in GraphQL `extensions.code`)."""

from __future__ import annotations

from gateway.errors import DomainError, InvalidInput


class ChainUnknown(InvalidInput):
    code = "DEFI_CHAIN_UNKNOWN"


class ChainUnavailable(DomainError):
    """The chain's RPC endpoint did not answer: nothing was sent."""

    code = "DEFI_CHAIN_UNAVAILABLE"
    http_status = 503


class TokenUnknown(InvalidInput):
    code = "DEFI_TOKEN_UNKNOWN"


class AmountInvalid(InvalidInput):
    code = "DEFI_AMOUNT_INVALID"


class InsufficientLiquidity(InvalidInput):
    code = "DEFI_INSUFFICIENT_LIQUIDITY"


class NoRoute(InvalidInput):
    code = "DEFI_NO_ROUTE"


class SlippageInvalid(InvalidInput):
    code = "DEFI_SLIPPAGE_INVALID"


class DeadlineInvalid(InvalidInput):
    code = "DEFI_DEADLINE_EXPIRED"


class SlippageExceeded(DomainError):
    """The simulated outcome (or the chain, at execution) is worse than the tolerance."""

    code = "DEFI_SLIPPAGE_EXCEEDED"
    http_status = 409


class TransactionReverted(DomainError):
    code = "DEFI_TRANSACTION_REVERTED"
    http_status = 409


class KeyUnavailable(DomainError):
    code = "DEFI_KEY_UNAVAILABLE"
    http_status = 409


class TransactionPending(DomainError):
    """Sent, but its receipt was not seen in time: it may still be mined. Never "unavailable"
    (a retry must not send it again)."""

    code = "DEFI_TRANSACTION_PENDING"
    http_status = 409


class SwapInProgress(DomainError):
    """A swap with this idempotency key was sent and its outcome is not known yet."""

    code = "DEFI_SWAP_IN_PROGRESS"
    http_status = 409
