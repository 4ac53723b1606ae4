"""Stable error codes of federated learning (DP_INVALID lives with the DP maths in dp.py,
FEATURE_SPEC_INVALID and FEDERATION_DATA_INSUFFICIENT with the data in data.py)."""

from __future__ import annotations

from gateway.errors import InvalidInput, NotFound


class FederationNotFound(NotFound):
    """Unknown, or the caller's tenant is not an opted-in member: the two look the same."""

    code = "FEDERATION_NOT_FOUND"


class FederationTooSmall(InvalidInput):
    code = "FEDERATION_TOO_SMALL"


class RoundsInvalid(InvalidInput):
    code = "ROUNDS_INVALID"


class SeedInvalid(InvalidInput):
    code = "SEED_INVALID"


class FederationNameInvalid(InvalidInput):
    code = "FEDERATION_NAME_INVALID"
