"""The public SDK: markers, the normalised data models plugins return, the protocols of the
providers they offer, and the context they receive. Prices and quantities are Decimal;
timestamps are timezone-aware UTC."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from time import perf_counter_ns
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pluggy

PROJECT = "alphintra"
hookimpl = pluggy.HookimplMarker(PROJECT)


# Normalised market data: one model whatever the source.
@dataclass(frozen=True)
class Instrument:
    symbol: str
    mic: str  # ISO 10383 venue code
    currency: str  # ISO 4217
    name: str = ""
    isin: str | None = None  # ISO 6166 where one exists
    asset_class: str = "EQUITY"
    lot_size: int = 1
    tick_size: Decimal = Decimal("0.01")

    @property
    def key(self) -> str:
        return f"{self.symbol}.{self.mic}"


@dataclass(frozen=True)
class Bar:
    symbol: str
    mic: str
    start: datetime  # UTC, start of the interval
    interval: str  # "1m", "5m", "15m", "1h", "1d"
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    session: str = "REGULAR"


@dataclass(frozen=True)
class Quote:
    symbol: str
    mic: str
    at: datetime
    bid: Decimal
    ask: Decimal
    bid_size: Decimal
    ask_size: Decimal


@dataclass(frozen=True)
class Trade:
    symbol: str
    mic: str
    at: datetime
    price: Decimal
    quantity: Decimal


@dataclass(frozen=True)
class FxRate:
    base: str
    quote: str
    rate: Decimal  # units of quote per one unit of base
    at: datetime
    source: str = ""


# What the gateway tells plugins about venues (implemented by the gateway, read-only here).
@dataclass(frozen=True)
class VenueInfo:
    mic: str
    name: str
    region: str
    country: str
    currency: str
    timezone: str
    always_open: bool = False


@dataclass(frozen=True)
class SessionWindow:
    """One trading session of a venue, in UTC; a lunch break splits a day into two windows."""

    mic: str
    opens_at: datetime
    closes_at: datetime


@runtime_checkable
class VenueDirectory(Protocol):
    def venues(self) -> Sequence[VenueInfo]: ...
    def venue(self, mic: str) -> VenueInfo: ...
    def is_open(self, mic: str, at: datetime) -> bool: ...
    def sessions(self, mic: str, start: datetime, end: datetime) -> Sequence[SessionWindow]: ...
    def lot_size(self, mic: str, price: Decimal) -> Decimal:
        """The venue's lot (quantities are multiples of it) for an order at `price`."""
        ...
    def tick_size(self, mic: str, price: Decimal) -> Decimal:
        """The venue's tick (prices are multiples of it) at `price`."""
        ...


# Providers a plugin offers through its hooks.
@runtime_checkable
class MarketDataSource(Protocol):
    """A source of instruments, bars and quotes. Its "1d" and "1m" bars also feed the market
    state compliance sees: the previous close, the last price and the day's low (a source
    without one of those intervals leaves those figures unknown)."""

    name: str

    def instruments(self) -> Sequence[Instrument]: ...
    def bars(self, instrument: Instrument, start: datetime, end: datetime,
             interval: str) -> Sequence[Bar]: ...
    def quote(self, instrument: Instrument, at: datetime) -> Quote | None: ...


@runtime_checkable
class FxRateProvider(Protocol):
    name: str

    def rate(self, base: str, quote: str, at: datetime) -> FxRate | None: ...
    def history(self, base: str, quote: str, start: datetime, end: datetime) -> Sequence[FxRate]: ...
    def interest_rate(self, currency: str, at: datetime) -> Decimal | None:
        """Annualised simple rate (e.g. Decimal("0.045")) for forward pricing, or None."""
        ...


@dataclass(frozen=True)
class PluginContext:
    """What a plugin receives: its own configuration, a logger, and the capabilities its
    manifest declared (only those)."""

    plugin_id: str
    config: Mapping[str, Any] = field(default_factory=dict)
    venues: VenueDirectory | None = None
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("alphintra.plugin"))
    # Installed plugins (issue 5): the tenant it runs for (None for built-ins, which serve
    # every tenant), its version, and the capabilities its manifest declared. Secrets in
    # `config` are decrypted only into this object; nothing else the gateway holds has them.
    tenant_id: str | None = None
    version: str = ""
    capabilities: frozenset[str] = frozenset()

    def has(self, capability: str) -> bool:
        return capability in self.capabilities

    def require(self, capability: str) -> None:
        """Raise CapabilityNotDeclared unless the manifest declared `capability`."""
        if capability not in self.capabilities:
            raise CapabilityNotDeclared(f"{self.plugin_id} did not declare {capability!r}")


class CapabilityNotDeclared(PermissionError):
    """A plugin used a capability its manifest did not declare."""


# Portfolio optimisation: the problem every optimiser plugin solves, and the answer it gives.
# The objective and feasibility are defined here, once, so plugins and the gateway agree on them.

class OptimiserRefused(Exception):
    """The optimiser cannot take this problem (more assets or qubits than it handles, an option
    it does not support). The message is shown to the client, so it must carry no secrets."""


class OptimiserTimedOut(Exception):
    """The optimiser could not give an answer it stands behind before its deadline."""


class NoFeasiblePortfolio(Exception):
    """No subset of `budget` assets satisfies the sector caps and weight bounds."""


@dataclass(frozen=True)
class SectorCap:
    """At most `max_assets` chosen assets and at most `max_weight` of the capital in a sector;
    None leaves that side uncapped."""

    max_assets: int | None = None
    max_weight: float | None = None


