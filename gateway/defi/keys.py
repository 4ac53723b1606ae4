"""Tenants' signing keys: one per tenant and chain, made on first use, sealed at rest.

The private key is sealed with `runtime.secrets` under f"defi-key:{tenant_id}:{chain_id}" and
opened only inside `DefiKeys.signer`, for a session scoped to that same tenant: the row is read
through the tenant filter, and the context binds the ciphertext to the tenant, so a sealed key
copied into another tenant's row does not open. Nothing returns the key; queries get the
address. On the embedded chain a new address is funded by the chain's faucet (ETH and the
demo tokens); elsewhere the tenant funds it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from gateway.db import Database
from gateway.defi.chain import Chain, revert_errors
from gateway.defi.errors import TransactionPending, TransactionReverted
from gateway.defi.models import DefiKey
from gateway.secrets import SecretBox

Funder = Callable[[Chain, str], None]
RECEIPT_TIMEOUT_SECONDS = 120


def key_context(tenant_id: str, chain_id: int) -> str:
    return f"defi-key:{tenant_id}:{chain_id}"


@dataclass
class Signer:
    """Signs and sends transactions from one tenant's address on one chain."""

    chain: Chain
    address: str
    _account: Any
    _lock: threading.Lock

    def send(self, tx: dict[str, Any], *, private_rpc: str | None = None,
             on_sent: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Fill nonce/gas/fees, sign, send, wait for the receipt. `private_rpc` (a chain's
        private submission endpoint) receives the raw transaction instead of the public RPC.
        `on_sent(tx_hash)` runs once the transaction is signed, before it is broadcast, so a
        caller can record it first. A reverted transaction raises DEFI_TRANSACTION_REVERTED; a receipt not
        seen in time raises DEFI_TRANSACTION_PENDING (it was sent and may still be mined)."""
        from web3.exceptions import TimeExhausted

        w3 = self.chain.web3
        with self._lock, self.chain.guard():
            tx = dict(tx)
            tx.setdefault("from", self.address)
            tx.setdefault("chainId", self.chain.chain_id)
            tx["nonce"] = w3.eth.get_transaction_count(self.address, "pending")
            if "gas" not in tx:
                try:
                    tx["gas"] = int(w3.eth.estimate_gas(tx) * 12 // 10)
                except revert_errors() as exc:  # it would revert: nothing is sent
                    raise TransactionReverted("the transaction would revert",
                                              details={"reason": str(exc)[:200]}) from None
            if "gasPrice" not in tx and "maxFeePerGas" not in tx:
                tx["gasPrice"] = w3.eth.gas_price
            signed = self._account.sign_transaction(tx)
            if on_sent is not None:  # before the broadcast: no transaction out without its hash kept
                on_sent(signed.hash.to_0x_hex())
            if private_rpc:
                from web3 import Web3

                tx_hash = Web3(Web3.HTTPProvider(private_rpc)).eth.send_raw_transaction(
                    signed.raw_transaction)
            else:
                tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
            try:
                receipt = w3.eth.wait_for_transaction_receipt(tx_hash,
                                                              timeout=RECEIPT_TIMEOUT_SECONDS)
            except TimeExhausted:
                raise TransactionPending("the transaction was sent; its receipt was not seen in time",
                                         details={"txHash": tx_hash.to_0x_hex()}) from None
        if receipt["status"] != 1:
            raise TransactionReverted("the transaction reverted",
                                      details={"txHash": tx_hash.to_0x_hex()})
        return dict(receipt)


class DefiKeys:
    def __init__(self, db: Database, secrets: SecretBox, funder: Funder | None = None) -> None:
        self._db = db
        self._secrets = secrets
        self._funder = funder
        self._send_locks: dict[tuple[int, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def set_funder(self, funder: Funder) -> None:
        self._funder = funder

    def address(self, tenant_id: str, chain: Chain, *, create: bool = True) -> str | None:
        row = self._row(tenant_id, chain, create=create)
        return row.address if row else None

    def signer(self, tenant_id: str, chain: Chain) -> Signer:
        row = self._row(tenant_id, chain, create=True)
        assert row is not None
        from eth_account import Account

        secret = self._secrets.open(row.sealed_key, key_context(tenant_id, chain.chain_id))
        account = Account.from_key(secret)
        if account.address != row.address:
            raise TransactionReverted("the stored key does not match its address")
        with self._guard:
            lock = self._send_locks.setdefault((chain.chain_id, row.address), threading.Lock())
        return Signer(chain, row.address, account, lock)

    def _row(self, tenant_id: str, chain: Chain, *, create: bool) -> DefiKey | None:
        with self._db.tenant_session(tenant_id) as session:
            row = session.exec(select(DefiKey).where(DefiKey.chain_id == chain.chain_id)).first()
        if row is not None and self._funder is not None and chain.embedded:
            self._funder(chain, row.address)  # once per process: the embedded chain is in memory
        if row is not None or not create:
            return row
        from eth_account import Account

        account = Account.create()
        if self._funder is not None and chain.embedded:
            self._funder(chain, account.address)
        row = DefiKey(tenant_id=tenant_id, chain_id=chain.chain_id, address=account.address,
                      sealed_key=self._secrets.seal(bytes(account.key),
                                                    key_context(tenant_id, chain.chain_id)))
        try:
            with self._db.tenant_transaction(tenant_id) as session:
                session.add(row)
        except IntegrityError:  # another request made this tenant's key first: use that one
            with self._db.tenant_session(tenant_id) as session:
                return session.exec(select(DefiKey).where(DefiKey.chain_id == chain.chain_id)).one()
        return row
