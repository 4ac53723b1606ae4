"""Deploy the project's contracts and bind to deployed ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.defi.chain import Chain
from gateway.defi.compile import compile_contract
from gateway.defi.errors import TransactionReverted


def faucet_account(chain: Chain) -> str:
    """The embedded chain's first pre-funded, unlocked account: owner of the demo world. A
    served chain's accounts are the chain process's (eth_accounts), unlocked there."""
    if chain.served:
        with chain.guard():
            return str(chain.web3.eth.accounts[0])
    return chain.tester.get_accounts()[0]


def deploy(chain: Chain, name: str, *args: Any, sender: str | None = None,
           cache_dir: Path | None = None) -> str:
    """Deploy contracts/<name>.vy from `sender` (an unlocked account: the faucet by default on
    the embedded chain); answer the contract's checksummed address."""
    compiled = compile_contract(name, cache_dir)
    w3 = chain.web3
    sender = sender or faucet_account(chain)
    with chain.guard():
        factory = w3.eth.contract(abi=compiled.abi, bytecode=compiled.bytecode)
        tx_hash = factory.constructor(*args).transact({"from": sender})
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash)
    if receipt["status"] != 1 or not receipt["contractAddress"]:
        raise TransactionReverted(f"deploying {name} failed")
    return str(receipt["contractAddress"])


def bind(chain: Chain, name: str, address: str, cache_dir: Path | None = None) -> Any:
    """A web3 contract object for a deployed contracts/<name>.vy."""
    w3 = chain.web3
    return w3.eth.contract(address=w3.to_checksum_address(address),
                           abi=compile_contract(name, cache_dir).abi)


def transact(chain: Chain, fn: Any, sender: str) -> dict[str, Any]:
    """Send a contract call from an unlocked account (the embedded faucet); raise on revert."""
    with chain.guard():
        tx_hash = fn.transact({"from": sender})
        receipt = chain.web3.eth.wait_for_transaction_receipt(tx_hash)
    if receipt["status"] != 1:
        raise TransactionReverted("the transaction reverted", details={"txHash": tx_hash.to_0x_hex()})
    return dict(receipt)
