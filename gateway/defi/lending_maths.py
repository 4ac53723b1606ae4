"""The lending pool's arithmetic, off-chain, in the same integers and the same order of
operations as gateway/defi/contracts/lending_pool.vy, so every figure equals the contract's.

Scales: prices, values, factors and the health factor are 1e18 fixed point; a price is the
USD value of one whole token (10**decimals base units); amounts are base units.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal

ONE = 10**18


@dataclass(frozen=True)
class AssetState:
    """One listed asset and one account's balances of it in the pool."""

    address: str
    symbol: str
    decimals: int
    price: int
    collateral_factor: int
    liquidation_threshold: int
    supplied: int = 0
    borrowed: int = 0


@dataclass(frozen=True)
class Totals:
    collateral: int  # USD 1e18
    debt: int
    capacity: int  # what may be borrowed: sum(collateral value * collateral factor)
    weighted: int  # sum(collateral value * liquidation threshold)

    @property
    def health_factor(self) -> int | None:
        """weighted * 1e18 // debt; None (the contract's max uint256) when there is no debt."""
        return None if self.debt == 0 else self.weighted * ONE // self.debt

    @property
    def solvent(self) -> bool:
        """What the contract asserts after a borrow or withdrawal."""
        return self.debt <= self.capacity


def value(asset: AssetState, amount: int) -> int:
    return amount * asset.price // 10**asset.decimals


def totals(assets: list[AssetState]) -> Totals:
    collateral = debt = capacity = weighted = 0
    for a in assets:
        cv = value(a, a.supplied)
        collateral += cv
        capacity += cv * a.collateral_factor // ONE
        weighted += cv * a.liquidation_threshold // ONE
        debt += value(a, a.borrowed)
    return Totals(collateral, debt, capacity, weighted)


def moved(assets: list[AssetState], address: str, collateral_delta: int, debt_delta: int
          ) -> list[AssetState]:
    """The balances after an action on `address` (the contract's `health_factor_after`)."""
    out = []
    for a in assets:
        if a.address.lower() == address.lower():
            a = replace(a, supplied=a.supplied + collateral_delta, borrowed=a.borrowed + debt_delta)
            if a.supplied < 0 or a.borrowed < 0:
                raise ValueError("the action takes more than the account holds")
        out.append(a)
    return out


def health_decimal(hf: int | None) -> Decimal | None:
    return None if hf is None else Decimal(hf) / ONE


def liquidation_price(assets: list[AssetState]) -> tuple[AssetState, Decimal] | None:
    """For a single-collateral position: the collateral's price (USD per whole token) at which
    the health factor reaches 1, other prices unchanged:

        amount / 10**decimals * P * threshold = debt value
        =>  P = debt * 10**decimals / (amount * threshold)

    (debt and threshold in their 1e18 scales, so P comes out in USD). None when there is no
    debt, no collateral or more than one collateral asset, or when the collateral asset is also
    borrowed (its price would move both sides)."""
    collateral = [a for a in assets if a.supplied > 0]
    t = totals(assets)
    if t.debt == 0 or len(collateral) != 1:
        return None
    c = collateral[0]
    if c.borrowed > 0 or c.liquidation_threshold == 0:
        return None
    price = Decimal(t.debt) * 10**c.decimals / (Decimal(c.supplied) * c.liquidation_threshold)
    return c, price
