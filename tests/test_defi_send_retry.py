"""A swap (or a lending action) whose receipt is not seen in time (after the transaction went
out) is kept PENDING with its hash; a retry with the same idempotency key finishes the record
from the receipt and never sends a second transaction."""

from __future__ import annotations

from typing import Any

from sqlmodel import select
from web3.eth import Eth
from web3.exceptions import TimeExhausted

from gateway.defi.deploy import bind
from gateway.defi.lending_deploy import EXTRA_KEY
from tests.support import error_codes, user_key
from tests.test_defi_swap import SWAP, balances, nonce, swap_input, swap_rows


def test_timeout_after_broadcast_then_retry_sends_nothing_twice(gql: Any, runtime: Any, tenant: Any,
                                                                monkeypatch: Any) -> None:
    before = balances(gql, tenant.key)
    # the last hop's pool (the route may have two hops, depending on the pools' state)
    last_pool = runtime.defi.quote("embedded", "WETH", "USDC", "0.1").best.hops[-1].entry.pool.address
    real_wait = Eth.wait_for_transaction_receipt
    timed_out: list[str] = []

    def slow_wait(self: Eth, tx_hash: Any, *args: Any, **kwargs: Any) -> Any:
        receipt = real_wait(self, tx_hash, *args, **kwargs)  # mined on the embedded chain...
        if not timed_out and self.get_transaction(tx_hash)["to"] == last_pool:  # ...the swap
            timed_out.append(tx_hash.to_0x_hex())
            raise TimeExhausted("receipt not seen in 120 s")
        return receipt

    monkeypatch.setattr(Eth, "wait_for_transaction_receipt", slow_wait)
    inp = swap_input(amount="0.1")
    first = gql(SWAP, {"i": inp}, key=tenant.key)
    assert error_codes(first) == ["DEFI_SWAP_IN_PROGRESS"]
    assert timed_out
    [row] = swap_rows(runtime, tenant.id)
    assert row.status == "PENDING" and row.route[-1]["txHash"] == timed_out[0]
    assert timed_out[0] in row.tx_hashes
    sent = nonce(runtime, before["address"])

    retry = gql.data(SWAP, {"i": inp}, key=tenant.key)["defiSwap"]
    assert retry["status"] == "EXECUTED" and retry["replayed"] is True
    assert nonce(runtime, before["address"]) == sent  # nothing was sent again
    after = balances(gql, tenant.key)
    assert before["WETH"] - after["WETH"] == 10**17
    assert int(retry["amountOut"].replace(".", "")) > 0
    [row] = swap_rows(runtime, tenant.id)
    assert row.status == "EXECUTED" and int(row.amount_out) == after["USDC"] - before["USDC"]
    again = gql.data(SWAP, {"i": inp}, key=tenant.key)["defiSwap"]
    assert again["id"] == retry["id"] and nonce(runtime, before["address"]) == sent


def test_a_pending_swap_without_a_receipt_answers_in_progress(gql: Any, runtime: Any, tenant: Any,
                                                              monkeypatch: Any) -> None:
    before = balances(gql, tenant.key)
    inp = swap_input(amount="0.1")
    real_wait = Eth.wait_for_transaction_receipt

    def never(self: Eth, tx_hash: Any, *args: Any, **kwargs: Any) -> Any:
        real_wait(self, tx_hash, *args, **kwargs)
        raise TimeExhausted("receipt not seen")

    monkeypatch.setattr(Eth, "wait_for_transaction_receipt", never)
    assert error_codes(gql(SWAP, {"i": inp}, key=tenant.key)) == ["DEFI_SWAP_IN_PROGRESS"]
    monkeypatch.setattr(Eth, "wait_for_transaction_receipt", real_wait)
    sent = nonce(runtime, before["address"])
    # the approval timed out before the swap was sent: the hop has no hash, so nothing is known
    # and nothing is sent again
    assert error_codes(gql(SWAP, {"i": inp}, key=tenant.key)) == ["DEFI_SWAP_IN_PROGRESS"]
    assert nonce(runtime, before["address"]) == sent
    assert balances(gql, tenant.key)["WETH"] == before["WETH"]
    # once the chain is past the deadline the swap can never execute: the retry settles it
    chain = runtime.chains.get("embedded")
    [row] = swap_rows(runtime, tenant.id)
    with chain.guard():
        chain.tester.time_travel(int(row.deadline.timestamp()) + 10)
    settled = gql.data(SWAP, {"i": inp}, key=tenant.key)["defiSwap"]
    assert (settled["status"], settled["errorCode"]) == ("FAILED", "DEFI_SWAP_EXPIRED")
    assert nonce(runtime, before["address"]) == sent
    assert balances(gql, tenant.key)["WETH"] == before["WETH"]


