"""Protected swaps: `defiSwap` from validation to a mined transaction.

MEV protection, in order:
1. The client's tolerance `slippage_bps` (0 < bps <= 5,000) sets the minimum out:
   min_out = expected · (10,000 - bps) // 10,000, where `expected` is the client's own quote
   (`expected_amount_out`, what it saw) or else the gateway's quote at request time.
2. A deadline (`deadline_seconds` from now, unix time on chain) the pool contract enforces.
3. A simulation by eth_call just before sending, on the chain's latest state: the swap call
   itself for the first hop when the pool may already pull the tokens, else the pool's own view
   (the function the swap executes); a simulated outcome under `min_out` is refused with
   DEFI_SLIPPAGE_EXCEEDED and nothing is sent. A price moved between the client's quote and
   the request (a front-runner) is caught here.
4. The contract's own check: the swap reverts under `min_out` or past the deadline, so a price
   moved between the simulation and the block (a sandwich in the mempool) costs only gas.
5. A private submission hook: a chain configured with `privateRpcUrl` receives the signed
   transaction there (a private relay) instead of the public mempool. The embedded chain has
   none: it mines each transaction as it is sent, so there is no mempool to watch.

A two-hop route is sent as two transactions (approve where needed, then each hop, each with its
own minimum: the simulated intermediate amount less the tolerance); a second hop that reverts
leaves the intermediate token in the tenant's account and the swap FAILED with what happened.
An atomic router contract would remove that case; it is not built.

Pre-trade compliance (the tenant's controls, gateway/trading/controls.py): the kill switch
refuses every swap (COMPLIANCE_KILL_SWITCH); `restricted` refuses a swap whose token in or out
is listed as "DEFI:<SYMBOL>" (e.g. "DEFI:WBTC"), by its address or by its bare symbol, any case
(gateway/defi/compliance.py, shared with lending)
(COMPLIANCE_RESTRICTED_INSTRUMENT); `max_order_value` (USD) bounds the value of the amount in,
stablecoins (USDC, USDT, DAI) at 1:1 and other tokens at the best route to USDC; a token with no
route to USDC cannot be valued and is refused while a limit is set (COMPLIANCE_MAX_ORDER_VALUE).
A refusal is recorded (a REFUSED `DefiSwap` and an audit record) and raised; bad input is
refused before anything is recorded or sent.

Idempotency across timeouts and crashes: the `DefiSwap` row is committed as PENDING (key,
account, quote, minimum out) before the first transaction is signed, and each transaction's
hash is committed as soon as it is sent (the route's hops carry their "txHash"). A receipt not
seen in time (or any failure after a send) leaves the row PENDING and answers
DEFI_SWAP_IN_PROGRESS, never DEFI_CHAIN_UNAVAILABLE. A retry with the same key never sends
again: it looks the recorded hashes' receipts up and finishes the record (EXECUTED with the
amount out from the last hop's Transfer logs, REFUSED or FAILED), or answers
DEFI_SWAP_IN_PROGRESS while a receipt is missing or a hop has no hash yet.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from eth_abi import decode as abi_decode
from sqlalchemy.exc import IntegrityError
from sqlmodel import select
from web3.exceptions import TimeExhausted, TransactionNotFound

from gateway.audit import AuditEntry, AuditTrail
from gateway.compliance.errors import ComplianceDenied
from gateway.db import Database
from gateway.defi.chain import Chain, revert_errors
from gateway.defi.compliance import is_restricted
from gateway.defi.errors import (
    DeadlineInvalid,
    SlippageExceeded,
    SlippageInvalid,
    SwapInProgress,
    TransactionPending,
    TransactionReverted,
)
from gateway.defi.keys import Signer
from gateway.defi.models import DefiSwap
from gateway.defi.pools import erc20
from gateway.defi.quotes import Quote, Route, quote
from gateway.defi.service import DefiMarkets, parse_amount
from gateway.errors import Conflict, DomainError, InvalidInput
from gateway.pagination import Page, keyset_page
from gateway.trading.controls import load_controls
from plugins.builtin.compliance import codes
from plugins.sdk import DefiChainView, DefiQuoteRefused

MAX_SLIPPAGE_BPS = 5_000
MAX_DEADLINE_SECONDS = 3_600
STABLECOINS = frozenset({"USDC", "USDT", "DAI"})
VALUATION_TOKEN = "USDC"
BPS = 10_000
TRANSFER_TOPIC = bytes.fromhex(
    "ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef")  # Transfer(address,address,uint256)


@dataclass(frozen=True)
class SwapRequest:
    chain: str
    token_in: str
    token_out: str
    amount_in: str
    slippage_bps: int
    deadline_seconds: int
    idempotency_key: str
    expected_amount_out: str | None = None  # the client's quote, in whole tokens


@dataclass(frozen=True)
class SwapOutcome:
    swap: DefiSwap
    replayed: bool


class InsufficientBalance(InvalidInput):
    code = "DEFI_INSUFFICIENT_BALANCE"


class DefiSwaps:
    def __init__(self, db: Database, markets: DefiMarkets, audit: AuditTrail) -> None:
        self._db = db
        self._markets = markets
        self._audit = audit
        self._locks: dict[tuple[str, int], threading.Lock] = {}
        self._guard = threading.Lock()

    def swap(self, tenant_id: str, user_id: str | None, request: SwapRequest) -> SwapOutcome:
        key = (request.idempotency_key or "").strip()
        if not 1 <= len(key) <= 128:
            raise InvalidInput("idempotencyKey must be 1 to 128 characters",
                               code="IDEMPOTENCY_KEY_INVALID")
        if not 0 < request.slippage_bps <= MAX_SLIPPAGE_BPS:
            raise SlippageInvalid(f"slippageBps must be above 0 and at most {MAX_SLIPPAGE_BPS}",
                                  details={"slippageBps": request.slippage_bps})
        if request.deadline_seconds <= 0:
            raise DeadlineInvalid("the deadline has already passed",
                                  details={"deadlineSeconds": request.deadline_seconds})
        if request.deadline_seconds > MAX_DEADLINE_SECONDS:
            raise InvalidInput(f"deadlineSeconds must be at most {MAX_DEADLINE_SECONDS}",
                               code="DEFI_DEADLINE_INVALID")
        chain = self._markets.chain(request.chain)
        with self._lock_for(tenant_id, chain):
            existing = self._existing(tenant_id, key)
            if existing is not None:
                return self._replay(existing, chain, request)
            return self._swap(tenant_id, user_id, chain, key, request)

    def list(self, tenant_id: str, *, first: int, after: str | None, status: str | None = None,
             max_page_size: int = 200) -> Page[DefiSwap]:
        stmt = select(DefiSwap)
        if status is not None:
            stmt = stmt.where(DefiSwap.status == status)
        return keyset_page(self._db, tenant_id, stmt, DefiSwap, first=first, after=after,
                           max_page_size=max_page_size)

    def _lock_for(self, tenant_id: str, chain: Chain) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault((tenant_id, chain.chain_id), threading.Lock())

    def _existing(self, tenant_id: str, key: str) -> DefiSwap | None:
        with self._db.tenant_session(tenant_id) as session:
            return session.exec(select(DefiSwap).where(DefiSwap.idempotency_key == key)).first()

    def _replay(self, row: DefiSwap, chain: Chain, request: SwapRequest) -> SwapOutcome:
        same = row.chain_id == chain.chain_id and row.slippage_bps == request.slippage_bps
        if same:  # the tokens and amount as first resolved (the last snapshot: no RPC needed)
            tokens = self._markets.pools.market(chain, fresh=False).tokens
            t_in, t_out = tokens.resolve(request.token_in), tokens.resolve(request.token_out)
            same = (t_in.address == row.token_in and t_out.address == row.token_out
                    and str(parse_amount(request.amount_in, t_in)) == row.amount_in)
        if not same:
            raise Conflict("idempotencyKey was used for a different request",
                           code="IDEMPOTENCY_KEY_REUSED", details={"swapId": row.id})
        if row.status == "PENDING":
            return self._resume(row, chain)
        if row.status == "REFUSED" and row.error_code:
            raise DomainError(row.error_message or "the swap was refused", code=row.error_code,
                              details={"swapId": row.id, "replayed": True})
        return SwapOutcome(row, replayed=True)

    def _swap(self, tenant_id: str, user_id: str | None, chain: Chain, key: str,
              request: SwapRequest) -> SwapOutcome:
        market = self._markets.market(request.chain)
        t_in = market.tokens.resolve(request.token_in)
        t_out = market.tokens.resolve(request.token_out)
        amount_in = parse_amount(request.amount_in, t_in)
        expected_client = (parse_amount(request.expected_amount_out, t_out)
                           if request.expected_amount_out is not None else None)
        q = quote(market, t_in, t_out, amount_in)
        expected = expected_client if expected_client is not None else q.best.amount_out
        min_out = expected * (BPS - request.slippage_bps) // BPS
        deadline = _chain_now(chain) + timedelta(seconds=request.deadline_seconds)
        row = DefiSwap(tenant_id=tenant_id, idempotency_key=key, chain_id=chain.chain_id,
                       account=self._markets.keys.address(tenant_id, chain, create=False) or "",
                       token_in=t_in.address, token_out=t_out.address, amount_in=str(amount_in),
                       quoted_out=str(expected), min_out=str(min_out),
                       slippage_bps=request.slippage_bps, deadline=deadline,
                       route=_route_json(q.best), status="PENDING", created_by=user_id)

        denial = self._compliance(tenant_id, q)
        if denial is not None:
            return self._refuse(row, denial)

        signer = self._markets.keys.signer(tenant_id, chain)
        row.account = signer.address
        with chain.guard():
            balance = int(erc20(chain, t_in.address).functions.balanceOf(signer.address).call())
        if balance < amount_in:
            raise InsufficientBalance(f"the account holds {t_in.from_units(balance)} {t_in.symbol}",
                                      details={"balance": str(balance), "amountIn": str(amount_in)})

        simulated = self._simulate(market.view, signer, q.best, int(deadline.timestamp()))
        if simulated is None or simulated < min_out:
            return self._refuse(row, SlippageExceeded(
                "the simulated outcome is worse than the tolerance allows: nothing was sent",
                details={"simulatedOut": str(simulated or 0), "minOut": str(min_out),
                         "expectedOut": str(expected)}))
        try:  # committed before anything is signed: a retry finds it whatever happens next
            with self._db.tenant_transaction(tenant_id) as session:
                session.add(row)
        except IntegrityError:  # another process holds this key
            raise SwapInProgress("a swap with this idempotencyKey is in progress",
                                 details={"idempotencyKey": key}) from None
        try:
            return self._execute(row, chain, market.view, signer, q, simulated, min_out,
                                 int(deadline.timestamp()), request.slippage_bps)
        except (TransactionPending, TimeExhausted):
            raise SwapInProgress(
                "the swap was sent but its outcome is not known yet: retry with the same "
                "idempotencyKey to learn it (nothing is sent again)",
                details={"swapId": row.id, "txHashes": list(row.tx_hashes)}) from None
        except DomainError:
            if row.status == "PENDING" and not row.tx_hashes:  # nothing was signed: a retry may send
                self._forget(row)
            raise

    def _resume(self, row: DefiSwap, chain: Chain) -> SwapOutcome:
        """Finishes a PENDING swap from its recorded transaction hashes; sends nothing."""
        in_progress = SwapInProgress("the swap was sent and its outcome is not known yet",
                                     details={"swapId": row.id, "txHashes": list(row.tx_hashes)})
        receipts = []
        for index, hop in enumerate(row.route):
            receipt = None
            if hop.get("txHash"):
                try:
                    with chain.guard():
                        receipt = chain.web3.eth.get_transaction_receipt(hop["txHash"])
                except TransactionNotFound:
                    pass
            if receipt is None:
                # Past its deadline a hop not mined can only revert if it ever is: settle it.
                if _chain_now(chain) <= row.deadline:
                    raise in_progress
                if index == 0:
                    self._fail(row, "DEFI_SWAP_EXPIRED",
                               "not mined before its deadline: nothing was swapped")
                else:
                    self._fail(row, "DEFI_ROUTE_INCOMPLETE", "the second hop was not mined before "
                               "its deadline: the intermediate token stays in the account")
                return SwapOutcome(row, replayed=True)
            receipts.append(receipt)
        for index, receipt in enumerate(receipts):
            if int(receipt["status"]) != 1:
                if index == 0:
                    return self._refuse(row, SlippageExceeded(
                        "the chain refused the swap at its minimum out or deadline",
                        details={"txHashes": list(row.tx_hashes), "replayed": True}))
                self._fail(row, "DEFI_ROUTE_INCOMPLETE",
                           "the second hop reverted: the intermediate token stays in the account")
                return SwapOutcome(row, replayed=True)
        last = receipts[-1]
        received = sum(int.from_bytes(bytes(log["data"])[:32], "big") for log in last["logs"]
                       if log["address"].lower() == row.token_out.lower()
                       and len(log["topics"]) == 3 and bytes(log["topics"][0]) == TRANSFER_TOPIC
                       and bytes(log["topics"][2])[-20:].hex() == row.account.lower()[2:])
        row.status, row.amount_out, row.block_number = "EXECUTED", str(received), int(
            last["blockNumber"])
        self._record(row, "defi.swap", {"recovered": True})
        return SwapOutcome(row, replayed=True)

    def _compliance(self, tenant_id: str, q: Quote) -> DomainError | None:
        with self._db.tenant_session(tenant_id) as session:
            controls = load_controls(session, tenant_id)
        if controls.kill_switch:
            return ComplianceDenied("the tenant's kill switch is on: no new swaps",
                                    code=codes.KILL_SWITCH)
        for token in (q.token_in, q.token_out):
            if is_restricted(token.symbol, token.address, controls.restricted):
                return ComplianceDenied(f"{token.symbol} is on the tenant's restricted list",
                                        code=codes.RESTRICTED_INSTRUMENT,
                                        details={"token": token.symbol, "address": token.address})
        if controls.max_order_value is not None:
            value = self._usd_value(q)
            if value is None or value > controls.max_order_value:
                return ComplianceDenied(
                    "the swap's value exceeds the tenant's maximum order value" if value is not None
                    else f"{q.token_in.symbol} cannot be valued in USD: refused while a limit is set",
                    code=codes.MAX_ORDER_VALUE,
                    details={"limit": str(controls.max_order_value),
                             "value": None if value is None else str(value)})
        return None

    @staticmethod
    def _usd_value(q: Quote) -> Decimal | None:
        if q.token_in.symbol.upper() in STABLECOINS:
            return q.token_in.from_units(q.amount_in)
        if q.token_out.symbol.upper() == VALUATION_TOKEN:
            return q.token_out.from_units(q.best.amount_out)
        try:
            usdc = q.market.tokens.resolve(VALUATION_TOKEN)
            valued = quote(q.market, q.token_in, usdc, q.amount_in)
        except DomainError:
            return None
        return usdc.from_units(valued.best.amount_out)

    @staticmethod
    def _simulate(view: DefiChainView, signer: Signer, route: Route, deadline: int) -> int | None:
        """The route's outcome on the chain's latest state, by eth_call; None when a hop would
        revert."""
        chain = signer.chain
        amount = route.amount_in
        try:
            with chain.guard():
                for index, hop in enumerate(route.hops):
                    entry = hop.entry
                    call = entry.protocol.swap_call(view, entry.pool, hop.token_in, hop.token_out,
                                                    amount, 0, signer.address, deadline)
                    allowed = call.spender is None or int(erc20(chain, hop.token_in).functions
                                                          .allowance(signer.address, call.spender)
                                                          .call()) >= amount
                    if index == 0 and allowed:
                        raw = chain.web3.eth.call({"from": signer.address, "to": call.to,
                                                   "data": call.data, "value": call.value})
                        amount = int(abi_decode(["uint256"], bytes(raw))[0])
                    else:
                        amount = entry.protocol.onchain_quote(view, entry.pool, hop.token_in,
                                                              hop.token_out, amount)
        except (*revert_errors(), DefiQuoteRefused):  # a hop would revert
            return None
        return amount

    def _execute(self, row: DefiSwap, chain: Chain, view: DefiChainView, signer: Signer, q: Quote,
                 simulated: int, min_out: int, deadline: int, bps: int) -> SwapOutcome:
        route = q.best
        hashes: list[str] = []

        def sent(tx_hash: str, hop_index: int | None = None) -> None:
            hashes.append(tx_hash)
            row.tx_hashes = list(hashes)
            if hop_index is not None:
                row.route = [dict(h, txHash=tx_hash) if i == hop_index else h
                             for i, h in enumerate(row.route)]
            self._save(row)
        amount = route.amount_in
        out_token = erc20(chain, q.token_out.address)
        with chain.guard():
            before = int(out_token.functions.balanceOf(signer.address).call())
        block = None
        for index, hop in enumerate(route.hops):
            last = index == len(route.hops) - 1
            entry = hop.entry
            if last:
                hop_min = min_out
            else:
                hop_min = entry.protocol.onchain_quote(view, entry.pool, hop.token_in, hop.token_out,
                                                       amount) * (BPS - bps) // BPS
            call = entry.protocol.swap_call(view, entry.pool, hop.token_in, hop.token_out, amount,
                                            hop_min, signer.address, deadline)
            hop_token = erc20(chain, hop.token_out)
            try:
                if call.spender is not None:
                    with chain.guard():
                        allowance = int(erc20(chain, hop.token_in).functions.allowance(
                            signer.address, call.spender).call())
                    if allowance < amount:
                        approve = erc20(chain, hop.token_in).functions.approve(call.spender, amount)
                        signer.send({"to": approve.address,
                                     "data": approve._encode_transaction_data()},
                                    private_rpc=chain.private_submission, on_sent=sent)
                with chain.guard():
                    hop_before = int(hop_token.functions.balanceOf(signer.address).call())
                receipt = signer.send({"to": call.to, "data": call.data, "value": call.value},
                                      private_rpc=chain.private_submission,
                                      on_sent=lambda h, i=index: sent(h, i))
            except TransactionReverted as reverted:
                if "txHash" in reverted.details and reverted.details["txHash"] not in hashes:
                    hashes.append(reverted.details["txHash"])
                row.tx_hashes = list(hashes)
                if index == 0:
                    return self._refuse(row, SlippageExceeded(
                        "the chain refused the swap at its minimum out or deadline: the price moved "
                        "after the simulation; no tokens changed hands",
                        details={"minOut": str(hop_min), "txHashes": hashes}))
                return self._fail(row, "DEFI_ROUTE_INCOMPLETE",
                                  "the second hop reverted: the intermediate token stays in the account")
            block = int(receipt["blockNumber"])
            with chain.guard():
                amount = int(hop_token.functions.balanceOf(signer.address).call()) - hop_before
        with chain.guard():
            received = int(out_token.functions.balanceOf(signer.address).call()) - before
        row.status, row.amount_out, row.tx_hashes, row.block_number = (
            "EXECUTED", str(received), list(hashes), block)
        self._record(row, "defi.swap", {"simulatedOut": str(simulated)})
        return SwapOutcome(row, replayed=False)

    def _refuse(self, row: DefiSwap, error: DomainError) -> SwapOutcome:
        row.status, row.error_code, row.error_message = "REFUSED", error.code, error.message[:500]
        self._record(row, "defi.swap_refused", {"code": error.code})
        error.details = {**error.details, "swapId": row.id}
        raise error

    def _fail(self, row: DefiSwap, code: str, message: str) -> SwapOutcome:
        row.status, row.error_code, row.error_message = "FAILED", code, message
        self._record(row, "defi.swap_failed", {"code": code})
        return SwapOutcome(row, replayed=False)

    def _record(self, row: DefiSwap, kind: str, extra: dict[str, Any]) -> None:
        payload = {"chainId": row.chain_id, "account": row.account, "tokenIn": row.token_in,
                   "tokenOut": row.token_out, "amountIn": row.amount_in, "quotedOut": row.quoted_out,
                   "minOut": row.min_out, "amountOut": row.amount_out, "status": row.status,
                   "route": row.route, "txHashes": row.tx_hashes, **extra}
        with self._db.tenant_transaction(row.tenant_id) as session:
            self._store(session, row)
            self._audit.append(session, row.tenant_id,
                               [AuditEntry(kind=kind, subject=row.id, payload=payload,
                                           actor=row.created_by)])


    def _forget(self, row: DefiSwap) -> None:
        with self._db.tenant_transaction(row.tenant_id) as session:
            stored = session.get(DefiSwap, row.id)
            if stored is not None:
                session.delete(stored)

    def _save(self, row: DefiSwap) -> None:
        with self._db.tenant_transaction(row.tenant_id) as session:
            self._store(session, row)

    @staticmethod
    def _store(session: Any, row: DefiSwap) -> None:
        stored = session.get(DefiSwap, row.id)
        if stored is None:
            session.add(row)
            return
        for name in ("account", "status", "amount_out", "tx_hashes", "route", "block_number",
                     "error_code", "error_message"):
            setattr(stored, name, getattr(row, name))


def _route_json(route: Route) -> list[dict[str, Any]]:
    return [{"pool": h.entry.pool.address, "protocol": h.entry.protocol.name,
             "tokenIn": h.token_in, "tokenOut": h.token_out, "amountIn": str(h.amount_in),
             "amountOut": str(h.amount_out)} for h in route.hops]


def _chain_now(chain: Chain) -> datetime:
    """The later of the wall clock and the chain's latest block: the contract checks the
    deadline against block time, and an embedded chain runs ahead of the wall (each block is at
    least a second after the one before; tests travel in time)."""
    with chain.guard():
        latest = int(chain.web3.eth.get_block("latest")["timestamp"])
    return max(datetime.now(UTC).replace(microsecond=0), datetime.fromtimestamp(latest, UTC))
