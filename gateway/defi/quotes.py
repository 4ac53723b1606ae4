"""Quotes and routing: the best way to turn `amount_in` of one token into another.

Routes are every direct pool and every two-hop path (A→X→B through two different pools), over
all protocols. Each hop is priced off-chain by its protocol, in integers, from the snapshot
the pool book read at one block: the same numbers the contracts' view functions give for that
state (tests/test_defi_amm.py checks it to the unit). The best route is the one paying the
most out; gas is reported per route, not netted from the amount.

Price impact of a route: 1 - out / (in · Π mid_price · Π (1 - fee)), the shortfall against
trading the whole amount at the marginal price after fees.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction

from gateway.defi.errors import AmountInvalid, InsufficientLiquidity, NoRoute, TokenUnknown
from gateway.defi.pools import ChainMarket, PoolEntry
from gateway.defi.tokens import TokenInfo
from plugins.sdk import DefiQuoteRefused

BASE_GAS = 21_000
SIX_PLACES = Decimal("0.000001")


@dataclass(frozen=True)
class Hop:
    entry: PoolEntry
    token_in: str
    token_out: str
    amount_in: int
    amount_out: int

    @property
    def fee_amount(self) -> int:
        """The pool's fee, in units of `token_in`."""
        return int(self.amount_in * self.entry.pool.fee)


@dataclass(frozen=True)
class Route:
    hops: tuple[Hop, ...]
    amount_in: int
    amount_out: int
    price_impact: Decimal
    gas_estimate: int

    @property
    def path(self) -> list[str]:
        return [self.hops[0].token_in] + [h.token_out for h in self.hops]


@dataclass(frozen=True)
class Quote:
    market: ChainMarket
    token_in: TokenInfo
    token_out: TokenInfo
    amount_in: int
    best: Route
    alternatives: tuple[Route, ...]  # the other routes that can fill, best first

    @property
    def block(self) -> int:
        return self.market.block


def _pairs(market: ChainMarket) -> dict[str, list[tuple[PoolEntry, str]]]:
    """token (lowercase) → [(pool, other token)] for every ordered pair a pool trades."""
    index: dict[str, list[tuple[PoolEntry, str]]] = {}
    for entry in market.pools:
        tokens = entry.pool.tokens
        for a in tokens:
            for b in tokens:
                if a != b:
                    index.setdefault(a.lower(), []).append((entry, b))
    return index


def candidate_paths(market: ChainMarket, token_in: str, token_out: str
                    ) -> list[tuple[tuple[PoolEntry, str, str], ...]]:
    """Every direct and two-hop path as ((pool, in, out), ...)."""
    index = _pairs(market)
    t_in, t_out = token_in.lower(), token_out.lower()
    paths: list[tuple[tuple[PoolEntry, str, str], ...]] = []
    for entry, mid in index.get(t_in, []):
        if mid.lower() == t_out:
            paths.append(((entry, token_in, mid),))
            continue
        for entry2, end in index.get(mid.lower(), []):
            if end.lower() == t_out and entry2 is not entry:
                paths.append(((entry, token_in, mid), (entry2, mid, end)))
    return paths


def price_path(path: tuple[tuple[PoolEntry, str, str], ...], amount_in: int) -> Route:
    """Price one path; raises DefiQuoteRefused when a hop cannot fill."""
    hops: list[Hop] = []
    amount = amount_in
    ideal = Fraction(amount_in)
    gas = BASE_GAS
    for entry, t_in, t_out in path:
        out = entry.protocol.quote(entry.pool, t_in, t_out, amount)
        ideal *= entry.protocol.mid_price(entry.pool, t_in, t_out) * (1 - Fraction(entry.pool.fee))
        hops.append(Hop(entry, t_in, t_out, amount, out))
        gas += entry.pool.gas_per_swap
        amount = out
    impact = Decimal(0) if ideal <= 0 else _decimal(max(Fraction(0), 1 - Fraction(amount) / ideal))
    return Route(tuple(hops), amount_in, amount, impact, gas)


def _decimal(value: Fraction) -> Decimal:
    return (Decimal(value.numerator) / Decimal(value.denominator)).quantize(
        SIX_PLACES, rounding=ROUND_HALF_EVEN)


def quote(market: ChainMarket, token_in: TokenInfo, token_out: TokenInfo, amount_in: int,
          max_alternatives: int = 5) -> Quote:
    if token_in.address.lower() == token_out.address.lower():
        raise TokenUnknown("tokenIn and tokenOut are the same token",
                           details={"token": token_in.symbol})
    if amount_in <= 0:
        raise AmountInvalid("the amount in must be positive", details={"amountIn": str(amount_in)})
    paths = candidate_paths(market, token_in.address, token_out.address)
    if not paths:
        raise NoRoute(f"no pool path from {token_in.symbol} to {token_out.symbol}",
                      details={"tokenIn": token_in.symbol, "tokenOut": token_out.symbol})
    routes: list[Route] = []
    refusals: set[str] = set()
    for path in paths:
        try:
            routes.append(price_path(path, amount_in))
        except DefiQuoteRefused as refused:
            refusals.add(refused.code)
        except Exception:  # a broken protocol loses its pools for this quote, not the request
            refusals.add("PROTOCOL_FAILED")
    if not routes:
        if refusals == {"AMOUNT_INVALID"}:
            raise AmountInvalid("the amount is too small to buy anything on any route",
                                details={"amountIn": str(amount_in)})
        raise InsufficientLiquidity(
            f"no route can fill {token_in.from_units(amount_in)} {token_in.symbol}",
            details={"amountIn": str(amount_in), "routesTried": len(paths)})
    routes.sort(key=lambda r: (-r.amount_out, r.gas_estimate))
    return Quote(market, token_in, token_out, amount_in, routes[0],
                 tuple(routes[1:1 + max_alternatives]))
