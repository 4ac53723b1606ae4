"""Pre-trade compliance: the time of one order's check, per order, over generated orders.

    .venv/bin/python bench/compliance.py [--orders N] [--seed S]

What it does (about 20 s for the default 20,000 orders; it ends by itself):

1. Builds the ComplianceEngine from the built-in plugins (the seven jurisdiction packs).
2. Generates N orders (seeded): LIMIT and MARKET, BUY and SELL, on eight venues (XNYS, XNAS,
   XLON, XPAR, XETR, XTKS, XHKG, XASX) with a client domiciled where the venue is, so one
   pack applies; prices near the reference and on tick, quantities in lots, every tenant
   control set (so every rule does its work), recent orders and fingerprints present, so
   almost every order passes (the typical case). Contexts are built up front with
   `engine.context` (its time is reported on its own line).
3. Per order, interleaved so machine noise hits both alike:
   - baseline: the 18 shared rules called directly on the context (no jurisdiction
     selection, no order check, no Denial objects, no timings);
   - engine: `engine.check(ctx)`, the whole decision (order check, cached selection, the
     pack's shared and own rules with per-rule timings, the Decision).
4. The same for a cross-border case (a US client on XLON: the UK and US packs both run).

Prints p50, p99 and p99.9 per order in µs, and engine / baseline, for the engine as built by
default (a timing per rule in each Decision) and with per-pack timings only. The garbage
collector stays on, as in the gateway; the generated contexts are frozen out of its reach
(gc.freeze), as a gateway's long-lived objects are after start-up.
"""

from __future__ import annotations

import argparse
import gc
import platform
import random
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.compliance.engine import ComplianceEngine
from plugins.builtin import BUILTINS
from plugins.builtin.compliance.rules import shared_rules
from plugins.host import PluginHost
from plugins.sdk import (
    AccountState,
    CheckContext,
    ClientProfile,
    InstrumentFacts,
    MarketState,
    OrderRequest,
    OrdType,
    Side,
    TenantControls,
    TimeInForce,
    order_fingerprint,
)


@dataclass(frozen=True)
class Listing:
    mic: str
    symbol: str
    isin: str
    currency: str
    domicile: str
    reference: Decimal


LISTINGS = (
    Listing("XNYS", "IBM", "US4592001014", "USD", "US", Decimal("241.30")),
    Listing("XNAS", "AAPL", "US0378331005", "USD", "US", Decimal("190.20")),
    Listing("XLON", "VOD", "GB00BH4HKS39", "GBP", "GB", Decimal("72.50")),
    Listing("XPAR", "TTE", "FR0000120271", "EUR", "FR", Decimal("58.40")),
    Listing("XETR", "SAP", "DE0007164600", "EUR", "DE", Decimal("221.00")),
    Listing("XTKS", "7203", "JP3633400001", "JPY", "JP", Decimal("2805")),
    Listing("XHKG", "700", "KYG875721634", "HKD", "HK", Decimal("382.40")),
    Listing("XASX", "BHP", "AU000000BHP4", "AUD", "AU", Decimal("45.10")),
)
NOW = datetime(2026, 3, 3, 14, 30, tzinfo=UTC)


def make_context(engine: ComplianceEngine, rng: random.Random, n: int, listing: Listing,
                 domicile: str) -> CheckContext:
    market = MarketState(reference_price=listing.reference, previous_close=listing.reference,
                         best_bid=listing.reference, best_ask=listing.reference,
                         last_price=listing.reference)
    facts = engine.venue_facts(listing.mic, listing.reference)
    tick, lot = facts.tick_size, facts.lot_size
    side = rng.choice((Side.BUY, Side.SELL))
    market_order = rng.random() < 0.2
    price = None
    if not market_order:
        raw = listing.reference * Decimal(str(1 + rng.uniform(-0.02, 0.02)))
        price = (raw / tick).to_integral_value() * tick
    lots = rng.randint(1, 20)
    # Where the lot is one share, ten-share steps keep a first holding at ASX a marketable
    # parcel (AUD 500), as real orders are.
    quantity = lot * lots if lot > 1 else Decimal(10 * lots)
    order = OrderRequest(f"o{n}", "ACC-1", listing.symbol, listing.mic, side,
                         OrdType.MARKET if market_order else OrdType.LIMIT, TimeInForce.DAY,
                         quantity, price, None, listing.currency, None, NOW)
    # Twenty recent orders of the account (other instruments), as a busy account has.
    recent = [NOW - timedelta(milliseconds=150 * i) for i in range(20, 0, -1)]
    prints = {order_fingerprint(OrderRequest(
        f"p{i}", "ACC-1", "OTHER", listing.mic, Side.BUY, OrdType.LIMIT, TimeInForce.DAY,
        Decimal(100), Decimal(i + 1), None, listing.currency, None, NOW)): recent[i]
        for i in range(20)}
    account = AccountState(
        "ACC-1", listing.currency, credit_limit=Decimal("50000000"), credit_used=Decimal("1000000"),
        equity=Decimal("40000000"),
        positions={listing.isin: 40 * max(lot, Decimal(10)), "US0000000001": Decimal(5)},
        locates={listing.isin: Decimal(1000)}, recent_orders=recent, recent_fingerprints=prints)
    controls = TenantControls(
        "tenant-1", restricted=frozenset({"US0000000002", "GB0000000003"}),
        max_order_value=Decimal("20000000"), max_order_quantity=Decimal(1_000_000),
        collar_pct=Decimal(5), max_position=Decimal(10_000_000),
        max_concentration_pct=Decimal(100), throttle_max_orders=100,
        throttle_window=timedelta(seconds=1), duplicate_window=timedelta(seconds=5))
    fx = None if domicile == listing.domicile else Decimal("1.27")
    currency = listing.currency if fx is None else "USD"
    if fx is not None:
        account = AccountState(
            "ACC-1", currency, account.credit_limit, account.credit_used, account.equity,
            account.positions, account.locates, account.recent_orders,
            account.recent_fingerprints)
    return engine.context(order, instrument=InstrumentFacts(listing.isin, listing.currency),
                          client=ClientProfile("ACC-1", "INDIVIDUAL", domicile),
                          account=account, market=market, controls=controls, now=NOW, fx_rate=fx)


