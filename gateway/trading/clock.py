"""The venues' clock in a running gateway: every `interval` seconds the order service tells the
connectors the markets clock's time, so DAY orders expire, queued orders reach the open and
resting orders fill when the market moves through them even when no order arrives; and now
and then orders claimed but never sent (their process died) are rejected. At start it first has
the order service restore the built-in venues' open orders (a restart emptied their books).
With ALPHINTRA_VENUE_URL the venue process does both for the built-ins (venue_server.py);
here the clock then serves tenants' installed connectors and the unsent sweep."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from gateway.trading.service import UNSENT_AFTER, OrderService

log = logging.getLogger(__name__)
INTERVAL_SECONDS = 1.0


SWEEP_EVERY = 30  # rounds between looks for orders claimed but never sent


async def run_venue_clock(orders: OrderService, interval: float = INTERVAL_SECONDS,
                          unsent_after: timedelta = UNSENT_AFTER) -> None:
    try:  # after a restart: the venues' open orders back on their books (trading/recovery.py)
        await asyncio.to_thread(orders.recover)
    except Exception:
        log.exception("restoring open orders at start-up failed")
    rounds = 0
    while True:
        await asyncio.sleep(interval)
        rounds += 1
        try:
            await asyncio.to_thread(orders.advance)
            if rounds % SWEEP_EVERY == 0:
                await asyncio.to_thread(orders.sweep_unsent, unsent_after)
        except Exception:  # keep ticking: one bad round must not stop expiries for good
            log.exception("venue clock round failed")
