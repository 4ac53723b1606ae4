# pragma version ~=0.4.3
"""
@title Alphintra lending pool
@notice Over-collateralised lending of listed ERC-20 assets, no interest accrual.
    Prices come from storage in this contract, set by the owner (the pool is its own
    oracle; `set_price`). A price is the value, in USD scaled by 1e18, of one whole
    token (10**decimals base units).
    Values (USD, 1e18):  value(asset, amount) = amount * price[asset] / 10**decimals[asset]
    Borrow capacity  = sum(collateral value * collateral_factor) / 1e18
    Health factor    = sum(collateral value * liquidation_threshold) / debt value
                       (scaled 1e18; max_value(uint256) with no debt)
    A borrow or withdrawal must leave debt value <= borrow capacity. When the health
    factor falls under 1e18 anyone may liquidate: repay at most close_factor of one
    debt asset and seize collateral worth the repaid value * (1e18 + liquidation_bonus).
"""

from ethereum.ercs import IERC20

MAX_ASSETS: constant(uint256) = 16
ONE: constant(uint256) = 10**18

struct AssetPosition:
    asset: address
    decimals: uint256
    price: uint256
    collateral_factor: uint256
    liquidation_threshold: uint256
    supplied: uint256
    borrowed: uint256

event AssetListed:
    asset: indexed(address)
    decimals: uint256
    collateral_factor: uint256
    liquidation_threshold: uint256

event PriceSet:
    asset: indexed(address)
    price: uint256

event Supply:
    account: indexed(address)
    asset: indexed(address)
    amount: uint256

event Withdraw:
    account: indexed(address)
    asset: indexed(address)
    amount: uint256

event Borrow:
    account: indexed(address)
    asset: indexed(address)
    amount: uint256

event Repay:
    account: indexed(address)
    asset: indexed(address)
    amount: uint256
    payer: address

event Liquidate:
    borrower: indexed(address)
    liquidator: indexed(address)
    debt_asset: address
    collateral_asset: address
    repaid: uint256
    seized: uint256

owner: public(address)
close_factor: public(uint256)
liquidation_bonus: public(uint256)
assets: public(DynArray[address, MAX_ASSETS])
listed: public(HashMap[address, bool])
decimals: public(HashMap[address, uint256])
collateral_factor: public(HashMap[address, uint256])
liquidation_threshold: public(HashMap[address, uint256])
price: public(HashMap[address, uint256])
supplied: public(HashMap[address, HashMap[address, uint256]])
borrowed: public(HashMap[address, HashMap[address, uint256]])
total_supplied: public(HashMap[address, uint256])
total_borrowed: public(HashMap[address, uint256])


@deploy
def __init__(close_factor: uint256, liquidation_bonus: uint256):
    assert close_factor > 0 and close_factor <= ONE, "close factor"
    assert liquidation_bonus <= ONE // 2, "bonus"
    self.owner = msg.sender
    self.close_factor = close_factor
    self.liquidation_bonus = liquidation_bonus


@external
def list_asset(asset: address, decimals: uint256, collateral_factor: uint256,
               liquidation_threshold: uint256, price: uint256):
    assert msg.sender == self.owner, "owner"
    assert collateral_factor <= liquidation_threshold and liquidation_threshold < ONE, "factors"
    assert decimals <= 30, "decimals"
    if not self.listed[asset]:
        self.assets.append(asset)
        self.listed[asset] = True
    self.decimals[asset] = decimals
    self.collateral_factor[asset] = collateral_factor
    self.liquidation_threshold[asset] = liquidation_threshold
    self.price[asset] = price
    log AssetListed(asset=asset, decimals=decimals, collateral_factor=collateral_factor,
                    liquidation_threshold=liquidation_threshold)
    log PriceSet(asset=asset, price=price)


@external
def set_price(asset: address, price: uint256):
    assert msg.sender == self.owner, "owner"
    assert self.listed[asset], "asset"
    self.price[asset] = price
    log PriceSet(asset=asset, price=price)


@internal
@view
def _value(asset: address, amount: uint256) -> uint256:
    return amount * self.price[asset] // 10 ** self.decimals[asset]


@internal
@view
def _totals(account: address, asset: address, collateral_delta: int256,
            debt_delta: int256) -> (uint256, uint256, uint256, uint256):
    """collateral value, debt value, borrow capacity, threshold-weighted collateral;
    with `asset`'s collateral and debt moved by the deltas (what an action would do)."""
    collateral: uint256 = 0
    debt: uint256 = 0
    capacity: uint256 = 0
    weighted: uint256 = 0
    for a: address in self.assets:
        c: int256 = convert(self.supplied[account][a], int256)
        d: int256 = convert(self.borrowed[account][a], int256)
        if a == asset:
            c += collateral_delta
            d += debt_delta
        assert c >= 0 and d >= 0, "negative"
        cv: uint256 = self._value(a, convert(c, uint256))
        collateral += cv
        capacity += cv * self.collateral_factor[a] // ONE
        weighted += cv * self.liquidation_threshold[a] // ONE
        debt += self._value(a, convert(d, uint256))
    return collateral, debt, capacity, weighted


@internal
@pure
def _health(weighted: uint256, debt: uint256) -> uint256:
    if debt == 0:
        return max_value(uint256)
    return weighted * ONE // debt


@external
@view
def health_factor(account: address) -> uint256:
    collateral: uint256 = 0
    debt: uint256 = 0
    capacity: uint256 = 0
    weighted: uint256 = 0
    collateral, debt, capacity, weighted = self._totals(account, empty(address), 0, 0)
    return self._health(weighted, debt)


