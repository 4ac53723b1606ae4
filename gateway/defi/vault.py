"""Strategy vaults: `deployStrategyVault` is a job (kind "defi.deploy_vault") that compiles
gateway/defi/contracts/strategy_vault.vy and deploys it from the tenant's own key, so the
tenant's address is the vault's owner; the constructor sets the governance (the timelock delay
and the first strategy, which needs no timelock), and the job reads them back from the chain
before recording the `DefiVault` row and its audit record.

Parameters are checked when the job is requested (unknown chain or token, a delay out of
range, a malformed strategy address: no job is created). Progress: compiling, deploying,
checking governance, recorded.

A redelivered job never deploys twice: the `DefiVault` row is committed DEPLOYING with the
deploy transaction's hash (and the address it creates) as soon as it is sent; a redelivery
finds it, looks the receipt up by hash and finishes the record (DEPLOYED), or answers
DEFI_TRANSACTION_PENDING while the receipt is not there. Only DEPLOYED vaults are listed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlmodel import select
from web3.exceptions import TransactionNotFound

from gateway.audit import AuditEntry, AuditTrail
from gateway.db import Database
from gateway.defi.chain import Chain, Chains
from gateway.defi.compile import compile_contract
from gateway.defi.deploy import bind
from gateway.defi.errors import TransactionPending, TransactionReverted
from gateway.defi.keys import DefiKeys
from gateway.defi.lending import LendingUnavailable, SimulationReverted, revert_reason
from gateway.defi.tokens import TokenDirectory, TokenInfo
from gateway.defi.vault_models import DefiVault
from gateway.defi.world import DemoWorld
from gateway.errors import DomainError, InvalidInput, NotFound
from gateway.jobs.kinds import JobKind, Params
from gateway.jobs.runner import JobContext
from gateway.pagination import Page, keyset_page

GOVERNANCE = {  # action -> (contract function, takes a target address)
    "propose_strategy": ("propose_strategy", True), "execute_strategy": ("execute_strategy", False),
    "propose_owner": ("propose_owner", True), "execute_owner": ("execute_owner", False),
    "cancel_strategy": ("cancel", False), "cancel_owner": ("cancel", False),
    "pause": ("pause", False), "unpause": ("unpause", False),
}
KIND = "defi.deploy_vault"
CONTRACT = "strategy_vault"
MIN_TIMELOCK = 60
MAX_TIMELOCK = 30 * 86_400
ZERO = "0x0000000000000000000000000000000000000000"


class VaultUnavailable(DomainError):
    code = "DEFI_VAULT_UNAVAILABLE"
    http_status = 409


@dataclass(frozen=True)
class VaultState:
    """A vault's governance as the chain has it."""

    owner: str
    strategy: str | None
    pending_strategy: str | None
    strategy_eta: datetime | None
    pending_owner: str | None
    owner_eta: datetime | None
    paused: bool
    timelock_seconds: int
    total_assets: int  # base units of the asset
    allocated: int


def _address(value: str) -> str | None:
    return None if value == ZERO else value


def _instant(eta: int) -> datetime | None:
    return None if eta == 0 else datetime.fromtimestamp(eta, UTC)


