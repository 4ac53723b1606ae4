"""Slippage of market orders of growing size on the simulated venues, against the book's depth.

    .venv/bin/python bench/slippage.py [--symbol AAPL] [--at 2025-03-12T15:00:00Z]

On the built-in venue (plugins/builtin/sim_exchange, fed by the market twin), at one instant in
the New York session: for each venue listing the instrument, its quote, its book's depth (what
one side holds, which is the participation cap: 10 % of 15 minutes' volume), and for buy
market orders of growing notional the average fill price's slippage in basis points against
the mid, beside the square-root law's figure (half the spread plus Y·sigma·sqrt(q / V) of what
lies beyond the touch). Then one order of about $12 M on the primary venue is sent, and the
venue's ask is read back over the next 40 minutes: the displacement and its recovery (half-life
5 minutes). Each size is previewed on a fresh venue (`quote_for`), so sizes do not see each
other's impact. Figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.markets.directory import CalendarVenueDirectory
from plugins.builtin.market_twin import MarketTwin
from plugins.builtin.sim_exchange.connector import SimulatedExchange
from plugins.sdk import OrderRequest, OrdType, Side, TimeInForce, square_root_impact

NOTIONALS = (10_000, 100_000, 1_000_000, 5_000_000, 12_000_000, 25_000_000, 50_000_000)


def order(cid: str, symbol: str, mic: str, quantity: Decimal, at: datetime) -> OrderRequest:
    return OrderRequest(cid, "BENCH", symbol, mic, Side.BUY, OrdType.MARKET, TimeInForce.IOC,
                        quantity, None, None, None, None, at)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbol", default="AAPL")
    parser.add_argument("--at", default="2025-03-12T15:00:00+00:00")
    args = parser.parse_args()
    at = datetime.fromisoformat(args.at.replace("Z", "+00:00"))
    directory = CalendarVenueDirectory()
    twin = MarketTwin(directory)
    listings = [i for i in twin.instruments() if i.symbol == args.symbol]
    if not listings:
        sys.exit(f"no instrument {args.symbol}")
    print(f"{args.symbol} at {at.isoformat()}: buy market orders, slippage against the mid")
    print(f"{'venue':6} {'notional':>12} {'quantity':>10} {'filled':>10} {'avg price':>11} "
          f"{'slip bp':>8} {'law bp':>7} {'of depth':>8}")
    primary = listings[0].mic
    for instrument in sorted(listings, key=lambda i: (i.mic != primary, i.mic)):
        mic = instrument.mic
        quote = twin.quote(instrument, at)
        if quote is None or quote.ask_size <= 0:
            print(f"{mic}: no quote at {at.isoformat()}")
            continue
        mid = (quote.bid + quote.ask) / 2
        probe = SimulatedExchange(directory, sources=[twin], mics=[mic])
        probe.quote_for(order("warm", args.symbol, mic, Decimal(1), at))
        profile = probe._profiles[(mic, args.symbol)][1]
        depth = sum((q for side, _, q in probe._ladder(probe._listings[(mic, args.symbol)],
                                                       probe.engine(mic, args.symbol), at)[0]
                     if side is Side.SELL), Decimal(0))
        print(f"{mic}: bid {quote.bid} ask {quote.ask} (sizes {quote.bid_size}/{quote.ask_size}), "
              f"ask side depth {depth}, daily volume {profile.volume:.0f}, "
              f"daily sigma {float(profile.volatility):.4f}")
        for notional in NOTIONALS:
            quantity = (Decimal(notional) / quote.ask).quantize(Decimal(1))
            got = SimulatedExchange(directory, sources=[twin], mics=[mic]).quote_for(
                order(f"n{notional}", args.symbol, mic, quantity, at))
            if got is None or got.expected_price is None:
                continue
            slip = (got.expected_price - mid) / mid * 10_000
            beyond = max(got.available_qty - quote.ask_size, Decimal(0))
            law = ((quote.ask - mid) / mid + square_root_impact(beyond, profile.volume, profile.volatility)
                   * beyond / got.available_qty) * 10_000
            print(f"{mic:6} {notional:>12,} {quantity:>10} {got.available_qty:>10} "
                  f"{got.expected_price:>11.4f} {slip:>8.2f} {law:>7.2f} "
                  f"{float(got.available_qty / depth):>8.2f}")
    venue = SimulatedExchange(directory, sources=[twin], mics=[primary])
    first = next(i for i in listings if i.mic == primary)
    quote = twin.quote(first, at)
    quantity = (Decimal(12_000_000) / quote.ask).quantize(Decimal(1))
    reports = venue.submit(order("big", args.symbol, primary, quantity, at))
    done = reports[-1]
    print(f"\n$12 M on {primary}: {done.cum_qty} filled at {done.avg_px} "
          f"({(done.avg_px - quote.ask) / quote.ask * 10_000:.2f} bp over the ask {quote.ask}); "
          f"{done.reject_code or 'no remainder'}")
    print(f"{'after':>8} {'venue ask':>10} {'source ask':>10} {'displaced bp':>12}")
    for seconds in (1, 60, 300, 600, 1200, 2400):
        when = at + timedelta(seconds=seconds)
        got = venue.quote_for(order(f"p{seconds}", args.symbol, primary, Decimal(1), when))
        source = twin.quote(first, when)
        moved = venue.displacement(primary, args.symbol, when) * 10_000
        print(f"{seconds:>7}s {got.expected_price:>10.2f} {source.ask:>10} {moved:>12.2f}")


if __name__ == "__main__":
    main()