def test_lending_timeout_after_broadcast_then_retry_sends_nothing_twice(
        gql: Any, runtime: Any, tenant: Any, monkeypatch: Any) -> None:
    from tests.test_defi_lending import ACTION, rows

    _, trader = user_key(runtime, tenant, "trader")
    chain = runtime.chains.get("embedded")
    pool = runtime.defi_world.deployed(chain).extras[EXTRA_KEY]
    real_wait = Eth.wait_for_transaction_receipt
    timed_out: list[str] = []

    def slow_wait(self: Eth, tx_hash: Any, *args: Any, **kwargs: Any) -> Any:
        receipt = real_wait(self, tx_hash, *args, **kwargs)
        if not timed_out and self.get_transaction(tx_hash)["to"] == pool:  # the supply itself
            timed_out.append(tx_hash.to_0x_hex())
            raise TimeExhausted("receipt not seen in 120 s")
        return receipt

    monkeypatch.setattr(Eth, "wait_for_transaction_receipt", slow_wait)
    variables = {"i": {"chain": "embedded", "token": "WETH", "amount": "2", "idempotencyKey": "s1"}}
    first = gql(ACTION % "defiSupply", variables, key=trader)
    assert error_codes(first) == ["DEFI_ACTION_IN_PROGRESS"] and timed_out
    [row] = rows(runtime, tenant.id)
    assert row.status == "SENT" and row.tx_hashes[-1] == timed_out[0] and row.block_number is None
    address = runtime.defi_keys.address(tenant.id, chain, create=False)
    sent = nonce(runtime, address)
    retry = gql.data(ACTION % "defiSupply", variables, key=trader)["defiSupply"]
    assert retry["id"] == row.id and retry["blockNumber"] is not None
    assert nonce(runtime, address) == sent
    [row] = rows(runtime, tenant.id)
    assert row.status == "EXECUTED"
    supplied = bind(chain, "lending_pool", pool).functions.positions(address).call()
    assert sum(p[5] for p in supplied) == 2 * 10**18  # supplied once


def test_vault_deploy_timeout_then_redelivery_deploys_once(gql: Any, runtime: Any, tenant: Any,
                                                           monkeypatch: Any) -> None:
    from gateway.defi.vault_models import DefiVault
    from tests.test_defi_vault import TIMELOCK, VAULTS, _Redelivered, deploy, finished

    _, trader = user_key(runtime, tenant, "trader")
    real_wait = Eth.wait_for_transaction_receipt
    timed_out: list[str] = []

    def slow_wait(self: Eth, tx_hash: Any, *args: Any, **kwargs: Any) -> Any:
        receipt = real_wait(self, tx_hash, *args, **kwargs)
        if not timed_out and self.get_transaction(tx_hash)["to"] is None:  # the deploy
            timed_out.append(tx_hash.to_0x_hex())
            raise TimeExhausted("receipt not seen in 120 s")
        return receipt

    monkeypatch.setattr(Eth, "wait_for_transaction_receipt", slow_wait)
    job = deploy(gql, trader)["data"]["deployStrategyVault"]
    failed = finished(gql, trader, job["id"])
    assert failed["status"] == "FAILED" and timed_out
    with runtime.db.tenant_session(tenant.id) as session:
        [row] = session.exec(select(DefiVault)).all()
    chain = runtime.chains.get("embedded")
    receipt = chain.web3.eth.get_transaction_receipt(timed_out[0])
    assert (row.status, row.tx_hashes, row.address) == ("DEPLOYING", timed_out, receipt["contractAddress"])
    assert gql.data(VAULTS, {}, key=trader)["defiVaults"]["edges"] == []  # not confirmed yet

    height = chain.web3.eth.block_number
    again = runtime.defi_vaults.deploy(_Redelivered(runtime, tenant.id, job["id"]),
                                       {"chain": "embedded", "asset": "USDC",
                                        "timelockSeconds": TIMELOCK, "strategy": None})
    assert chain.web3.eth.block_number == height  # nothing deployed again
    assert (again["vaultId"], again["address"], again["transactionHashes"]) == (
        row.id, receipt["contractAddress"], timed_out)
    listed = gql.data(VAULTS, {}, key=trader)["defiVaults"]["edges"]
    assert [e["node"]["address"] for e in listed] == [receipt["contractAddress"]]
