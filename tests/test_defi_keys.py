"""Tenants' signing keys: sealed at rest, bound to their tenant, never returned by a query."""

from __future__ import annotations

import json
from typing import Any

import pytest
from eth_account import Account
from sqlmodel import select

from gateway.defi.keys import key_context
from gateway.defi.models import DefiKey
from gateway.secrets import SecretUnreadable
from tests.support import error_codes, onboard, user_key

ACCOUNT = """query($c: String!) { defiAccount(chain: $c) { address nativeBalance
  balances { token { symbol } amount raw } } }"""
OPEN = """mutation($c: String!) { defiOpenAccount(chain: $c) { address nativeBalance
  balances { token { symbol } amount raw } } }"""


def key_row(runtime: Any, tenant_id: str) -> DefiKey:
    with runtime.db.tenant_session(tenant_id) as session:
        return session.exec(select(DefiKey)).one()


def test_a_read_makes_no_key(gql: Any, runtime: Any, tenant: Any) -> None:
    _, viewer = user_key(runtime, tenant, "viewer")
    for key in (viewer, tenant.key):
        account = gql.data(ACCOUNT, {"c": "embedded"}, key=key)["defiAccount"]
        assert account == {"address": None, "nativeBalance": "0", "balances": []}
    with runtime.db.tenant_session(tenant.id) as session:
        assert session.exec(select(DefiKey)).all() == []
    assert error_codes(gql(OPEN, {"c": "embedded"}, key=viewer)) == ["FORBIDDEN"]  # a write


def test_a_key_is_made_once_sealed_and_funded(gql: Any, runtime: Any, tenant: Any) -> None:
    account = gql.data(OPEN, {"c": "embedded"}, key=tenant.key)["defiOpenAccount"]
    again = gql.data(OPEN, {"c": "embedded"}, key=tenant.key)["defiOpenAccount"]
    assert account == again
    assert gql.data(ACCOUNT, {"c": "embedded"}, key=tenant.key)["defiAccount"] == account
    row = key_row(runtime, tenant.id)
    assert row.address == account["address"]
    secret = runtime.secrets.open(row.sealed_key, key_context(tenant.id, row.chain_id))
    assert Account.from_key(secret).address == row.address
    assert secret.hex() not in row.sealed_key and secret.hex() not in json.dumps(account)
    # funded by the faucet: gas and demo tokens
    assert float(account["nativeBalance"]) > 0
    held = {b["token"]["symbol"]: b["amount"] for b in account["balances"]}
    assert held == {"DAI": "1000000", "USDC": "1000000", "USDT": "1000000", "WBTC": "10",
                    "WETH": "100"}


def test_no_field_returns_a_key(gql: Any, tenant: Any) -> None:
    schema = gql.data("{ __schema { types { name fields { name } } } }", key=tenant.key)["__schema"]
    defi_fields = {(t["name"], f["name"]) for t in schema["types"] if t["name"].startswith("Defi")
                   for f in t["fields"] or []}
    leaky = ("privatekey", "signingkey", "sealed", "secret", "mnemonic", "seed")
    assert defi_fields and not [f for f in defi_fields if f[1].lower() == "key"
                                or any(word in f[1].lower() for word in leaky)]


def test_open_account_is_each_tenants_own(gql: Any, runtime: Any, tenant: Any) -> None:
    a = gql.data(OPEN, {"c": "embedded"}, key=tenant.key)["defiOpenAccount"]["address"]
    b = onboard(runtime)
    assert gql.data(ACCOUNT, {"c": "embedded"}, key=b.key)["defiAccount"]["address"] is None
    b_address = gql.data(OPEN, {"c": "embedded"}, key=b.key)["defiOpenAccount"]["address"]
    assert b_address != a
    assert key_row(runtime, tenant.id).address == a and key_row(runtime, b.id).address == b_address


def test_tenant_b_can_never_sign_with_a_key(gql: Any, runtime: Any, tenant: Any) -> None:
    chain = runtime.chains.get("embedded")
    a_address = runtime.defi_keys.address(tenant.id, chain)
    b = onboard(runtime)
    b_signer = runtime.defi_keys.signer(b.id, chain)
    assert b_signer.address != a_address  # B's own key, never A's
    a_row = key_row(runtime, tenant.id)
    # A's sealed key opens only in A's context
    with pytest.raises(SecretUnreadable):
        runtime.secrets.open(a_row.sealed_key, key_context(b.id, chain.chain_id))
    # copied into B's row, it does not open for B: B still cannot sign as A
    with runtime.db.tenant_transaction(b.id) as session:
        row = session.exec(select(DefiKey)).one()
        row.sealed_key, row.address = a_row.sealed_key, a_row.address
        session.add(row)
    with pytest.raises(SecretUnreadable):
        runtime.defi_keys.signer(b.id, chain)
    # and A's key is still A's
    assert runtime.defi_keys.signer(tenant.id, chain).address == a_address
    # B cannot read A's key row through its tenant session
    with runtime.db.tenant_session(b.id) as session:
        assert [r.id for r in session.exec(select(DefiKey))] != [a_row.id]
        assert session.get(DefiKey, a_row.id) is None or \
            session.exec(select(DefiKey).where(DefiKey.id == a_row.id)).first() is None


def test_after_a_restart_the_same_key_is_funded_on_the_new_embedded_chain(runtime: Any,
                                                                          tenant: Any) -> None:
    """The embedded chain lives in memory: a restarted gateway has a new one, the stored key
    stays the tenant's and the faucet serves it again there."""
    from gateway.defi.chain import EMBEDDED, EMBEDDED_CHAIN_ID, Chains, ChainSpec
    from gateway.defi.keys import DefiKeys
    from gateway.defi.pools import PoolBook
    from gateway.defi.service import DefiMarkets
    from gateway.defi.world import DemoWorld

    address = runtime.defi_keys.address(tenant.id, runtime.chains.get("embedded"))
    world = DemoWorld()  # as a new process builds them
    chains = Chains([ChainSpec(EMBEDDED_CHAIN_ID, EMBEDDED, EMBEDDED)])
    markets = DefiMarkets(chains, PoolBook(runtime.plugins, world),
                          DefiKeys(runtime.db, runtime.secrets, funder=world.fund))
    account = markets.account(tenant.id, "embedded")
    assert account.address == address
    assert {b.token.symbol: b.amount for b in account.balances}["WETH"] == 100
    assert markets.account(tenant.id, "embedded").native_raw == account.native_raw  # served once
