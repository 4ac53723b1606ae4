"""DeFi: chains, pools, quotes and protected swaps (lending and vaults: schema/defi_lending.py).

Token amounts are Decimals in whole tokens (strings on the wire, "1.5" WETH) with the exact
integer in base units beside them as `...Raw` strings (they exceed GraphQL's Int). Chains are
named by name ("embedded") or chain id. Permissions (casbin object "defi"): read for chains,
pools, quotes, the account and swaps; write for swapping. The tenant's signing key never leaves
the gateway: `defiAccount` gives its address.
"""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal

import strawberry
from strawberry.types import Info

from gateway.defi.chain import Chain
from gateway.defi.models import DefiSwap as SwapRow
from gateway.defi.pools import PoolEntry, erc20
from gateway.defi.quotes import Hop, Quote, Route
from gateway.defi.service import DefiAccount as Account
from gateway.defi.swaps import SwapRequest
from gateway.defi.tokens import TokenInfo
from gateway.http.context import RequestContext
from schema.common import DEFAULT_PAGE, Connection, ctx


def _plain(value: Decimal) -> Decimal:
    normal = value.normalize()
    return normal.quantize(Decimal(1)) if normal.as_tuple().exponent > 0 else normal  # type: ignore[operator]


def _read(info: Info) -> RequestContext:
    c = ctx(info)
    c.require("defi", "read")
    return c


@strawberry.type(description="A chain the gateway reaches. The RPC URL is not shown (it may "
                             "carry credentials).")
class DefiChain:
    chain_id: str = strawberry.field(description="EIP-155 chain id (a string: it exceeds Int).")
    name: str
    embedded: bool = strawberry.field(description="The in-process EVM with the demo world.")
    explorer_url: str | None
    private_submission: bool = strawberry.field(
        description="Swaps go to a private relay instead of the public mempool.")

    @classmethod
    def of(cls, chain: Chain) -> DefiChain:
        return cls(chain_id=str(chain.chain_id), name=chain.name, embedded=chain.embedded,
                   explorer_url=chain.explorer_url, private_submission=bool(chain.private_submission))


@strawberry.type
class DefiToken:
    symbol: str
    name: str
    address: str
    decimals: int

    @classmethod
    def of(cls, token: TokenInfo) -> DefiToken:
        return cls(symbol=token.symbol, name=token.name, address=token.address,
                   decimals=token.decimals)


@strawberry.type(description="A pool and its state at `block`.")
class DefiPool:
    address: str
    protocol: str = strawberry.field(description="The protocol plugin's name: cpmm, stableswap, ...")
    plugin: str
    tokens: list[DefiToken]
    reserves: list[Decimal] = strawberry.field(description="Each token's balance held by the pool.")
    fee: Decimal = strawberry.field(description="Share of each trade kept by the pool (0.003).")
    block: int

    @classmethod
    def of(cls, chain: Chain, entry: PoolEntry, tokens: dict[str, TokenInfo]) -> DefiPool:
        infos = [tokens[t.lower()] for t in entry.pool.tokens]
        with chain.guard():
            reserves = [t.from_units(int(erc20(chain, t.address).functions.balanceOf(
                entry.pool.address).call())) for t in infos]
        fee = entry.pool.fee
        return cls(address=entry.pool.address, protocol=entry.protocol.name, plugin=entry.plugin,
                   tokens=[DefiToken.of(t) for t in infos], reserves=[_plain(r) for r in reserves],
                   fee=_plain(Decimal(fee.numerator) / Decimal(fee.denominator)),
                   block=entry.pool.block)


@strawberry.type
class DefiHop:
    pool: str
    protocol: str
    token_in: DefiToken
    token_out: DefiToken
    amount_in: Decimal
    amount_out: Decimal
    amount_out_raw: str
    fee: Decimal = strawberry.field(description="The pool's fee, in tokenIn.")

    @classmethod
    def of(cls, hop: Hop, tokens: dict[str, TokenInfo]) -> DefiHop:
        t_in, t_out = tokens[hop.token_in.lower()], tokens[hop.token_out.lower()]
        return cls(pool=hop.entry.pool.address, protocol=hop.entry.protocol.name,
                   token_in=DefiToken.of(t_in), token_out=DefiToken.of(t_out),
                   amount_in=_plain(t_in.from_units(hop.amount_in)),
                   amount_out=_plain(t_out.from_units(hop.amount_out)),
                   amount_out_raw=str(hop.amount_out), fee=_plain(t_in.from_units(hop.fee_amount)))


