# pragma version ^0.4.0
"""Two-coin stable-swap pool: Curve's StableSwap invariant with amplification A.

D and y are found by Newton's iteration exactly as Curve's StableSwap does (integer maths,
stop when a step moves by at most 1). Balances are scaled to 18 decimals by `RATES` before the
invariant sees them. The fee (in 1e-10 units) is taken from the output and stays in the pool.
Liquidity is added without Curve's imbalance fee (the demo pools are seeded balanced).
State-changing functions are @nonreentrant and move the balances before calling a token.
"""

from ethereum.ercs import IERC20

event TokenExchange:
    buyer: indexed(address)
    sold_id: int128
    tokens_sold: uint256
    bought_id: int128
    tokens_bought: uint256

event AddLiquidity:
    provider: indexed(address)
    amount0: uint256
    amount1: uint256
    liquidity: uint256

event RemoveLiquidity:
    provider: indexed(address)
    amount0: uint256
    amount1: uint256
    liquidity: uint256

N_COINS: constant(uint256) = 2
PRECISION: constant(uint256) = 10 ** 18
FEE_DENOMINATOR: constant(uint256) = 10 ** 10

coins: public(address[N_COINS])
balances: public(uint256[N_COINS])
rates: public(uint256[N_COINS])
A: public(uint256)
fee: public(uint256)
totalSupply: public(uint256)
balanceOf: public(HashMap[address, uint256])


@deploy
def __init__(_coins: address[N_COINS], _decimals: uint256[N_COINS], _A: uint256, _fee: uint256):
    assert _coins[0] != _coins[1], "same token"
    assert _A > 0, "A"
    assert _fee < FEE_DENOMINATOR // 2, "fee"
    self.coins = _coins
    for k: uint256 in range(N_COINS):
        assert _decimals[k] <= 18, "decimals"
        self.rates[k] = PRECISION * 10 ** (18 - _decimals[k])
    self.A = _A
    self.fee = _fee


@view
@internal
def _xp() -> uint256[N_COINS]:
    result: uint256[N_COINS] = empty(uint256[N_COINS])
    for k: uint256 in range(N_COINS):
        result[k] = self.rates[k] * self.balances[k] // PRECISION
    return result


@pure
@internal
def _get_D(xp: uint256[N_COINS], amp: uint256) -> uint256:
    S: uint256 = 0
    for _x: uint256 in xp:
        S += _x
    if S == 0:
        return 0
    Dprev: uint256 = 0
    D: uint256 = S
    Ann: uint256 = amp * N_COINS
    for _i: uint256 in range(255):
        D_P: uint256 = D
        for _x: uint256 in xp:
            D_P = D_P * D // (_x * N_COINS)
        Dprev = D
        D = (Ann * S + D_P * N_COINS) * D // ((Ann - 1) * D + (N_COINS + 1) * D_P)
        if D > Dprev:
            if D - Dprev <= 1:
                return D
        else:
            if Dprev - D <= 1:
                return D
    raise "D did not converge"


@view
@internal
def _get_y(i: uint256, j: uint256, x: uint256, xp: uint256[N_COINS]) -> uint256:
    assert i != j, "same coin"
    assert i < N_COINS and j < N_COINS, "coin index"
    amp: uint256 = self.A
    D: uint256 = self._get_D(xp, amp)
    Ann: uint256 = amp * N_COINS
    c: uint256 = D
    S_: uint256 = 0
    _x: uint256 = 0
    for k: uint256 in range(N_COINS):
        if k == i:
            _x = x
        elif k != j:
            _x = xp[k]
        else:
            continue
        S_ += _x
        c = c * D // (_x * N_COINS)
    c = c * D // (Ann * N_COINS)
    b: uint256 = S_ + D // Ann
    y_prev: uint256 = 0
    y: uint256 = D
    for _i: uint256 in range(255):
        y_prev = y
        y = (y * y + c) // (2 * y + b - D)
        if y > y_prev:
            if y - y_prev <= 1:
                return y
        else:
            if y_prev - y <= 1:
                return y
    raise "y did not converge"


