# pragma version ~=0.4.3
"""
@title Alphintra strategy vault
@notice Deposits of one ERC-20 asset for shares; the owner allocates idle assets to a
    strategy address. Governance changes (a new strategy, a new owner) are timelocked:
    proposed, then executable only once `timelock_delay` seconds have passed.
    Emergency pause (owner, immediate): blocks deposits and strategy actions
    (allocate). Withdrawals stay open while paused: a depositor takes its share of
    the total assets, paid from the idle balance, which `recall` (strategy -> vault,
    also open while paused) refills.
    total_assets = idle + allocated; shares = amount * supply / total_assets. `idle` is kept in
    storage and moved only by deposit, withdraw, allocate and recall: tokens sent to the vault
    directly (a "donation") are not counted, so nobody can inflate the share price in front of
    the next depositor. A strategy's gain enters by `recall` of more than was allocated.
    A strategy change may only be proposed with nothing allocated, and nothing can be allocated
    while one is pending: depositors can always leave before the new strategy receives funds.
"""

from ethereum.ercs import IERC20

event Deposit:
    account: indexed(address)
    assets: uint256
    shares: uint256

event Withdraw:
    account: indexed(address)
    assets: uint256
    shares: uint256

event Allocated:
    strategy: indexed(address)
    amount: uint256

event Recalled:
    strategy: indexed(address)
    amount: uint256

event ChangeProposed:
    kind: String[8]
    target: address
    eta: uint256

event ChangeExecuted:
    kind: String[8]
    target: address

event ChangeCancelled:
    kind: String[8]

event Paused:
    account: address

event Unpaused:
    account: address

asset: public(IERC20)
owner: public(address)
strategy: public(address)
timelock_delay: public(uint256)
paused: public(bool)
allocated: public(uint256)
idle: public(uint256)
total_shares: public(uint256)
shares_of: public(HashMap[address, uint256])
pending_strategy: public(address)
strategy_eta: public(uint256)
pending_owner: public(address)
owner_eta: public(uint256)


@deploy
def __init__(asset: address, timelock_delay: uint256, strategy: address):
    assert asset != empty(address), "asset"
    assert timelock_delay > 0, "delay"
    self.asset = IERC20(asset)
    self.owner = msg.sender
    self.timelock_delay = timelock_delay
    self.strategy = strategy


@internal
@view
def _total_assets() -> uint256:
    return self.idle + self.allocated


@external
@view
def total_assets() -> uint256:
    return self._total_assets()


@external
def deposit(amount: uint256) -> uint256:
    assert not self.paused, "paused"
    assert amount > 0, "amount"
    supply: uint256 = self.total_shares
    shares: uint256 = amount
    if supply > 0:
        shares = amount * supply // self._total_assets()
    assert shares > 0, "shares"
    self.total_shares = supply + shares
    self.shares_of[msg.sender] += shares
    self.idle += amount
    assert extcall self.asset.transferFrom(msg.sender, self, amount, default_return_value=True)
    log Deposit(account=msg.sender, assets=amount, shares=shares)
    return shares


@external
def withdraw(shares: uint256) -> uint256:
    assert shares > 0, "shares"
    assert self.shares_of[msg.sender] >= shares, "exceeds shares"
    amount: uint256 = shares * self._total_assets() // self.total_shares
    assert amount <= self.idle, "idle: recall first"
    self.idle -= amount
    self.shares_of[msg.sender] -= shares
    self.total_shares -= shares
    assert extcall self.asset.transfer(msg.sender, amount, default_return_value=True)
    log Withdraw(account=msg.sender, assets=amount, shares=shares)
    return amount


@external
def allocate(amount: uint256):
    assert msg.sender == self.owner, "owner"
    assert not self.paused, "paused"
    assert self.strategy != empty(address), "no strategy"
    assert self.strategy_eta == 0, "strategy change pending"
    assert amount > 0 and amount <= self.idle, "amount"
    self.idle -= amount
    self.allocated += amount
    assert extcall self.asset.transfer(self.strategy, amount, default_return_value=True)
    log Allocated(strategy=self.strategy, amount=amount)


@external
def recall(amount: uint256):
    """Pulls assets back from the strategy (which must have approved the vault); more than
    allocated is the strategy's gain, shared by all depositors."""
    assert msg.sender == self.owner, "owner"
    assert amount > 0, "amount"
    self.allocated -= min(amount, self.allocated)
    self.idle += amount
    assert extcall self.asset.transferFrom(self.strategy, self, amount, default_return_value=True)
    log Recalled(strategy=self.strategy, amount=amount)


@external
def propose_strategy(strategy: address):
    assert msg.sender == self.owner, "owner"
    assert not self.paused, "paused"
    assert self.allocated == 0, "recall first"
    self.pending_strategy = strategy
    self.strategy_eta = block.timestamp + self.timelock_delay
    log ChangeProposed(kind="strategy", target=strategy, eta=self.strategy_eta)


@external
def execute_strategy():
    assert msg.sender == self.owner, "owner"
    assert not self.paused, "paused"
    assert self.strategy_eta != 0, "nothing proposed"
    assert block.timestamp >= self.strategy_eta, "timelock"
    assert self.allocated == 0, "recall first"
    self.strategy = self.pending_strategy
    self.pending_strategy = empty(address)
    self.strategy_eta = 0
    log ChangeExecuted(kind="strategy", target=self.strategy)


@external
def propose_owner(new_owner: address):
    assert msg.sender == self.owner, "owner"
    assert new_owner != empty(address), "owner address"
    self.pending_owner = new_owner
    self.owner_eta = block.timestamp + self.timelock_delay
    log ChangeProposed(kind="owner", target=new_owner, eta=self.owner_eta)


@external
def execute_owner():
    assert msg.sender == self.owner, "owner"
    assert self.owner_eta != 0, "nothing proposed"
    assert block.timestamp >= self.owner_eta, "timelock"
    self.owner = self.pending_owner
    self.pending_owner = empty(address)
    self.owner_eta = 0
    log ChangeExecuted(kind="owner", target=self.owner)


@external
def cancel(kind: String[8]):
    assert msg.sender == self.owner, "owner"
    if kind == "strategy":
        self.pending_strategy = empty(address)
        self.strategy_eta = 0
    else:
        assert kind == "owner", "kind"
        self.pending_owner = empty(address)
        self.owner_eta = 0
    log ChangeCancelled(kind=kind)


@external
def pause():
    assert msg.sender == self.owner, "owner"
    self.paused = True
    log Paused(account=msg.sender)


@external
def unpause():
    assert msg.sender == self.owner, "owner"
    self.paused = False
    log Unpaused(account=msg.sender)
