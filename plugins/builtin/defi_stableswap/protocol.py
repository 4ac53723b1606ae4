"""Two-coin stable-swap pools: Curve's StableSwap invariant, with amplification A,

    A·n^n·Σx + D = A·D·n^n + D^(n+1) / (n^n·Πx),

solved for D and for y by Newton's iteration exactly as Curve's contract does it (integer
division at the same places, stopping when a step moves by at most 1), so `get_dy` here equals
the pool contract's (gateway/defi/contracts/StableSwapPool.vy) to the unit.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

from plugins.sdk import DefiCall, DefiChainView, DefiPool, DefiQuoteRefused

NAME = "stableswap"
N_COINS = 2
PRECISION = 10 ** 18
FEE_DENOMINATOR = 10 ** 10
GAS_PER_SWAP = 140_000

_u = {"type": "uint256"}
ABI: list[dict[str, Any]] = [
    {"type": "function", "name": "coins", "stateMutability": "view",
     "inputs": [{"name": "arg0", **_u}], "outputs": [{"name": "", "type": "address"}]},
    {"type": "function", "name": "balances", "stateMutability": "view",
     "inputs": [{"name": "arg0", **_u}], "outputs": [{"name": "", **_u}]},
    {"type": "function", "name": "rates", "stateMutability": "view",
     "inputs": [{"name": "arg0", **_u}], "outputs": [{"name": "", **_u}]},
    {"type": "function", "name": "A", "stateMutability": "view", "inputs": [],
     "outputs": [{"name": "", **_u}]},
    {"type": "function", "name": "fee", "stateMutability": "view", "inputs": [],
     "outputs": [{"name": "", **_u}]},
    {"type": "function", "name": "get_dy", "stateMutability": "view",
     "inputs": [{"name": "i", "type": "int128"}, {"name": "j", "type": "int128"},
                {"name": "dx", **_u}], "outputs": [{"name": "", **_u}]},
    {"type": "function", "name": "exchange", "stateMutability": "nonpayable",
     "inputs": [{"name": "i", "type": "int128"}, {"name": "j", "type": "int128"},
                {"name": "dx", **_u}, {"name": "min_dy", **_u}, {"name": "deadline", **_u}],
     "outputs": [{"name": "", **_u}]},
]


class _NoConvergence(ArithmeticError):
    pass


def get_D(xp: Sequence[int], amp: int) -> int:
    return _get_D(tuple(xp), amp)


@functools.lru_cache(maxsize=4096)  # a pure function of the pool state: many quotes share it
def _get_D(xp: tuple[int, ...], amp: int) -> int:
    S = sum(xp)
    if S == 0:
        return 0
    D = S
    Ann = amp * N_COINS
    for _ in range(255):
        D_P = D
        for x in xp:
            D_P = D_P * D // (x * N_COINS)
        Dprev = D
        D = (Ann * S + D_P * N_COINS) * D // ((Ann - 1) * D + (N_COINS + 1) * D_P)
        if abs(D - Dprev) <= 1:
            return D
    raise _NoConvergence("D did not converge")


def get_y(i: int, j: int, x: int, xp: Sequence[int], amp: int) -> int:
    D = get_D(xp, amp)
    Ann = amp * N_COINS
    c = D
    S_ = 0
    for k in range(N_COINS):
        if k == i:
            _x = x
        elif k != j:
            _x = xp[k]
        else:
            continue
        S_ += _x
        c = c * D // (_x * N_COINS)
    c = c * D // (Ann * N_COINS)
    b = S_ + D // Ann
    y = D
    for _ in range(255):
        y_prev = y
        y = (y * y + c) // (2 * y + b - D)
        if abs(y - y_prev) <= 1:
            return y
    raise _NoConvergence("y did not converge")


@dataclass(frozen=True)
class StableState:
    balances: tuple[int, ...]
    rates: tuple[int, ...]  # PRECISION · 10^(18 - decimals)
    amp: int
    fee: int  # in 1e-10


def get_dy(state: StableState, i: int, j: int, dx: int, *, with_fee: bool = True) -> int:
    if dx <= 0:
        raise DefiQuoteRefused("AMOUNT_INVALID", "the amount in must be positive")
    xp = [state.rates[k] * state.balances[k] // PRECISION for k in range(N_COINS)]
    if min(xp) <= 0:
        raise DefiQuoteRefused("INSUFFICIENT_LIQUIDITY", "the pool is empty")
    x = xp[i] + dx * state.rates[i] // PRECISION
    try:
        y = get_y(i, j, x, xp, state.amp)
    except (_NoConvergence, ZeroDivisionError):
        raise DefiQuoteRefused("INSUFFICIENT_LIQUIDITY", "the invariant has no answer") from None
    if xp[j] < y + 1:
        raise DefiQuoteRefused("INSUFFICIENT_LIQUIDITY", "the pool cannot pay out that much")
    dy = (xp[j] - y - 1) * PRECISION // state.rates[j]
    return dy - state.fee * dy // FEE_DENOMINATOR if with_fee else dy


@functools.lru_cache(maxsize=4096)
def _mid_price(state: StableState, i: int, j: int) -> Fraction:
    """The marginal rate from a trade of a millionth of the input side, before the fee."""
    probe = max(1, state.balances[i] // 10 ** 6)
    return Fraction(get_dy(state, i, j, probe, with_fee=False), probe)


class StableSwapProtocol:
    name = NAME

    def __init__(self, extra_pools: Mapping[str, Sequence[str]] | None = None) -> None:
        self._extra = {str(k): list(v) for k, v in (extra_pools or {}).items()}

    def pools(self, chain: DefiChainView) -> list[DefiPool]:
        block = chain.web3.eth.block_number
        return [self._read(chain, address, block) for address in chain.pool_addresses(NAME, self._extra)]

    def refresh(self, chain: DefiChainView, pool: DefiPool) -> DefiPool:
        functions = self._contract(chain, pool.address).functions
        state: StableState = pool.state
        balances = tuple(int(functions.balances(k).call()) for k in range(N_COINS))
        return replace(pool, state=replace(state, balances=balances),
                       block=chain.web3.eth.block_number)

    def quote(self, pool: DefiPool, token_in: str, token_out: str, amount_in: int) -> int:
        i, j = self._indices(pool, token_in, token_out)
        state: StableState = pool.state
        if amount_in > state.balances[i]:
            # Beyond the pool: more than its whole balance of the input coin.
            raise DefiQuoteRefused("INSUFFICIENT_LIQUIDITY",
                                   "the amount exceeds the pool's balance of the input coin")
        dy = get_dy(state, i, j, amount_in)
        if dy <= 0:
            raise DefiQuoteRefused("AMOUNT_INVALID", "the amount is too small to buy anything")
        if dy >= state.balances[j]:
            raise DefiQuoteRefused("INSUFFICIENT_LIQUIDITY", "the pool cannot pay out that much")
        return dy

    def mid_price(self, pool: DefiPool, token_in: str, token_out: str) -> Fraction:
        i, j = self._indices(pool, token_in, token_out)
        return _mid_price(pool.state, i, j)

    def onchain_quote(self, chain: DefiChainView, pool: DefiPool, token_in: str, token_out: str,
                      amount_in: int) -> int:
        i, j = self._indices(pool, token_in, token_out)
        return int(self._contract(chain, pool.address).functions.get_dy(i, j, amount_in).call())

    def swap_call(self, chain: DefiChainView, pool: DefiPool, token_in: str, token_out: str,
                  amount_in: int, min_out: int, recipient: str, deadline: int) -> DefiCall:
        # The pool pays the caller (Curve's convention); the gateway only swaps for the signer.
        i, j = self._indices(pool, token_in, token_out)
        data = self._contract(chain, pool.address).encode_abi(
            "exchange", args=[i, j, amount_in, min_out, deadline])
        return DefiCall(to=pool.address, data=data, spender=pool.address)

    @staticmethod
    def _indices(pool: DefiPool, token_in: str, token_out: str) -> tuple[int, int]:
        lowered = [t.lower() for t in pool.tokens]
        try:
            i, j = lowered.index(token_in.lower()), lowered.index(token_out.lower())
        except ValueError:
            raise DefiQuoteRefused("INSUFFICIENT_LIQUIDITY", "the pool does not trade this pair") from None
        if i == j:
            raise DefiQuoteRefused("AMOUNT_INVALID", "the same token in and out")
        return i, j

    @staticmethod
    def _contract(chain: DefiChainView, address: str) -> Any:
        return chain.web3.eth.contract(address=chain.web3.to_checksum_address(address), abi=ABI)

    def _read(self, chain: DefiChainView, address: str, block: int) -> DefiPool:
        f = self._contract(chain, address).functions
        coins = tuple(f.coins(k).call() for k in range(N_COINS))
        state = StableState(balances=tuple(int(f.balances(k).call()) for k in range(N_COINS)),
                            rates=tuple(int(f.rates(k).call()) for k in range(N_COINS)),
                            amp=int(f.A().call()), fee=int(f.fee().call()))
        return DefiPool(protocol=NAME, address=chain.web3.to_checksum_address(address),
                        tokens=coins, fee=Fraction(state.fee, FEE_DENOMINATOR), state=state,
                        gas_per_swap=GAS_PER_SWAP, block=block)
