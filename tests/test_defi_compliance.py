# ruff: noqa: F811  (the lending fixtures are imported into this module)
"""One restricted-list rule for swaps and lending ("DEFI:<SYMBOL>", the address, or the bare
symbol), and a kill switch that stops risk-increasing lending (borrow, withdraw) only."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.defi.compliance import is_restricted
from gateway.trading.models import ComplianceControlsRow
from tests.support import error_codes
from tests.test_defi_lending import act, embedded, pool, rows, trader  # noqa: F401
from tests.test_defi_swap import SWAP, swap_input


def controls(runtime: Any, tenant_id: str, **values: Any) -> None:
    with runtime.db.tenant_transaction(tenant_id) as session:
        session.add(ComplianceControlsRow(tenant_id=tenant_id, **values))


def test_the_matcher_accepts_the_three_forms() -> None:
    address = "0x00000000000000000000000000000000000000aB"
    for entry in ("DEFI:WETH", "defi:weth", "WETH", " weth ", address.lower(), address):
        assert is_restricted("WETH", address, [entry])
    assert not is_restricted("WETH", address, ["DEFI:USDC", "USDC", "WETHX", "0x01"])


@pytest.mark.parametrize("entry", ["DEFI:WETH", "WETH", "address"])
def test_a_restriction_stops_lending_and_swaps_alike(gql: Any, runtime: Any, tenant: Any, trader: Any,
                                                     embedded: Any, pool: Any, entry: str) -> None:
    weth = runtime.defi.market("embedded").tokens.resolve("WETH").address
    controls(runtime, tenant.id, restricted=[weth if entry == "address" else entry])
    assert error_codes(act(gql, trader, "defiSupply", "WETH", "1")) == ["COMPLIANCE_RESTRICTED_INSTRUMENT"]
    assert error_codes(act(gql, trader, "defiBorrow", "WETH", "0.1")) == [
        "COMPLIANCE_RESTRICTED_INSTRUMENT"]
    assert rows(runtime, tenant.id) == []
    assert error_codes(gql(SWAP, {"i": swap_input("WETH", "USDC", "0.1")}, key=tenant.key)) == [
        "COMPLIANCE_RESTRICTED_INSTRUMENT"]
    assert error_codes(gql(SWAP, {"i": swap_input("USDC", "WETH", "10")}, key=tenant.key)) == [
        "COMPLIANCE_RESTRICTED_INSTRUMENT"]
    assert "errors" not in act(gql, trader, "defiSupply", "USDC", "1")


def test_the_kill_switch_leaves_repay_and_supply_open(gql: Any, runtime: Any, tenant: Any, trader: Any,
                                                      embedded: Any, pool: Any) -> None:
    assert "errors" not in act(gql, trader, "defiSupply", "WETH", "2")
    assert "errors" not in act(gql, trader, "defiBorrow", "USDC", "100")
    controls(runtime, tenant.id, kill_switch=True)
    assert error_codes(act(gql, trader, "defiBorrow", "USDC", "1")) == ["COMPLIANCE_KILL_SWITCH"]
    assert error_codes(act(gql, trader, "defiWithdraw", "WETH", "0.1")) == ["COMPLIANCE_KILL_SWITCH"]
    repaid = act(gql, trader, "defiRepay", "USDC", "40")
    assert "errors" not in repaid, repaid
    assert "errors" not in act(gql, trader, "defiSupply", "WETH", "0.5")
    assert sorted(r.action for r in rows(runtime, tenant.id)) == ["borrow", "repay", "supply", "supply"]