def percentiles(samples: list[int]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    n = len(ordered)

    def at(q: float) -> float:
        return ordered[min(n - 1, int(q * n))] / 1000

    return at(0.50), at(0.99), at(0.999)


def measure(engine: ComplianceEngine, contexts: list[CheckContext]) -> Results:
    rules = [rule.check for rule in shared_rules()]
    clock = time.perf_counter_ns
    out = Results([], [], Counter())
    for i, ctx in enumerate(contexts):
        engine_first = i % 2 == 0
        for which in (("engine", "baseline") if engine_first else ("baseline", "engine")):
            if which == "engine":
                start = clock()
                decision = engine.check(ctx)
                out.engine.append(clock() - start)
                out.outcomes.update(decision.codes or ("PASSED",))
            else:
                start = clock()
                for rule in rules:
                    rule(ctx)
                out.baseline.append(clock() - start)
    return out


@dataclass
class Results:
    baseline: list[int]
    engine: list[int]
    outcomes: Counter[str]


def report(title: str, timed: Results, untimed: Results, count: int) -> None:
    base = percentiles(timed.baseline)
    outcomes = ", ".join(f"{code} {n}" for code, n in timed.outcomes.most_common())
    print(f"\n{title}: {count} orders ({outcomes})")
    print(f"  {'':<44}{'p50 µs':>8}{'p99 µs':>8}{'p99.9 µs':>10}{'mean µs':>9}{'p50 x':>7}"
          f"{'p99 x':>7}")
    for label, samples in (
            ("baseline: 18 shared rules, called directly", timed.baseline),
            ("engine.check, per-rule timings (default)", timed.engine),
            ("engine.check, per-pack timings", untimed.engine)):
        figures = percentiles(samples)
        print(f"  {label:<44}{figures[0]:>8.1f}{figures[1]:>8.1f}{figures[2]:>10.1f}"
              f"{statistics.fmean(samples) / 1000:>9.1f}{figures[0] / base[0]:>7.2f}"
              f"{figures[1] / base[1]:>7.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    began = time.perf_counter()
    print(f"python {platform.python_version()} on {platform.machine()}, "
          f"{args.orders} orders per scenario, seed {args.seed}")

    engine = ComplianceEngine.from_plugins(PluginHost(BUILTINS))
    rng = random.Random(args.seed)

    start = time.perf_counter_ns()
    domestic = [make_context(engine, rng, n, LISTINGS[n % len(LISTINGS)],
                             LISTINGS[n % len(LISTINGS)].domicile) for n in range(args.orders)]
    built = (time.perf_counter_ns() - start) / args.orders / 1000
    xlon = LISTINGS[2]
    cross = [make_context(engine, rng, n, xlon, "US") for n in range(args.orders)]

    # Context building on its own (venue facts from the registry, derived fields).
    samples = []
    for ctx in domestic[: min(5000, len(domestic))]:
        start = time.perf_counter_ns()
        engine.context(ctx.order, instrument=ctx.instrument, client=ctx.client,
                       account=ctx.account, market=ctx.market, controls=ctx.controls,
                       now=ctx.now, fx_rate=ctx.fx_rate)
        samples.append(time.perf_counter_ns() - start)
    p50, p99, _ = percentiles(samples)
    print(f"engine.context (build a CheckContext): p50 {p50:.1f} µs, p99 {p99:.1f} µs "
          f"(generation with it: {built:.1f} µs per order)")

    # The generated contexts are the bench's scaffolding (40,000 of them, with their maps and
    # instants); frozen out of the collector's reach so that a full collection walking them is
    # not charged to whichever check happened to trigger it. The checks' own garbage is still
    # collected as usual.
    gc.collect()
    gc.freeze()
    untimed_engine = ComplianceEngine.from_plugins(PluginHost(BUILTINS), rule_timings=False)
    for scenario, contexts in (("One venue, domestic client (one pack)", domestic),
                               ("Cross-border: US client on XLON (UK + US packs)", cross)):
        measure(engine, contexts[:2000])  # warm-up: selection cache, ISIN cache, allocator
        measure(untimed_engine, contexts[:2000])
        report(scenario, measure(engine, contexts), measure(untimed_engine, contexts),
               len(contexts))
    print(f"\ntotal {time.perf_counter() - began:.1f} s")


if __name__ == "__main__":
    main()
