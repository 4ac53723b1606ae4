"""Constant-product pools: x·y = k with a 0.3 % fee on the input, as Uniswap v2.

getAmountOut: amountInWithFee = amountIn·997; out = amountInWithFee·reserveOut /
(reserveIn·1000 + amountInWithFee), in integers, exactly as the pool contract's
`get_amount_out` (gateway/defi/contracts/ConstantProductPool.vy).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

from plugins.sdk import DefiCall, DefiChainView, DefiPool, DefiQuoteRefused

NAME = "cpmm"
FEE_NUMERATOR = 997
FEE_DENOMINATOR = 1000
GAS_PER_SWAP = 95_000

ABI: list[dict[str, Any]] = [
    {"type": "function", "name": "token0", "stateMutability": "view", "inputs": [],
     "outputs": [{"name": "", "type": "address"}]},
    {"type": "function", "name": "token1", "stateMutability": "view", "inputs": [],
     "outputs": [{"name": "", "type": "address"}]},
    {"type": "function", "name": "get_reserves", "stateMutability": "view", "inputs": [],
     "outputs": [{"name": "", "type": "uint256"}, {"name": "", "type": "uint256"}]},
    {"type": "function", "name": "get_amount_out", "stateMutability": "view",
     "inputs": [{"name": "token_in", "type": "address"}, {"name": "amount_in", "type": "uint256"}],
     "outputs": [{"name": "", "type": "uint256"}]},
    {"type": "function", "name": "swap", "stateMutability": "nonpayable",
     "inputs": [{"name": "token_in", "type": "address"}, {"name": "amount_in", "type": "uint256"},
                {"name": "min_out", "type": "uint256"}, {"name": "to", "type": "address"},
                {"name": "deadline", "type": "uint256"}],
     "outputs": [{"name": "", "type": "uint256"}]},
]


def amount_out(amount_in: int, reserve_in: int, reserve_out: int) -> int:
    """Uniswap v2 getAmountOut, in integers."""
    if amount_in <= 0:
        raise DefiQuoteRefused("AMOUNT_INVALID", "the amount in must be positive")
    if reserve_in <= 0 or reserve_out <= 0:
        raise DefiQuoteRefused("INSUFFICIENT_LIQUIDITY", "the pool is empty")
    with_fee = amount_in * FEE_NUMERATOR
    return with_fee * reserve_out // (reserve_in * FEE_DENOMINATOR + with_fee)


@dataclass(frozen=True)
class Reserves:
    reserve0: int
    reserve1: int


class ConstantProductProtocol:
    name = NAME

    def __init__(self, extra_pools: Mapping[str, Sequence[str]] | None = None) -> None:
        # chain id (as a string) -> further pool addresses from the plugin's configuration
        self._extra = {str(k): list(v) for k, v in (extra_pools or {}).items()}

    def pools(self, chain: DefiChainView) -> list[DefiPool]:
        block = chain.web3.eth.block_number
        return [self._read(chain, address, block) for address in chain.pool_addresses(NAME, self._extra)]

    def refresh(self, chain: DefiChainView, pool: DefiPool) -> DefiPool:
        r0, r1 = self._contract(chain, pool.address).functions.get_reserves().call()
        return replace(pool, state=Reserves(r0, r1), block=chain.web3.eth.block_number)

    def quote(self, pool: DefiPool, token_in: str, token_out: str, amount_in: int) -> int:
        reserve_in, reserve_out = self._sides(pool, token_in, token_out)
        if amount_in > reserve_in:
            # Beyond the pool: more than its whole reserve of the input token (the price would
            # move more than fourfold). The contract would still answer; a quote does not.
            raise DefiQuoteRefused("INSUFFICIENT_LIQUIDITY",
                                   "the amount exceeds the pool's reserve of the input token")
        out = amount_out(amount_in, reserve_in, reserve_out)
        if out == 0:
            raise DefiQuoteRefused("AMOUNT_INVALID", "the amount is too small to buy anything")
        if out >= reserve_out:
            raise DefiQuoteRefused("INSUFFICIENT_LIQUIDITY", "the pool cannot pay out that much")
        return out

    def mid_price(self, pool: DefiPool, token_in: str, token_out: str) -> Fraction:
        reserve_in, reserve_out = self._sides(pool, token_in, token_out)
        return Fraction(reserve_out, reserve_in)

    def onchain_quote(self, chain: DefiChainView, pool: DefiPool, token_in: str, token_out: str,
                      amount_in: int) -> int:
        self._sides(pool, token_in, token_out)
        return int(self._contract(chain, pool.address).functions.get_amount_out(
            token_in, amount_in).call())

    def swap_call(self, chain: DefiChainView, pool: DefiPool, token_in: str, token_out: str,
                  amount_in: int, min_out: int, recipient: str, deadline: int) -> DefiCall:
        self._sides(pool, token_in, token_out)
        data = self._contract(chain, pool.address).encode_abi(
            "swap", args=[token_in, amount_in, min_out, recipient, deadline])
        return DefiCall(to=pool.address, data=data, spender=pool.address)

    @staticmethod
    def _sides(pool: DefiPool, token_in: str, token_out: str) -> tuple[int, int]:
        state: Reserves = pool.state
        t0, t1 = (t.lower() for t in pool.tokens)
        pair = (token_in.lower(), token_out.lower())
        if pair == (t0, t1):
            return state.reserve0, state.reserve1
        if pair == (t1, t0):
            return state.reserve1, state.reserve0
        raise DefiQuoteRefused("INSUFFICIENT_LIQUIDITY", "the pool does not trade this pair")

    @staticmethod
    def _contract(chain: DefiChainView, address: str) -> Any:
        return chain.web3.eth.contract(address=chain.web3.to_checksum_address(address), abi=ABI)

    def _read(self, chain: DefiChainView, address: str, block: int) -> DefiPool:
        contract = self._contract(chain, address)
        token0 = contract.functions.token0().call()
        token1 = contract.functions.token1().call()
        r0, r1 = contract.functions.get_reserves().call()
        return DefiPool(protocol=NAME, address=contract.address, tokens=(token0, token1),
                        fee=Fraction(FEE_DENOMINATOR - FEE_NUMERATOR, FEE_DENOMINATOR),
                        state=Reserves(r0, r1), gas_per_swap=GAS_PER_SWAP, block=block)
