"""Lending for a tenant: its position in the chain's lending pool, and supply, borrow, repay
and withdraw signed with the tenant's own key.

Before anything is sent an action is checked, in this order, and refused with a code:
the amount (DEFI_AMOUNT_INVALID), the chain and token (DEFI_CHAIN_UNKNOWN,
DEFI_CHAIN_UNAVAILABLE, DEFI_LENDING_UNAVAILABLE, DEFI_TOKEN_UNKNOWN), the tenant's compliance
controls (COMPLIANCE_KILL_SWITCH for a borrow or a withdrawal only: repay and supply reduce
risk, and a tenant that stops trading must still be able to pay its debt down;
COMPLIANCE_RESTRICTED_INSTRUMENT for a token listed as "DEFI:<SYMBOL>", by address or by bare
symbol, the same rule as swaps: gateway/defi/compliance.py), balances (DEFI_INSUFFICIENT_BALANCE,
DEFI_INSUFFICIENT_LIQUIDITY, DEFI_NO_DEBT),
then the health factor: the factor after the action is computed off-chain (lending_maths, the
contract's integer maths) and confirmed by an eth_call of the pool's `health_factor_after`;
a borrow or a withdrawal that would leave it under the floor (settings
`defi_health_factor_floor`, 1.2 by default) is DEFI_HEALTH_FACTOR_FLOOR. Supply and repay only
raise the factor, so they pass even under the floor. Last, the action itself is simulated by
eth_call (DEFI_SIMULATION_REVERTED with the contract's reason). A supply or repay needs an
ERC-20 approval; when the allowance is short, the approval (for exactly the amount) is sent
first and the action simulated after it.

One action per tenant runs at a time in a process (a lock), so its checks see the state it
sends against. The DefiLendingAction row is committed PENDING under the tenant's idempotency
key before anything is signed, its hashes as soon as each transaction is sent (SENT once the
action's own hash is known); the outcome (EXECUTED or FAILED) and its audit record are written
together. A receipt not seen in time answers DEFI_ACTION_IN_PROGRESS; a retry with the same
key answers the first row, finishing a SENT one from its receipt and never sending again. A
refusal before the action is sent (its simulation) removes the PENDING row.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select
from web3.exceptions import TimeExhausted, TransactionNotFound

from gateway.audit import AuditEntry, AuditTrail
from gateway.db import Database
from gateway.defi import lending_maths as lm
from gateway.defi.chain import Chain, Chains
from gateway.defi.compliance import is_restricted
from gateway.defi.deploy import bind
from gateway.defi.errors import (
    AmountInvalid,
    InsufficientLiquidity,
    TransactionPending,
    TransactionReverted,
)
from gateway.defi.keys import DefiKeys
from gateway.defi.lending_deploy import EXTRA_KEY
from gateway.defi.lending_models import DefiLendingAction
from gateway.defi.tokens import TokenDirectory, TokenInfo
from gateway.defi.world import DemoWorld
from gateway.errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound
from gateway.pagination import Page, keyset_page
from plugins.sdk import TenantControls

ACTIONS = ("supply", "withdraw", "borrow", "repay")
RISK_INCREASING = frozenset({"borrow", "withdraw"})  # what the kill switch stops
# Which side of the position an action moves, and in which direction.
_DELTAS = {"supply": (1, 0), "withdraw": (-1, 0), "borrow": (0, 1), "repay": (0, -1)}
CONTRACT = "lending_pool"
ControlsLoader = Callable[[Session, str], TenantControls]


class HealthFactorFloor(DomainError):
    code = "DEFI_HEALTH_FACTOR_FLOOR"
    http_status = 409


class LendingUnavailable(InvalidInput):
    code = "DEFI_LENDING_UNAVAILABLE"


class ActionInProgress(DomainError):
    """The action was sent and its outcome is not known yet."""

    code = "DEFI_ACTION_IN_PROGRESS"
    http_status = 409


class SimulationReverted(DomainError):
    code = "DEFI_SIMULATION_REVERTED"
    http_status = 409


@dataclass(frozen=True)
class AssetPosition:
    token: TokenInfo
    price: Decimal  # USD per whole token, from the pool's oracle
    collateral_factor: Decimal
    liquidation_threshold: Decimal
    supplied: Decimal  # whole tokens
    borrowed: Decimal


@dataclass(frozen=True)
class LendingPosition:
    chain: Chain
    pool: str
    account: str
    assets: list[AssetPosition]
    collateral_value: Decimal  # USD
    debt_value: Decimal
    borrow_capacity: Decimal
    health_factor: Decimal | None  # None: no debt (the contract's max uint256)
    liquidation_price: Decimal | None  # see lending_maths.liquidation_price
    liquidation_token: TokenInfo | None


@dataclass(frozen=True)
class _Market:
    chain: Chain
    pool: Any  # web3 contract
    tokens: TokenDirectory


def usd(scaled: int) -> Decimal:
    return Decimal(scaled).scaleb(-18)


def parse_amount(raw: str | Decimal, token: TokenInfo | None = None) -> Decimal:
    try:
        amount = Decimal(str(raw).strip())
    except InvalidOperation:
        raise AmountInvalid(f"amount {raw!r} is not a decimal number") from None
    if not amount.is_finite() or amount <= 0:
        raise AmountInvalid("amount must be above zero", details={"amount": str(raw)})
    units = amount.scaleb(token.decimals) if token is not None else None
    if token is not None and units != units.to_integral_value():  # type: ignore[union-attr]
        raise AmountInvalid(f"{token.symbol} has {token.decimals} decimals",
                            details={"amount": str(raw), "decimals": token.decimals})
    return amount


def revert_reason(exc: Exception) -> str:
    text = str(getattr(exc, "message", None) or exc)
    return text.split("execution reverted:", 1)[-1].strip().strip("'\"") or text


class LendingService:
    def __init__(self, db: Database, chains: Chains, world: DemoWorld, keys: DefiKeys,
                 audit: AuditTrail, *, floor: Decimal, controls: ControlsLoader | None,
                 max_page_size: int) -> None:
        if floor <= 1:
            raise ValueError("defi_health_factor_floor must be above 1")
        self._db = db
        self._chains = chains
        self._world = world
        self._keys = keys
        self._audit = audit
        self.floor = floor
        self._controls = controls
        self._max_page = max_page_size
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    # -- reading -----------------------------------------------------------------------------

    def market(self, chain_key: str) -> _Market:
        chain = self._chains.get(chain_key)
        if not chain.embedded:
            chain.check_available()  # an endpoint that is down answers DEFI_CHAIN_UNAVAILABLE
            raise LendingUnavailable(f"no lending pool is configured on chain {chain.name}",
                                     details={"chain": chain.name})
        with chain.guard():
            world = self._world.ensure(chain)
        address = world.extras.get(EXTRA_KEY)
        if address is None:
            raise LendingUnavailable(f"no lending pool on chain {chain.name}",
                                     details={"chain": chain.name})
        return _Market(chain, bind(chain, CONTRACT, address), TokenDirectory(list(world.tokens.values())))

    def _account(self, tenant_id: str, chain: Chain, account: str | None) -> str:
        """The tenant's own address on `chain`; another address is not found (it is not one of
        the tenant's, whoever's it is)."""
        mine = self._keys.address(tenant_id, chain, create=False)
        if mine is None or (account is not None and account.strip().lower() != mine.lower()):
            raise NotFound("no DeFi account of this tenant with that address on this chain",
                           code="DEFI_ACCOUNT_NOT_FOUND",
                           details={"chain": chain.name, "account": account})
        return mine

    def _states(self, market: _Market, account: str) -> list[lm.AssetState]:
        with market.chain.guard():
            rows = market.pool.functions.positions(account).call()
        states = []
        for asset, decimals, price, cf, lt, supplied, borrowed in rows:
            token = market.tokens.by_address(asset)
            states.append(lm.AssetState(asset, token.symbol if token else asset, decimals, price,
                                        cf, lt, supplied, borrowed))
        return states

    def position(self, tenant_id: str, chain_key: str, account: str | None = None) -> LendingPosition:
        market = self.market(chain_key)
        address = self._account(tenant_id, market.chain, account)
        return self._position(market, address, self._states(market, address))

    def _position(self, market: _Market, account: str, states: list[lm.AssetState]
                  ) -> LendingPosition:
        t = lm.totals(states)
        assets = []
        for s in states:
            token = market.tokens.by_address(s.address) or TokenInfo(s.address, s.symbol, s.decimals)
            assets.append(AssetPosition(token, usd(s.price), usd(s.collateral_factor),
                                        usd(s.liquidation_threshold),
                                        token.from_units(s.supplied), token.from_units(s.borrowed)))
        liq = lm.liquidation_price(states)
        liq_token = market.tokens.by_address(liq[0].address) if liq else None
        return LendingPosition(market.chain, market.pool.address, account, assets,
                               usd(t.collateral), usd(t.debt), usd(t.capacity),
                               lm.health_decimal(t.health_factor),
                               liq[1] if liq else None, liq_token)

    def actions(self, tenant_id: str, *, first: int, after: str | None) -> Page[DefiLendingAction]:
        return keyset_page(self._db, tenant_id, select(DefiLendingAction), DefiLendingAction,
                           first=first, after=after, max_page_size=self._max_page)

    # -- acting ------------------------------------------------------------------------------

    def act(self, tenant_id: str, user_id: str | None, action: str, chain_key: str, token_key: str,
            amount_raw: str | Decimal, idempotency_key: str) -> DefiLendingAction:
        if action not in ACTIONS:
            raise InvalidInput(f"unknown lending action {action!r}", code="DEFI_ACTION_INVALID")
        if not (1 <= len(idempotency_key) <= 128):
            raise InvalidInput("idempotencyKey must be 1 to 128 characters",
                               code="IDEMPOTENCY_KEY_INVALID")
        amount = parse_amount(amount_raw)
        with self._tenant_lock(tenant_id):
            existing = self._by_key(tenant_id, idempotency_key)
            if existing is not None:
                return self._same(existing, action, chain_key, token_key, amount)
            market = self.market(chain_key)
            token = market.tokens.resolve(token_key)
            amount = parse_amount(amount, token)
            self._check_controls(tenant_id, action, token)
            return self._act(tenant_id, user_id, action, market, token, amount, idempotency_key)

    def _tenant_lock(self, tenant_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(tenant_id, threading.Lock())

    def _by_key(self, tenant_id: str, key: str) -> DefiLendingAction | None:
        with self._db.tenant_session(tenant_id) as session:
            return session.exec(select(DefiLendingAction)
                                .where(DefiLendingAction.idempotency_key == key)).first()

    def _same(self, row: DefiLendingAction, action: str, chain_key: str, token_key: str,
              amount: Decimal) -> DefiLendingAction:
        chain = self._chains.get(chain_key)
        same_token = token_key.strip().upper() in (row.token.upper(), row.token_address.upper())
        # A repay records what it paid (at most the debt), so its amount may be smaller.
        same_amount = amount == row.amount or (action == "repay" and amount >= row.amount)
        if row.action != action or row.chain_id != chain.chain_id or not same_token or not same_amount:
            raise Conflict("idempotencyKey was used for a different request",
                           code="IDEMPOTENCY_KEY_REUSED")
        if row.status in ("PENDING", "SENT"):
            return self._resume(row)
        return row

    def _check_controls(self, tenant_id: str, action: str, token: TokenInfo) -> None:
        if self._controls is None:
            return
        with self._db.tenant_session(tenant_id) as session:
            controls = self._controls(session, tenant_id)
        if controls.kill_switch and action in RISK_INCREASING:
            raise Forbidden(f"the tenant's kill switch is on: no {action} (repay and supply stay open)",
                            code="COMPLIANCE_KILL_SWITCH")
        if is_restricted(token.symbol, token.address, controls.restricted):
            raise Forbidden(f"{token.symbol} is on the tenant's restricted list",
                            code="COMPLIANCE_RESTRICTED_INSTRUMENT", details={"token": token.symbol})

    def _act(self, tenant_id: str, user_id: str | None, action: str, market: _Market,
             token: TokenInfo, amount: Decimal, key: str) -> DefiLendingAction:
        chain, pool = market.chain, market.pool
        # The tenant's key is made (and funded, on the embedded chain) on first use.
        account = self._keys.address(tenant_id, chain, create=True)
        assert account is not None
        raw = token.to_units(amount)
        states = self._states(market, account)
        asset = next((s for s in states if s.address.lower() == token.address.lower()), None)
        if asset is None:
            raise LendingUnavailable(f"{token.symbol} is not listed in the lending pool",
                                     details={"token": token.symbol})
        erc20 = bind(chain, "Token", token.address)
        with chain.guard():
            wallet = erc20.functions.balanceOf(account).call()
            pool_cash = erc20.functions.balanceOf(pool.address).call()
        if action == "repay":
            if asset.borrowed == 0:
                raise InvalidInput(f"no {token.symbol} debt to repay", code="DEFI_NO_DEBT")
            raw = min(raw, asset.borrowed)  # the pool takes at most the debt
        if action in ("supply", "repay") and wallet < raw:
            raise InvalidInput(f"the account holds {token.from_units(wallet)} {token.symbol}",
                               code="DEFI_INSUFFICIENT_BALANCE",
                               details={"balance": str(token.from_units(wallet))})
        if action == "withdraw" and asset.supplied < raw:
            raise InvalidInput(f"the account supplied {token.from_units(asset.supplied)} "
                               f"{token.symbol}", code="DEFI_INSUFFICIENT_BALANCE",
                               details={"supplied": str(token.from_units(asset.supplied))})
        if action in ("borrow", "withdraw") and pool_cash < raw:
            available = str(token.from_units(pool_cash))
            raise InsufficientLiquidity(f"the pool holds {available} {token.symbol}",
                                        details={"available": available})

        dc, dd = (sign * raw for sign in _DELTAS[action])
        before = lm.totals(states).health_factor
        after = lm.totals(lm.moved(states, token.address, dc, dd)).health_factor
        with chain.guard():
            confirmed = pool.functions.health_factor_after(account, token.address, dc, dd).call()
        if confirmed != (2**256 - 1 if after is None else after):
            raise RuntimeError(f"off-chain health factor {after} differs from the pool's {confirmed}")
        floor = int(self.floor * lm.ONE)
        if action in ("borrow", "withdraw") and after is not None and after < floor:
            raise HealthFactorFloor(
                f"{action} would leave the health factor at {lm.health_decimal(after):.4f}, "
                f"under the floor {self.floor}",
                details={"healthFactorAfter": str(lm.health_decimal(after)),
                         "floor": str(self.floor)})

        signer = self._keys.signer(tenant_id, chain)
        call = getattr(pool.functions, action)(token.address, raw)
        row = DefiLendingAction(
            tenant_id=tenant_id, chain_id=chain.chain_id, action=action, account=account,
            pool=pool.address, token=token.symbol, token_address=token.address,
            amount=token.from_units(raw), health_factor_before=lm.health_decimal(before),
            health_factor_after=lm.health_decimal(after), tx_hashes=[], status="PENDING",
            idempotency_key=key, created_by=user_id)
        try:  # committed before anything is signed: a retry finds it whatever happens next
            with self._db.tenant_transaction(tenant_id) as session:
                session.add(row)
        except IntegrityError:
            # Another process recorded the same key meanwhile (the lock is per process).
            raise Conflict("idempotencyKey was used concurrently", code="IDEMPOTENCY_KEY_REUSED") from None

        def sent(tx_hash: str, final: bool = False) -> None:
            row.tx_hashes = [*row.tx_hashes, tx_hash]
            row.status = "SENT" if final else row.status
            self._save(row)

        try:
            if action in ("supply", "repay"):
                with chain.guard():
                    allowance = erc20.functions.allowance(account, pool.address).call()
                if allowance < raw:
                    signer.send({"to": token.address,
                                 "data": erc20.encode_abi("approve", args=[pool.address, raw])},
                                on_sent=sent)
            try:
                with chain.guard():
                    call.call({"from": account})
            except DomainError:
                raise
            except Exception as exc:  # the contract's revert, with its reason
                raise SimulationReverted(f"the pool refuses the {action}: {revert_reason(exc)}",
                                         details={"reason": revert_reason(exc)}) from None
            receipt = signer.send({"to": pool.address,
                                   "data": pool.encode_abi(action, args=[token.address, raw])},
                                  on_sent=lambda h: sent(h, final=True))
        except (TransactionPending, TimeExhausted):
            raise ActionInProgress(
                f"the {action} was sent but its outcome is not known yet: retry with the same "
                "idempotencyKey to learn it (nothing is sent again)",
                details={"actionId": row.id, "txHashes": list(row.tx_hashes)}) from None
        except TransactionReverted:
            if row.status != "SENT":
                raise  # the action itself was not sent
            row.status = "FAILED"
            self._record(row, chain, None)
            raise
        except DomainError:
            if row.status != "SENT":  # refused before the action was sent: nothing is kept
                self._forget(row)
            raise
        row.status, row.block_number = "EXECUTED", int(receipt["blockNumber"])
        self._record(row, chain, after)
        return row

    def _resume(self, row: DefiLendingAction) -> DefiLendingAction:
        """Finishes an action whose receipt was not seen (SENT) from its recorded hash; sends
        nothing. PENDING (no hash of the action yet) answers DEFI_ACTION_IN_PROGRESS."""
        in_progress = ActionInProgress(f"the {row.action} was sent and its outcome is not known yet",
                                       details={"actionId": row.id, "txHashes": list(row.tx_hashes)})
        if row.status != "SENT" or not row.tx_hashes:
            raise in_progress
        chain = next((c for c in self._chains.all() if c.chain_id == row.chain_id), None)
        if chain is None:
            raise in_progress
        try:
            with chain.guard():
                receipt = chain.web3.eth.get_transaction_receipt(row.tx_hashes[-1])
        except TransactionNotFound:
            raise in_progress from None
        if int(receipt["status"]) != 1:
            row.status = "FAILED"
            self._record(row, chain, None)
            return row
        row.status, row.block_number = "EXECUTED", int(receipt["blockNumber"])
        after = row.health_factor_after
        self._record(row, chain, None if after is None else int(after * lm.ONE))
        return row

    def _save(self, row: DefiLendingAction) -> None:
        with self._db.tenant_transaction(row.tenant_id) as session:
            self._store(session, row)

    def _forget(self, row: DefiLendingAction) -> None:
        with self._db.tenant_transaction(row.tenant_id) as session:
            stored = session.get(DefiLendingAction, row.id)
            if stored is not None:
                session.delete(stored)

    @staticmethod
    def _store(session: Session, row: DefiLendingAction) -> None:
        stored = session.get(DefiLendingAction, row.id)
        assert stored is not None
        stored.status, stored.tx_hashes, stored.block_number = (
            row.status, list(row.tx_hashes), row.block_number)

    def _record(self, row: DefiLendingAction, chain: Chain, after: int | None) -> None:
        """The outcome and its audit record, in one transaction."""
        with self._db.tenant_transaction(row.tenant_id) as session:
            self._store(session, row)
            kind = f"defi.lending.{row.action}" if row.status == "EXECUTED" else "defi.lending.failed"
            self._audit.append(session, row.tenant_id, [AuditEntry(
                kind=kind, subject=row.id, actor=row.created_by,
                payload={"chain": chain.name, "account": row.account, "pool": row.pool,
                         "token": row.token, "amount": str(row.amount), "status": row.status,
                         "healthFactorAfter": None if after is None else str(row.health_factor_after),
                         "txHashes": list(row.tx_hashes)})])
