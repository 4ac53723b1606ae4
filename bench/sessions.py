"""Session look-ups: `MarketsService.session(mic, at)` and `active_markets(at)` per call, after
warm-up, side by side with the calendar libraries answering the same instants themselves.

    .venv/bin/python bench/sessions.py [--instants N] [--baseline-instants M] [--rounds R]

What it does, in one run (well under a minute):

1. Builds a MarketsService (its own calendars) and loads every venue's calendar, timing that
   (the one-off cost a gateway pays on the first markets request).
2. Draws N instants (seeded, minute resolution) across 2025. Per venue, times R rounds of
   `session(mic, at)` over all N (the full answer: status, opens/closes of the day, next open
   and close) and keeps the best round's mean.
3. Baseline, on M of the same instants: exchange_calendars' own `is_open_on_minute` alone (the
   cheapest yes/no it has), and `is_open_on_minute` + `minute_to_session` + `next_open` +
   `next_close` (roughly the same answer as ours); for NSE, pandas_market_calendars'
   `open_at_time` on a precomputed schedule.
4. `active_markets(at)` against asking each library calendar `is_open_on_minute` (NSE:
   `open_at_time`), and `follow_the_sun(at, 7 days)`.

Prints µs per call and the ratio baseline / ours: "session(at)" against the library's full
answer, and the directory's `is_open(mic, at)` (a bare bisect) against `is_open_on_minute`.
"""

from __future__ import annotations

import argparse
import platform
import random
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.markets.service import MarketsService


def per_call_us(fn: Callable[[Any], object], items: Sequence[Any], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for item in items:
            fn(item)
        best = min(best, (time.perf_counter_ns() - start) / len(items) / 1_000)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instants", type=int, default=20_000)
    parser.add_argument("--baseline-instants", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # the libraries' pandas deprecation chatter

    import exchange_calendars as xc
    import pandas as pd
    import pandas_market_calendars as pmc

    began = time.perf_counter()
    service = MarketsService()
    start = time.perf_counter()
    service.directory.calendars.warm()
    load_s = time.perf_counter() - start

    rng = random.Random(2025)
    year = datetime(2025, 1, 1, tzinfo=UTC)
    instants = [year + timedelta(minutes=rng.randrange(365 * 24 * 60))
                for _ in range(args.instants)]
    sample = instants[:args.baseline_instants]
    minutes = [pd.Timestamp(at) for at in sample]

    print(f"python {platform.python_version()} on {platform.machine()}, "
          f"exchange_calendars {xc.__version__}, pandas_market_calendars {pmc.__version__}")
    print(f"calendar load (all {len(service.directory.calendars.mics())} venues, once): "
          f"{load_s * 1000:.0f} ms")
    print(f"{args.instants} instants for ours, {args.baseline_instants} for the baselines; "
          f"best of {args.rounds} rounds\n")
    header = (f"{'venue':<6} {'session(at)':>12} {'lib full':>10} {'ratio':>6}   "
              f"{'is_open':>9} {'lib is_open':>12} {'ratio':>6}")
    print(header)
    print("-" * len(header))
    ours_all = []
    for venue in service.directory.specs():
        mic = venue.mic
        ours = per_call_us(lambda at, mic=mic: service.session(mic, at), instants, args.rounds)
        ours_open = per_call_us(lambda at, mic=mic: service.directory.is_open(mic, at), instants,
                                args.rounds)
        ours_all.append(ours)
        if venue.always_open:
            print(f"{mic:<6} {ours:>10.2f}µs {'':>18} {ours_open:>7.2f}µs   (24/7: no library calendar)")
            continue
        if venue.calendar and venue.calendar.library == "pandas_market_calendars":
            nse = pmc.get_calendar(venue.calendar.name)
            schedule = nse.schedule("2024-12-01", "2026-01-31")
            lib = per_call_us(lambda m, c=nse, s=schedule: c.open_at_time(s, m), minutes[:50], 1)
            print(f"{mic:<6} {ours:>10.2f}µs {'':>18} {ours_open:>7.2f}µs {lib:>10.1f}µs "
                  f"{lib / ours_open:>5.0f}x  (open_at_time)")
            continue
        cal = xc.get_calendar(venue.calendar.name if venue.calendar else mic,
                              start="2024-12-01", end="2026-01-31")

        def full(m: pd.Timestamp, cal: Any = cal) -> object:
            is_open = cal.is_open_on_minute(m)
            return is_open, cal.minute_to_session(m, "previous"), cal.next_open(m), cal.next_close(m)

        lib = per_call_us(cal.is_open_on_minute, minutes, args.rounds)
        lib_full = per_call_us(full, minutes, args.rounds)
        print(f"{mic:<6} {ours:>10.2f}µs {lib_full:>8.1f}µs {lib_full / ours:>5.1f}x   "
              f"{ours_open:>7.2f}µs {lib:>10.1f}µs {lib / ours_open:>5.1f}x")
    print(f"\nsession(at): worst venue {max(ours_all):.2f}µs, mean {sum(ours_all) / len(ours_all):.2f}µs "
          f"(target < 50µs)")

    active = per_call_us(service.active_markets, instants[:5_000], args.rounds)
    xc_open: list[Callable[[pd.Timestamp], bool]] = []
    nse_open: list[Callable[[pd.Timestamp], bool]] = []
    for venue in service.directory.specs():
        if venue.calendar is None:
            continue
        if venue.calendar.library == "exchange_calendars":
            c = xc.get_calendar(venue.calendar.name, start="2024-12-01", end="2026-01-31")
            xc_open.append(c.is_open_on_minute)
        else:
            nse = pmc.get_calendar(venue.calendar.name)
            s = nse.schedule("2024-12-01", "2026-01-31")
            nse_open.append(lambda m, c=nse, s=s: c.open_at_time(s, m))
    lib_xc = per_call_us(lambda m: [f(m) for f in xc_open], minutes, args.rounds)
    lib_nse = per_call_us(lambda m: [f(m) for f in nse_open], minutes[:50], 1)
    print(f"activeMarkets(at): {active:.1f}µs per call (all 15 venues)")
    print(f"  library, calendar after calendar: {lib_xc:.0f}µs for the {len(xc_open)} "
          f"exchange_calendars venues ({lib_xc / active:.0f}x), {lib_xc + lib_nse:.0f}µs with "
          f"NSE's open_at_time ({(lib_xc + lib_nse) / active:.0f}x)")
    sun = per_call_us(lambda at: service.follow_the_sun(at, timedelta(days=7)), instants[:50], 1)
    print(f"followTheSun(at, P7D): {sun / 1000:.2f}ms per call")
    print(f"\ntotal run {time.perf_counter() - began:.1f}s")


if __name__ == "__main__":
    main()
