"""The chain of FX-rate providers the plugins offer, asked in order (built-ins first).

A provider answers None for what it does not cover and the next one is asked. Spot is looked up
direct first (every provider), then inverse (1 / quote->base), then crossed through USD
(base->USD x USD->quote, each leg resolved the same way), so a provider that knows only USD
pairs still serves every cross. A provider that raises or answers in the wrong shape fails
only itself: it is logged and skipped, and if no other provider answers the request fails with
PLUGIN_FAILED rather than FX_RATE_UNAVAILABLE, so the client can tell an outage from a gap.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from gateway.errors import DomainError
from plugins.sdk import FxRate, FxRateProvider

log = logging.getLogger(__name__)

USD = "USD"
RATE_DIGITS = 10  # significant digits kept for a rate
T = TypeVar("T")


class FxUnavailable(DomainError):
    code = "FX_RATE_UNAVAILABLE"
    http_status = 503


def significant(value: Decimal, digits: int = RATE_DIGITS) -> Decimal:
    """`value` rounded to `digits` significant digits (a rate has no meaningful 28th digit)."""
    if value == 0 or len(value.as_tuple().digits) <= digits:
        return value
    return value.quantize(Decimal(1).scaleb(value.adjusted() - digits + 1))


def _is_rate(answer: Any, base: str, quote: str) -> bool:
    return (isinstance(answer, FxRate) and answer.base == base and answer.quote == quote
            and isinstance(answer.rate, Decimal) and answer.rate.is_finite() and answer.rate > 0
            and isinstance(answer.at, datetime) and answer.at.tzinfo is not None)


@dataclass(frozen=True)
class Spot:
    base: str
    quote: str
    rate: Decimal  # units of quote per one base
    at: datetime  # the fixing's own time (older than asked for when a provider is as-of)
    source: str  # the provider(s) it came from
    provider: int | None  # index of the single provider that served it, if one did


class FxRates:
    def __init__(self, providers: Sequence[tuple[str, FxRateProvider]]) -> None:
        """`providers`: (plugin name, provider) in the order to ask them."""
        self.providers = list(providers)

    def names(self) -> list[str]:
        return [getattr(p, "name", plugin) for plugin, p in self.providers]

    def _ask(self, index: int, call: Callable[[FxRateProvider], T], failures: list[str],
             check: Callable[[Any], bool]) -> T | None:
        plugin, provider = self.providers[index]
        try:
            answer = call(provider)
            if answer is not None and not check(answer):
                raise TypeError(f"answered {answer!r}")
            return answer
        except Exception as exc:
            log.warning("FX provider failed", exc_info=True,
                        extra={"plugin": plugin, "provider": getattr(provider, "name", "?")})
            failures.append(f"{plugin}: {exc}")
            return None

    def _unavailable(self, what: str, failures: list[str]) -> DomainError:
        if failures:
            return DomainError(f"no FX provider could answer {what}; failed: {'; '.join(failures)}",
                               code="PLUGIN_FAILED", details={"failures": failures})
        return FxUnavailable(f"no FX provider has {what}")

    # Spot.
    def _single(self, base: str, quote: str, at: datetime, failures: list[str]) -> Spot | None:
        for invert in (False, True):
            asked = (quote, base) if invert else (base, quote)
            for index in range(len(self.providers)):
                found = self._ask(index, lambda p, asked=asked: p.rate(*asked, at),  # type: ignore[misc]
                                  failures, lambda r, asked=asked: _is_rate(r, *asked))  # type: ignore[misc]
                if found is None:
                    continue
                rate = significant(Decimal(1) / found.rate) if invert else found.rate
                return Spot(base, quote, rate, found.at, found.source or self.names()[index], index)
        return None

    def spot(self, base: str, quote: str, at: datetime) -> Spot:
        if base == quote:
            return Spot(base, quote, Decimal(1), at, "identity", None)
        failures: list[str] = []
        found = self._single(base, quote, at, failures)
        if found is None and USD not in (base, quote):
            first = self._single(base, USD, at, failures)
            second = self._single(USD, quote, at, failures) if first is not None else None
            if first is not None and second is not None:
                provider = first.provider if first.provider == second.provider else None
                source = first.source if first.source == second.source else \
                    f"{first.source} x {second.source}"
                found = Spot(base, quote, significant(first.rate * second.rate),
                             min(first.at, second.at), f"{source} via USD", provider)
        if found is None:
            raise self._unavailable(f"a {base}/{quote} rate at {at.isoformat()}", failures)
        return found

    def covers(self, currency: str, at: datetime) -> bool:
        """Whether some provider can value `currency` (against USD, or EUR for USD itself)."""
        other = "EUR" if currency == USD else USD
        try:
            self.spot(currency, other, at)
        except DomainError:
            return False
        return True

    # Interest rates, for covered interest parity.
    def interest_rate(self, currency: str, at: datetime, prefer: int | None = None) -> Decimal:
        """Annual simple rate; the provider that served the spot is asked first, so a forward
        is priced from one source's spot and rates where it can be."""
        def valid(r: Any) -> bool:
            return isinstance(r, Decimal) and r.is_finite() and Decimal(-1) < r < Decimal(1)

        order = list(range(len(self.providers)))
        if prefer is not None:
            order.remove(prefer)
            order.insert(0, prefer)
        failures: list[str] = []
        for index in order:
            found = self._ask(index, lambda p: p.interest_rate(currency, at), failures, valid)
            if found is not None:
                return found
        raise self._unavailable(f"an interest rate for {currency} at {at.isoformat()}", failures)

    # History, for hedge-ratio estimation.
    def history(self, base: str, quote: str, start: datetime, end: datetime, minimum: int
                ) -> tuple[list[FxRate], int]:
        """Fixings of base/quote from the first provider with at least `minimum` of them (direct,
        else inverted), oldest first, and that provider's index."""
        def valid(rows: Any, pair: tuple[str, str]) -> bool:
            return isinstance(rows, Sequence) and all(_is_rate(r, *pair) for r in rows)

        failures: list[str] = []
        for invert in (False, True):
            for index in range(len(self.providers)):
                pair = (quote, base) if invert else (base, quote)
                rows = self._ask(index, lambda p, pair=pair: p.history(*pair, start, end),  # type: ignore[misc]
                                 failures, lambda r, pair=pair: valid(r, pair))  # type: ignore[misc]
                if rows is None:
                    continue
                points = {r.at: r for r in rows if start <= r.at <= end}
                if len(points) < minimum:
                    continue
                ordered = [points[t] for t in sorted(points)]
                if invert:
                    ordered = [FxRate(base, quote, significant(Decimal(1) / r.rate), r.at, r.source)
                               for r in ordered]
                return ordered, index
        if failures:
            raise self._unavailable(f"{base}/{quote} history", failures)
        raise DomainError(f"no FX provider has {minimum} {base}/{quote} fixings between "
                          f"{start.isoformat()} and {end.isoformat()}; lengthen lookbackDays",
                          code="FX_HISTORY_INSUFFICIENT")
