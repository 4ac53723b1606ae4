"""A token that calls back into the pool from inside its transferFrom (a hook token, or a
malicious one) cannot re-enter swap/exchange: both pools are @nonreentrant, and their reserves
are moved before any token is called. The quotes stay equal to the views (test_defi_amm)."""

from __future__ import annotations

import decimal
import subprocess
import sys
from typing import Any

import pytest
from web3 import EthereumTesterProvider, Web3

from gateway.defi.compile import compile_contract, vyper_decimals

HOOK_TOKEN = """# pragma version ~=0.4.3
interface Cpmm:
    def swap(token_in: address, amount_in: uint256, min_out: uint256, to: address,
             deadline: uint256) -> uint256: nonpayable
interface Stable:
    def exchange(i: int128, j: int128, dx: uint256, min_dy: uint256,
                 deadline: uint256) -> uint256: nonpayable

balanceOf: public(HashMap[address, uint256])
allowance: public(HashMap[address, HashMap[address, uint256]])
pool: address
stable: bool
armed: bool

@external
def mint(to: address, amount: uint256):
    self.balanceOf[to] += amount

@external
def approve(spender: address, amount: uint256) -> bool:
    self.allowance[msg.sender][spender] = amount
    return True

@external
def arm(pool: address, stable: bool):
    self.pool = pool
    self.stable = stable
    self.armed = True
    self.balanceOf[self] += 10**18
    self.allowance[self][pool] = max_value(uint256)

@external
def transfer(to: address, amount: uint256) -> bool:
    self.balanceOf[msg.sender] -= amount
    self.balanceOf[to] += amount
    return True

@external
def transferFrom(src: address, to: address, amount: uint256) -> bool:
    self.allowance[src][msg.sender] -= amount
    self.balanceOf[src] -= amount
    self.balanceOf[to] += amount
    if self.armed:  # call back into the pool once, in the middle of its swap
        self.armed = False
        if self.stable:
            extcall Stable(self.pool).exchange(0, 1, 10**15, 0, max_value(uint256))
        else:
            extcall Cpmm(self.pool).swap(self, 10**15, 0, self, max_value(uint256))
    return True
"""


def deployed(w3: Any, abi: Any, bytecode: Any, *args: Any, sender: str) -> Any:
    tx = w3.eth.contract(abi=abi, bytecode=bytecode).constructor(*args).transact({"from": sender})
    return w3.eth.contract(address=w3.eth.wait_for_transaction_receipt(tx)["contractAddress"], abi=abi)


@pytest.mark.parametrize("kind", ["ConstantProductPool", "StableSwapPool"])
def test_a_token_cannot_reenter_the_pool(kind: str) -> None:
    w3 = Web3(EthereumTesterProvider())
    owner = w3.eth.accounts[0]
    with vyper_decimals():  # vyper's import would set this thread's decimals to 78 digits
        from vyper.compiler import compile_code

        out = compile_code(HOOK_TOKEN, output_formats=["abi", "bytecode"])
    hook = deployed(w3, out["abi"], out["bytecode"], sender=owner)
    plain_c = compile_contract("Token")
    plain = deployed(w3, plain_c.abi, plain_c.bytecode, "Plain", "PLN", 18, sender=owner)
    pool_c = compile_contract(kind)
    stable = kind == "StableSwapPool"
    args = ([hook.address, plain.address], [18, 18], 100, 4_000_000) if stable else (
        hook.address, plain.address)
    pool = deployed(w3, pool_c.abi, pool_c.bytecode, *args, sender=owner)
    for t in (hook, plain):
        t.functions.mint(owner, 10**24).transact({"from": owner})
        t.functions.approve(pool.address, 2**256 - 1).transact({"from": owner})
    if stable:
        pool.functions.add_liquidity([10**21, 10**21], 0).transact({"from": owner})
        swap = pool.functions.exchange(0, 1, 10**18, 0, 2**256 - 1)
    else:
        pool.functions.add_liquidity(10**21, 10**21, 0, owner).transact({"from": owner})
        swap = pool.functions.swap(hook.address, 10**18, 0, owner, 2**256 - 1)
    assert swap.call({"from": owner}) > 0  # unarmed, the swap goes through
    reserves = [pool.functions.balances(k).call() for k in (0, 1)] if stable else \
        pool.functions.get_reserves().call()
    hook.functions.arm(pool.address, stable).transact({"from": owner})
    tx = swap.transact({"from": owner, "gas": 2_000_000})  # explicit gas: no estimate that raises
    assert w3.eth.get_transaction_receipt(tx)["status"] == 0  # the re-entry reverts the whole swap
    assert reserves == ([pool.functions.balances(k).call() for k in (0, 1)] if stable else
                        pool.functions.get_reserves().call())


def test_vyper_leaves_the_callers_decimals_alone(tmp_path):
    """vyper's import sets its thread's decimal context to 78 digits for good; the gateway's
    compile (vyper imported afresh, in a process of its own) leaves the caller's money
    arithmetic at its own precision."""
    script = ("import decimal\nfrom pathlib import Path\n"
              "from gateway.defi.compile import compile_contract\n"
              f"compile_contract('ConstantProductPool', cache_dir=Path({str(tmp_path)!r}))\n"
              "print(decimal.getcontext().prec)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.split() == [str(decimal.DefaultContext.prec)]
