"""What the EU and UK packs share: MiFID II as the EU has it and as the UK onshored it.

- Tick regime (MiFID II Art. 49, Commission Delegated Regulation (EU) 2017/588 "RTS 11"; UK:
  the same RTS as onshored): the minimum tick of a share depends on its price and on its
  liquidity band by average daily number of trades (ADNT). The table below is RTS 11's Annex,
  all six bands; the venue registry carries only the most liquid column, so for a less liquid
  share this rule is the stricter one. A share of unknown band is held to the most liquid
  column (the venue table's), which the shared tick rule already checks.
- LEI: an investment firm may not execute for a client that needs an LEI without one
  (MiFIR Art. 26 and RTS 22 Art. 13(2); UK MiFIR likewise): "no LEI, no trade".
- ISIN: transaction reports identify the instrument by ISIN (RTS 22 field 41).
- Short selling: Regulation (EU) No 236/2012 Art. 12 (and the UK's onshored copy) forbids an
  uncovered short sale of a share: a locate or borrow first. The sale is flagged SELL_SHORT,
  which becomes the short-selling indicator of the transaction report (RTS 22 field 62).
- Appropriateness: execution-only service is for non-complex products (MiFID II Art. 25(4));
  an individual buying a complex product must have passed the appropriateness assessment
  (Art. 25(3); UK: COBS 10A).

Simplified: the short-selling flag is enforced as "a sale beyond the long position must be
SELL_SHORT" (the shared marking rule); the SSR's exemptions (market making, sovereign debt
specifics) and its public-disclosure thresholds are not pre-trade checks and are left out.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from types import MappingProxyType

from plugins.builtin.compliance import codes, rules
from plugins.sdk import CheckContext, ComplianceRule, RuleSetPack, Violation

# Price bands of RTS 11's table: a band runs from its bound (inclusive) to the next.
_PRICE_BOUNDS: tuple[Decimal, ...] = tuple(Decimal(p) for p in (
    "0", "0.1", "0.2", "0.5", "1", "2", "5", "10", "20", "50", "100", "200", "500", "1000",
    "2000", "5000", "10000", "20000", "50000"))
# The ticks are the 1-2-5 series from 0.0001. In the price band of row r, the most liquid
# column (band 6, ADNT >= 9,000) ticks at step r - 3 of the series (never below 0.0001), and
# each less liquid band one step coarser: band b at step r + 3 - b. Generated rather than typed
# out (19 x 6 cells); a test compares band 6 with the venue registry's copy of that column.
_STEPS: tuple[Decimal, ...] = tuple(Decimal(m) * Decimal(10) ** e
                                    for e in range(-4, 4) for m in (1, 2, 5))
MIFID_TICKS: Mapping[int, tuple[Decimal, ...]] = MappingProxyType({
    band: tuple(_STEPS[max(row + 3 - band, 0)] for row in range(len(_PRICE_BOUNDS)))
    for band in range(1, 7)
})
MOST_LIQUID_BAND = 6


def mifid_tick(price: Decimal, band: int | None) -> Decimal:
    """RTS 11's minimum tick at `price` for liquidity band 1 (ADNT < 10) … 6 (>= 9,000)."""
    ticks = MIFID_TICKS[band if band in MIFID_TICKS else MOST_LIQUID_BAND]
    return ticks[max(bisect_right(_PRICE_BOUNDS, price) - 1, 0)]


def mifid_tick_regime(citation: str) -> ComplianceRule:
    def check(ctx: CheckContext) -> Violation | None:
        band = ctx.instrument.liquidity_band
        if band is None or band == MOST_LIQUID_BAND:
            return None  # the venue's table is this column; the shared tick rule checks it
        order = ctx.order
        for price in (order.limit_price, order.stop_price):
            if price is not None:
                tick = mifid_tick(price, band)
                if price % tick:
                    return Violation(codes.MIFID_TICK_SIZE,
                                     f"{citation}: price {rules.num(price)} is off the tick "
                                     f"{rules.num(tick)} of "
                                     f"liquidity band {band}", tick, price)
        return None

    return ComplianceRule("mifid_tick_size", check, venue_only=True)


def mifid_pack(jurisdiction: str, regulators: Sequence[str], countries: Iterable[str],
               law: str) -> RuleSetPack:
    """A MiFID-family pack: the shared rules, then the ones above, citing `law`."""
    return RuleSetPack(jurisdiction, regulators, countries, (
        *rules.shared_rules(),
        rules.lei_required(f"{law} Art. 26 / RTS 22 Art. 13(2)"),
        rules.isin_required(f"{law} Art. 26 transaction reporting"),
        rules.locate_required(f"{'UK' if jurisdiction == 'UK' else 'EU'} SSR Art. 12"),
        mifid_tick_regime(f"{law} RTS 11 tick regime"),
        rules.appropriateness("APPROPRIATENESS", f"{law} appropriateness (Art. 25(3))"),
    ))
