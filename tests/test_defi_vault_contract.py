"""The strategy vault contract on its own EVM (so moving time does not disturb other tests):
shares, the governance timelock before and after the delay, and the emergency pause."""

from __future__ import annotations

from typing import Any

import pytest
from eth_tester.exceptions import TransactionFailed
from web3 import EthereumTesterProvider, Web3

from gateway.defi.compile import compile_contract

DELAY = 2 * 86_400


def deployed(w3: Any, name: str, *args: Any, sender: str) -> Any:
    c = compile_contract(name)
    tx = w3.eth.contract(abi=c.abi, bytecode=c.bytecode).constructor(*args).transact({"from": sender})
    return w3.eth.contract(address=w3.eth.wait_for_transaction_receipt(tx)["contractAddress"], abi=c.abi)


@pytest.fixture
def setup() -> tuple[Any, Any, Any]:
    w3 = Web3(EthereumTesterProvider())
    owner, alice, strategy = w3.eth.accounts[:3]
    token = deployed(w3, "Token", "USD Coin", "USDC", 6, sender=owner)
    vault = deployed(w3, "strategy_vault", token.address, DELAY, strategy, sender=owner)
    for who in (owner, alice, strategy):
        token.functions.mint(who, 10**12).transact({"from": owner})
        token.functions.approve(vault.address, 2**256 - 1).transact({"from": who})
    return w3, token, vault


def now(w3: Any) -> int:
    return w3.eth.get_block("latest")["timestamp"]


def test_shares_follow_the_assets(setup: Any) -> None:
    w3, token, vault = setup
    owner, alice = w3.eth.accounts[:2]
    vault.functions.deposit(1000).transact({"from": alice})
    vault.functions.allocate(400).transact({"from": owner})
    assert vault.functions.total_assets().call() == 1000
    strategy = w3.eth.accounts[2]
    vault.functions.recall(1400).transact({"from": owner})  # the strategy returns 400 + a gain of 1000
    assert (vault.functions.allocated().call(), vault.functions.idle().call()) == (0, 2000)
    assert token.functions.balanceOf(strategy).call() == 10**12 - 1000
    vault.functions.deposit(1000).transact({"from": owner})
    assert vault.functions.shares_of(owner).call() == 1000 * 1000 // 2000
    # 1500 shares over 3000 assets
    assert vault.functions.withdraw(1000).call({"from": alice}) == 1000 * 3000 // 1500
    with pytest.raises(TransactionFailed, match="owner"):
        vault.functions.allocate(1).transact({"from": alice})


def test_governance_change_waits_for_the_timelock(setup: Any) -> None:
    w3, _, vault = setup
    owner, alice = w3.eth.accounts[:2]
    new_strategy = w3.eth.accounts[5]
    with pytest.raises(TransactionFailed, match="owner"):
        vault.functions.propose_strategy(new_strategy).transact({"from": alice})
    vault.functions.propose_strategy(new_strategy).transact({"from": owner})
    eta = vault.functions.strategy_eta().call()
    assert eta == now(w3) + DELAY
    with pytest.raises(TransactionFailed, match="timelock"):
        vault.functions.execute_strategy().transact({"from": owner})
    w3.provider.ethereum_tester.time_travel(eta - 10)
    with pytest.raises(TransactionFailed, match="timelock"):
        vault.functions.execute_strategy().transact({"from": owner})
    w3.provider.ethereum_tester.time_travel(eta + 1)
    vault.functions.execute_strategy().transact({"from": owner})
    assert vault.functions.strategy().call() == new_strategy
    with pytest.raises(TransactionFailed, match="nothing proposed"):
        vault.functions.execute_strategy().transact({"from": owner})

    # The owner too: proposed, too early, then handed over; the old owner loses its rights.
    vault.functions.propose_owner(alice).transact({"from": owner})
    with pytest.raises(TransactionFailed, match="timelock"):
        vault.functions.execute_owner().transact({"from": owner})
    w3.provider.ethereum_tester.time_travel(vault.functions.owner_eta().call())
    vault.functions.execute_owner().transact({"from": owner})
    assert vault.functions.owner().call() == alice
    with pytest.raises(TransactionFailed, match="owner"):
        vault.functions.pause().transact({"from": owner})

    # A cancelled proposal cannot be executed.
    vault.functions.propose_strategy(owner).transact({"from": alice})
    vault.functions.cancel("strategy").transact({"from": alice})
    w3.provider.ethereum_tester.time_travel(now(w3) + DELAY + 1)
    with pytest.raises(TransactionFailed, match="nothing proposed"):
        vault.functions.execute_strategy().transact({"from": alice})


