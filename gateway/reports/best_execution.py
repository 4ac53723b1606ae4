"""Best-execution report (RTS 27/28 style): execution quality per venue and instrument class.

Per (venue MIC, instrument class), over the orders routed there in the period:
- orders, filled (fully), partially filled, unfilled (no fill at all) counts;
- fill ratio: quantity filled / quantity ordered;
- price improvement against the arrival price (the reference price when the order arrived,
  recorded by the router): per order, in basis points, (arrival - average fill price) / arrival
  for a buy and (average fill price - arrival) / arrival for a sell, so positive is better than
  arrival and negative is slippage; the venue figure weights each order by its filled quantity
  (orders without an arrival price are left out of it and counted);
- speed: submission to first fill, median and mean in milliseconds, over orders with a fill;
- venue share: the venue's part of the quantity filled in that instrument class, all venues
  together (RTS 28's "proportion of volume traded");
- routing gain, over the orders the smart router placed there (`smartOrders`): what the chosen
  venue's expected price after fees beat the runner-up's by, in basis points of the runner-up
  (the next executable venue in the routing record, which walked each venue's depth for the
  order's quantity), filled-quantity weighted; None without a runner-up (a single listing, or
  nothing else executable).

Pure over `OrderOutcome`s; the loader reads them from orders, fills and routing records.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from gateway.reports.common import csv_bytes, decimal_text

BPS = Decimal(10_000)
RATIO = Decimal("0.000001")
BPS_PLACES = Decimal("0.01")
MS_PLACES = Decimal("0.001")


@dataclass(frozen=True)
class OrderOutcome:
    order_id: str
    mic: str
    instrument_class: str
    side: str  # BUY | SELL | SELL_SHORT
    quantity: Decimal
    filled_quantity: Decimal
    average_price: Decimal | None  # of the fills; None without one
    arrival_price: Decimal | None
    submitted_at: datetime
    first_fill_at: datetime | None
    routing: Mapping[str, Any] | None = None  # the router's record, for a SMART-routed order


@dataclass(frozen=True)
class VenueQuality:
    mic: str
    instrument_class: str
    orders: int
    filled: int
    partially_filled: int
    unfilled: int
    quantity_ordered: Decimal
    quantity_filled: Decimal
    fill_ratio: Decimal
    price_improvement_bps: Decimal | None  # filled-quantity weighted; negative: slippage
    orders_without_arrival_price: int
    median_ms_to_first_fill: Decimal | None
    mean_ms_to_first_fill: Decimal | None
    share_of_quantity: Decimal = Decimal(0)  # of the class's filled quantity, all venues
    smart_orders: int = 0
    routing_gain_bps: Decimal | None = None  # vs the runner-up venue, filled-quantity weighted


def improvement_bps(side: str, arrival: Decimal, average: Decimal) -> Decimal:
    edge = arrival - average if side == "BUY" else average - arrival
    return edge / arrival * BPS


def _score(alternative: Mapping[str, Any]) -> Decimal | None:
    try:
        value = alternative.get("score")
        return None if value in (None, "") else Decimal(str(value))
    except InvalidOperation:
        return None


def routing_gain_bps(side: str, routing: Mapping[str, Any]) -> Decimal | None:
    """The chosen venue's expected price after fees against the runner-up's, in basis points
    of the runner-up (positive: better), from a routing record; None without both."""
    alternatives = routing.get("alternatives") or []
    chosen = next((a for a in alternatives if a.get("status") == "CHOSEN"), None)
    runner_up = next((a for a in alternatives if a.get("status") == "RANKED_LOWER"
                      and _score(a) is not None), None)
    if chosen is None or runner_up is None:
        return None
    ours, theirs = _score(chosen), _score(runner_up)
    if ours is None or theirs is None or theirs <= 0:
        return None
    return improvement_bps(side, theirs, ours)


def _smart(o: OrderOutcome) -> bool:
    return o.routing is not None and o.routing.get("reason") not in (None, "DIRECTED")


def build_quality(outcomes: list[OrderOutcome]) -> list[VenueQuality]:
    groups: dict[tuple[str, str], list[OrderOutcome]] = defaultdict(list)
    class_filled: dict[str, Decimal] = defaultdict(Decimal)
    for o in outcomes:
        groups[(o.mic, o.instrument_class)].append(o)
        class_filled[o.instrument_class] += o.filled_quantity
    rows = []
    for (mic, klass), group in sorted(groups.items()):
        ordered = sum((o.quantity for o in group), Decimal(0))
        filled_qty = sum((o.filled_quantity for o in group), Decimal(0))
        filled = sum(1 for o in group if o.filled_quantity >= o.quantity > 0)
        unfilled = sum(1 for o in group if o.filled_quantity == 0)
        weighted, weight, no_arrival = Decimal(0), Decimal(0), 0
        delays: list[Decimal] = []
        gained, gain_weight = Decimal(0), Decimal(0)
        for o in group:
            if o.filled_quantity <= 0 or o.average_price is None:
                continue
            gain = routing_gain_bps(o.side, o.routing) if _smart(o) and o.routing else None
            if gain is not None:
                gained += gain * o.filled_quantity
                gain_weight += o.filled_quantity
            if o.arrival_price is None or o.arrival_price <= 0:
                no_arrival += 1
            else:
                weighted += improvement_bps(o.side, o.arrival_price, o.average_price) * o.filled_quantity
                weight += o.filled_quantity
            if o.first_fill_at is not None:
                delta = o.first_fill_at - o.submitted_at
                delays.append(Decimal(delta.days * 86_400_000_000 + delta.seconds * 1_000_000
                                      + delta.microseconds) / 1000)
        rows.append(VenueQuality(
            mic=mic, instrument_class=klass, orders=len(group), filled=filled,
            partially_filled=len(group) - filled - unfilled, unfilled=unfilled,
            quantity_ordered=ordered, quantity_filled=filled_qty,
            fill_ratio=(filled_qty / ordered).quantize(RATIO, ROUND_HALF_EVEN) if ordered else Decimal(0),
            price_improvement_bps=(weighted / weight).quantize(BPS_PLACES, ROUND_HALF_EVEN)
            if weight else None,
            orders_without_arrival_price=no_arrival,
            median_ms_to_first_fill=Decimal(statistics.median(delays)).quantize(MS_PLACES)
            if delays else None,
            mean_ms_to_first_fill=(sum(delays, Decimal(0)) / len(delays)).quantize(MS_PLACES)
            if delays else None,
            share_of_quantity=(filled_qty / class_filled[klass]).quantize(RATIO, ROUND_HALF_EVEN)
            if class_filled[klass] else Decimal(0),
            smart_orders=sum(1 for o in group if _smart(o)),
            routing_gain_bps=(gained / gain_weight).quantize(BPS_PLACES, ROUND_HALF_EVEN)
            if gain_weight else None))
    return rows


CSV_HEADER = ("Venue", "InstrumentClass", "Orders", "Filled", "PartiallyFilled", "Unfilled",
              "QuantityOrdered", "QuantityFilled", "FillRatio", "PriceImprovementBps",
              "OrdersWithoutArrivalPrice", "MedianMsToFirstFill", "MeanMsToFirstFill",
              "ShareOfQuantity", "SmartOrders", "RoutingGainBps")


def to_csv(rows: list[VenueQuality]) -> bytes:
    return csv_bytes(CSV_HEADER, ((r.mic, r.instrument_class, r.orders, r.filled, r.partially_filled,
                                   r.unfilled, r.quantity_ordered, r.quantity_filled, r.fill_ratio,
                                   r.price_improvement_bps, r.orders_without_arrival_price,
                                   r.median_ms_to_first_fill, r.mean_ms_to_first_fill,
                                   r.share_of_quantity, r.smart_orders, r.routing_gain_bps)
                                  for r in rows))


def summary(rows: list[VenueQuality]) -> list[dict[str, Any]]:
    """The job result's JSON: the same figures, Decimals as strings."""
    def text(v: Decimal | None) -> str | None:
        return None if v is None else decimal_text(v)

    return [{"venue": r.mic, "instrumentClass": r.instrument_class, "orders": r.orders,
             "filled": r.filled, "partiallyFilled": r.partially_filled, "unfilled": r.unfilled,
             "quantityOrdered": text(r.quantity_ordered), "quantityFilled": text(r.quantity_filled),
             "fillRatio": text(r.fill_ratio), "priceImprovementBps": text(r.price_improvement_bps),
             "ordersWithoutArrivalPrice": r.orders_without_arrival_price,
             "medianMsToFirstFill": text(r.median_ms_to_first_fill),
             "meanMsToFirstFill": text(r.mean_ms_to_first_fill),
             "shareOfQuantity": text(r.share_of_quantity), "smartOrders": r.smart_orders,
             "routingGainBps": text(r.routing_gain_bps)} for r in rows]
