"""Deploying the lending market on a chain: the pool, its listed assets, oracle prices and
the first liquidity. The demo world calls this on the embedded chain.

The pool is its own price oracle: `set_price(asset, price)` by the owner (the world's
deployer), one USD price per whole token, scaled 1e18. Interest is not modelled (rates are
zero): debts and deposits stay as sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from gateway.defi.compile import compile_contract
from gateway.defi.lending_maths import ONE

CONTRACT = "lending_pool"
CLOSE_FACTOR = ONE // 2  # a liquidation repays at most half of one debt asset
LIQUIDATION_BONUS = 5 * ONE // 100  # and takes collateral worth 105% of what it repaid


@dataclass(frozen=True)
class ListedAsset:
    symbol: str
    address: str
    decimals: int
    price: Decimal  # USD per whole token
    collateral_factor: Decimal  # share of the collateral value that may be borrowed
    liquidation_threshold: Decimal  # share counted in the health factor


# Risk parameters of the demo market (the demo world's reference prices): stablecoins lend
# at 80% and liquidate at 85%, volatile assets at 70-75% and 80%.
DEMO_PARAMETERS: dict[str, tuple[Decimal, Decimal, Decimal]] = {
    "USDC": (Decimal(1), Decimal("0.80"), Decimal("0.85")),
    "USDT": (Decimal(1), Decimal("0.80"), Decimal("0.85")),
    "DAI": (Decimal(1), Decimal("0.80"), Decimal("0.85")),
    "WETH": (Decimal(3000), Decimal("0.75"), Decimal("0.80")),
    "WBTC": (Decimal(60000), Decimal("0.70"), Decimal("0.80")),
}
# Liquidity the deployer supplies, in whole tokens, so tenants can borrow at once.
DEMO_LIQUIDITY: dict[str, Decimal] = {"USDC": Decimal(10_000_000), "USDT": Decimal(10_000_000),
                                      "DAI": Decimal(10_000_000), "WETH": Decimal(5_000),
                                      "WBTC": Decimal(250)}


@dataclass(frozen=True)
class LendingMarket:
    address: str
    owner: str
    assets: dict[str, ListedAsset] = field(default_factory=dict)  # by symbol
    tx_hashes: tuple[str, ...] = ()

    def asset(self, symbol: str) -> ListedAsset | None:
        return self.assets.get(symbol.upper())


def scaled(value: Decimal) -> int:
    return int(value * ONE)


def deploy_lending_market(w3: Any, owner: str, tokens: Mapping[str, tuple[str, int]], *,
                          parameters: Mapping[str, tuple[Decimal, Decimal, Decimal]] = DEMO_PARAMETERS,
                          liquidity: Mapping[str, Decimal] = DEMO_LIQUIDITY,
                          mint: bool = True) -> LendingMarket:
    """Deploy the pool from `owner` (an unlocked account of the node, e.g. eth-tester's), list
    every token of `tokens` (symbol -> (address, decimals)) that `parameters` prices, and supply
    `liquidity` from `owner` (minted first when `mint`: the owner must own the token)."""
    compiled = compile_contract(CONTRACT)
    hashes: list[str] = []

    def sent(call: Any) -> Any:
        tx_hash = call.transact({"from": owner})
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash)
        if receipt["status"] != 1:
            raise RuntimeError(f"lending market deployment failed at {tx_hash.to_0x_hex()}")
        hashes.append(tx_hash.to_0x_hex())
        return receipt

    factory = w3.eth.contract(abi=compiled.abi, bytecode=compiled.bytecode)
    receipt = sent(factory.constructor(CLOSE_FACTOR, LIQUIDATION_BONUS))
    pool = w3.eth.contract(address=receipt["contractAddress"], abi=compiled.abi)
    listed: dict[str, ListedAsset] = {}
    for symbol, (address, decimals) in tokens.items():
        if symbol.upper() not in parameters:
            continue
        price, cf, lt = parameters[symbol.upper()]
        sent(pool.functions.list_asset(address, decimals, scaled(cf), scaled(lt), scaled(price)))
        listed[symbol.upper()] = ListedAsset(symbol.upper(), address, decimals, price, cf, lt)
        amount = int(liquidity.get(symbol.upper(), Decimal(0)) * 10**decimals)
        if amount:
            token = w3.eth.contract(address=address, abi=compile_contract("Token").abi)
            if mint:
                sent(token.functions.mint(owner, amount))
            sent(token.functions.approve(pool.address, amount))
            sent(pool.functions.supply(address, amount))
    return LendingMarket(pool.address, owner, listed, tuple(hashes))


EXTRA_KEY = "lending_pool"  # the pool's address in the demo world's `extras`


def extend_world(chain: Any, world: Any) -> None:
    """The demo world's extension (`DemoWorld.add_extension`): the lending market, deployed by
    the world's owner over the world's tokens."""
    from gateway.defi.deploy import faucet_account

    with chain.guard():
        market = deploy_lending_market(
            chain.web3, faucet_account(chain),
            {symbol: (t.address, t.decimals) for symbol, t in world.tokens.items()})
    world.extras[EXTRA_KEY] = market.address
