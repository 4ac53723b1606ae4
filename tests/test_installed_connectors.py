"""An installed exchange connector routes its tenant's orders: the Lion example (a simulated
Singapore Exchange, XSES, running in its sandboxed worker) brings its venue and listings, and
an order there is routed, checked by the SG rule pack, filled, audited and booked as a
position, for the installing tenant only."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from gateway.app import create_app
from gateway.markets.clock import ManualClock
from gateway.runtime import bind_orders_view
from tests.support import (
    GraphQLClient,
    LiveServer,
    PluginVendor,
    error_codes,
    install_plugin,
    onboard,
    with_clock,
)
from tests.test_marketplace_install import example_wheel

OPEN_SGX = datetime(2025, 3, 11, 2, 30, tzinfo=UTC)  # a Tuesday, 10:30 in Singapore
LION = f"lion{uuid.uuid4().hex[:6]}.sgx-connector"  # plugin ids are namespaced by their vendor
ORDER = """mutation($input: SubmitOrderInput!) { submitOrder(input: $input) {
  id status cumQty avgPx rejectCode rejectText routing executions { lastQty lastPx } } }"""
ACCOUNT = """mutation($input: TradingAccountInput!) { upsertTradingAccount(input: $input) { code } }"""


@pytest.fixture(scope="module")
def sgx(runtime: Any) -> Any:
    clock = ManualClock(OPEN_SGX)
    rt = with_clock(runtime, clock)
    bind_orders_view(rt.marketplace, rt.builtin_plugins, rt.orders)
    PluginVendor(rt, "Lion Markets").publish(*example_wheel("lion_exchange", "lion_exchange", plugin_id=LION),
                                             "COMMUNITY")
    with LiveServer(create_app(runtime=rt)) as live:
        yield GraphQLClient(live.url), rt


def _desk(gql: Any, rt: Any, *, install: bool) -> Any:
    tenant = onboard(rt)
    gql.data(ACCOUNT, {"input": {"code": "SG-1", "currency": "SGD", "domicile": "SG",
                                 "creditLimit": "10000000", "equity": "10000000"}}, key=tenant.key)
    if install:
        body = install_plugin(gql, tenant.key, LION)
        assert "errors" not in body, body
    return tenant


def test_an_order_routes_to_and_fills_on_an_installed_connectors_venue(sgx):
    gql, rt = sgx
    tenant = _desk(gql, rt, install=True)
    quote = gql.data(f'{{ quote(instrument: "D05.XSES", at: "{OPEN_SGX.isoformat()}") {{ bid ask }} }}',
                     key=tenant.key)["quote"]
    price = str((Decimal(quote["ask"]) + Decimal("0.05")).quantize(Decimal("0.01")))
    order = gql.data(ORDER, {"input": {"clientOrderId": "lion-1", "account": "SG-1", "symbol": "D05",
                                       "mic": "XSES", "side": "BUY", "quantity": "200", "ordType": "LIMIT",
                                       "timeInForce": "DAY", "limitPrice": price}},
                     key=tenant.key)["submitOrder"]
    assert order["status"] == "FILLED", order
    assert order["routing"]["connector"] == "lion-sgx" and order["routing"]["plugin"] == LION
    assert sum(Decimal(e["lastQty"]) for e in order["executions"]) == 200
    positions = gql.data('{ positions(account: "SG-1") { instrumentKey quantity currency } }',
                         key=tenant.key)["positions"]
    assert {"instrumentKey": "D05.XSES", "quantity": "200", "currency": "SGD"} in positions
    records = gql.data("{ auditRecords(first: 50) { edges { node { kind subject } } } }", key=tenant.key)
    kinds = [e["node"]["kind"] for e in records["auditRecords"]["edges"]]
    assert any(k.startswith("order.") for k in kinds)
    # An odd lot is refused as the venue would (its board lot is 100), before anything is sent.
    odd = gql(ORDER, {"input": {"clientOrderId": "lion-2", "account": "SG-1", "symbol": "D05", "mic": "XSES",
                                "side": "BUY", "quantity": "150", "ordType": "LIMIT", "timeInForce": "DAY",
                                "limitPrice": price}}, key=tenant.key)
    assert error_codes(odd) == ["ORDER_LOT_SIZE"]
    assert odd["errors"][0]["extensions"]["alternatives"][0]["status"] == "LOT_SIZE"


def test_another_tenant_cannot_reach_the_venue(sgx):
    gql, rt = sgx
    tenant = _desk(gql, rt, install=False)
    body = gql(ORDER, {"input": {"clientOrderId": "lion-x", "account": "SG-1", "symbol": "D05",
                                 "mic": "XSES", "side": "BUY", "quantity": "100", "ordType": "MARKET",
                                 "timeInForce": "IOC"}}, key=tenant.key)
    assert error_codes(body)[0] in ("INSTRUMENT_UNKNOWN", "ROUTE_UNAVAILABLE", "VENUE_UNKNOWN"), body


def test_an_unreachable_connector_rejects_the_order_and_strands_nothing(sgx, monkeypatch):
    from gateway.marketplace.errors import PluginCallFailed
    from gateway.marketplace.sandbox.proxies import RemoteConnector

    gql, rt = sgx
    tenant = _desk(gql, rt, install=True)
    quote = gql.data(f'{{ quote(instrument: "D05.XSES", at: "{OPEN_SGX.isoformat()}") {{ ask }} }}',
                     key=tenant.key)["quote"]

    def down(self: RemoteConnector, order: Any) -> Any:
        raise PluginCallFailed(self.plugin_id, "its worker exited")

    monkeypatch.setattr(RemoteConnector, "submit", down)
    order = gql.data(ORDER, {"input": {"clientOrderId": "lion-down", "account": "SG-1", "symbol": "D05",
                                       "mic": "XSES", "side": "BUY", "quantity": "100",
                                       "ordType": "LIMIT", "timeInForce": "DAY", "limitPrice": quote["ask"]}},
                     key=tenant.key)["submitOrder"]
    assert order["status"] == "REJECTED" and order["rejectCode"] == "CONNECTOR_FAILED", order
    listed = gql.data('{ orders(first: 10) { edges { node { status } } } }', key=tenant.key)["orders"]
    assert [e["node"]["status"] for e in listed["edges"]] == ["REJECTED"]  # nothing left open


# A connector answering reports no venue could: the Lion connector, tampered by its config.
TAMPERED = '''

from dataclasses import replace as _replace


class Tampered(LionConnector):
    def __init__(self, fee_bps, mode, victim):
        super().__init__(fee_bps)
        self.mode, self.victim = mode, victim

    def _fill(self, order, price, at):
        report = super()._fill(order, price, at)
        if self.mode == "overfill":
            return _replace(report, last_qty=report.last_qty * 2, cum_qty=report.cum_qty * 2)
        if self.mode == "outside-limit":
            return _replace(report, last_px=price * 2, avg_px=price * 2)
        if self.mode == "bad-average":
            return _replace(report, avg_px=price + 1)
        if self.mode == "long-id":
            return _replace(report, exec_id="x" * 300)
        return report

    def cancel(self, client_order_id, mic):
        report = super().cancel(client_order_id, mic)
        if self.mode == "cancel-with-fill":
            return _replace(report, cum_qty=report.cum_qty + 100)
        return report

    def on_clock(self, at):
        if self.mode == "cancel-with-fill":  # its order rests whoever tells it the time
            return []
        reports = super().on_clock(at)
        if self.mode == "foreign" and self.victim:
            reports.append(ExecutionReport(ExecType.TRADE, OrdStatus.FILLED, self.victim, "X-1",
                                           Decimal(100), Decimal(1), Decimal(100), ZERO, Decimal(1), ZERO,
                                           "", None, at, exec_id="stolen-1", mic=MIC))
        return reports


@hookimpl
def alphintra_exchange_connectors(context):
    return [Tampered(Decimal(str(context.config.get("fee_bps", "4"))), str(context.config.get("mode", "")),
                     str(context.config.get("victim", "")))]
'''
TAMPERED_ID = f"tamper{uuid.uuid4().hex[:6]}.sgx-connector"
TAMPERED_SCHEMA = {"type": "object", "properties": {"fee_bps": {"type": "string"}, "mode": {"type": "string"},
                                                    "victim": {"type": "string"}}}


TAMPERED_DESKS: list[Any] = []


@pytest.fixture(scope="module")
def tampered(sgx: Any) -> Iterator[str]:
    gql, rt = sgx
    wheel, manifest = example_wheel("lion_exchange", "lion_exchange", plugin_id=TAMPERED_ID,
                                    manifest={"config_schema": TAMPERED_SCHEMA}, extra_code=TAMPERED)
    PluginVendor(rt, "Tamper Markets").publish(wheel, manifest, "COMMUNITY")
    yield TAMPERED_ID
    for tenant in TAMPERED_DESKS:  # their connectors leave the venue clock with them
        gql.data(f'mutation {{ uninstallPlugin(pluginId: "{TAMPERED_ID}") {{ active }} }}', key=tenant.key)


def _tampered_desk(gql: Any, rt: Any, mode: str, victim: str = "") -> Any:
    tenant = _desk(gql, rt, install=False)
    body = install_plugin(gql, tenant.key, TAMPERED_ID, {"mode": mode, "victim": victim})
    assert "errors" not in body, body
    TAMPERED_DESKS.append(tenant)
    return tenant


def _lion_order(gql: Any, key: str, client_id: str, *, marketable: bool) -> dict[str, Any]:
    quote = gql.data(f'{{ quote(instrument: "D05.XSES", at: "{OPEN_SGX.isoformat()}") {{ bid ask }} }}',
                     key=key)["quote"]
    price = (Decimal(quote["ask"]) + Decimal("0.05") if marketable
             else Decimal(quote["bid"]) - Decimal("0.10")).quantize(Decimal("0.01"))
    return gql.data(ORDER, {"input": {"clientOrderId": client_id, "account": "SG-1", "symbol": "D05",
                                      "mic": "XSES", "side": "BUY", "quantity": "100", "ordType": "LIMIT",
                                      "timeInForce": "DAY", "limitPrice": str(price)}},
                    key=key)["submitOrder"]


@pytest.mark.parametrize("mode", ["overfill", "outside-limit", "bad-average", "long-id"])
def test_a_connectors_invalid_fill_rejects_the_order_and_writes_none_of_it(sgx, tampered, mode):
    gql, rt = sgx
    tenant = _tampered_desk(gql, rt, mode)
    order = _lion_order(gql, tenant.key, f"bad-{mode}", marketable=True)
    assert order["status"] == "REJECTED" and order["rejectCode"] == "CONNECTOR_REPORT_INVALID", order
    assert tampered in order["rejectText"]
    assert order["executions"] == [] and Decimal(order["cumQty"]) == 0
    assert gql.data('{ positions(account: "SG-1") { quantity } }', key=tenant.key)["positions"] == []


def test_a_cancel_answered_with_a_fill_leaves_the_order_as_it_was(sgx, tampered):
    gql, rt = sgx
    tenant = _tampered_desk(gql, rt, "cancel-with-fill")
    order = _lion_order(gql, tenant.key, "resting-1", marketable=False)
    assert order["status"] == "ACCEPTED", order
    body = gql('mutation($id: ID!) { cancelOrder(id: $id) { status } }', {"id": order["id"]}, key=tenant.key)
    assert error_codes(body) == ["CONNECTOR_REPORT_INVALID"], body
    assert body["errors"][0]["extensions"]["plugin"] == tampered
    after = gql.data('query($id: ID!) { order(id: $id) { status cumQty } }', {"id": order["id"]},
                     key=tenant.key)["order"]
    assert after == {"status": "ACCEPTED", "cumQty": "0"}


def test_a_connector_cannot_report_on_another_tenants_order(sgx, tampered):
    gql, rt = sgx
    victim = _desk(gql, rt, install=True)  # the honest Lion connector
    resting = _lion_order(gql, victim.key, "victim-1", marketable=False)
    assert resting["status"] == "ACCEPTED", resting
    _tampered_desk(gql, rt, "foreign", victim=resting["id"])
    rt.orders.advance(OPEN_SGX)  # the venue clock: every tenant's installed connectors
    after = gql.data('query($id: ID!) { order(id: $id) { status cumQty executions { lastQty } } }',
                     {"id": resting["id"]}, key=victim.key)["order"]
    # its own (honest) venue may have expired it meanwhile; nobody filled it
    assert after["cumQty"] == "0" and after["executions"] == [] and after["status"] in ("ACCEPTED", "EXPIRED")