@strawberry.type
class DefiRoute:
    path: list[DefiToken]
    hops: list[DefiHop]
    amount_out: Decimal
    amount_out_raw: str
    price_impact: Decimal = strawberry.field(description="Shortfall against the marginal price "
                                                         "after fees, 0 to 1.")
    gas_estimate: int

    @classmethod
    def of(cls, route: Route, out: TokenInfo, tokens: dict[str, TokenInfo]) -> DefiRoute:
        return cls(path=[DefiToken.of(tokens[a.lower()]) for a in route.path],
                   hops=[DefiHop.of(h, tokens) for h in route.hops],
                   amount_out=_plain(out.from_units(route.amount_out)),
                   amount_out_raw=str(route.amount_out), price_impact=_plain(route.price_impact),
                   gas_estimate=route.gas_estimate)


@strawberry.type(description="The best route over direct and two-hop paths across all protocols, "
                             "priced off-chain from pool state at `block`, and the alternatives.")
class DefiQuote:
    chain: str
    block: int
    token_in: DefiToken
    token_out: DefiToken
    amount_in: Decimal
    amount_in_raw: str
    amount_out: Decimal
    amount_out_raw: str
    price_impact: Decimal
    fees: list[Decimal] = strawberry.field(description="Each hop's pool fee, in that hop's tokenIn.")
    gas_estimate: int
    route: DefiRoute
    alternatives: list[DefiRoute]

    @classmethod
    def of(cls, q: Quote) -> DefiQuote:
        tokens = {t.address.lower(): t for t in q.market.tokens.all()}
        best = DefiRoute.of(q.best, q.token_out, tokens)
        return cls(chain=q.market.chain.name, block=q.block, token_in=DefiToken.of(q.token_in),
                   token_out=DefiToken.of(q.token_out),
                   amount_in=_plain(q.token_in.from_units(q.amount_in)), amount_in_raw=str(q.amount_in),
                   amount_out=best.amount_out, amount_out_raw=best.amount_out_raw,
                   price_impact=best.price_impact, fees=[h.fee for h in best.hops],
                   gas_estimate=best.gas_estimate, route=best,
                   alternatives=[DefiRoute.of(r, q.token_out, tokens) for r in q.alternatives])


@strawberry.type
class DefiTokenBalance:
    token: DefiToken
    amount: Decimal
    raw: str


@strawberry.type(description="The tenant's own address on a chain and its balances; never the key.")
class DefiAccount:
    chain: str
    address: str | None = strawberry.field(description=(
        "Null until the tenant's first write on this chain (defiOpenAccount, a swap, a lending "
        "action or a vault makes the key): a read never makes a key."))
    native_balance: Decimal = strawberry.field(description="In the chain's native coin (ETH).")
    balances: list[DefiTokenBalance]

    @classmethod
    def of(cls, account: Account) -> DefiAccount:
        return cls(chain=account.chain.name, address=account.address,
                   native_balance=_plain(Decimal(account.native_raw).scaleb(-18)),
                   balances=[DefiTokenBalance(token=DefiToken.of(b.token), amount=_plain(b.amount),
                                              raw=str(b.raw)) for b in account.balances])


@strawberry.enum
class DefiSwapStatus(enum.Enum):
    PENDING = "PENDING"  # sent (or about to be); a retry with the same key finishes the record
    EXECUTED = "EXECUTED"
    REFUSED = "REFUSED"
    FAILED = "FAILED"


@strawberry.type
class DefiSwap:
    id: strawberry.ID
    chain: str
    account: str
    token_in: DefiToken
    token_out: DefiToken
    amount_in: Decimal
    quoted_out: Decimal = strawberry.field(description="The expected amount the tolerance applies to.")
    min_out: Decimal = strawberry.field(description="The least the chain would pay (else revert).")
    amount_out: Decimal | None
    slippage_bps: int
    deadline: datetime
    status: DefiSwapStatus
    error_code: str | None
    tx_hashes: list[str]
    explorer_links: list[str]
    block_number: int | None
    created_at: datetime
    replayed: bool = False

    @classmethod
    def of(cls, c: RequestContext, row: SwapRow, replayed: bool = False) -> DefiSwap:
        chain = c.runtime.chains.get(row.chain_id)
        t_in = c.runtime.defi.token(chain, row.token_in)
        t_out = c.runtime.defi.token(chain, row.token_out)
        return cls(id=strawberry.ID(row.id), chain=chain.name, account=row.account,
                   token_in=DefiToken.of(t_in), token_out=DefiToken.of(t_out),
                   amount_in=_plain(t_in.from_units(int(row.amount_in))),
                   quoted_out=_plain(t_out.from_units(int(row.quoted_out))),
                   min_out=_plain(t_out.from_units(int(row.min_out))),
                   amount_out=(None if row.amount_out is None
                               else _plain(t_out.from_units(int(row.amount_out)))),
                   slippage_bps=row.slippage_bps, deadline=row.deadline,
                   status=DefiSwapStatus(row.status), error_code=row.error_code,
                   tx_hashes=list(row.tx_hashes),
                   explorer_links=[link for h in row.tx_hashes if (link := chain.explorer_link(h))],
                   block_number=row.block_number, created_at=row.created_at, replayed=replayed)