class VaultService:
    def __init__(self, db: Database, chains: Chains, world: DemoWorld, keys: DefiKeys,
                 audit: AuditTrail, max_page_size: int) -> None:
        self._db = db
        self._chains = chains
        self._world = world
        self._keys = keys
        self._audit = audit
        self._max_page = max_page_size

    def _token(self, chain_key: str, token_key: str) -> TokenInfo:
        chain = self._chains.get(chain_key)
        if not chain.embedded:
            chain.check_available()
            raise LendingUnavailable(f"no token directory for vaults on chain {chain.name}",
                                     details={"chain": chain.name})
        with chain.guard():
            world = self._world.ensure(chain)
        return TokenDirectory(list(world.tokens.values())).resolve(token_key)

    def validate(self, params: Params) -> Params:
        from web3 import Web3

        chain_key = str(params.get("chain") or "").strip()
        token = self._token(chain_key, str(params.get("asset") or ""))
        timelock = params.get("timelockSeconds")
        if not isinstance(timelock, int) or isinstance(timelock, bool) \
                or not MIN_TIMELOCK <= timelock <= MAX_TIMELOCK:
            raise InvalidInput(f"timelockSeconds must be {MIN_TIMELOCK} to {MAX_TIMELOCK}",
                               code="DEFI_TIMELOCK_INVALID", details={"timelockSeconds": timelock})
        strategy = params.get("strategy")
        if strategy is not None:
            if not isinstance(strategy, str) or not Web3.is_address(strategy) or strategy == ZERO:
                raise InvalidInput("strategy must be a 0x address", code="DEFI_ADDRESS_INVALID",
                                   details={"strategy": strategy})
            strategy = Web3.to_checksum_address(strategy)
        chain = self._chains.get(chain_key)
        return {"chain": chain.name, "asset": token.symbol, "timelockSeconds": timelock,
                "strategy": strategy}

    def deploy(self, ctx: JobContext, params: Params) -> dict[str, Any]:
        chain = self._chains.get(params["chain"])
        with ctx.session() as session:
            done = session.exec(select(DefiVault).where(DefiVault.job_id == ctx.job_id)).first()
        if done is not None and done.status == "DEPLOYED":  # redelivered: answer it again
            ctx.progress(1.0, "recorded")
            return self._result(chain.name, done, done.tx_hashes, None)
        token = self._token(chain.name, params["asset"])
        strategy = params.get("strategy") or ZERO
        if done is not None:  # sent by an earlier delivery: its receipt, never a second deploy
            try:
                with chain.guard():
                    receipt = chain.web3.eth.get_transaction_receipt(done.tx_hashes[-1])
            except TransactionNotFound:
                raise TransactionPending("the vault's deploy transaction is not mined yet",
                                         details={"txHash": done.tx_hashes[-1]}) from None
            if int(receipt["status"]) != 1:
                raise TransactionReverted("the vault's deploy transaction reverted",
                                          details={"txHash": done.tx_hashes[-1]})
            ctx.progress(0.7, "checking governance")
            return self._confirm(ctx, chain, token, params, strategy, done, dict(receipt))
        ctx.progress(0.1, "compiling strategy_vault.vy")
        compiled = compile_contract(CONTRACT)
        ctx.progress(0.3, "deploying from the tenant's key")
        signer = self._keys.signer(ctx.tenant_id, chain)
        w3 = chain.web3
        factory = w3.eth.contract(abi=compiled.abi, bytecode=compiled.bytecode)
        with chain.guard():
            data = factory.constructor(token.address, params["timelockSeconds"], strategy
                                       ).build_transaction({"from": signer.address})["data"]
        row = DefiVault(tenant_id=ctx.tenant_id, chain_id=chain.chain_id, address="",
                        asset=token.symbol, asset_address=token.address, owner=signer.address,
                        strategy=None if strategy == ZERO else strategy,
                        timelock_seconds=params["timelockSeconds"], tx_hashes=[], job_id=ctx.job_id,
                        status="DEPLOYING")

        def sent(tx_hash: str) -> None:  # kept before the broadcast: a redelivery must not deploy again
            with chain.guard():  # signed, not broadcast, under the signer's lock: the pending count
                nonce = int(chain.web3.eth.get_transaction_count(signer.address, "pending"))
            row.address, row.tx_hashes = created_address(signer.address, nonce), [tx_hash]
            with self._db.tenant_transaction(ctx.tenant_id) as session:
                session.add(row)

        receipt = signer.send({"data": data}, on_sent=sent)
        ctx.progress(0.7, "checking governance")
        return self._confirm(ctx, chain, token, params, strategy, row, receipt)

    def _confirm(self, ctx: JobContext, chain: Chain, token: TokenInfo, params: Params,
                 strategy: str, row: DefiVault, receipt: dict[str, Any]) -> dict[str, Any]:
        address = receipt["contractAddress"]
        hashes = list(row.tx_hashes)
        vault = bind(chain, CONTRACT, address)
        with chain.guard():
            owner = vault.functions.owner().call()
            delay = vault.functions.timelock_delay().call()
            set_strategy = vault.functions.strategy().call()
            asset = vault.functions.asset().call()
        if (owner, delay, set_strategy, asset) != (row.owner, params["timelockSeconds"],
                                                   strategy, token.address):
            raise TransactionReverted("the deployed vault's governance is not what was asked",
                                      details={"address": address})
        with self._db.tenant_transaction(ctx.tenant_id) as session:
            stored = session.get(DefiVault, row.id)
            assert stored is not None
            stored.address, stored.status = address, "DEPLOYED"
            row = stored
            session.flush()
            self._audit.append(session, ctx.tenant_id, [AuditEntry(
                kind="defi.vault.deployed", subject=row.id,
                payload={"chain": chain.name, "address": address, "asset": token.symbol,
                         "owner": owner, "strategy": row.strategy, "timelockSeconds": delay,
                         "txHashes": hashes, "jobId": ctx.job_id})])
        ctx.progress(1.0, "recorded")
        return self._result(chain.name, row, hashes, int(receipt["blockNumber"]))

    @staticmethod
    def _result(chain: str, row: DefiVault, hashes: list[str], block: int | None) -> dict[str, Any]:
        return {"vaultId": row.id, "chain": chain, "address": row.address, "owner": row.owner,
                "asset": row.asset, "strategy": row.strategy,
                "timelockSeconds": row.timelock_seconds, "transactionHashes": list(hashes),
                "blockNumber": block}

    def kind(self) -> JobKind:
        return JobKind(name=KIND, description="Compiles and deploys a strategy vault owned by the "
                       "tenant's key, with a timelocked governance and an emergency pause.",
                       run=self.deploy, validate=self.validate, permission="defi")

    def vaults(self, tenant_id: str, *, first: int, after: str | None,
               chain: str | None = None) -> Page[DefiVault]:
        stmt = select(DefiVault).where(DefiVault.status == "DEPLOYED")
        if chain is not None:
            stmt = stmt.where(DefiVault.chain_id == self._chains.get(chain).chain_id)
        return keyset_page(self._db, tenant_id, stmt, DefiVault, first=first, after=after,
                           max_page_size=self._max_page)

    def vault(self, tenant_id: str, vault_id: str) -> DefiVault:
        with self._db.tenant_session(tenant_id) as session:
            row = session.exec(select(DefiVault).where(DefiVault.id == vault_id,
                                                       DefiVault.status == "DEPLOYED")).first()
        if row is None:
            raise NotFound(f"no vault {vault_id}", code="DEFI_VAULT_NOT_FOUND")
        return row

    def _bound(self, row: DefiVault) -> tuple[Chain, Any]:
        chain = self._chains.get(row.chain_id)
        with chain.guard():
            code = chain.web3.eth.get_code(row.address)
        if not code:
            raise VaultUnavailable(
                "the vault's contract is not on the chain (the embedded chain starts empty with "
                "each process)", details={"address": row.address})
        return chain, bind(chain, CONTRACT, row.address)

    def state(self, tenant_id: str, vault_id: str) -> VaultState:
        chain, vault = self._bound(self.vault(tenant_id, vault_id))
        f = vault.functions
        with chain.guard():
            return VaultState(
                owner=f.owner().call(), strategy=_address(f.strategy().call()),
                pending_strategy=_address(f.pending_strategy().call()),
                strategy_eta=_instant(f.strategy_eta().call()),
                pending_owner=_address(f.pending_owner().call()),
                owner_eta=_instant(f.owner_eta().call()), paused=f.paused().call(),
                timelock_seconds=f.timelock_delay().call(), total_assets=f.total_assets().call(),
                allocated=f.allocated().call())

    def govern(self, tenant_id: str, user_id: str | None, vault_id: str, action: str,
               target: str | None = None) -> tuple[str, VaultState]:
        """One governance call on the tenant's vault, signed with its key: simulated first (a
        call the contract refuses, e.g. before the timelock, is DEFI_SIMULATION_REVERTED with
        the reason and nothing is sent), then sent and audited. Answers the transaction hash
        and the governance after it."""
        from web3 import Web3

        if action not in GOVERNANCE:
            raise InvalidInput(f"unknown governance action {action!r}", code="DEFI_ACTION_INVALID")
        row = self.vault(tenant_id, vault_id)
        function, needs_target = GOVERNANCE[action]
        args: list[Any] = []
        if needs_target:
            if target is None or not Web3.is_address(target) or target == ZERO:
                raise InvalidInput("target must be a 0x address", code="DEFI_ADDRESS_INVALID",
                                   details={"target": target})
            args = [Web3.to_checksum_address(target)]
        elif function == "cancel":
            args = [action.removeprefix("cancel_")]
        chain, vault = self._bound(row)
        signer = self._keys.signer(tenant_id, chain)
        try:
            with chain.guard():
                # Against the pending block: the one the transaction would be mined in (its
                # timestamp is what the timelock compares).
                getattr(vault.functions, function)(*args).call({"from": signer.address},
                                                               block_identifier="pending")
        except DomainError:
            raise
        except Exception as exc:  # the contract's revert, with its reason
            raise SimulationReverted(f"the vault refuses {action}: {revert_reason(exc)}",
                                     details={"reason": revert_reason(exc)}) from None
        receipt = signer.send({"to": vault.address, "data": vault.encode_abi(function, args=args)})
        tx_hash = receipt["transactionHash"].to_0x_hex()
        with self._db.tenant_transaction(tenant_id) as session:
            self._audit.append(session, tenant_id, [AuditEntry(
                kind=f"defi.vault.{action}", subject=row.id, actor=user_id,
                payload={"address": row.address, "target": args[0] if needs_target else None,
                         "txHash": tx_hash})])
        return tx_hash, self.state(tenant_id, vault_id)


def created_address(sender: str, nonce: int) -> str:
    """The address a contract deployed by `sender` with `nonce` gets (keccak of rlp([sender,
    nonce])), known as soon as the deploy is sent."""
    import rlp
    from eth_utils import keccak, to_bytes, to_checksum_address

    return to_checksum_address(keccak(rlp.encode([to_bytes(hexstr=sender), nonce]))[12:])