@view
@internal
def _dy(i: uint256, j: uint256, dx: uint256) -> uint256:
    assert dx > 0, "insufficient input"
    xp: uint256[N_COINS] = self._xp()
    assert xp[0] > 0 and xp[1] > 0, "insufficient liquidity"
    x: uint256 = xp[i] + dx * self.rates[i] // PRECISION
    y: uint256 = self._get_y(i, j, x, xp)
    dy: uint256 = (xp[j] - y - 1) * PRECISION // self.rates[j]
    return dy - self.fee * dy // FEE_DENOMINATOR


@view
@external
def get_dy(i: int128, j: int128, dx: uint256) -> uint256:
    return self._dy(convert(i, uint256), convert(j, uint256), dx)


@view
@external
def get_virtual_price() -> uint256:
    if self.totalSupply == 0:
        return 0
    return self._get_D(self._xp(), self.A) * PRECISION // self.totalSupply


@external
@nonreentrant
def exchange(i: int128, j: int128, dx: uint256, min_dy: uint256, deadline: uint256) -> uint256:
    assert block.timestamp <= deadline, "expired"
    ui: uint256 = convert(i, uint256)
    uj: uint256 = convert(j, uint256)
    dy: uint256 = self._dy(ui, uj, dx)
    assert dy >= min_dy, "insufficient output"
    assert dy < self.balances[uj], "insufficient liquidity"
    # effects before interactions: a token calling back finds the balances already moved
    self.balances[ui] += dx
    self.balances[uj] -= dy
    assert extcall IERC20(self.coins[ui]).transferFrom(msg.sender, self, dx, default_return_value=True)
    assert extcall IERC20(self.coins[uj]).transfer(msg.sender, dy, default_return_value=True)
    log TokenExchange(buyer=msg.sender, sold_id=i, tokens_sold=dx, bought_id=j, tokens_bought=dy)
    return dy


@external
@nonreentrant
def add_liquidity(amounts: uint256[N_COINS], min_mint: uint256) -> uint256:
    D0: uint256 = self._get_D(self._xp(), self.A)
    for k: uint256 in range(N_COINS):
        self.balances[k] += amounts[k]
    D1: uint256 = self._get_D(self._xp(), self.A)
    assert D1 > D0, "zero deposit"
    minted: uint256 = D1
    if self.totalSupply > 0:
        minted = self.totalSupply * (D1 - D0) // D0
    assert minted >= min_mint, "slippage"
    self.totalSupply += minted
    self.balanceOf[msg.sender] += minted
    for k: uint256 in range(N_COINS):
        if amounts[k] > 0:
            assert extcall IERC20(self.coins[k]).transferFrom(msg.sender, self, amounts[k],
                                                              default_return_value=True)
    log AddLiquidity(provider=msg.sender, amount0=amounts[0], amount1=amounts[1], liquidity=minted)
    return minted


@external
@nonreentrant
def remove_liquidity(amount: uint256, min_amounts: uint256[N_COINS]) -> uint256[N_COINS]:
    assert amount > 0, "zero liquidity"
    out: uint256[N_COINS] = empty(uint256[N_COINS])
    for k: uint256 in range(N_COINS):
        out[k] = self.balances[k] * amount // self.totalSupply
        assert out[k] >= min_amounts[k], "slippage"
        self.balances[k] -= out[k]
    self.balanceOf[msg.sender] -= amount
    self.totalSupply -= amount
    for k: uint256 in range(N_COINS):
        assert extcall IERC20(self.coins[k]).transfer(msg.sender, out[k], default_return_value=True)
    log RemoveLiquidity(provider=msg.sender, amount0=out[0], amount1=out[1], liquidity=amount)
    return out
