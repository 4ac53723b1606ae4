"""DeFi lending, strategy vaults and chain events.

Amounts, prices and factors are Decimals (strings on the wire), taken as strings in inputs.
Permissions (casbin object "defi"): read for positions, actions and vaults and the events
stream; write for lending actions and deploying a vault. A tenant acts only through its own
signing key and sees only its own account; another address is DEFI_ACCOUNT_NOT_FOUND.
Rules and formulas: gateway/defi/lending.py, lending_maths.py, docs/design/defi.md.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncGenerator
from datetime import datetime
from decimal import Decimal

import strawberry
from starlette.concurrency import run_in_threadpool
from strawberry.scalars import JSON
from strawberry.types import Info

from gateway.defi import events as defi_events
from gateway.defi.lending import LendingPosition
from gateway.defi.lending_models import DefiLendingAction as ActionRow
from gateway.defi.vault import KIND as DEPLOY_VAULT
from gateway.defi.vault import VaultState, VaultUnavailable
from gateway.defi.vault_models import DefiVault as VaultRow
from gateway.http.context import RequestContext
from schema.common import DEFAULT_PAGE, Connection, ctx, epoch_field
from schema.jobs import Job


def _plain(value: Decimal) -> Decimal:
    normal = value.normalize()
    return normal.quantize(Decimal(1)) if normal.as_tuple().exponent > 0 else normal  # type: ignore[operator]


def _opt(value: Decimal | None) -> Decimal | None:
    return None if value is None else _plain(value)


def _chain_name(c: RequestContext, chain_id: int) -> str:
    return c.runtime.chains.get(chain_id).name


@strawberry.enum
class DefiLendingActionKind(enum.Enum):
    SUPPLY = "supply"
    WITHDRAW = "withdraw"
    BORROW = "borrow"
    REPAY = "repay"


@strawberry.type(description="One listed asset of the lending pool and the account's balances.")
class DefiAssetPosition:
    token: str
    token_address: str
    price: Decimal = strawberry.field(description="USD per whole token, from the pool's oracle.")
    collateral_factor: Decimal = strawberry.field(description="Share of the value that may be borrowed.")
    liquidation_threshold: Decimal = strawberry.field(description="Share counted in the health factor.")
    supplied: Decimal
    borrowed: Decimal


@strawberry.type(description="The tenant's position in a chain's lending pool, read from the contract.")
class DefiPosition:
    chain: str
    pool: str
    account: str
    assets: list[DefiAssetPosition]
    collateral_value: Decimal = strawberry.field(description="USD.")
    debt_value: Decimal = strawberry.field(description="USD.")
    borrow_capacity: Decimal = strawberry.field(description="USD: sum(collateral x collateral factor).")
    health_factor: Decimal | None = strawberry.field(
        description="sum(collateral x liquidation threshold) / debt; null with no debt. Under 1 the "
                    "position may be liquidated.")
    liquidation_price: Decimal | None = strawberry.field(
        description="Single-collateral positions: the collateral price (USD) at which the health "
                    "factor reaches 1 = debt / (collateral amount x liquidation threshold). Null "
                    "with no debt or several collateral assets.")
    liquidation_token: str | None
    health_factor_floor: Decimal = strawberry.field(
        description="Borrows and withdrawals that would leave the health factor under it are refused.")

    @classmethod
    def of(cls, p: LendingPosition, floor: Decimal) -> DefiPosition:
        return cls(chain=p.chain.name, pool=p.pool, account=p.account,
                   assets=[DefiAssetPosition(
                       token=a.token.symbol, token_address=a.token.address, price=_plain(a.price),
                       collateral_factor=_plain(a.collateral_factor),
                       liquidation_threshold=_plain(a.liquidation_threshold),
                       supplied=_plain(a.supplied), borrowed=_plain(a.borrowed)) for a in p.assets],
                   collateral_value=_plain(p.collateral_value), debt_value=_plain(p.debt_value),
                   borrow_capacity=_plain(p.borrow_capacity), health_factor=_opt(p.health_factor),
                   liquidation_price=_opt(p.liquidation_price),
                   liquidation_token=p.liquidation_token.symbol if p.liquidation_token else None,
                   health_factor_floor=_plain(floor))


@strawberry.type(description="A lending action the gateway signed and sent for the tenant.")
class DefiLendingAction:
    id: strawberry.ID
    chain: str
    action: DefiLendingActionKind
    account: str
    pool: str
    token: str
    amount: Decimal = strawberry.field(description="Whole tokens (a repay: what was paid).")
    health_factor_before: Decimal | None
    health_factor_after: Decimal | None
    transaction_hashes: list[str] = strawberry.field(description="An approval first where needed.")
    status: str = strawberry.field(description=(
        "EXECUTED (mined), FAILED (reverted), or PENDING/SENT while the outcome is not known: "
        "a retry with the same idempotencyKey finishes the record and never sends again."))
    block_number: int | None
    idempotency_key: str | None
    created_at: datetime

    @classmethod
    def of(cls, c: RequestContext, row: ActionRow) -> DefiLendingAction:
        return cls(id=strawberry.ID(row.id), chain=_chain_name(c, row.chain_id),
                   action=DefiLendingActionKind(row.action), account=row.account, pool=row.pool,
                   token=row.token, amount=_plain(row.amount),
                   health_factor_before=_opt(row.health_factor_before),
                   health_factor_after=_opt(row.health_factor_after),
                   transaction_hashes=list(row.tx_hashes), status=row.status,
                   block_number=row.block_number,
                   idempotency_key=row.idempotency_key, created_at=row.created_at)


@strawberry.type(description="A strategy vault deployed for the tenant, owned by its key.")
class DefiVault:
    id: strawberry.ID
    chain: str
    address: str
    asset: str
    asset_address: str
    owner: str
    strategy: str | None
    timelock_seconds: int
    transaction_hashes: list[str]
    job_id: strawberry.ID | None
    created_at: datetime

    @strawberry.field(description="Read from the chain now; null when the contract is no longer "
                                  "there (the embedded chain starts empty with each process).")
    def governance(self, info: Info) -> DefiVaultGovernance | None:
        c = ctx(info)
        c.require("defi", "read")
        try:
            return DefiVaultGovernance.of(c.runtime.defi_vaults.state(c.tenant_id, str(self.id)))
        except VaultUnavailable:
            return None

    @classmethod
    def of(cls, c: RequestContext, row: VaultRow) -> DefiVault:
        return cls(id=strawberry.ID(row.id), chain=_chain_name(c, row.chain_id), address=row.address,
                   asset=row.asset, asset_address=row.asset_address, owner=row.owner,
                   strategy=row.strategy, timelock_seconds=row.timelock_seconds,
                   transaction_hashes=list(row.tx_hashes),
                   job_id=strawberry.ID(row.job_id) if row.job_id else None, created_at=row.created_at)


@strawberry.enum
class DefiVaultAction(enum.Enum):
    PROPOSE_STRATEGY = "propose_strategy"
    EXECUTE_STRATEGY = "execute_strategy"
    CANCEL_STRATEGY = "cancel_strategy"
    PROPOSE_OWNER = "propose_owner"
    EXECUTE_OWNER = "execute_owner"
    CANCEL_OWNER = "cancel_owner"
    PAUSE = "pause"
    UNPAUSE = "unpause"


@strawberry.type(description="A vault's governance as the chain has it.")
class DefiVaultGovernance:
    owner: str
    strategy: str | None
    pending_strategy: str | None
    strategy_eta: datetime | None = strawberry.field(description="Executable from this instant.")
    pending_owner: str | None
    owner_eta: datetime | None
    paused: bool
    timelock_seconds: int
    total_assets: str = strawberry.field(description="Base units of the asset (an integer).")
    allocated: str

    @classmethod
    def of(cls, s: VaultState) -> DefiVaultGovernance:
        return cls(owner=s.owner, strategy=s.strategy, pending_strategy=s.pending_strategy,
                   strategy_eta=s.strategy_eta, pending_owner=s.pending_owner, owner_eta=s.owner_eta,
                   paused=s.paused, timelock_seconds=s.timelock_seconds,
                   total_assets=str(s.total_assets), allocated=str(s.allocated))


@strawberry.type
class DefiVaultGovernanceResult:
    transaction_hash: str
    governance: DefiVaultGovernance


@strawberry.input(description="PROPOSE_* need `target`; EXECUTE_* only after the timelock; PAUSE "
                              "stops deposits and strategy actions at once (withdrawals stay open).")
class DefiVaultGovernanceInput:
    vault_id: strawberry.ID
    action: DefiVaultAction
    target: str | None = None


@strawberry.type(description="A new block, or a swap, liquidity or lending event of a watched contract.")
class DefiEvent:
    sequence: int = strawberry.field(description="The bus's number for this chain's stream.")
    chain: str
    kind: str = strawberry.field(description="block, swap, liquidity or lending.")
    event: str = strawberry.field(description="The contract's event name (Block for a block).")
    block_number: int
    transaction_hash: str | None
    log_index: int | None
    address: str | None = strawberry.field(description="The contract that emitted it.")
    contract: str | None
    args: JSON | None = strawberry.field(description="Decoded arguments; integers as strings.")
    timestamp: int | None = strawberry.field(description="Blocks: the block's Unix time.")
    epoch: str | None = epoch_field()


@strawberry.input(description="Amount as a decimal string in whole tokens, e.g. \"1.5\".")
class DefiLendingInput:
    chain: str
    token: str = strawberry.field(description="Symbol or address.")
    amount: str
    idempotency_key: str = strawberry.field(description="1-128 characters; a retry returns the first action.")


@strawberry.input
class DeployStrategyVaultInput:
    chain: str
    asset: str = strawberry.field(description="The token the vault takes: symbol or address.")
    timelock_seconds: int = strawberry.field(description="Governance delay, 60 s to 30 days.")
    strategy: str | None = strawberry.field(default=None, description="First strategy address.")
    region: str | None = None
    idempotency_key: str | None = None


@strawberry.type
class Query:
    @strawberry.field(description="The tenant's lending position on `chain` (its own address; "
                                  "`account`, when given, must be it).")
    def defi_position(self, info: Info, chain: str, account: str | None = None) -> DefiPosition:
        c = ctx(info)
        c.require("defi", "read")
        service = c.runtime.defi_lending
        return DefiPosition.of(service.position(c.tenant_id, chain, account), service.floor)

    @strawberry.field(description="The tenant's lending actions, newest first.")
    def defi_lending_actions(self, info: Info, first: int = DEFAULT_PAGE, after: str | None = None
                             ) -> Connection[DefiLendingAction]:
        c = ctx(info)
        c.require("defi", "read")
        page = c.runtime.defi_lending.actions(c.tenant_id, first=first, after=after)
        return Connection.of(page, lambda row: DefiLendingAction.of(c, row))

    @strawberry.field(description="The tenant's strategy vaults, newest first.")
    def defi_vaults(self, info: Info, first: int = DEFAULT_PAGE, after: str | None = None,
                    chain: str | None = None) -> Connection[DefiVault]:
        c = ctx(info)
        c.require("defi", "read")
        page = c.runtime.defi_vaults.vaults(c.tenant_id, first=first, after=after, chain=chain)
        return Connection.of(page, lambda row: DefiVault.of(c, row))


def _act(info: Info, action: str, input: DefiLendingInput) -> DefiLendingAction:
    c = ctx(info)
    me = c.require("defi", "write")
    row = c.runtime.defi_lending.act(c.tenant_id, me.user_id, action, input.chain, input.token,
                                     input.amount, input.idempotency_key)
    return DefiLendingAction.of(c, row)


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Supply collateral to the lending pool.")
    def defi_supply(self, info: Info, input: DefiLendingInput) -> DefiLendingAction:
        return _act(info, "supply", input)

    @strawberry.mutation(description="Borrow; refused (DEFI_HEALTH_FACTOR_FLOOR) under the floor.")
    def defi_borrow(self, info: Info, input: DefiLendingInput) -> DefiLendingAction:
        return _act(info, "borrow", input)

    @strawberry.mutation(description="Repay debt (at most the debt is taken).")
    def defi_repay(self, info: Info, input: DefiLendingInput) -> DefiLendingAction:
        return _act(info, "repay", input)

    @strawberry.mutation(description="Withdraw collateral; refused (DEFI_HEALTH_FACTOR_FLOOR) under "
                                     "the floor.")
    def defi_withdraw(self, info: Info, input: DefiLendingInput) -> DefiLendingAction:
        return _act(info, "withdraw", input)

    @strawberry.mutation(description="A governance call on one of the tenant's vaults, signed with "
                                     "its key; simulated first (DEFI_SIMULATION_REVERTED with the "
                                     "contract's reason, e.g. timelock, and nothing sent).")
    def govern_strategy_vault(self, info: Info, input: DefiVaultGovernanceInput
                              ) -> DefiVaultGovernanceResult:
        c = ctx(info)
        me = c.require("defi", "write")
        tx_hash, state = c.runtime.defi_vaults.govern(c.tenant_id, me.user_id, str(input.vault_id),
                                                      input.action.value, input.target)
        return DefiVaultGovernanceResult(transaction_hash=tx_hash,
                                         governance=DefiVaultGovernance.of(state))

    @strawberry.mutation(description="Start a job (kind defi.deploy_vault) deploying a strategy vault "
                                     "owned by the tenant's key; its result holds the address and "
                                     "transaction hashes.")
    def deploy_strategy_vault(self, info: Info, input: DeployStrategyVaultInput) -> Job:
        c = ctx(info)
        me = c.require("defi", "write")
        params = {"chain": input.chain, "asset": input.asset,
                  "timelockSeconds": input.timelock_seconds, "strategy": input.strategy}
        return Job.from_row(c.runtime.jobs.start(me, DEPLOY_VAULT, params, region=input.region,
                                                 idempotency_key=input.idempotency_key))


@strawberry.type
class Subscription:
    @strawberry.subscription(description="New blocks and the swap, liquidity and lending events of "
                                         "the chain's pools (all, or those in `pools`).")
    async def defi_events(self, info: Info, chain: str, pools: list[str] | None = None
                          ) -> AsyncGenerator[DefiEvent, None]:
        c = ctx(info)
        c.require("defi", "read")
        found = c.runtime.chains.get(chain)
        wanted = {p.lower() for p in pools or []}
        subscription = await c.runtime.bus.subscribe(defi_events.topic(found.chain_id))
        try:
            await run_in_threadpool(c.runtime.defi_events.ensure_started, found)
            async for event in subscription:
                p = event.payload
                if wanted and p["kind"] != "block" and str(p.get("address", "")).lower() not in wanted:
                    continue
                yield DefiEvent(sequence=event.sequence, chain=p["chain"], kind=p["kind"],
                                event=p["event"], block_number=p["blockNumber"],
                                transaction_hash=p.get("transactionHash"), log_index=p.get("logIndex"),
                                address=p.get("address"), contract=p.get("contract"),
                                args=p.get("args"), timestamp=p.get("timestamp"),
                                epoch=event.epoch)
        finally:
            await subscription.close()