@dataclass(frozen=True, eq=False)  # eq=False: numpy fields; cached_property needs __dict__
class OptimisationProblem:
    """Choose exactly `budget` (k) of the n assets.

    Arrays are numpy float64 (any sequence of floats is converted, copied and made read-only
    on construction): `mu` (n,) annualised expected returns, `sigma` (n, n) their annualised
    covariance (symmetric), `min_weight`/`max_weight` (n,) per-asset weight bounds of a
    chosen asset (default 0 and 1; an unchosen asset has weight 0). `sector_of` maps an asset
    name to its sector (an asset in none is uncapped); `sector_caps` maps a sector to its cap.

    Objective of a 0/1 selection x (`objective`): the equal-weight portfolio w = x/k scored
    per unit of capital, f(x) = q·wᵀΣw - μᵀw = (q/k²)·xᵀΣx - (1/k)·μᵀx, q = `risk_aversion`.
    That is the issue's q·xᵀΣx - μᵀx with risk aversion q/k, scaled by 1/k, so it is on the
    same scale as the continuous step's q·wᵀΣw - μᵀw for the final weights.

    Feasible (`feasible`): exactly k ones; each sector's chosen count within its `max_assets`;
    and weights exist with min ≤ w ≤ max on the chosen assets, Σw = 1 and each sector's sum
    within its `max_weight`. Sectors are disjoint, so the last is exact interval arithmetic:
    each sector's total can be anything in [Σmin, min(cap, Σmax)] (empty when Σmin > cap),
    and Σw = 1 is reachable iff 1 lies in the sum of those intervals.

    `seed` makes randomised optimisers reproducible; `options` carries optimiser-specific
    hints (the built-in QAOA backends read `layers`, `shots`, `maxiter`, `cvar_alpha` and
    `mixer_graph`, annealing `chains` and `sweeps`); unknown keys are ignored.
    """

    assets: tuple[str, ...]
    mu: Any
    sigma: Any
    budget: int
    risk_aversion: float = 0.5
    min_weight: Any = None
    max_weight: Any = None
    sector_of: Mapping[str, str] = field(default_factory=dict)
    sector_caps: Mapping[str, SectorCap] = field(default_factory=dict)
    seed: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.assets)

        def array(value: Any, shape: tuple[int, ...], default: float) -> np.ndarray:
            out = np.full(shape, default) if value is None else np.array(value, dtype=np.float64)
            if out.shape != shape or not np.all(np.isfinite(out)):
                raise ValueError(f"expected finite values of shape {shape}, got {out.shape}")
            out.setflags(write=False)
            return out

        object.__setattr__(self, "assets", tuple(self.assets))
        object.__setattr__(self, "mu", array(self.mu, (n,), 0.0))
        object.__setattr__(self, "sigma", array(self.sigma, (n, n), 0.0))
        object.__setattr__(self, "min_weight", array(self.min_weight, (n,), 0.0))
        object.__setattr__(self, "max_weight", array(self.max_weight, (n,), 1.0))
        if not np.allclose(self.sigma, self.sigma.T, rtol=1e-9, atol=1e-12):
            raise ValueError("sigma must be symmetric")
        if not 1 <= self.budget <= n:
            raise ValueError(f"budget must be from 1 to {n}")
        if np.any(self.min_weight < 0) or np.any(self.min_weight > self.max_weight):
            raise ValueError("weight bounds need 0 <= min <= max")

    @property
    def n(self) -> int:
        return len(self.assets)

    def objective(self, x: Any) -> Any:
        """f of one selection (n,) or of each row of a batch (m, n) of 0/1 values."""
        x = np.asarray(x, dtype=np.float64)
        k = self.budget
        quad = ((x @ self.sigma) * x).sum(axis=-1)
        return self.risk_aversion * quad / k**2 - (x @ self.mu) / k

    @functools.cached_property
    def _sector_matrix(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(membership (n, S), count caps (S,), weight caps (S,)); inf where uncapped. Cached:
        annealing asks for violations thousands of times."""
        names = sorted({s for s in self.sector_of.values()})
        member = np.zeros((self.n, len(names)))
        index = {a: i for i, a in enumerate(self.assets)}
        for asset, sector in self.sector_of.items():
            if asset in index:
                member[index[asset], names.index(sector)] = 1.0
        caps = [self.sector_caps.get(s, SectorCap()) for s in names]
        counts = np.array([np.inf if c.max_assets is None else c.max_assets for c in caps])
        weights = np.array([np.inf if c.max_weight is None else c.max_weight for c in caps])
        return member, counts, weights

    def violation(self, x: Any) -> Any:
        """How far one selection (n,) or each row of a batch (m, n) is from feasible: 0 when
        feasible, else a positive sum of the budget miss, sector counts over their caps, and
        the gaps that make Sum w = 1 unreachable within the bounds and weight caps."""
        x = np.asarray(x, dtype=np.float64)
        single = x.ndim == 1
        x = np.atleast_2d(x)
        member, count_caps, weight_caps = self._sector_matrix
        counts = x @ member
        low_s = x @ (member * self.min_weight[:, None])
        high_s = np.minimum(x @ (member * self.max_weight[:, None]), weight_caps)
        free = 1.0 - member.sum(axis=1)  # assets in no sector
        low = x @ self.min_weight
        high = high_s.sum(axis=1) + x @ (self.max_weight * free)
        out = (np.abs(x.sum(axis=1) - self.budget)
               + np.maximum(counts - count_caps, 0.0).sum(axis=1)
               + np.maximum(low_s - weight_caps, 0.0).sum(axis=1)
               + np.maximum(low - 1.0, 0.0) + np.maximum(1.0 - high, 0.0))
        return float(out[0]) if single else out

    def feasible(self, x: Any, tol: float = 1e-9) -> Any:
        """Whether one selection (n,) or each row of a batch (m, n) is feasible."""
        ok = np.asarray(self.violation(x)) <= tol
        return bool(ok) if ok.ndim == 0 else ok

    def subset(self, indices: Sequence[int]) -> OptimisationProblem:
        """The same problem on the assets at `indices`, all of them to be held."""
        idx = list(indices)
        names = tuple(self.assets[i] for i in idx)
        return OptimisationProblem(
            assets=names, mu=self.mu[idx], sigma=self.sigma[np.ix_(idx, idx)], budget=len(idx),
            risk_aversion=self.risk_aversion, min_weight=self.min_weight[idx],
            max_weight=self.max_weight[idx],
            sector_of={a: s for a, s in self.sector_of.items() if a in names},
            sector_caps=self.sector_caps, seed=self.seed, options=self.options)

    @staticmethod
    def bits(x: Any) -> str:
        """A selection as text: character i is '1' when asset i is chosen (asset order, not
        qiskit's little-endian qubit order)."""
        return "".join("1" if v > 0.5 else "0" for v in np.asarray(x).ravel())

    @staticmethod
    def unbits(text: str) -> np.ndarray:
        return np.array([1.0 if c == "1" else 0.0 for c in text])


@dataclass(frozen=True)
class OptimisationAnswer:
    """What an optimiser found. `selected` is the chosen subset as `OptimisationProblem.bits`;
    `weights` has one entry per asset (a subset selector answers equal weights 1/k; the
    continuous optimiser its own); `objective` is the optimiser's own figure (the gateway
    recomputes f from `selected` rather than trusting it); `feasible` whether `selected`
    satisfies `OptimisationProblem.feasible`.

    Quantum optimisers also give `probability` (what the final circuit puts on `selected`),
    `distribution` (bitstring → probability, from the simulator's state where available, else
    sampled frequencies; tiny entries may be left out), `qubits`, `depth` (after transpiling to
    the backend's basis) and `shots`. `iterations` counts the optimiser's steps (circuit
    evaluations for QAOA, sweeps for annealing, subsets for enumeration). `details` holds
    optimiser-specific figures (e.g. the exact enumeration's worst feasible objective)."""

    optimiser: str
    selected: str
    weights: tuple[float, ...]
    objective: float
    feasible: bool
    runtime_s: float
    iterations: int = 0
    probability: float | None = None
    distribution: Mapping[str, float] | None = None
    qubits: int | None = None
    depth: int | None = None
    shots: int | None = None
    notes: tuple[str, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class PortfolioOptimiser(Protocol):
    """A subset selector for `OptimisationProblem`. `kind` is "quantum" or "classical";
    `max_assets` the largest universe it takes and `max_qubits` its qubit cap (None when
    classical; the built-in formulations use one qubit per asset). `solve` must return by
    about `deadline_s` seconds (or raise OptimiserTimedOut) and may be called from several
    threads at once: keep no per-call state on the object."""

    name: str
    kind: str
    max_assets: int
    max_qubits: int | None

    def solve(self, problem: OptimisationProblem, deadline_s: float) -> OptimisationAnswer: ...


# Orders and execution (FIX semantics)
# What an exchange-connector plugin receives (OrderRequest) and answers (ExecutionReport,
# FIX 35=8), and the connector protocol itself. Values are FIX's names; `.fix` gives the tag
# value (Side 54, OrdType 40, TimeInForce 59, ExecType 150, OrdStatus 39) for FIX sessions and
# regulatory reports. Prices and quantities are Decimal, instants timezone-aware UTC.

class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"
    SELL_SHORT = "SELL_SHORT"

    @property
    def fix(self) -> str:
        return {"BUY": "1", "SELL": "2", "SELL_SHORT": "5"}[self.value]

    @property
    def is_buy(self) -> bool:
        return self is Side.BUY


class OrdType(StrEnum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"
    STOP = "STOP"  # a market order once the last trade reaches the stop price
    STOP_LIMIT = "STOP_LIMIT"  # a limit order once the last trade reaches the stop price

    @property
    def fix(self) -> str:
        return {"MARKET": "1", "LIMIT": "2", "STOP": "3", "STOP_LIMIT": "4"}[self.value]


class TimeInForce(StrEnum):
    DAY = "DAY"  # until the end of the venue's trading day
    GTC = "GTC"  # until cancelled
    IOC = "IOC"  # fill what can be filled at once, cancel the rest
    FOK = "FOK"  # fill all at once or nothing
    GTD = "GTD"  # until OrderRequest.expire_at

    @property
    def fix(self) -> str:
        return {"DAY": "0", "GTC": "1", "IOC": "3", "FOK": "4", "GTD": "6"}[self.value]


class ExecType(StrEnum):
    NEW = "NEW"
    TRADE = "TRADE"
    CANCELED = "CANCELED"
    REPLACED = "REPLACED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"
    PENDING_NEW = "PENDING_NEW"

    @property
    def fix(self) -> str:
        return {"NEW": "0", "TRADE": "F", "CANCELED": "4", "REPLACED": "5", "REJECTED": "8",
                "EXPIRED": "C", "PENDING_NEW": "A"}[self.value]


class OrdStatus(StrEnum):
    NEW = "NEW"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"
    PENDING_NEW = "PENDING_NEW"

    @property
    def fix(self) -> str:
        return {"NEW": "0", "PARTIALLY_FILLED": "1", "FILLED": "2", "CANCELED": "4",
                "REJECTED": "8", "EXPIRED": "C", "PENDING_NEW": "A"}[self.value]

    @property
    def is_terminal(self) -> bool:
        return self in (OrdStatus.FILLED, OrdStatus.CANCELED, OrdStatus.REJECTED,
                        OrdStatus.EXPIRED)


@dataclass(frozen=True)
class OrderRequest:
    """A new order as a connector receives it (FIX NewOrderSingle, 35=D).

    `client_order_id` (ClOrdID) must be unique per connector: the gateway sends its own
    globally unique order id, not the tenant's. `mic` names the venue; "" or "SMART" asks the
    gateway's router to choose (connectors never see those). `limit_price` is required for
    LIMIT and STOP_LIMIT, `stop_price` for STOP and STOP_LIMIT, `expire_at` for GTD."""

    client_order_id: str
    account: str
    symbol: str
    mic: str
    side: Side
    ord_type: OrdType
    time_in_force: TimeInForce
    quantity: Decimal
    limit_price: Decimal | None
    stop_price: Decimal | None
    currency: str
    expire_at: datetime | None
    submitted_at: datetime


@dataclass(frozen=True)
class ExecutionReport:
    """One event of one order (FIX ExecutionReport, 35=8).

    `exec_type` says what happened now, `ord_status` where the order stands after it. On a
    TRADE, `last_qty`/`last_px` are this fill and `fee` its fee (a negative fee is a rebate);
    they are zero otherwise. `cum_qty` + `leaves_qty` is the order quantity while the order
    lives; `leaves_qty` is zero once it is done. `avg_px` is the volume-weighted price of all
    fills so far (zero before the first). `reject_code` is a stable code: why an order was
    rejected, or why the venue itself cancelled or expired it (IOC remainder, self-trade
    prevention, end of day). A REJECTED report whose `ord_status` is not REJECTED refuses a
    cancel or replace request and leaves the order as it was (FIX's OrderCancelReject, 35=9).
    `exec_id` is unique per report (ExecID, 17); `match_id` is shared by the two sides of one
    trade (TrdMatchID, 880); `liquidity` is "ADDED" for the resting side and "REMOVED" for the
    aggressor (LastLiquidityInd, 851)."""

    exec_type: ExecType
    ord_status: OrdStatus
    client_order_id: str
    venue_order_id: str
    last_qty: Decimal
    last_px: Decimal
    cum_qty: Decimal
    leaves_qty: Decimal
    avg_px: Decimal
    fee: Decimal
    text: str
    reject_code: str | None
    at: datetime
    exec_id: str = ""
    mic: str = ""
    symbol: str = ""
    side: Side | None = None
    match_id: str | None = None
    liquidity: str | None = None


# Market impact: the one formula the simulated venues and the backtester share (issue 17).
DEFAULT_PARTICIPATION_RATE = Decimal("0.1")  # of the volume of a bar (backtester) or window (venue)
DEFAULT_IMPACT_COEFFICIENT = Decimal(1)  # Y of the square-root law


def square_root_impact(quantity: Decimal, volume: Decimal, volatility: Decimal,
                       coefficient: Decimal = DEFAULT_IMPACT_COEFFICIENT) -> Decimal:
    """The square-root law of market impact, Y·sigma·sqrt(q / V), as a fraction of the price:
    what a fill of `quantity` pays on average beyond the touch, and how far it moves the mid.
    `volatility` (sigma) and `volume` (V) are over one and the same horizon (a bar, a day):
    sigma scales with sqrt(T) and V with T, so the figure does not depend on the horizon.
    Zero when there is no volume to measure against."""
    if volume <= 0 or quantity <= 0 or volatility <= 0:
        return Decimal(0)
    return coefficient * volatility * (quantity / volume).sqrt()


@dataclass(frozen=True)
class VenueQuote:
    """What a venue expects an order to achieve now, for smart order routing.

    `expected_price` is the volume-weighted price of the `available_qty` (at most the order's
    quantity) the venue could execute at once within the order's limit, or None when nothing
    is executable now (closed, no liquidity, a passive limit). `fee_bps` is the fee, in basis
    points of notional, the order would pay for taking liquidity there. `reject_code` is set
    when the venue would reject the order outright (lot or tick size, unknown symbol)."""

    mic: str
    expected_price: Decimal | None
    available_qty: Decimal
    fee_bps: Decimal
    reject_code: str | None = None


@runtime_checkable
class ExchangeConnector(Protocol):
    """A way to venues: a simulated one, or a FIX/REST session to a real one.

    Every method returns the execution reports it caused, in order, for any order they
    concern: a new order's fills also fill resting orders, and those reports come back too.
    `cancel` and `replace` act at the connector's current time (the latest instant it has seen
    through `submit` or `on_clock`). Methods are called by one thread at a time per connector."""

    name: str

    def mics(self) -> list[str]: ...
    def submit(self, order: OrderRequest) -> list[ExecutionReport]: ...
    def cancel(self, client_order_id: str, mic: str) -> ExecutionReport: ...
    def replace(self, client_order_id: str, mic: str, quantity: Decimal,
                limit_price: Decimal | None) -> list[ExecutionReport]: ...
    def quote_for(self, order: OrderRequest) -> VenueQuote | None:
        """None when the connector does not trade `order.symbol` on `order.mic`."""
        ...
    def on_clock(self, at: datetime) -> list[ExecutionReport]:
        """Time passes to `at`: DAY and GTD orders expire, queued orders reach the open, and
        a simulated venue's market moves (possibly filling resting orders)."""
        ...


@dataclass(frozen=True)
class VenueDefinition:
    """A venue a connector brings that the gateway does not know (an installed connector's
    optional `venues()` answers these): its facts, the order increment and tick the gateway's
    compliance checks use there, and its trading sessions as local "HH:MM" windows on
    weekdays (`always_open` in `info` for 24/7). A MIC the gateway or another installed plugin
    already has is refused at install (PLUGIN_VENUE_TAKEN)."""

    info: VenueInfo
    lot_size: Decimal = Decimal(1)
    tick_size: Decimal = Decimal("0.01")
    sessions: tuple[tuple[str, str], ...] = ()
    regulators: tuple[str, ...] = ()


# Pre-trade compliance
# What a rule pack sees of one order and of everything the order is checked against. The
# gateway assembles a CheckContext from state it already holds; no rule reads a database or the
# clock, so a check is a pure function of its context: fast, and replayable from the record.
# Amounts of the account (credit, equity, limits on value) are in the account's currency;
# prices are in the instrument's currency; `CheckContext.fx_rate` converts between them.

@dataclass(frozen=True, slots=True)
class ClientProfile:
    """Who the order is for. `client_type` is INDIVIDUAL or LEGAL_ENTITY; `domicile` an ISO
    3166-1 alpha-2 country; `lei` the ISO 17442 Legal Entity Identifier, if the client has one.
    `assessments` names the suitability or appropriateness assessments the client has passed
    (e.g. "APPROPRIATENESS" under MiFID II, "SG_CKA" for MAS's Customer Knowledge Assessment)."""

    account: str
    client_type: str
    domicile: str
    lei: str | None = None
    assessments: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class AccountState:
    """The account at the instant of the check. Maps are keyed by `CheckContext.instrument_key`
    (the ISIN, or SYMBOL.MIC for an instrument without one).

    `positions`: signed quantity held (negative = short). `locates`: shares located or borrowed
    for short sales and not yet used. `recent_orders`: instants of the account's recent order
    messages (new, amend, cancel), ascending, for the message throttle. `recent_fingerprints`:
    `order_fingerprint(order)` → when an identical order was last accepted, for the duplicate
    guard. `credit_limit`/`credit_used`/`equity` are in `currency`."""

    account: str
    currency: str
    credit_limit: Decimal
    credit_used: Decimal = Decimal(0)
    equity: Decimal = Decimal(0)
    positions: Mapping[str, Decimal] = field(default_factory=dict)
    locates: Mapping[str, Decimal] = field(default_factory=dict)
    recent_orders: Sequence[datetime] = ()
    recent_fingerprints: Mapping[tuple[Any, ...], datetime] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MarketState:
    """The instrument on the order's venue, as the gateway last saw it. A venue-wide halt or
    REDUCING state is set here for every instrument of the venue.

    `reference_price` (last trade or mid) anchors the price collar and values market orders;
    `previous_close` is the base of daily price limits (Tokyo); `best_bid`/`best_ask`/
    `last_price` feed short-sale price tests. `reducing`: only orders that shrink a position.
    `short_sale_restricted`: the venue's short-sale price test is in force (SEC Rule 201's
    circuit breaker, the TSE's 10% trigger). `shortable`: the instrument may be sold short at
    all there (HKEX's designated securities).

    The gateway fills it from its market-state feed (gateway/marketdata/state.py): the quote,
    the data source's daily bars (previous close) and one-minute bars (last price, the day's
    low for the 10 % short-sale triggers), the platform's halts and short-sale lists."""

    reference_price: Decimal | None
    previous_close: Decimal | None = None
    best_bid: Decimal | None = None
    best_ask: Decimal | None = None
    last_price: Decimal | None = None
    halted: bool = False
    reducing: bool = False
    short_sale_restricted: bool = False
    shortable: bool = True


@dataclass(frozen=True, slots=True)
class TenantControls:
    """The tenant's own risk controls; None leaves a limit off. Percentages are percent
    (Decimal("5") is 5 %). `restricted` holds ISINs or SYMBOL.MIC keys. `collar_pct_by_mic`
    overrides `collar_pct` per venue. `max_position` bounds the absolute quantity held per
    instrument; `max_concentration_pct` its value against the account's equity."""

    tenant_id: str
    kill_switch: bool = False
    restricted: frozenset[str] = frozenset()
    max_order_value: Decimal | None = None
    max_order_quantity: Decimal | None = None
    collar_pct: Decimal = Decimal(10)
    collar_pct_by_mic: Mapping[str, Decimal] = field(default_factory=dict)
    max_position: Decimal | None = None
    max_concentration_pct: Decimal | None = None
    throttle_max_orders: int | None = None
    throttle_window: timedelta = timedelta(seconds=1)
    duplicate_window: timedelta | None = timedelta(seconds=5)


@dataclass(frozen=True, slots=True)
class InstrumentFacts:
    """What compliance needs of the instrument. `liquidity_band` is the MiFID II RTS 11
    band by average daily number of trades, 1 (< 10) to 6 (>= 9,000); None when unknown.
    `complex_product`: complex under MiFID II Art. 25(4), a Specified Investment Product
    under MAS Notice SFA 04-N12."""

    isin: str | None
    currency: str
    asset_class: str = "EQUITY"
    liquidity_band: int | None = None
    complex_product: bool = False


@dataclass(frozen=True, slots=True)
class VenueFacts:
    """The order's venue. `tick_size` is the tick at the order's price; `lot_size` the
    quantity increment an order must be a multiple of there (1 where odd lots trade)."""

    mic: str
    region: str
    country: str
    regulators: tuple[str, ...]
    currency: str
    tick_size: Decimal
    lot_size: Decimal


@dataclass(frozen=True, slots=True)
class CheckContext:
    """One order and everything it is checked against. Derived on construction:
    `instrument_key` (ISIN, else SYMBOL.MIC), `price` (limit, else stop, else the reference
    price), `value` (|quantity * price| in the account's currency; None when it cannot be
    known), `position` and `position_after` (signed quantity before and after a full fill).
    `fx_rate` is units of the account's currency per unit of the instrument's; None means the
    two are the same."""

    order: OrderRequest
    instrument: InstrumentFacts
    venue: VenueFacts
    client: ClientProfile
    account: AccountState
    market: MarketState
    controls: TenantControls
    now: datetime
    fx_rate: Decimal | None = None
    instrument_key: str = field(init=False)
    price: Decimal | None = field(init=False)
    value: Decimal | None = field(init=False)
    position: Decimal = field(init=False)
    position_after: Decimal = field(init=False)

    def __post_init__(self) -> None:
        order = self.order
        key = self.instrument.isin or f"{order.symbol}.{order.mic}"
        price = order.limit_price
        if price is None:
            price = order.stop_price if order.stop_price is not None else self.market.reference_price
        position = self.account.positions.get(key, _ZERO)
        value = None
        try:
            if price is not None:
                if self.fx_rate is not None:
                    value = abs(order.quantity * price) * self.fx_rate
                elif self.instrument.currency == self.account.currency:
                    value = abs(order.quantity * price)
            after = (position + order.quantity if order.side == Side.BUY
                     else position - order.quantity)
        except (TypeError, ArithmeticError):
            # A malformed order (a float, a signalling NaN) still gets a context, so that the
            # gateway can deny it with a code instead of failing to build one.
            value, after = None, position
        setter = object.__setattr__  # frozen: derived fields are set once, here
        setter(self, "instrument_key", key)
        setter(self, "price", price)
        setter(self, "value", value)
        setter(self, "position", position)
        setter(self, "position_after", after)


_ZERO = Decimal(0)


def order_fingerprint(order: OrderRequest) -> tuple[Any, ...]:
    """What makes two orders the same for the duplicate guard: everything but their ids and
    instants. The gateway records it for each accepted order (AccountState.recent_fingerprints)."""
    return (order.account, order.symbol, order.mic, str(order.side), str(order.ord_type),
            order.quantity, order.limit_price, order.stop_price)


@dataclass(frozen=True, slots=True)
class Violation:
    """What a rule found: a stable `code` (COMPLIANCE_…), a message for people, and the
    `limit` and the `value` that tripped it (Decimals where they are numbers)."""

    code: str
    message: str
    limit: Decimal | str | None = None
    value: Decimal | str | None = None


@dataclass(frozen=True, slots=True)
class Denial:
    """A violation as recorded: which `rule` of which `jurisdiction`'s pack found it."""

    code: str
    rule: str
    jurisdiction: str
    message: str
    limit: Decimal | str | None = None
    value: Decimal | str | None = None


@dataclass(frozen=True, slots=True)
class ComplianceRule:
    """A named check: `check(ctx)` answers a Violation or None. `venue_only` rules belong to a
    market's own rulebook (tick regime, price limits, short-sale price tests) and run only
    when the order goes to a venue in the pack's countries, not for its clients abroad."""

    name: str
    check: Callable[[CheckContext], Violation | None]
    venue_only: bool = False


@runtime_checkable
class RulePack(Protocol):
    """One jurisdiction's pre-trade rules. `jurisdiction` is its code (US, EU, UK, JP, …),
    `regulators` whose rules it carries. `applies(venue_country, client_domicile)` must be a
    pure function of its arguments (the gateway caches it); `check(ctx)` answers every
    denial it finds (an empty list passes) and raises only when it is broken."""

    jurisdiction: str
    regulators: tuple[str, ...]

    def applies(self, venue_country: str, client_domicile: str) -> bool: ...
    def check(self, ctx: CheckContext) -> list[Denial]: ...


class RuleSetPack:
    """A RulePack made of ComplianceRules, run in order, all of them (a denial does not stop
    the others, so the record names every reason). It applies when the venue's country or the
    client's domicile is in `countries`. `check_timed` also appends (jurisdiction, rule,
    nanoseconds) per rule to `timings`; the gateway uses it when a pack has it."""

    def __init__(self, jurisdiction: str, regulators: Sequence[str], countries: Iterable[str],
                 rules: Sequence[ComplianceRule]) -> None:
        self.jurisdiction = jurisdiction
        self.regulators = tuple(regulators)
        self.countries = frozenset(countries)
        self.rules = tuple(rules)
        names = [rule.name for rule in self.rules]
        if len(set(names)) != len(names):
            raise ValueError(f"{jurisdiction}: rule names must be unique, got {names}")

    def __repr__(self) -> str:
        return f"RuleSetPack({self.jurisdiction}, {len(self.rules)} rules)"

    def applies(self, venue_country: str, client_domicile: str) -> bool:
        return venue_country in self.countries or client_domicile in self.countries

    def check(self, ctx: CheckContext) -> list[Denial]:
        return self.check_timed(ctx, None)

    def check_timed(self, ctx: CheckContext, timings: list[tuple[str, str, int]] | None
                    ) -> list[Denial]:
        jurisdiction = self.jurisdiction
        at_venue = ctx.venue.country in self.countries
        denials: list[Denial] = []
        clock = perf_counter_ns
        start = clock()
        for rule in self.rules:
            if rule.venue_only and not at_venue:
                continue
            found = rule.check(ctx)
            if found is not None:
                denials.append(Denial(found.code, rule.name, jurisdiction, found.message,
                                      found.limit, found.value))
            if timings is not None:
                end = clock()
                timings.append((jurisdiction, rule.name, end - start))
                start = end
        return denials


# Language models (issue 6): structured answers through a tool whose input schema the gateway
# gives, and news items from news sources. A provider never sees the gateway's internals: it is
# handed the schema, the conversation and `facts` (the same facts the prompt states, as data,
# for providers that are not language models).

class LLMError(Exception):
    """A provider could not answer. `code` is stable: LLM_TIMEOUT, LLM_RATE_LIMITED,
    LLM_UNAVAILABLE (LLM_REFUSED is an answer, `StructuredAnswer.refusal`, not an error)."""

    code = "LLM_UNAVAILABLE"

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s


class LLMTimeout(LLMError):
    code = "LLM_TIMEOUT"


class LLMRateLimited(LLMError):
    code = "LLM_RATE_LIMITED"


class LLMUnavailable(LLMError):
    code = "LLM_UNAVAILABLE"


@dataclass(frozen=True)
class ToolSpec:
    """The one tool the model must call; its input is the structured answer."""

    name: str
    description: str
    input_schema: Mapping[str, Any]  # JSON Schema (draft 2020-12) of the answer


@dataclass(frozen=True)
class LLMTurn:
    """One turn of a conversation. An assistant turn may carry the tool input it gave
    (`tool_input`, `tool_use_id`); the next user turn answers that call with `text` as the
    tool's result (`tool_use_id` set, `is_error` when the input was rejected)."""

    role: str  # "user" | "assistant"
    text: str = ""
    tool_input: Mapping[str, Any] | None = None
    tool_use_id: str | None = None
    is_error: bool = False


@dataclass(frozen=True)
class LLMUsage:
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True)
class StructuredAnswer:
    """A provider's answer: the tool input, or the refusal text when the model declined
    (stop_reason "refusal", or text without the tool call)."""

    provider: str
    model: str
    is_llm: bool  # False for rule-based providers (the offline one): results say so
    tool_input: Mapping[str, Any] | None
    refusal: str | None
    stop_reason: str | None
    usage: LLMUsage = field(default_factory=LLMUsage)
    response_id: str | None = None
    tool_use_id: str | None = None


@runtime_checkable
class LLMProvider(Protocol):
    name: str  # unique across plugins
    models: tuple[str, ...]  # the models it answers with; the first is its default
    is_llm: bool

    def complete_structured(self, *, model: str, system: str, messages: Sequence[LLMTurn],
                            tool: ToolSpec, max_tokens: int, facts: Mapping[str, Any]
                            ) -> StructuredAnswer: ...


@dataclass(frozen=True)
class NewsItem:
    id: str  # stable within its source
    published_at: datetime  # UTC
    headline: str
    text: str
    tickers: tuple[str, ...]  # instrument keys, SYMBOL.MIC
    source: str = ""


@runtime_checkable
class NewsSource(Protocol):
    name: str

    def items(self, *, tickers: Sequence[str] | None, start: datetime | None,
              end: datetime | None, text: str | None) -> list[NewsItem]: ...


# Marketplace hooks (issue 5): schema extensions, white-label branding, feature flags.

@dataclass(frozen=True)
class SchemaExtension:
    """GraphQL a plugin adds to its tenants' schemas. `query`, `mutation` and `subscription`
    are strawberry types (`@strawberry.type`) whose fields join the root types; `types` are
    further strawberry types the schema must know that no field reaches (interfaces'
    implementations). Field and type names must not collide with the core schema or another
    installed plugin (the install is refused with PLUGIN_SCHEMA_CONFLICT).

    The classes must be module-level and not depend on the tenant's configuration: tenants
    with the same installed set share one composed schema. A resolver reaches its tenant's
    own context with `plugins.sdk.current_context()`."""

    query: type | None = None
    mutation: type | None = None
    subscription: type | None = None
    types: tuple[type, ...] = ()


@dataclass(frozen=True)
class SupportLink:
    """A link the tenant's users are offered for help: `url` https or mailto (others are dropped)."""

    label: str
    url: str


@dataclass(frozen=True)
class Theme:
    """A white-label theme: colours are CSS hex values ("#0a2540"), `logo_url` an https URL,
    `support_links` where the tenant's users get help (https or mailto URLs; optional)."""

    name: str
    product_name: str
    primary_colour: str
    secondary_colour: str
    background_colour: str = "#ffffff"
    text_colour: str = "#111111"
    logo_url: str | None = None
    support_links: tuple[SupportLink, ...] = ()

    def usable_support_links(self, limit: int = 8) -> list[SupportLink]:
        """The links shown: a non-empty label (at most 80 characters) and an https or mailto URL
        (at most 2,000); anything else is dropped, and at most `limit` are kept."""
        links: list[SupportLink] = []
        for link in self.support_links if isinstance(self.support_links, tuple | list) else ():
            if (not isinstance(link, SupportLink) or not isinstance(link.label, str)
                    or not isinstance(link.url, str)):
                continue
            label, url = link.label.strip(), link.url.strip()
            scheme_ok = ((url.startswith("https://") and len(url) > 8)
                         or (url.startswith("mailto:") and len(url) > 7))
            if (0 < len(label) <= 80 and len(url) <= 2000 and scheme_ok
                    and not any(c.isspace() or ord(c) < 32 for c in url)):
                links.append(SupportLink(label, url))
        return links[:limit]


DEFAULT_THEME = Theme(name="alphintra", product_name="Alphintra", primary_colour="#0a2540",
                      secondary_colour="#00d4b0")


_CURRENT_CONTEXT: ContextVar[PluginContext] = ContextVar("alphintra_plugin_context")


def current_context() -> PluginContext:
    """The calling tenant's context of this plugin, inside a schema-extension resolver: its
    configuration (secrets decrypted), logger and declared capabilities. The gateway binds it
    around every call of a plugin's resolver; outside one it raises LookupError."""
    return _CURRENT_CONTEXT.get()


def bind_context(context: PluginContext) -> Token[PluginContext]:
    """For the gateway: make `context` current for the plugin call that follows."""
    return _CURRENT_CONTEXT.set(context)


def unbind_context(token: Token[PluginContext]) -> None:
    _CURRENT_CONTEXT.reset(token)


# DeFi protocols (issue 8): pools on a chain, read through a web3 instance the gateway hands
# over, quoted off-chain in integers (base units) that must equal the contracts' own views.

class DefiQuoteRefused(Exception):
    """A quote a pool cannot give. `code`: "AMOUNT_INVALID" (zero or negative) or
    "INSUFFICIENT_LIQUIDITY" (the pool cannot pay that much out)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class DefiChainView:
    """What a protocol sees of a chain: its id and name, a `web3.Web3` to read through (the
    gateway serialises access where it must), and the pool addresses the gateway knows per
    protocol name (`directory["cpmm"]`: the demo world's, or configured ones). A protocol may
    also list pools from its own `context.config`."""

    chain_id: int
    name: str
    web3: Any
    directory: Mapping[str, Sequence[str]] = field(default_factory=dict)

    def pool_addresses(self, protocol: str, extra: Mapping[str, Sequence[str]] | None = None
                       ) -> list[str]:
        """The directory's pools of `protocol` on this chain, then `extra`'s (a plugin's
        configured pools, keyed by chain id as a string), each once, in that order."""
        configured = (extra or {}).get(str(self.chain_id), ())
        return list(dict.fromkeys([*self.directory.get(protocol, ()), *configured]))


@dataclass(frozen=True)
class DefiPool:
    """One pool and a snapshot of its state. `tokens` are checksummed addresses; `fee` the
    share of the trade kept by the pool (Fraction(3, 1000) for 0.3 %); `state` the protocol's
    own immutable snapshot (reserves, balances, amplification), opaque to the gateway;
    `block` the block the state was read at."""

    protocol: str
    address: str
    tokens: tuple[str, ...]
    fee: Any  # fractions.Fraction
    state: Any
    gas_per_swap: int
    block: int = 0


@dataclass(frozen=True)
class DefiCall:
    """A transaction to send: `to`, ABI-encoded `data`, `value` in wei; `spender` is the
    contract that must be allowed to pull `amount_in` of the input token (None: no approval)."""

    to: str
    data: str
    value: int = 0
    spender: str | None = None


@runtime_checkable
class DefiProtocol(Protocol):
    """A kind of pool (constant product, stable swap, concentrated liquidity ...).

    All amounts are integers in the tokens' base units. `quote` works off the snapshot only
    (no I/O), and must answer exactly what `onchain_quote` (the contract's own view) answers
    for the same state; it raises `DefiQuoteRefused` for an amount the pool cannot take.
    `mid_price` is the marginal price, out per in in base units, before fee (a Fraction), for
    price impact. `swap_call` builds the swap transaction: it must revert on chain when the
    output is under `min_out` or the block time is past `deadline` (unix seconds)."""

    name: str

    def pools(self, chain: DefiChainView) -> list[DefiPool]: ...

    def refresh(self, chain: DefiChainView, pool: DefiPool) -> DefiPool: ...

    def quote(self, pool: DefiPool, token_in: str, token_out: str, amount_in: int) -> int: ...

    def mid_price(self, pool: DefiPool, token_in: str, token_out: str) -> Any: ...

    def onchain_quote(self, chain: DefiChainView, pool: DefiPool, token_in: str, token_out: str,
                      amount_in: int) -> int: ...

    def swap_call(self, chain: DefiChainView, pool: DefiPool, token_in: str, token_out: str,
                  amount_in: int, min_out: int, recipient: str, deadline: int) -> DefiCall: ...


# Network egress (issue 12): a sandboxed plugin has no sockets of its own. It reaches the
# hosts its manifest names (`network:egress:<host>[:port]`) through the gateway's egress proxy,
# which refuses every other host, and private and loopback addresses.

@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        import json

        return json.loads(self.body)


class EgressRefused(PermissionError):
    """The gateway's egress proxy refused the request (host not granted, private address,
    response too large); the message says which."""


_EGRESS: Callable[..., Any] | None = None  # set by the worker (plugins/guest/serve.py)


def http_request(method: str, url: str, *, headers: Mapping[str, str] | None = None,
                 body: bytes | None = None, timeout_s: float = 10.0) -> HttpResponse:
    """An HTTP(S) request through the gateway's egress proxy (sandboxed plugins only; no
    redirects are followed). Raises EgressRefused, or TimeoutError/ConnectionError."""
    if _EGRESS is None:
        raise EgressRefused("egress goes through the gateway's proxy, which serves sandboxed plugins")
    answer = _EGRESS(method=method.upper(), url=url, headers=dict(headers or {}), body=body,
                     timeout_s=float(timeout_s))
    return HttpResponse(status=int(answer["status"]), headers=dict(answer["headers"]),
                        body=bytes(answer["body"]))
