"""deployStrategyVault end to end: a job through GraphQL that deploys the vault from the
tenant's own key on the embedded EVM; then its governance (timelock) and pause driven with
that key; bad input refused before any job; and another tenant neither sees nor controls it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from sqlmodel import select
from web3 import Web3

from gateway.defi.deploy import bind
from gateway.defi.vault_models import DefiVault
from gateway.jobs.models import Job
from tests.support import error_codes, onboard, unique, user_key, wait_for

DEPLOY = """mutation($i: DeployStrategyVaultInput!) { deployStrategyVault(input: $i) {
  id kind status } }"""
GOVERN = """mutation($i: DefiVaultGovernanceInput!) { governStrategyVault(input: $i) {
  transactionHash governance { owner strategy pendingStrategy strategyEta pendingOwner ownerEta paused
  timelockSeconds totalAssets allocated } } }"""
JOB = "query($id: ID!) { job(id: $id) { status progress result error { code message } } }"
VAULTS = """query($after: String) { defiVaults(first: 2, after: $after) {
  edges { node { id chain address asset assetAddress owner strategy timelockSeconds
  transactionHashes jobId createdAt governance { paused totalAssets } } }
  pageInfo { hasNextPage endCursor } } }"""
TIMELOCK = 60  # the shortest allowed: the shared chain's clock is moved forward only this much


def deploy(gql: Any, key: str, **overrides: Any) -> dict[str, Any]:
    variables = {"chain": "embedded", "asset": "USDC", "timelockSeconds": TIMELOCK,
                 "idempotencyKey": unique("v"), **overrides}
    return gql(DEPLOY, {"i": variables}, key=key)


def finished(gql: Any, key: str, job_id: str) -> dict[str, Any]:
    return wait_for(lambda: (j := gql.data(JOB, {"id": job_id}, key=key)["job"])["status"]
                    in ("SUCCEEDED", "FAILED") and j, timeout=120)


@pytest.fixture
def trader(runtime: Any, tenant: Any) -> str:
    return user_key(runtime, tenant, "trader")[1]


def test_vault_deployment_job_governance_and_pause(gql, runtime, tenant, trader):
    strategy = runtime.chains.get("embedded").web3.eth.accounts[8]
    started = deploy(gql, trader, strategy=strategy.lower())
    assert "errors" not in started, started
    job = started["data"]["deployStrategyVault"]
    assert job["kind"] == "defi.deploy_vault"
    done = finished(gql, trader, job["id"])
    assert done["status"] == "SUCCEEDED", done
    result = done["result"]
    assert done["progress"] == 1.0
    chain = runtime.chains.get("embedded")
    owner = runtime.defi_keys.address(tenant.id, chain, create=False)
    assert (result["owner"], result["strategy"], result["timelockSeconds"]) == (owner, strategy, TIMELOCK)
    assert len(result["transactionHashes"]) == 1
    receipt = chain.web3.eth.get_transaction_receipt(result["transactionHashes"][0])
    assert receipt["contractAddress"] == result["address"] and receipt["from"] == owner

    listed = gql.data(VAULTS, {}, key=trader)["defiVaults"]["edges"]
    assert [e["node"]["address"] for e in listed] == [result["address"]]
    node = listed[0]["node"]
    assert (node["owner"], node["asset"], node["jobId"], node["id"]) == (
        owner, "USDC", job["id"], result["vaultId"])

    # Governance through GraphQL, signed with the tenant's key: too early is refused before
    # sending, after the delay it goes through.
    vault = bind(chain, "strategy_vault", result["address"])
    assert vault.functions.owner().call() == owner
    new_strategy = chain.web3.eth.accounts[9]

    def govern(action: str, target: str | None = None, key: str = trader) -> dict[str, Any]:
        return gql(GOVERN, {"i": {"vaultId": result["vaultId"], "action": action, "target": target}},
                   key=key)

    proposed = govern("PROPOSE_STRATEGY", new_strategy)["data"]["governStrategyVault"]
    eta = vault.functions.strategy_eta().call()
    assert proposed["governance"]["pendingStrategy"] == new_strategy
    assert datetime.fromisoformat(proposed["governance"]["strategyEta"]).timestamp() == eta
    height = chain.web3.eth.block_number
    early = govern("EXECUTE_STRATEGY")
    assert error_codes(early) == ["DEFI_SIMULATION_REVERTED"]
    assert early["errors"][0]["extensions"]["reason"] == "timelock"
    assert chain.web3.eth.block_number == height and vault.functions.strategy().call() == strategy
    chain.tester.time_travel(eta)
    executed = govern("EXECUTE_STRATEGY")["data"]["governStrategyVault"]
    assert executed["governance"]["strategy"] == new_strategy
    assert executed["governance"]["pendingStrategy"] is None
    assert vault.functions.strategy().call() == new_strategy
    assert error_codes(govern("PROPOSE_OWNER")) == ["DEFI_ADDRESS_INVALID"]

    # Emergency pause: deposits and strategy actions stop, withdrawals do not.
    signer = runtime.defi_keys.signer(tenant.id, chain)

    def send(contract: Any, fn_name: str, *args: Any) -> dict[str, Any]:
        return signer.send({"to": contract.address, "data": contract.encode_abi(fn_name, args=list(args))})

    usdc = bind(chain, "Token", vault.functions.asset().call())
    send(usdc, "approve", vault.address, 10**12)
    send(vault, "deposit", 1000 * 10**6)
    paused = govern("PAUSE")["data"]["governStrategyVault"]["governance"]
    assert paused["paused"] is True and paused["totalAssets"] == str(1000 * 10**6)
    with pytest.raises(Exception, match="paused"):
        vault.functions.deposit(10**6).call({"from": owner})
    with pytest.raises(Exception, match="paused"):
        vault.functions.allocate(10**6).call({"from": owner})
    assert error_codes(govern("PROPOSE_STRATEGY", owner)) == ["DEFI_SIMULATION_REVERTED"]
    before = usdc.functions.balanceOf(owner).call()
    send(vault, "withdraw", 400 * 10**6)
    assert usdc.functions.balanceOf(owner).call() - before == 400 * 10**6
    govern("UNPAUSE")
    send(vault, "deposit", 10**6)
    listed = gql.data(VAULTS, {}, key=trader)["defiVaults"]["edges"][0]["node"]
    assert listed["governance"]["paused"] is False
    assert listed["governance"]["totalAssets"] == str(601 * 10**6)

    # Audit: the deployment is on the tenant's chain.
    records = runtime.audit.records(tenant.id, first=50).items
    assert [r.kind for r in reversed(records) if r.kind.startswith("defi.vault.")] == [
        "defi.vault.deployed", "defi.vault.propose_strategy", "defi.vault.execute_strategy",
        "defi.vault.pause", "defi.vault.unpause"]
    assert {r.subject for r in records if r.kind.startswith("defi.vault.")} == {result["vaultId"]}


@pytest.mark.parametrize(("overrides", "code"), [
    ({"timelockSeconds": 5}, "DEFI_TIMELOCK_INVALID"),
    ({"timelockSeconds": 31 * 86_400}, "DEFI_TIMELOCK_INVALID"),
    ({"asset": "NOPE"}, "DEFI_TOKEN_UNKNOWN"),
    ({"chain": "atlantis"}, "DEFI_CHAIN_UNKNOWN"),
    ({"strategy": "0x1234"}, "DEFI_ADDRESS_INVALID"),
])
def test_bad_vault_input_creates_no_job(gql, runtime, tenant, trader, overrides, code):
    height = runtime.chains.get("embedded").web3.eth.block_number
    assert error_codes(deploy(gql, trader, **overrides)) == [code]
    with runtime.db.tenant_session(tenant.id) as session:
        assert session.exec(select(Job).where(Job.kind == "defi.deploy_vault")).all() == []
    assert runtime.chains.get("embedded").web3.eth.block_number == height


def test_viewer_cannot_deploy(gql, runtime, tenant):
    _, viewer = user_key(runtime, tenant, "viewer")
    assert error_codes(deploy(gql, viewer)) == ["FORBIDDEN"]
    assert gql.data(VAULTS, {}, key=viewer)["defiVaults"]["edges"] == []


def test_another_tenant_never_sees_or_controls_the_vault(gql, runtime, tenant, trader):
    job = deploy(gql, trader, idempotencyKey="vault-1")["data"]["deployStrategyVault"]
    result = finished(gql, trader, job["id"])["result"]
    other = onboard(runtime)
    b = other.key
    # B's list is empty, A's job is not B's, and the same idempotency key makes B its own job.
    assert gql.data(VAULTS, {}, key=b)["defiVaults"]["edges"] == []
    assert error_codes(gql(JOB, {"id": job["id"]}, key=b)) == ["JOB_NOT_FOUND"]
    theirs = deploy(gql, b, idempotencyKey="vault-1")["data"]["deployStrategyVault"]
    assert theirs["id"] != job["id"]
    b_result = finished(gql, b, theirs["id"])["result"]
    assert b_result["owner"] != result["owner"]
    # B's key is not the owner of A's vault: every governance call reverts, nothing changes.
    chain = runtime.chains.get("embedded")
    vault = bind(chain, "strategy_vault", result["address"])
    b_signer = runtime.defi_keys.signer(other.id, chain)
    for name, args in (("pause", []), ("propose_owner", [b_signer.address]),
                       ("propose_strategy", [b_signer.address])):
        with pytest.raises(Exception, match="owner"):
            getattr(vault.functions, name)(*args).call({"from": b_signer.address})
    for action, target in (("PAUSE", None), ("PROPOSE_OWNER", b_signer.address),
                           ("EXECUTE_STRATEGY", None)):
        refused = gql(GOVERN, {"i": {"vaultId": result["vaultId"], "action": action,
                                     "target": target}}, key=b)
        assert error_codes(refused) == ["DEFI_VAULT_NOT_FOUND"]
    assert (vault.functions.paused().call(), vault.functions.owner_eta().call()) == (False, 0)
    assert [e["node"]["address"] for e in gql.data(VAULTS, {}, key=b)["defiVaults"]["edges"]] == [
        b_result["address"]]
    with runtime.db.tenant_session(other.id) as session:
        assert [v.address for v in session.exec(select(DefiVault)).all()] == [b_result["address"]]


def test_vaults_page_with_cursors(gql, runtime, tenant, trader):
    ids = []
    for _ in range(3):
        job = deploy(gql, trader)["data"]["deployStrategyVault"]
        ids.append(finished(gql, trader, job["id"])["result"]["vaultId"])
    first = gql.data(VAULTS, {}, key=trader)["defiVaults"]
    assert first["pageInfo"]["hasNextPage"] is True
    second = gql.data(VAULTS, {"after": first["pageInfo"]["endCursor"]}, key=trader)["defiVaults"]
    seen = [e["node"]["id"] for e in first["edges"] + second["edges"]]
    assert seen == list(reversed(ids)) and second["pageInfo"]["hasNextPage"] is False


class _Redelivered:
    """The context a worker hands a job kind, for a message delivered a second time."""

    def __init__(self, runtime: Any, tenant_id: str, job_id: str) -> None:
        self.job_id, self.tenant_id, self._db = job_id, tenant_id, runtime.db
        self.reports: list[tuple[float, str]] = []

    def progress(self, fraction: float, message: str = "") -> None:
        self.reports.append((fraction, message))

    def session(self) -> Any:
        return self._db.tenant_session(self.tenant_id)


def test_a_redelivered_job_answers_its_vault_without_deploying_again(gql, runtime, tenant, trader):
    job = deploy(gql, trader)["data"]["deployStrategyVault"]
    result = finished(gql, trader, job["id"])["result"]
    chain = runtime.chains.get("embedded")
    height = chain.web3.eth.block_number
    ctx = _Redelivered(runtime, tenant.id, job["id"])
    again = runtime.defi_vaults.deploy(ctx, {"chain": "embedded", "asset": "USDC",
                                             "timelockSeconds": TIMELOCK, "strategy": None})
    assert {k: again[k] for k in ("vaultId", "address", "transactionHashes")} == {
        k: result[k] for k in ("vaultId", "address", "transactionHashes")}
    assert chain.web3.eth.block_number == height and ctx.reports == [(1.0, "recorded")]


def test_vault_request_on_a_chain_that_is_down_is_refused(runtime, tenant):
    from gateway.defi.chain import EMBEDDED, EMBEDDED_CHAIN_ID, Chains, ChainSpec
    from gateway.defi.vault import VaultService
    from gateway.errors import DomainError

    chains = Chains([ChainSpec(EMBEDDED_CHAIN_ID, EMBEDDED, EMBEDDED),
                     ChainSpec(4243, "down", "http://127.0.0.1:9/rpc")])
    service = VaultService(runtime.db, chains, runtime.defi_world, runtime.defi_keys, runtime.audit, 50)
    with pytest.raises(DomainError) as caught:
        service.validate({"chain": "down", "asset": "USDC", "timelockSeconds": 3600})
    assert caught.value.code == "DEFI_CHAIN_UNAVAILABLE"


def test_a_vault_whose_contract_is_gone_answers_unavailable(gql, runtime, tenant, trader):
    # A row from an earlier process: the embedded chain started empty since.
    chain = runtime.chains.get("embedded")
    row = DefiVault(tenant_id=tenant.id, chain_id=chain.chain_id, asset="USDC",
                    address=Web3.to_checksum_address("0x" + "ab" * 20), asset_address="0x" + "cd" * 20,
                    owner="0x" + "ef" * 20,
                    timelock_seconds=3600, tx_hashes=["0x" + "00" * 32])
    with runtime.db.tenant_transaction(tenant.id) as session:
        session.add(row)
    listed = gql.data(VAULTS, {}, key=trader)["defiVaults"]["edges"]
    assert [(e["node"]["id"], e["node"]["governance"]) for e in listed] == [(row.id, None)]
    height = chain.web3.eth.block_number
    refused = gql(GOVERN, {"i": {"vaultId": row.id, "action": "PAUSE"}}, key=trader)
    assert error_codes(refused) == ["DEFI_VAULT_UNAVAILABLE"]
    assert chain.web3.eth.block_number == height
