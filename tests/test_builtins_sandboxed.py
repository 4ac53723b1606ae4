"""The built-in plugins keep to the contract a partner's must: each runs in a sandboxed worker,
through the same wire and proxies as an installed plugin, and answers exactly what it answers
in process (the gateway keeps calling built-ins in process, at about 5 µs a call)."""

from __future__ import annotations

import dataclasses
import importlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal as D
from typing import Any

import numpy as np
import pytest

from gateway.marketplace.sandbox.proxies import describe
from gateway.marketplace.sandbox.supervisor import SDK_DIR, ManagedPlugin, PluginSpec
from marketplace.conformance import compare_hooks
from plugins.host import default_context
from plugins.sdk import (
    AccountState,
    ClientProfile,
    InstrumentFacts,
    LLMTurn,
    MarketState,
    OptimisationProblem,
    OrderRequest,
    OrdType,
    Side,
    TenantControls,
    TimeInForce,
    ToolSpec,
)

AT = datetime(2025, 3, 4, 15, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def sandboxed(runtime: Any) -> Iterator[Any]:
    started: list[ManagedPlugin] = []

    def start(module_path: str) -> ManagedPlugin:
        module = importlib.import_module(module_path)
        _, implemented, _ = compare_hooks(module, module_path, [])
        managed = runtime.marketplace.sandbox.managed(PluginSpec(
            key=f"builtin-{uuid.uuid4().hex}", plugin_id=module_path, version="builtin", tenant_id=None,
            directory=SDK_DIR, sha256="0" * 64, entry_point=module_path, hooks=tuple(implemented),
            capabilities=frozenset({"marketdata:publish", "orders:submit"}), venues=runtime.markets.directory,
            builtin=True))
        started.append(managed)
        return managed

    yield start
    for managed in started:
        runtime.marketplace.sandbox.forget(managed)


def in_process(module_path: str, hook: str, venues: Any = None) -> list[Any]:
    module = importlib.import_module(module_path)
    return getattr(module, hook)(context=default_context(module_path, venues=venues))


def test_market_twin_answers_the_same_through_the_sandbox(runtime, sandboxed):
    hook = "alphintra_market_data_sources"
    local = in_process("plugins.builtin.market_twin", hook, runtime.markets.directory)[0]
    remote = describe(sandboxed("plugins.builtin.market_twin"), hook)[0]
    assert remote.name == local.name
    instruments = remote.instruments()
    assert instruments == list(local.instruments())
    aapl = next(i for i in instruments if i.key == "AAPL.XNAS")
    start, end = datetime(2025, 3, 3, 14, 30, tzinfo=UTC), datetime(2025, 3, 3, 16, 0, tzinfo=UTC)
    assert remote.bars(aapl, start, end, "15m") == list(local.bars(aapl, start, end, "15m"))
    assert remote.quote(aapl, AT) == local.quote(aapl, AT)


def test_fx_rates_answer_the_same_through_the_sandbox(sandboxed):
    hook = "alphintra_fx_rate_providers"
    local = in_process("plugins.builtin.fx_rates", hook)[0]
    remote = describe(sandboxed("plugins.builtin.fx_rates"), hook)[0]
    assert remote.rate("EUR", "USD", AT) == local.rate("EUR", "USD", AT)
    assert remote.history("GBP", "JPY", datetime(2025, 1, 1, tzinfo=UTC), AT) == list(
        local.history("GBP", "JPY", datetime(2025, 1, 1, tzinfo=UTC), AT))
    assert remote.interest_rate("EUR", AT) == local.interest_rate("EUR", AT)


def test_a_rule_pack_decides_the_same_through_the_sandbox(sandboxed):
    from gateway.compliance.engine import ComplianceEngine
    from plugins.builtin import BUILTINS
    from plugins.host import PluginHost

    hook = "alphintra_compliance_rule_packs"
    local = in_process("plugins.builtin.compliance.us", hook)[0]
    remote = describe(sandboxed("plugins.builtin.compliance.us"), hook)[0]
    assert (remote.jurisdiction, remote.regulators) == (local.jurisdiction, tuple(local.regulators))
    assert remote.applies("US", "US") == local.applies("US", "US")
    engine = ComplianceEngine.from_plugins(PluginHost(BUILTINS))
    for quantity, price in ((D(100), D("100.00")), (D(50), D("150.00")), (D(150), D("100.005"))):
        order = OrderRequest("o-1", "ACC-1", "IBM", "XNYS", Side.SELL_SHORT, OrdType.LIMIT, TimeInForce.DAY,
                             quantity, price, None, "USD", None, AT)
        ctx = engine.context(order, instrument=InstrumentFacts(isin="US4592001014", currency="USD"),
                             client=ClientProfile("ACC-1", "INDIVIDUAL", "US"),
                             account=AccountState("ACC-1", "USD", D(10_000_000), D(10_000_000)),
                             market=MarketState(reference_price=D("100")),
                             controls=TenantControls(tenant_id="t-1"), now=AT, fx_rate=None)
        assert remote.check(ctx) == local.check(ctx)
    assert remote.check(ctx)  # the last order breaks a rule: not a vacuous comparison


def test_the_simulated_exchange_trades_the_same_through_the_sandbox(runtime, sandboxed):
    hook = "alphintra_exchange_connectors"
    local = in_process("plugins.builtin.sim_exchange.plugin", hook, runtime.markets.directory)[0]
    remote = describe(sandboxed("plugins.builtin.sim_exchange.plugin"), hook)[0]
    assert remote.mics() == local.mics()
    order = OrderRequest("c-1", "ACC-1", "BTC-USD", "ALPX", Side.BUY, OrdType.LIMIT, TimeInForce.DAY,
                         D("0.01"), D("1000"), None, "USD", None, AT)

    def shape(reports: list[Any]) -> list[tuple[Any, ...]]:
        return [(r.exec_type, r.ord_status, r.cum_qty, r.leaves_qty) for r in reports]

    assert shape(remote.submit(order)) == shape(local.submit(order))
    assert remote.quote_for(order) is not None
    assert shape([remote.cancel("c-1", "ALPX")]) == shape([local.cancel("c-1", "ALPX")])


def test_an_optimiser_solves_the_same_through_the_sandbox(sandboxed):
    hook = "alphintra_portfolio_optimisers"
    local = {o.name: o for o in in_process("plugins.builtin.optimisers", hook)}
    remote = {o.name: o for o in describe(sandboxed("plugins.builtin.optimisers"), hook)}
    assert set(remote) == set(local)
    rng = np.random.default_rng(7)
    a = rng.normal(size=(6, 6))
    problem = OptimisationProblem(tuple(f"A{i}" for i in range(6)), rng.normal(0.01, 0.02, 6),
                                  a @ a.T / 100, budget=3, seed=1)
    name = "exact" if "exact" in local else sorted(local)[0]
    mine, theirs = local[name].solve(problem, 10.0), remote[name].solve(problem, 10.0)
    assert (theirs.selected, theirs.weights) == (mine.selected, mine.weights)
    assert theirs.objective == mine.objective


def test_news_and_the_offline_llm_answer_the_same_through_the_sandbox(sandboxed):
    news_local = in_process("plugins.builtin.news_file", "alphintra_news_sources")[0]
    news_remote = describe(sandboxed("plugins.builtin.news_file"), "alphintra_news_sources")[0]
    query = {"tickers": ["AAPL.XNAS"], "start": None, "end": None, "text": None}
    assert news_remote.items(**query) == list(news_local.items(**query))
    assert news_remote.items(**query)
    llm_local = in_process("plugins.builtin.llm_offline", "alphintra_llm_providers")[0]
    llm_remote = describe(sandboxed("plugins.builtin.llm_offline"), "alphintra_llm_providers")[0]
    assert (llm_remote.name, tuple(llm_remote.models), llm_remote.is_llm) == (
        llm_local.name, tuple(llm_local.models), llm_local.is_llm)
    from gateway.strategies.dsl import STRATEGY_SCHEMA

    tool = ToolSpec("submit_strategy", "A strategy document.", STRATEGY_SCHEMA)
    kwargs = dict(model=llm_local.models[0], system="", messages=[LLMTurn("user", "calm trend")],
                  tool=tool,
                  max_tokens=100, facts={"task": "strategy.synthesize", "objective": "momentum",
                                         "constraints": {"max_position": 0.1}, "universe": ["AAPL.XNAS"],
                                         "regime": {"trend": "up", "volatility": "calm"}})
    assert dataclasses.asdict(llm_remote.complete_structured(**kwargs)) == dataclasses.asdict(
        llm_local.complete_structured(**kwargs))
