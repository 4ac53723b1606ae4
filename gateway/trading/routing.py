"""Smart order routing: which venue an order goes to, and a record of why.

An order names a venue (`mic`), or asks the router to choose (`mic` "" or "SMART"). Choosing:

1. Candidates: the listings of the instrument. The order's symbol (or an ISIN given as the
   symbol) is looked up among the known instruments, and every instrument sharing its ISIN
   is a candidate, whatever its symbol on that venue; an instrument without an ISIN is
   matched by symbol only. Listings in another currency than the order's are recorded and
   left out (comparing them needs an FX conversion the order did not ask for). With no known
   instrument, every venue a connector reaches is asked for the symbol as given.
2. Each connector reaching a candidate's MIC is asked `quote_for` the order re-addressed to
   that listing (its symbol and MIC). A connector that raises is recorded and left out of
   this decision only. A batch is routed together (`route_many`): every quote is asked before
   any decision, and a connector that can (the venue process's, `quote_many`) is asked once
   for all of the batch's orders.
3. Score: the expected price after the taker fee, per unit: price * (1 + fee) for a buy,
   price * (1 - fee) for a sell (fee = fee_bps / 10,000). Ranking: venues that can execute the
   whole quantity at once first, then those executing part of it (more first); within each,
   the better score (lower for a buy, higher for a sell), then more quantity, a lower fee,
   and the candidates' order (the listing the client named first) to break ties.
4. When nothing is executable now (every venue closed, or a passive limit order), the order
   goes to the first candidate that would accept it (the named listing first), with reason
   NO_EXECUTABLE_LIQUIDITY. When no venue would accept it: ROUTE_UNAVAILABLE, or, when every
   venue that quoted refused for one reason that is the order's own, that reason's code:
   ORDER_LOT_SIZE (the quantity is off the venue's lot), ORDER_TICK_SIZE (a price is off its
   tick), VENUE_CLOSED (an IOC, FOK or market order outside the session). Either way
   `details.alternatives` says what each venue answered.

The whole order goes to one venue; splitting across venues is not done. The decision keeps
every alternative with its quote and score for best-execution records.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal, localcontext
from typing import Any

from gateway.errors import DomainError
from plugins.host import PluginFailed, PluginHost, default_context
from plugins.sdk import (
    ExchangeConnector,
    Instrument,
    OrderRequest,
    PluginContext,
    Side,
    VenueDirectory,
    VenueQuote,
)

log = logging.getLogger(__name__)

HOOK = "alphintra_exchange_connectors"
SMART = "SMART"
BPS = Decimal(10_000)
PLACES = Decimal("0.00000001")
PRECISION = 60  # digits for fee arithmetic: exact for any notional a venue accepts

# Why a venue was chosen.
BEST_PRICE_AFTER_FEES = "BEST_PRICE_AFTER_FEES"
DIRECTED = "DIRECTED"  # the order named its venue
NO_EXECUTABLE_LIQUIDITY = "NO_EXECUTABLE_LIQUIDITY"
# Why an alternative was not taken (besides a quote's own reject_code).
NO_QUOTE = "NO_QUOTE"  # the connector does not trade the instrument there
CONNECTOR_FAILED = "CONNECTOR_FAILED"
CURRENCY_MISMATCH = "CURRENCY_MISMATCH"
NO_CONNECTOR = "NO_CONNECTOR"
RANKED_LOWER = "RANKED_LOWER"
CHOSEN = "CHOSEN"


class RouteUnavailable(DomainError):
    """No venue would take the order; `details.alternatives` says what each answered."""

    code = "ROUTE_UNAVAILABLE"
    http_status = 422


# A venue's refusal that every candidate shared -> the code the order is refused with.
SHARED_REFUSALS = {"LOT_SIZE": "ORDER_LOT_SIZE", "TICK_SIZE": "ORDER_TICK_SIZE",
                   "SESSION_CLOSED": "VENUE_CLOSED"}
_WHY = {"ORDER_LOT_SIZE": "the quantity is not a multiple of the lot size",
        "ORDER_TICK_SIZE": "a price is not a multiple of the tick size",
        "VENUE_CLOSED": "the venue is closed to it now"}


def unavailable(symbol: str, alternatives: Sequence[RouteAlternative]) -> RouteUnavailable:
    """The error for an order no venue would take: a shared refusal's own code when every
    venue that quoted gave the same one (one not trading the instrument says nothing),
    ROUTE_UNAVAILABLE otherwise."""
    details = {"alternatives": [{"mic": a.mic, "connector": a.connector, "status": a.status}
                                for a in alternatives]}
    refusals = {a.status for a in alternatives if a.status not in (NO_QUOTE, CURRENCY_MISMATCH,
                                                                   NO_CONNECTOR)}
    code = SHARED_REFUSALS.get(next(iter(refusals))) if len(refusals) == 1 else None
    if code is None:
        return RouteUnavailable(f"no venue would take {symbol}", details=details)
    mics = ", ".join(dict.fromkeys(a.mic for a in alternatives if a.status in SHARED_REFUSALS))
    return RouteUnavailable(f"{symbol}: {_WHY[code]} on {mics}", code=code, details=details)


@dataclass(frozen=True)
class ConnectorEntry:
    plugin: str
    connector: ExchangeConnector

    @property
    def name(self) -> str:
        return str(self.connector.name)


def collect_connectors(plugins: PluginHost, venues: VenueDirectory,
                       configs: dict[str, dict[str, Any]] | None = None
                       ) -> tuple[list[ConnectorEntry], list[PluginFailed]]:
    """Every plugin's exchange connectors, built-ins first. A plugin whose hook raises or
    answers the wrong shape is left out (in the failures); a second connector with a name
    already taken is left out and logged."""
    configs = configs or {}

    def context_for(plugin: str) -> PluginContext:
        return default_context(plugin, config=dict(configs.get(plugin, {})), venues=venues)

    contributions, failures = plugins.collect(HOOK, context_for, expect=ExchangeConnector)
    entries: list[ConnectorEntry] = []
    names: set[str] = set()
    for contribution in contributions:
        entry = ConnectorEntry(contribution.plugin, contribution.value)
        if entry.name in names:
            log.warning("exchange connector %s offered twice; the first is kept", entry.name)
            continue
        names.add(entry.name)
        entries.append(entry)
    return entries, failures


@dataclass(frozen=True)
class RouteAlternative:
    """One (connector, listing) considered, with what it answered."""

    connector: str
    plugin: str
    mic: str
    symbol: str
    expected_price: Decimal | None
    available_qty: Decimal
    fee_bps: Decimal | None
    score: Decimal | None  # expected price per unit after fees; None when nothing executable
    status: str  # CHOSEN, RANKED_LOWER, or why it could not be taken


@dataclass(frozen=True)
class RoutingDecision:
    order: OrderRequest  # as sent to the venue: the chosen listing's symbol and MIC
    connector: str
    plugin: str
    mic: str
    expected_price: Decimal | None
    fee_bps: Decimal
    expected_fee: Decimal  # on the quantity expected to execute at once
    score: Decimal | None
    reason: str
    alternatives: tuple[RouteAlternative, ...]  # ranked (the chosen first), then the rest
    decided_at: datetime


# -- pure functions ------------------------------------------------------------------------

def is_smart(mic: str | None) -> bool:
    return not mic or mic.strip().upper() == SMART


def effective_price(side: Side, price: Decimal, fee_bps: Decimal) -> Decimal:
    """Price per unit after the fee: what a buyer pays, or a seller receives."""
    with localcontext(prec=PRECISION):
        fee = fee_bps / BPS
        return (price * (1 + fee) if Side(side) is Side.BUY else price * (1 - fee)).quantize(PLACES)


def listings(order: OrderRequest, instruments: Iterable[Instrument]) -> list[Instrument]:
    """The instrument's listings, the one the order names (by symbol, and MIC if given) first,
    then by MIC. An ISIN as the symbol finds every listing of it."""
    known = list(instruments)
    wanted = order.symbol.strip().upper()
    named = [i for i in known if i.symbol.upper() == wanted or (i.isin or "").upper() == wanted]
    isins = {i.isin for i in named if i.isin}
    found = {(i.mic, i.symbol): i for i in named}
    for i in known:
        if i.isin and i.isin in isins:
            found.setdefault((i.mic, i.symbol), i)
    mic = "" if is_smart(order.mic) else order.mic.upper()
    return sorted(found.values(), key=lambda i: (i.symbol.upper() != wanted, i.mic != mic, i.mic, i.symbol))


def rank(side: Side, quantity: Decimal, alternatives: Sequence[RouteAlternative]) -> list[RouteAlternative]:
    """Executable alternatives best first (see the module docstring); the rest are dropped."""
    buy = Side(side) is Side.BUY
    executable = [(k, a) for k, a in enumerate(alternatives) if a.score is not None and a.available_qty > 0]

    def key(item: tuple[int, RouteAlternative]) -> tuple[Any, ...]:
        k, a = item
        score = a.score or Decimal(0)
        full = a.available_qty >= quantity
        # Whole fills first; among partial ones, more quantity first; then the price.
        return (not full, Decimal(0) if full else -a.available_qty, score if buy else -score,
                -a.available_qty, a.fee_bps or Decimal(0), k)

    return [a for _, a in sorted(executable, key=key)]


# -- the router ------------------------------------------------------------------------------

class SmartOrderRouter:
    """Routes over the collected connectors; `instruments` gives the known listings (the
    market data service's instruments, say), read at each decision."""

    def __init__(self, connectors: Sequence[ConnectorEntry],
                 instruments: Callable[[], Iterable[Instrument]] | Iterable[Instrument] = ()) -> None:
        self.connectors = list(connectors)
        self._instruments = instruments

    def instruments(self) -> list[Instrument]:
        source = self._instruments
        return list(source() if callable(source) else source)

    def reaching(self, mic: str) -> list[ConnectorEntry]:
        return [e for e in self.connectors if mic.upper() in {m.upper() for m in e.connector.mics()}]

    def route(self, order: OrderRequest) -> RoutingDecision:
        decision = self.route_many([order])[0]
        if isinstance(decision, RouteUnavailable):
            raise decision
        return decision

    def route_many(self, orders: Sequence[OrderRequest]) -> list[RoutingDecision | RouteUnavailable]:
        """`route` for each order (its decision, or the error it would raise). The quotes are
        asked before any decision, each connector that can (`quote_many`: the venue process's)
        once for all of them: one round trip a batch, not one an order."""
        instruments = self.instruments() if any(is_smart(o.mic) for o in orders) else []
        plans = [self._candidates(order, instruments) for order in orders]
        quotes = self._ask_all([pair for _, pairs, _ in plans for pair in pairs])
        decisions: list[RoutingDecision | RouteUnavailable] = []
        k = 0
        for order, (directed, pairs, skipped) in zip(orders, plans, strict=True):
            asked = [(quotes[k + j], entry, child) for j, (entry, child) in enumerate(pairs)]
            k += len(pairs)
            try:
                decisions.append(self._decide(order, directed, asked, skipped))
            except RouteUnavailable as exc:
                decisions.append(exc)
        return decisions

    def _candidates(self, order: OrderRequest, instruments: Sequence[Instrument]
                    ) -> tuple[bool, list[tuple[ConnectorEntry, OrderRequest]], list[RouteAlternative]]:
        """Whether the order names its venue; each (connector, order re-addressed) to ask, in
        the candidates' order; the listings left out, with why."""
        directed = not is_smart(order.mic)
        candidates: list[tuple[str, str]] = []  # (symbol, mic)
        skipped: list[RouteAlternative] = []
        if directed:
            candidates.append((order.symbol, order.mic.upper()))
        else:
            found = listings(order, instruments)
            if not found:
                mics = dict.fromkeys(m.upper() for e in self.connectors for m in e.connector.mics())
                candidates.extend((order.symbol, m) for m in mics)
            for instrument in found:
                if order.currency and instrument.currency != order.currency:
                    skipped.append(RouteAlternative("", "", instrument.mic, instrument.symbol, None,
                                                    Decimal(0), None, None, CURRENCY_MISMATCH))
                else:
                    candidates.append((instrument.symbol, instrument.mic.upper()))
        pairs: list[tuple[ConnectorEntry, OrderRequest]] = []
        for symbol, mic in candidates:
            child = replace(order, symbol=symbol, mic=mic)
            entries = self.reaching(mic)
            if not entries:
                skipped.append(RouteAlternative("", "", mic, symbol, None, Decimal(0), None, None,
                                                NO_CONNECTOR))
            pairs.extend((entry, child) for entry in entries)
        return directed, pairs, skipped

    def _ask_all(self, pairs: Sequence[tuple[ConnectorEntry, OrderRequest]]) -> list[RouteAlternative]:
        """Each (connector, order)'s alternative, in the pairs' order."""
        out: list[RouteAlternative | None] = [None] * len(pairs)
        grouped: dict[int, list[int]] = {}  # a connector with quote_many -> its pairs
        for k, (entry, child) in enumerate(pairs):
            if callable(getattr(entry.connector, "quote_many", None)):
                grouped.setdefault(id(entry), []).append(k)
            else:
                out[k] = self._ask(entry, child)
        for ks in grouped.values():
            entry = pairs[ks[0]][0]
            children = [pairs[k][1] for k in ks]
            extra = {"plugin": entry.plugin, "connector": entry.name}
            try:
                quotes: list[Any] = list(entry.connector.quote_many(children))
                if len(quotes) != len(children):
                    raise RuntimeError(f"{len(quotes)} quotes for {len(children)} orders")
            except Exception as exc:  # the whole call: every order it was for
                log.exception("exchange connector failed to quote",
                              extra={**extra, "orders": len(children)})
                quotes = [exc] * len(children)
            else:
                for child, quote in zip(children, quotes, strict=True):
                    if isinstance(quote, Exception):  # that order's quote alone
                        log.error("exchange connector failed to quote", exc_info=quote,
                                  extra={**extra, "mic": child.mic})
            for k, child, quote in zip(ks, children, quotes, strict=True):
                out[k] = self._alternative(entry, child, quote)
        return out  # type: ignore[return-value]

    def _decide(self, order: OrderRequest, directed: bool,
                asked: list[tuple[RouteAlternative, ConnectorEntry, OrderRequest]],
                skipped: list[RouteAlternative]) -> RoutingDecision:
        ranked = rank(order.side, order.quantity, [a for a, _, _ in asked])
        by_alternative = {id(a): (e, c) for a, e, c in asked}
        if ranked:
            best, reason = ranked[0], DIRECTED if directed else BEST_PRICE_AFTER_FEES
        else:
            acceptable = [a for a, _, _ in asked if a.status == RANKED_LOWER]
            if not acceptable:
                raise unavailable(order.symbol, [a for a, _, _ in asked] + skipped)
            best, reason = acceptable[0], DIRECTED if directed else NO_EXECUTABLE_LIQUIDITY
        entry, child = by_alternative[id(best)]
        chosen = replace(best, status=CHOSEN)
        rest = [a for a, _, _ in asked if a is not best]
        order_of = {id(a): k for k, a in enumerate(ranked)}
        rest.sort(key=lambda a: order_of.get(id(a), len(ranked)))
        fill = min(order.quantity, best.available_qty)
        with localcontext(prec=PRECISION):
            expected_fee = ((best.expected_price or Decimal(0)) * fill * (best.fee_bps or Decimal(0))
                            / BPS).quantize(PLACES)
        return RoutingDecision(
            order=child, connector=entry.name, plugin=entry.plugin, mic=best.mic,
            expected_price=best.expected_price, fee_bps=best.fee_bps or Decimal(0),
            expected_fee=expected_fee, score=best.score, reason=reason,
            alternatives=(chosen, *rest, *skipped), decided_at=order.submitted_at)

    @classmethod
    def _ask(cls, entry: ConnectorEntry, child: OrderRequest) -> RouteAlternative:
        try:
            quote = entry.connector.quote_for(child)
        except Exception as exc:
            log.exception("exchange connector failed to quote",
                          extra={"plugin": entry.plugin, "connector": entry.name, "mic": child.mic})
            quote = exc
        return cls._alternative(entry, child, quote)

    @staticmethod
    def _alternative(entry: ConnectorEntry, child: OrderRequest, quote: Any) -> RouteAlternative:
        """What the connector's answer makes of it: a VenueQuote, None, or the exception that
        stands for a quote that failed (logged where it was caught)."""
        def alternative(quote: VenueQuote | None, status: str) -> RouteAlternative:
            if quote is None:
                return RouteAlternative(entry.name, entry.plugin, child.mic, child.symbol, None,
                                        Decimal(0), None, None, status)
            score = None
            if quote.expected_price is not None and quote.available_qty > 0 and status == RANKED_LOWER:
                score = effective_price(child.side, quote.expected_price, quote.fee_bps)
            return RouteAlternative(entry.name, entry.plugin, child.mic, child.symbol,
                                    quote.expected_price, quote.available_qty, quote.fee_bps, score,
                                    status)

        if isinstance(quote, Exception):
            return alternative(None, CONNECTOR_FAILED)
        if quote is None:
            return alternative(None, NO_QUOTE)
        if not isinstance(quote, VenueQuote):
            log.error("exchange connector %s answered a %s, not a VenueQuote", entry.name,
                      type(quote).__name__)
            return alternative(None, CONNECTOR_FAILED)
        return alternative(quote, quote.reject_code or RANKED_LOWER)
