# pragma version ^0.4.0
"""Constant-product pool with a 0.3% fee: Uniswap v2 maths, two tokens.

Swaps pull `amount_in` with transferFrom (approve the pool first); they revert when the output
is under `min_out` or the deadline has passed, so a moved price cannot fill the trader worse.
State-changing functions are @nonreentrant and move the reserves before calling a token.
"""

from ethereum.ercs import IERC20

event Swap:
    sender: indexed(address)
    token_in: indexed(address)
    amount_in: uint256
    amount_out: uint256
    to: indexed(address)

event Sync:
    reserve0: uint256
    reserve1: uint256

event Mint:
    sender: indexed(address)
    amount0: uint256
    amount1: uint256
    liquidity: uint256

event Burn:
    sender: indexed(address)
    amount0: uint256
    amount1: uint256
    liquidity: uint256
    to: indexed(address)

FEE_NUMERATOR: constant(uint256) = 997
FEE_DENOMINATOR: constant(uint256) = 1000

token0: public(address)
token1: public(address)
reserve0: public(uint256)
reserve1: public(uint256)
totalSupply: public(uint256)
balanceOf: public(HashMap[address, uint256])


@deploy
def __init__(_token0: address, _token1: address):
    assert _token0 != _token1, "same token"
    self.token0 = _token0
    self.token1 = _token1


@view
@external
def get_reserves() -> (uint256, uint256):
    return self.reserve0, self.reserve1


@view
@internal
def _amount_out(amount_in: uint256, reserve_in: uint256, reserve_out: uint256) -> uint256:
    assert amount_in > 0, "insufficient input"
    assert reserve_in > 0 and reserve_out > 0, "insufficient liquidity"
    amount_in_with_fee: uint256 = amount_in * FEE_NUMERATOR
    return amount_in_with_fee * reserve_out // (reserve_in * FEE_DENOMINATOR + amount_in_with_fee)


@view
@internal
def _reserves_for(token_in: address) -> (uint256, uint256):
    if token_in == self.token0:
        return self.reserve0, self.reserve1
    assert token_in == self.token1, "unknown token"
    return self.reserve1, self.reserve0


@view
@external
def get_amount_out(token_in: address, amount_in: uint256) -> uint256:
    reserve_in: uint256 = 0
    reserve_out: uint256 = 0
    reserve_in, reserve_out = self._reserves_for(token_in)
    return self._amount_out(amount_in, reserve_in, reserve_out)


@external
@nonreentrant
def swap(token_in: address, amount_in: uint256, min_out: uint256, to: address,
         deadline: uint256) -> uint256:
    assert block.timestamp <= deadline, "expired"
    reserve_in: uint256 = 0
    reserve_out: uint256 = 0
    reserve_in, reserve_out = self._reserves_for(token_in)
    amount_out: uint256 = self._amount_out(amount_in, reserve_in, reserve_out)
    assert amount_out >= min_out, "insufficient output"
    assert amount_out < reserve_out, "insufficient liquidity"
    token_out: address = self.token1 if token_in == self.token0 else self.token0
    # effects before interactions: a token calling back finds the reserves already moved
    if token_in == self.token0:
        self.reserve0 = reserve_in + amount_in
        self.reserve1 = reserve_out - amount_out
    else:
        self.reserve1 = reserve_in + amount_in
        self.reserve0 = reserve_out - amount_out
    assert extcall IERC20(token_in).transferFrom(msg.sender, self, amount_in, default_return_value=True)
    assert extcall IERC20(token_out).transfer(to, amount_out, default_return_value=True)
    log Swap(sender=msg.sender, token_in=token_in, amount_in=amount_in, amount_out=amount_out, to=to)
    log Sync(reserve0=self.reserve0, reserve1=self.reserve1)
    return amount_out


@external
@nonreentrant
def add_liquidity(amount0: uint256, amount1: uint256, min_liquidity: uint256, to: address) -> uint256:
    assert amount0 > 0 and amount1 > 0, "zero amount"
    liquidity: uint256 = 0
    if self.totalSupply == 0:
        liquidity = isqrt(amount0 * amount1)
    else:
        liquidity = min(amount0 * self.totalSupply // self.reserve0,
                        amount1 * self.totalSupply // self.reserve1)
    assert liquidity > 0 and liquidity >= min_liquidity, "insufficient liquidity minted"
    self.totalSupply += liquidity
    self.balanceOf[to] += liquidity
    self.reserve0 += amount0
    self.reserve1 += amount1
    assert extcall IERC20(self.token0).transferFrom(msg.sender, self, amount0, default_return_value=True)
    assert extcall IERC20(self.token1).transferFrom(msg.sender, self, amount1, default_return_value=True)
    log Mint(sender=msg.sender, amount0=amount0, amount1=amount1, liquidity=liquidity)
    log Sync(reserve0=self.reserve0, reserve1=self.reserve1)
    return liquidity


@external
@nonreentrant
def remove_liquidity(liquidity: uint256, min0: uint256, min1: uint256, to: address) -> (uint256, uint256):
    assert liquidity > 0, "zero liquidity"
    amount0: uint256 = liquidity * self.reserve0 // self.totalSupply
    amount1: uint256 = liquidity * self.reserve1 // self.totalSupply
    assert amount0 >= min0 and amount1 >= min1, "insufficient output"
    self.balanceOf[msg.sender] -= liquidity
    self.totalSupply -= liquidity
    self.reserve0 -= amount0
    self.reserve1 -= amount1
    assert extcall IERC20(self.token0).transfer(to, amount0, default_return_value=True)
    assert extcall IERC20(self.token1).transfer(to, amount1, default_return_value=True)
    log Burn(sender=msg.sender, amount0=amount0, amount1=amount1, liquidity=liquidity, to=to)
    log Sync(reserve0=self.reserve0, reserve1=self.reserve1)
    return amount0, amount1