@strawberry.input(description="A swap with MEV protection: the minimum out is the expected amount "
                              "less `slippageBps`; the chain refuses anything worse or later than "
                              "the deadline, and a simulation refuses it before sending.")
class DefiSwapInput:
    chain: str
    token_in: str = strawberry.field(description="Symbol (\"WETH\") or address.")
    token_out: str
    amount_in: str = strawberry.field(description="In whole tokens, e.g. \"1.5\".")
    slippage_bps: int = strawberry.field(description="Tolerance: above 0, at most 5000 (50 %).")
    idempotency_key: str
    deadline_seconds: int = strawberry.field(default=300, description="1 to 3600 seconds from now.")
    expected_amount_out: str | None = strawberry.field(
        default=None, description="The amount out of the client's own quote (whole tokens); the "
                                  "tolerance applies to it. Default: the gateway's quote now.")


@strawberry.type
class Query:
    @strawberry.field(description="The chains the gateway reaches.")
    def defi_chains(self, info: Info) -> list[DefiChain]:
        c = _read(info)
        return [DefiChain.of(chain) for chain in c.runtime.chains.all()]

    @strawberry.field(description="The chain's pools across protocols; with `tokens`, those trading "
                                  "all of them (one token: every pool holding it).")
    def defi_pools(self, info: Info, chain: str, tokens: list[str] | None = None) -> list[DefiPool]:
        c = _read(info)
        market = c.runtime.defi.market(chain)
        by_address = {t.address.lower(): t for t in market.tokens.all()}
        return [DefiPool.of(market.chain, e, by_address)
                for e in c.runtime.defi.list_pools(chain, tokens)]

    @strawberry.field(description="The best route for `amountIn` (whole tokens) of tokenIn.")
    def defi_quote(self, info: Info, chain: str, token_in: str, token_out: str, amount_in: str
                   ) -> DefiQuote:
        c = _read(info)
        return DefiQuote.of(c.runtime.defi.quote(chain, token_in, token_out, amount_in))

    @strawberry.field(description="The tenant's own address on `chain` and its balances; address "
                                  "null and no balances while the tenant has no key there.")
    def defi_account(self, info: Info, chain: str) -> DefiAccount:
        c = _read(info)
        return DefiAccount.of(c.runtime.defi.account(c.tenant_id, chain))

    @strawberry.field(description="The tenant's swaps (executed, refused, failed), newest first.")
    def defi_swaps(self, info: Info, first: int = DEFAULT_PAGE, after: str | None = None,
                   status: DefiSwapStatus | None = None) -> Connection[DefiSwap]:
        c = _read(info)
        page = c.runtime.defi_swaps.list(c.tenant_id, first=first, after=after,
                                         status=status.value if status else None,
                                         max_page_size=c.runtime.settings.max_page_size)
        return Connection.of(page, lambda row: DefiSwap.of(c, row))


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Makes the tenant's key on `chain` if it has none (funded by the "
                                     "embedded chain's faucet) and answers the account; idempotent: "
                                     "the same address every time.")
    def defi_open_account(self, info: Info, chain: str) -> DefiAccount:
        c = ctx(info)
        c.require("defi", "write")
        return DefiAccount.of(c.runtime.defi.account(c.tenant_id, chain, create=True))

    @strawberry.mutation(description="Swap with the tenant's own key, after compliance and a "
                                     "simulation. A refusal is recorded and raised with its code; the "
                                     "same idempotencyKey answers the first outcome again.")
    def defi_swap(self, info: Info, input: DefiSwapInput) -> DefiSwap:
        c = ctx(info)
        me = c.require("defi", "write")
        outcome = c.runtime.defi_swaps.swap(c.tenant_id, me.user_id, SwapRequest(
            chain=input.chain, token_in=input.token_in, token_out=input.token_out,
            amount_in=input.amount_in, slippage_bps=input.slippage_bps,
            deadline_seconds=input.deadline_seconds, idempotency_key=input.idempotency_key,
            expected_amount_out=input.expected_amount_out))
        return DefiSwap.of(c, outcome.swap, outcome.replayed)
