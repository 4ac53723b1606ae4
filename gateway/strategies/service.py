"""StrategyService (`Runtime.strategies`): versioned strategies, approvals, backtests, explanations.

For callers inside the gateway (the LLM synthesis jobs among them), the API is:

    from gateway.strategies.service import Origin
    version = runtime.strategies.create_version(
        tenant_id, document, Origin.llm(model="claude-…", prompt_hash=sha256_hex, note="…"),
        created_by=user_id,            # None for the platform's own work
        strategy_id=None,              # None: a new Strategy named after document["name"];
                                       # else a new version of that (tenant's) strategy
        session=None)                  # a tenant session to join the caller's transaction
                                       # (rows are flushed, not committed); None: own commit
    # -> StrategyVersion (version.id, version.strategy_id, version.version, version.document)
    # Raises StrategyInvalid (STRATEGY_INVALID, .errors = [{path, message}]) before writing
    # anything, STRATEGY_NOT_FOUND for another tenant's or an unknown strategy_id.

    Origin.human() | Origin.llm(model, prompt_hash, note=None) | Origin.offline(note)

    strategy = runtime.strategies.parse(document)      # StrategyInvalid or a dsl.Strategy
    result = runtime.strategies.simulate(strategy, start, end, base_currency="USD",
                                         instruments=None, costs=Costs(), news=None,
                                         progress=None)
    # -> backtest.BacktestResult (metrics, equity_curve, trades, decisions); BACKTEST_NO_DATA
    # when the range holds no bars. Pure: stores nothing. `news` is {instrument key:
    # [(aware datetime, score in [-1, 1]), ...]}, the series `news_sentiment` signals read.
    runtime.strategies.can_trade(version)              # True only once approved

Approving (`approve`) needs casbin object "strategy_approval" (admin, compliance_officer) and
a different user from the version's creator (four eyes); it is recorded on the version and
in the audit trail ("strategy.version_approved") in the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, func, select

from gateway.audit import AuditEntry, AuditTrail
from gateway.auth.policy import AccessPolicy
from gateway.auth.principal import Principal
from gateway.db import Database, utcnow
from gateway.errors import Conflict, DomainError, InvalidInput
from gateway.marketdata import MarketDataService
from gateway.pagination import Page, keyset_page
from gateway.strategies import dsl
from gateway.strategies.backtest import (
    INTERVAL_SPANS,
    MAX_WALL_CLOCK_BARS,
    BacktestResult,
    Costs,
    FxConverter,
    run_backtest,
)
from gateway.strategies.errors import (
    AlreadyApproved,
    ApprovalForbidden,
    BacktestNoData,
    BacktestNotFound,
    BacktestParamsInvalid,
    ExplanationNotFound,
    SelfApproval,
    StrategyNameInvalid,
    StrategyNotFound,
    StrategyVersionNotFound,
)
from gateway.strategies.models import ORIGINS, Backtest, DecisionExplanation, Strategy, StrategyVersion
from gateway.tenancy.independence import independence_problem
from gateway.tenancy.models import Tenant
from plugins.sdk import Bar

APPROVAL_OBJECT = "strategy_approval"
# (tenant id, instrument keys, start, end) -> {key: [(instant, score in [-1, 1]), ...]}
NewsSignals = Callable[
    [str, Sequence[str], datetime, datetime], Mapping[str, Sequence[tuple[datetime, float]]]
]


@dataclass(frozen=True)
class Origin:
    kind: str = "HUMAN"
    model: str | None = None
    prompt_hash: str | None = None
    note: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ORIGINS:
            raise ValueError(f"origin must be one of {ORIGINS}")
        if self.kind == "LLM" and not (self.model and self.prompt_hash):
            raise ValueError("an LLM origin names its model and prompt hash")

    @classmethod
    def human(cls) -> Origin:
        return cls("HUMAN")

    @classmethod
    def llm(cls, model: str, prompt_hash: str, note: str | None = None) -> Origin:
        return cls("LLM", model, prompt_hash, note)

    @classmethod
    def offline(cls, note: str | None = None) -> Origin:
        return cls("OFFLINE", None, None, note)


def can_trade(version: StrategyVersion) -> bool:
    """Human oversight: only an approved version may send orders."""
    return version.approved_at is not None and version.approved_by is not None


class StrategyService:
    def __init__(
        self,
        db: Database,
        market_data: MarketDataService,
        policy: AccessPolicy,
        audit: AuditTrail,
        *,
        fx: FxConverter | None = None,
        max_page_size: int = 100,
        approval_window: timedelta = timedelta(hours=24),
    ) -> None:
        self.db = db
        # An approver made by the version's creator this recently is not independent of it.
        self.approval_window = approval_window
        self.market_data = market_data
        self.policy = policy
        self.audit = audit
        self.fx = fx
        self.max_page_size = max_page_size
        self.news_signals: NewsSignals | None = None

    def use_news(self, source: NewsSignals) -> None:
        """Where backtest jobs read `news_sentiment` series: the news analyser, which is built
        after this service (it depends on it), so the runtime wires it here."""
        self.news_signals = source

    can_trade = staticmethod(can_trade)

    # -- parsing ----------------------------------------------------------------------------
    def _known(self, key: str) -> bool:
        try:
            self.market_data.instrument(key)
        except DomainError:
            return False
        return True

    def parse(self, document: Any) -> dsl.Strategy:
        return dsl.parse_strategy(document, known_instruments=self._known)

    def universe(self, strategy: dsl.Strategy) -> list[str]:
        """The instrument keys a strategy trades: its list, or its screen applied now."""
        if strategy.universe.instruments:
            return [self.market_data.instrument(k).key for k in strategy.universe.instruments]
        screen = strategy.universe.screen
        assert screen is not None
        found = [
            i
            for i in self.market_data.instruments(mic=screen.mic)
            if (screen.asset_class is None or i.asset_class == screen.asset_class)
            and (screen.currency is None or i.currency == screen.currency)
        ]
        return [i.key for i in found[: screen.limit]]

    # -- creating ---------------------------------------------------------------------------
    def create_strategy(
        self,
        principal: Principal,
        name: str | None,
        document: Any,
        *,
        idempotency_key: str | None = None,
        origin: Origin | None = None,
    ) -> tuple[Strategy, StrategyVersion]:
        """A new strategy with its first version (the GraphQL `createStrategy`)."""
        if idempotency_key is not None and not 1 <= len(idempotency_key) <= 128:
            raise InvalidInput("idempotencyKey must be 1 to 128 characters", code="IDEMPOTENCY_KEY_INVALID")
        strategy_doc = self.parse(document)
        name = self._name(name if name is not None else strategy_doc.name)
        with self.db.tenant_session(principal.tenant_id) as session:
            if idempotency_key is not None:
                found = self._replay(session, idempotency_key, name, strategy_doc.document)
                if found is not None:
                    return found
            try:
                row, version = self._insert(
                    session,
                    principal.tenant_id,
                    strategy_doc,
                    origin or Origin.human(),
                    principal.user_id,
                    name=name,
                    idempotency_key=idempotency_key,
                )
                session.commit()
            except IntegrityError:
                session.rollback()  # a concurrent request with the same key won
                found = self._replay(session, idempotency_key or "", name, strategy_doc.document)
                if found is None:
                    raise
                return found
        return row, version

    def create_version(
        self,
        tenant_id: str,
        document: Any,
        origin: Origin,
        created_by: str | None,
        *,
        strategy_id: str | None = None,
        name: str | None = None,
        session: Session | None = None,
    ) -> StrategyVersion:
        """A new version (of `strategy_id`, or of a new strategy); see the module docstring."""
        strategy_doc = self.parse(document)
        if session is not None:
            _, version = self._insert(
                session, tenant_id, strategy_doc, origin, created_by, strategy_id=strategy_id, name=name
            )
            session.flush()
            return version
        with self.db.tenant_transaction(tenant_id) as own:
            _, version = self._insert(
                own, tenant_id, strategy_doc, origin, created_by, strategy_id=strategy_id, name=name
            )
        return version

    @staticmethod
    def _name(name: str) -> str:
        name = (name or "").strip()
        if not 1 <= len(name) <= 120:
            raise StrategyNameInvalid("name must be 1 to 120 characters")
        return name

    def _insert(
        self,
        session: Session,
        tenant_id: str,
        strategy_doc: dsl.Strategy,
        origin: Origin,
        created_by: str | None,
        *,
        strategy_id: str | None = None,
        name: str | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[Strategy, StrategyVersion]:
        now = utcnow()
        if strategy_id is None:
            row = Strategy(
                tenant_id=tenant_id,
                name=self._name(name or strategy_doc.name),
                created_by=created_by,
                idempotency_key=idempotency_key,
                created_at=now,
                updated_at=now,
            )
            session.add(row)
            session.flush()
        else:
            found = session.exec(select(Strategy).where(Strategy.id == strategy_id).with_for_update()).first()
            if found is None:
                raise StrategyNotFound(f"no strategy {strategy_id}")
            row = found
        row.latest_version += 1
        row.updated_at = now
        version = StrategyVersion(
            tenant_id=tenant_id,
            strategy_id=row.id,
            version=row.latest_version,
            document=strategy_doc.document,
            document_hash=dsl.document_hash(strategy_doc.document),
            origin=origin.kind,
            origin_model=origin.model,
            origin_prompt_hash=origin.prompt_hash,
            origin_note=(origin.note or None) and origin.note[:2000],
            created_by=created_by,
            created_at=now,
        )
        session.add(row)
        session.add(version)
        session.flush()
        self.audit.append(
            session,
            tenant_id,
            [
                AuditEntry(
                    kind="strategy.version_created",
                    subject=version.id,
                    actor=created_by,
                    payload={
                        "strategy_id": row.id,
                        "version": version.version,
                        "origin": origin.kind,
                        "model": origin.model,
                        "prompt_hash": origin.prompt_hash,
                        "document_hash": version.document_hash,
                    },
                )
            ],
        )
        return row, version

    def _replay(
        self, session: Session, key: str, name: str, document: dict[str, Any]
    ) -> tuple[Strategy, StrategyVersion] | None:
        row = session.exec(select(Strategy).where(Strategy.idempotency_key == key)).first()
        if row is None:
            return None
        first = session.exec(
            select(StrategyVersion).where(StrategyVersion.strategy_id == row.id, StrategyVersion.version == 1)
        ).one()
        if row.name != name or first.document != document:
            raise Conflict("idempotencyKey was used for a different request", code="IDEMPOTENCY_KEY_REUSED")
        return row, first

    # -- approving --------------------------------------------------------------------------
    def approve(self, principal: Principal, version_id: str) -> StrategyVersion:
        if not self.policy.allowed(principal.user_id, principal.tenant_id, APPROVAL_OBJECT, "write"):
            raise ApprovalForbidden("approving strategies needs the admin or compliance_officer role")
        with self.db.tenant_transaction(principal.tenant_id) as session:
            version = session.exec(
                select(StrategyVersion).where(StrategyVersion.id == version_id).with_for_update()
            ).first()
            if version is None:
                raise StrategyVersionNotFound(f"no strategy version {version_id}")
            if version.approved_at is not None:
                raise AlreadyApproved(
                    f"version {version.version} was approved at {version.approved_at.isoformat()}"
                )
            if version.created_by is not None and version.created_by == principal.user_id:
                raise SelfApproval("a version must be approved by someone other than its creator")
            if version.created_by is not None:
                problem = independence_problem(session, principal, version.created_by,
                                               self.approval_window)
                if problem is not None:
                    raise SelfApproval(f"the approver {problem}", code="APPROVER_NOT_INDEPENDENT")
            version.approved_by, version.approved_at = principal.user_id, utcnow()
            session.add(version)
            self.audit.append(
                session,
                principal.tenant_id,
                [
                    AuditEntry(
                        kind="strategy.version_approved",
                        subject=version.id,
                        actor=principal.user_id,
                        payload={
                            "strategy_id": version.strategy_id,
                            "version": version.version,
                            "document_hash": version.document_hash,
                        },
                    )
                ],
            )
        return version

    # -- reading ----------------------------------------------------------------------------
    def strategies(
        self, tenant_id: str, *, first: int, after: str | None = None, search: str | None = None
    ) -> Page[Strategy]:
        """Newest first; `search`: a case-insensitive part of the name."""
        stmt = select(Strategy)
        if search is not None and search.strip():
            stmt = stmt.where(func.lower(Strategy.name).contains(search.strip().lower()))
        return keyset_page(
            self.db,
            tenant_id,
            stmt,
            Strategy,
            first=first,
            after=after,
            max_page_size=self.max_page_size,
        )

    def strategy(self, tenant_id: str, strategy_id: str) -> Strategy:
        with self.db.tenant_session(tenant_id) as session:
            row = session.exec(select(Strategy).where(Strategy.id == strategy_id)).first()
        if row is None:
            raise StrategyNotFound(f"no strategy {strategy_id}")
        return row

    def versions(self, tenant_id: str, strategy_ids: list[str]) -> dict[str, list[StrategyVersion]]:
        with self.db.tenant_session(tenant_id) as session:
            rows = session.exec(
                select(StrategyVersion)
                .where(col(StrategyVersion.strategy_id).in_(strategy_ids))
                .order_by(col(StrategyVersion.version))
            ).all()
        out: dict[str, list[StrategyVersion]] = {s: [] for s in strategy_ids}
        for row in rows:
            out[row.strategy_id].append(row)
        return out

    def version(self, tenant_id: str, version_id: str) -> StrategyVersion:
        with self.db.tenant_session(tenant_id) as session:
            row = session.exec(select(StrategyVersion).where(StrategyVersion.id == version_id)).first()
        if row is None:
            raise StrategyVersionNotFound(f"no strategy version {version_id}")
        return row

    def backtests(
        self, tenant_id: str, version_id: str, *, first: int, after: str | None = None
    ) -> Page[Backtest]:
        stmt = select(Backtest).where(Backtest.strategy_version_id == version_id)
        return keyset_page(
            self.db, tenant_id, stmt, Backtest, first=first, after=after, max_page_size=self.max_page_size
        )

    def backtest(self, tenant_id: str, backtest_id: str) -> Backtest:
        with self.db.tenant_session(tenant_id) as session:
            row = session.exec(select(Backtest).where(Backtest.id == backtest_id)).first()
        if row is None:
            raise BacktestNotFound(f"no backtest {backtest_id}")
        return row

    def backtest_of_job(self, tenant_id: str, job_id: str) -> Backtest | None:
        with self.db.tenant_session(tenant_id) as session:
            return session.exec(select(Backtest).where(Backtest.job_id == job_id)).first()

    def explanation(self, tenant_id: str, explanation_id: str) -> DecisionExplanation:
        with self.db.tenant_session(tenant_id) as session:
            row = session.exec(
                select(DecisionExplanation).where(DecisionExplanation.id == explanation_id)
            ).first()
        if row is None:
            raise ExplanationNotFound(f"no decision explanation {explanation_id}")
        return row

    def explanations(
        self,
        tenant_id: str,
        version_id: str,
        *,
        first: int,
        after: str | None = None,
        backtest_id: str | None = None,
    ) -> Page[DecisionExplanation]:
        self.version(tenant_id, version_id)  # STRATEGY_VERSION_NOT_FOUND rather than an empty page
        stmt = select(DecisionExplanation).where(DecisionExplanation.strategy_version_id == version_id)
        if backtest_id is not None:
            stmt = stmt.where(DecisionExplanation.backtest_id == backtest_id)
        return keyset_page(
            self.db,
            tenant_id,
            stmt,
            DecisionExplanation,
            first=first,
            after=after,
            max_page_size=self.max_page_size,
        )

    def base_currency(self, tenant_id: str) -> str:
        with self.db.tenant_session(tenant_id) as session:
            return session.exec(select(Tenant)).one().base_currency

    # -- backtest jobs ----------------------------------------------------------------------
    def check_backtest(
        self,
        tenant_id: str,
        version_id: str,
        start: datetime,
        end: datetime,
        instruments: Sequence[str] | None,
    ) -> None:
        """Before a backtest job is queued: the version is the caller's, the instruments exist,
        and the range holds at least one trading session of some instrument (BACKTEST_NO_DATA)."""
        strategy = self.parse(self.version(tenant_id, version_id).document)
        if (end - start) / INTERVAL_SPANS[strategy.interval] > MAX_WALL_CLOCK_BARS:
            raise BacktestParamsInvalid(
                f"the range holds more than {MAX_WALL_CLOCK_BARS} {strategy.interval} intervals; "
                "shorten it or use a strategy with a longer interval"
            )
        keys = list(instruments) if instruments else self.universe(strategy)
        for key in keys:
            self.market_data.instrument(key)
        if not keys or not any(
            self.market_data.venues.sessions(self.market_data.instrument(k).mic, start, end) for k in keys
        ):
            raise BacktestNoData(
                f"no trading session of {', '.join(keys) or 'the universe'} between "
                f"{start.isoformat()} and {end.isoformat()}"
            )

    def run_backtest_job(
        self,
        tenant_id: str,
        job_id: str,
        params: dict[str, Any],
        progress: Callable[[float, str], None] | None = None,
    ) -> Backtest:
        from gateway.jobs.models import Job
        from gateway.strategies.explain import explain_run

        version = self.version(tenant_id, params["strategy_version_id"])
        strategy = self.parse(version.document)
        start, end = datetime.fromisoformat(params["start"]), datetime.fromisoformat(params["end"])
        news = None
        if self.news_signals is not None and any(s.indicator == "news_sentiment" for s in strategy.signals):
            keys = params.get("instruments") or self.universe(strategy)
            news = self.news_signals(tenant_id, keys, start, end)
        result = self.simulate(
            strategy,
            start,
            end,
            base_currency=self.base_currency(tenant_id),
            instruments=params.get("instruments"),
            costs=Costs.from_params(params["costs"]),
            news=news,
            progress=progress,
        )
        if progress is not None:
            progress(0.8, f"explaining {len(result.decisions)} decisions")
        explained = explain_run(result.decisions, strategy.feature_names)
        if progress is not None:
            progress(0.95, f"storing the backtest and {len(explained.explanations)} explanations")
        metrics = {**result.metrics, "bars": result.bars, "notes": result.notes}
        with self.db.tenant_transaction(tenant_id) as session:
            job = session.exec(select(Job).where(Job.id == job_id)).first()
            row = Backtest(
                tenant_id=tenant_id,
                strategy_version_id=version.id,
                job_id=job_id,
                params=params,
                metrics=metrics,
                equity_curve=result.curve_json(),
                trades=[t.to_json() for t in result.trades],
                explainer=explained.summary,
                drift=explained.drift,
                explainer_model=explained.explainer.model_text if explained.explainer is not None else None,
                decision_count=len(result.decisions),
                created_by=job.created_by if job is not None else None,
            )
            session.add(row)
            session.flush()
            session.add_all(
                [
                    DecisionExplanation(
                        tenant_id=tenant_id,
                        strategy_version_id=version.id,
                        backtest_id=row.id,
                        instrument=e.decision.instrument,
                        at=e.decision.at,
                        action=e.decision.action,
                        model_hash=explained.summary["model_hash"],
                        model_version=explained.summary["model_version"],
                        features=e.features,
                        base_value=e.base_value,
                        contributions=e.contributions,
                        prediction=e.prediction,
                        probability=e.probability,
                        residual=e.residual,
                        additive=e.additive,
                        sentence=e.sentence,
                    )
                    for e in explained.explanations
                ]
            )
            self.audit.append(
                session,
                tenant_id,
                [
                    AuditEntry(
                        kind="strategy.backtest_completed",
                        subject=row.id,
                        actor=row.created_by,
                        payload={
                            "strategy_version_id": version.id,
                            "job_id": job_id,
                            "total_return": metrics.get("total_return"),
                            "sharpe": metrics.get("sharpe"),
                            "explained": len(explained.explanations),
                            "model_hash": explained.summary.get("model_hash"),
                        },
                    )
                ],
            )
        return row

    # -- simulating -------------------------------------------------------------------------
    def load_bars(
        self,
        keys: Sequence[str],
        start: datetime,
        end: datetime,
        interval: str,
        progress: Callable[[float, str], None] | None = None,
    ) -> dict[str, list[Bar]]:
        """Bars of every instrument over [start, end), read in chunks under the source's cap."""
        from gateway.strategies.backtest import load_bars

        return load_bars(self.market_data, keys, start, end, interval, progress)

    def simulate(
        self,
        strategy: dsl.Strategy,
        start: datetime,
        end: datetime,
        *,
        base_currency: str,
        instruments: Sequence[str] | None = None,
        costs: Costs | None = None,
        news: Mapping[str, Sequence[tuple[datetime, float]]] | None = None,
        progress: Callable[[float, str], None] | None = None,
        bars: Mapping[str, list[Bar]] | None = None,
    ) -> BacktestResult:
        keys = list(instruments) if instruments else self.universe(strategy)
        if bars is None:
            bars = self.load_bars(keys, start, end, strategy.interval, progress)
        if not any(bars.get(k) for k in keys):
            raise BacktestNoData(
                f"no {strategy.interval} bars for {', '.join(keys)} between "
                f"{start.isoformat()} and {end.isoformat()}"
            )
        currencies = {k: self.market_data.instrument(k).currency for k in keys}
        return run_backtest(
            strategy,
            {k: list(bars.get(k, [])) for k in keys},
            costs or Costs(),
            base_currency,
            fx=self.fx,
            currencies=currencies,
            news=news,
            sessions=self.market_data.venues,
            progress=progress,
        )