def test_pause_blocks_deposits_and_strategy_actions_not_withdrawals(setup: Any) -> None:
    w3, token, vault = setup
    owner, alice = w3.eth.accounts[:2]
    vault.functions.deposit(500).transact({"from": alice})
    vault.functions.allocate(100).transact({"from": owner})
    with pytest.raises(TransactionFailed, match="owner"):
        vault.functions.pause().transact({"from": alice})
    vault.functions.pause().transact({"from": owner})
    assert vault.functions.paused().call()
    for call in (vault.functions.deposit(1), vault.functions.allocate(1),
                 vault.functions.propose_strategy(alice)):
        with pytest.raises(TransactionFailed, match="paused"):
            call.transact({"from": owner})
    before = token.functions.balanceOf(alice).call()
    vault.functions.withdraw(200).transact({"from": alice})  # 200 of 500 shares over 500 assets
    assert token.functions.balanceOf(alice).call() - before == 200
    vault.functions.recall(100).transact({"from": owner})  # bringing funds home stays open
    vault.functions.unpause().transact({"from": owner})
    vault.functions.deposit(1).transact({"from": alice})


def test_a_donation_does_not_inflate_the_share_price(setup: Any) -> None:
    """The classic first-depositor attack: 1 unit for 1 share, then a large transfer to the vault
    so that the next deposit rounds down to almost nothing. Donations are not counted."""
    w3, token, vault = setup
    owner, attacker, victim = w3.eth.accounts[0], w3.eth.accounts[1], w3.eth.accounts[3]
    for who in (attacker, victim):
        token.functions.mint(who, 10_000 * 10**6).transact({"from": owner})
        token.functions.approve(vault.address, 2**256 - 1).transact({"from": who})
    start = token.functions.balanceOf(attacker).call()
    vault.functions.deposit(1).transact({"from": attacker})
    token.functions.transfer(vault.address, 1000 * 10**6).transact({"from": attacker})
    assert vault.functions.total_assets().call() == 1
    vault.functions.deposit(1999 * 10**6).transact({"from": victim})
    assert vault.functions.shares_of(victim).call() == 1999 * 10**6
    vault.functions.withdraw(1).transact({"from": attacker})
    assert token.functions.balanceOf(attacker).call() - start == -1000 * 10**6  # the donation is lost
    victim_shares = vault.functions.shares_of(victim).call()
    assert vault.functions.withdraw(victim_shares).call({"from": victim}) == 1999 * 10**6


def test_depositors_can_leave_before_a_new_strategy_gets_funds(setup: Any) -> None:
    w3, _, vault = setup
    owner, alice = w3.eth.accounts[:2]
    new_strategy = w3.eth.accounts[5]
    vault.functions.deposit(1000).transact({"from": alice})
    vault.functions.allocate(400).transact({"from": owner})
    with pytest.raises(TransactionFailed, match="recall first"):
        vault.functions.propose_strategy(new_strategy).transact({"from": owner})
    vault.functions.recall(400).transact({"from": owner})
    vault.functions.propose_strategy(new_strategy).transact({"from": owner})
    with pytest.raises(TransactionFailed, match="strategy change pending"):
        vault.functions.allocate(1).transact({"from": owner})
    # during the whole delay every depositor can take everything out
    assert vault.functions.withdraw(1000).call({"from": alice}) == 1000
    w3.provider.ethereum_tester.time_travel(vault.functions.strategy_eta().call() + 1)
    vault.functions.execute_strategy().transact({"from": owner})
    vault.functions.allocate(100).transact({"from": owner})  # allowed again once executed
    assert vault.functions.allocated().call() == 100
