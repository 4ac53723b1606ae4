"""DefiMarkets: chains, pools, quotes and a tenant's on-chain account (no GraphQL types).

Amounts from clients are decimal strings in whole tokens ("1.5" WETH); they become integers in
base units here, refusing more decimals than the token has.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from gateway.defi.chain import Chain, Chains
from gateway.defi.errors import AmountInvalid, TokenUnknown
from gateway.defi.keys import DefiKeys
from gateway.defi.pools import ChainMarket, PoolBook, PoolEntry, erc20, read_token
from gateway.defi.quotes import Quote, quote
from gateway.defi.tokens import TokenInfo

MAX_QUOTE_TOKENS = 20


@dataclass(frozen=True)
class TokenBalance:
    token: TokenInfo
    raw: int

    @property
    def amount(self) -> Decimal:
        return self.token.from_units(self.raw)


@dataclass(frozen=True)
class DefiAccount:
    chain: Chain
    address: str | None  # None: the tenant has no key on this chain yet
    native_raw: int  # wei
    balances: tuple[TokenBalance, ...]


def parse_amount(text: str, token: TokenInfo) -> int:
    try:
        value = Decimal(text.strip())
    except (InvalidOperation, AttributeError):
        raise AmountInvalid(f"not a decimal amount: {text!r}", details={"amount": text}) from None
    if not value.is_finite() or value <= 0:
        raise AmountInvalid("the amount must be positive", details={"amount": text})
    raw = value.scaleb(token.decimals)
    if raw != raw.to_integral_value():
        raise AmountInvalid(f"{token.symbol} has {token.decimals} decimals",
                            details={"amount": text, "decimals": token.decimals})
    return int(raw)


class DefiMarkets:
    def __init__(self, chains: Chains, pools: PoolBook, keys: DefiKeys) -> None:
        self.chains = chains
        self.pools = pools
        self.keys = keys

    def warm(self) -> None:
        """Deploy the demo world and read the embedded chain's pools before a request needs it."""
        embedded = self.chains.embedded()
        if embedded is not None:
            self.pools.market(embedded)

    def chain(self, key: str) -> Chain:
        return self.chains.get(key)

    def market(self, chain_key: str) -> ChainMarket:
        chain = self.chains.get(chain_key)
        chain.check_available()
        return self.pools.market(chain)

    def list_pools(self, chain_key: str, tokens: list[str] | None = None) -> list[PoolEntry]:
        """The chain's pools; with `tokens`, those trading any of them (ALL pools of a pair
        when two are given, i.e. pools holding every token named)."""
        market = self.market(chain_key)
        if not tokens:
            return list(market.pools)
        if len(tokens) > MAX_QUOTE_TOKENS:
            raise AmountInvalid(f"at most {MAX_QUOTE_TOKENS} tokens")
        wanted = {market.tokens.resolve(t).address.lower() for t in tokens}
        return [e for e in market.pools if wanted <= {t.lower() for t in e.pool.tokens}
                or (len(wanted) == 1 and wanted & {t.lower() for t in e.pool.tokens})]

    def quote(self, chain_key: str, token_in: str, token_out: str, amount_in: str) -> Quote:
        market = self.market(chain_key)
        t_in, t_out = market.tokens.resolve(token_in), market.tokens.resolve(token_out)
        if t_in.address == t_out.address:
            raise TokenUnknown("tokenIn and tokenOut are the same token", details={"token": token_in})
        return quote(market, t_in, t_out, parse_amount(amount_in, t_in))

    def token(self, chain: Chain, address: str) -> TokenInfo:
        """A token named in a stored row: from the chain's last snapshot (no refresh), else read."""
        market = self.pools.market(chain, fresh=False)
        found = market.tokens.by_address(address)
        if found is not None:
            return found
        with chain.guard():
            return read_token(chain, address)

    def account(self, tenant_id: str, chain_key: str, *, create: bool = False) -> DefiAccount:
        """The tenant's address on the chain and its balances of the chain's known tokens; never
        the key. A read (`create` False) makes no key: no address and no balances until the
        tenant's first write (defiOpenAccount, a swap, a lending action, a vault), which makes
        the key (and funds it from the embedded chain's faucet)."""
        chain = self.chains.get(chain_key)
        market = self.market(chain_key)
        address = self.keys.address(tenant_id, chain, create=create)
        if address is None:
            return DefiAccount(chain, None, 0, ())
        with chain.guard():
            native = int(chain.web3.eth.get_balance(address))
            balances = tuple(TokenBalance(t, int(erc20(chain, t.address).functions.balanceOf(address).call()))
                             for t in market.tokens.all())
        return DefiAccount(chain, address, native, balances)