@external
@view
def health_factor_after(account: address, asset: address, collateral_delta: int256,
                        debt_delta: int256) -> uint256:
    """The health factor if `account`'s `asset` collateral and debt moved by the deltas."""
    collateral: uint256 = 0
    debt: uint256 = 0
    capacity: uint256 = 0
    weighted: uint256 = 0
    collateral, debt, capacity, weighted = self._totals(account, asset, collateral_delta,
                                                        debt_delta)
    return self._health(weighted, debt)


@external
@view
def account_data(account: address) -> (uint256, uint256, uint256, uint256):
    """(collateral value, debt value, borrow capacity, health factor), USD 1e18."""
    collateral: uint256 = 0
    debt: uint256 = 0
    capacity: uint256 = 0
    weighted: uint256 = 0
    collateral, debt, capacity, weighted = self._totals(account, empty(address), 0, 0)
    return collateral, debt, capacity, self._health(weighted, debt)


@external
@view
def positions(account: address) -> DynArray[AssetPosition, MAX_ASSETS]:
    """Every listed asset with its oracle price, factors and `account`'s balances: one
    consistent snapshot for off-chain maths."""
    out: DynArray[AssetPosition, MAX_ASSETS] = []
    for a: address in self.assets:
        out.append(AssetPosition(asset=a, decimals=self.decimals[a], price=self.price[a],
                                 collateral_factor=self.collateral_factor[a],
                                 liquidation_threshold=self.liquidation_threshold[a],
                                 supplied=self.supplied[account][a],
                                 borrowed=self.borrowed[account][a]))
    return out


@external
@view
def asset_count() -> uint256:
    return len(self.assets)


@internal
def _check_solvent(account: address):
    collateral: uint256 = 0
    debt: uint256 = 0
    capacity: uint256 = 0
    weighted: uint256 = 0
    collateral, debt, capacity, weighted = self._totals(account, empty(address), 0, 0)
    assert debt <= capacity, "insufficient collateral"


@external
def supply(asset: address, amount: uint256):
    assert self.listed[asset], "asset"
    assert amount > 0, "amount"
    self.supplied[msg.sender][asset] += amount
    self.total_supplied[asset] += amount
    assert extcall IERC20(asset).transferFrom(msg.sender, self, amount, default_return_value=True)
    log Supply(account=msg.sender, asset=asset, amount=amount)


@external
def withdraw(asset: address, amount: uint256):
    assert self.listed[asset], "asset"
    assert amount > 0, "amount"
    assert self.supplied[msg.sender][asset] >= amount, "exceeds supplied"
    self.supplied[msg.sender][asset] -= amount
    self.total_supplied[asset] -= amount
    self._check_solvent(msg.sender)
    assert extcall IERC20(asset).transfer(msg.sender, amount, default_return_value=True)
    log Withdraw(account=msg.sender, asset=asset, amount=amount)


@external
def borrow(asset: address, amount: uint256):
    assert self.listed[asset], "asset"
    assert amount > 0, "amount"
    self.borrowed[msg.sender][asset] += amount
    self.total_borrowed[asset] += amount
    self._check_solvent(msg.sender)
    assert extcall IERC20(asset).transfer(msg.sender, amount, default_return_value=True)
    log Borrow(account=msg.sender, asset=asset, amount=amount)


@external
def repay(asset: address, amount: uint256, account: address = msg.sender):
    """Repays `account`'s debt (the caller's by default); at most the debt is taken."""
    assert self.listed[asset], "asset"
    assert amount > 0, "amount"
    paid: uint256 = min(amount, self.borrowed[account][asset])
    assert paid > 0, "no debt"
    self.borrowed[account][asset] -= paid
    self.total_borrowed[asset] -= paid
    assert extcall IERC20(asset).transferFrom(msg.sender, self, paid, default_return_value=True)
    log Repay(account=account, asset=asset, amount=paid, payer=msg.sender)


@external
def liquidate(borrower: address, debt_asset: address, collateral_asset: address,
              amount: uint256) -> uint256:
    """Repays `amount` of `borrower`'s `debt_asset` (at most close_factor of it) and takes
    collateral worth that value plus the bonus. Returns the collateral seized."""
    assert self.listed[debt_asset] and self.listed[collateral_asset], "asset"
    assert amount > 0, "amount"
    collateral: uint256 = 0
    debt: uint256 = 0
    capacity: uint256 = 0
    weighted: uint256 = 0
    collateral, debt, capacity, weighted = self._totals(borrower, empty(address), 0, 0)
    assert self._health(weighted, debt) < ONE, "healthy"
    assert amount <= self.borrowed[borrower][debt_asset] * self.close_factor // ONE, "close factor"
    repaid_value: uint256 = self._value(debt_asset, amount)
    seized: uint256 = (repaid_value * (ONE + self.liquidation_bonus) // ONE
                       * 10 ** self.decimals[collateral_asset] // self.price[collateral_asset])
    assert seized <= self.supplied[borrower][collateral_asset], "collateral"
    self.borrowed[borrower][debt_asset] -= amount
    self.total_borrowed[debt_asset] -= amount
    self.supplied[borrower][collateral_asset] -= seized
    self.total_supplied[collateral_asset] -= seized
    assert extcall IERC20(debt_asset).transferFrom(msg.sender, self, amount, default_return_value=True)
    assert extcall IERC20(collateral_asset).transfer(msg.sender, seized, default_return_value=True)
    log Liquidate(borrower=borrower, liquidator=msg.sender, debt_asset=debt_asset,
                  collateral_asset=collateral_asset, repaid=amount, seized=seized)
    return seized
