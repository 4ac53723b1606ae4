"""Strategy synthesis and self-improvement by a language model (or the offline provider).

`strategy.synthesize` (a Job): describe the market regime of the universe from its daily bars
(regime.py) → ask the synthesis model (`LLMProviders.for_synthesis`) for a strategy through
the forced tool `propose_strategy`, whose input schema is the DSL's `STRATEGY_SCHEMA` → parse
and validate it (the lab's parser, instruments checked; the universe must stay within the one
asked for; the risk constraints must hold, constraints.py) → on errors, send them back as the
tool's error result and ask again, at most `llm_max_repairs` times → backtest the strategy on
the market data (the lab's simulator, after costs, in the tenant's base currency) → store the
version (origin LLM with the model and the SHA-256 of the prompt, or OFFLINE) with the run, in
one transaction.

`strategy.improve` (a Job): walk-forward validation with one split of the backtest window:
the first `train_fraction` of the run's periods (one equity point per bar interval across
venues) is in-sample, the rest out-of-sample. The model sees the incumbent's IN-SAMPLE metrics
(and its earlier trials' in-sample metrics) and a market regime described over the in-sample
segment only, and proposes a revision; each segment's figures include its own fills (turnover),
closed round trips (hit rate) and positions (exposure). Each revision is backtested over the
whole window and judged on the OUT-OF-SAMPLE segment of its equity curve (after costs): it
replaces the incumbent only if its out-of-sample Sharpe ratio is higher (a missing Sharpe
counts as -inf). A revision must respect the risk constraints the strategy was synthesised
under (when it was). Every proposal is a trial, counted whether it validated or not. The
deflated Sharpe ratio (Bailey & López de Prado) of the final choice uses N = 1 + the number of
trials, the variance of the out-of-sample per-period Sharpe ratios across the evaluated
trials, and the choice's out-of-sample skew, kurtosis and number of periods. A kept revision
becomes a new version of the strategy; nothing is stored when none is kept
except the run itself (with every trial), so the count survives.

Codes: OBJECTIVE_INVALID (empty or over MAX_OBJECTIVE characters), CONSTRAINTS_INVALID,
UNIVERSE_INVALID, INSTRUMENT_UNKNOWN, TRIALS_INVALID (when requested); SYNTHESIS_INVALID (the
answer never validated; the message lists the last errors with their JSON paths),
LLM_REFUSED, LLM_TIMEOUT, LLM_RATE_LIMITED, LLM_UNAVAILABLE, REGIME_NO_DATA, BACKTEST_NO_DATA
(when the job runs). A failed job stores nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from sqlmodel import select

from gateway.errors import DomainError, InvalidInput
from gateway.jobs.kinds import JobKind, Params
from gateway.jobs.models import Job
from gateway.jobs.runner import JobContext, JobFailed
from gateway.marketdata import MarketDataService
from gateway.strategies.backtest import segment_metrics
from gateway.strategies.constraints import RISK_CONSTRAINTS, constraint_violations
from gateway.strategies.dsl import STRATEGY_SCHEMA, Strategy, StrategyInvalid, canonical_json, document_hash
from gateway.strategies.llm import LLMProviders, ModelChoice
from gateway.strategies.metrics import deflated_sharpe_ratio, walk_forward_splits
from gateway.strategies.news import NewsService
from gateway.strategies.regime import describe_regime
from gateway.strategies.service import Origin, StrategyService
from gateway.strategies.synthesis_models import SynthesisRun
from plugins.sdk import LLMTurn, StructuredAnswer, ToolSpec

SYNTHESIZE = "strategy.synthesize"
IMPROVE = "strategy.improve"
MAX_OBJECTIVE = 2_000
MAX_UNIVERSE = 20
DEFAULT_UNIVERSE = ("AAPL.XNAS", "MSFT.XNAS", "JPM.XNYS")
MAX_TOKENS = 4_096
STRATEGY_TOOL = ToolSpec(
    "propose_strategy",
    "Propose one trading strategy as a document of the Alphintra strategy DSL. It is validated, "
    "backtested after costs and must be approved by a human before it may trade.",
    STRATEGY_SCHEMA,
)
SYSTEM = (
    "You are a quantitative strategist on the Alphintra platform. You design systematic trading "
    "strategies as data in the Alphintra strategy DSL and answer only through the "
    "propose_strategy tool. Use only the instruments you are given, only the indicators and "
    "operators the schema allows, and risk limits no looser than the constraints. Prefer simple, "
    "robust rules to fitted ones: every strategy is backtested after costs, validated out of "
    "sample, and approved by a human before it trades. Keep the description to what the "
    "strategy does and why it suits the regime described."
)


@dataclass(frozen=True)
class Attempt:
    answer: StructuredAnswer
    strategy: Strategy | None
    errors: list[dict[str, str]]


def prompt_hash(system: str, messages: Sequence[LLMTurn]) -> str:
    payload = {
        "system": system,
        "messages": [
            {"role": m.role, "text": m.text, "tool_input": m.tool_input, "is_error": m.is_error}
            for m in messages
        ],
    }
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def _errors_text(errors: Sequence[Mapping[str, str]], limit: int = 20) -> str:
    lines = [f"{e['path'] or '/'}: {e['message']}" for e in errors[:limit]]
    if len(errors) > limit:
        lines.append(f"... and {len(errors) - limit} more")
    return "\n".join(lines)


def _figures(metrics: Mapping[str, Any]) -> dict[str, Any]:
    keys = (
        "start",
        "end",
        "total_return",
        "annualised_return",
        "volatility",
        "sharpe",
        "sortino",
        "max_drawdown",
        "turnover",
        "hit_rate",
        "exposure",
        "trades",
        "periods",
    )
    return {k: metrics.get(k) for k in keys if k in metrics}


class SynthesisService:
    def __init__(
        self,
        llm: LLMProviders,
        strategies: StrategyService,
        market_data: MarketDataService,
        news: NewsService,
        *,
        max_repairs: int,
        now: Callable[[], datetime],
    ) -> None:
        self.llm = llm
        self.strategies = strategies
        self.market_data = market_data
        self.news = news
        self.max_repairs = max_repairs
        self.now = now

    def kinds(self) -> list[JobKind]:
        return [
            JobKind(
                name=SYNTHESIZE,
                description="Asks a language model (or the offline templates) for a "
                "strategy for an objective, validates, repairs, backtests and stores it.",
                run=self.run_synthesis,
                validate=self.validate_synthesis,
                permission="strategy",
            ),
            JobKind(
                name=IMPROVE,
                description="Self-improvement: revisions kept only when they improve "
                "out-of-sample results after costs; every trial counted.",
                run=self.run_improvement,
                validate=self.validate_improvement,
                permission="strategy",
            ),
        ]

    # -- parameters -------------------------------------------------------------------------
    def _as_of(self, value: Any) -> str:
        if value is None:
            now = self.now().astimezone(UTC)
            return now.replace(hour=0, minute=0, second=0, microsecond=0).isoformat()
        at = datetime.fromisoformat(str(value))
        if at.tzinfo is None:
            raise InvalidInput("asOf must carry a time zone", code="INSTANT_NOT_AWARE")
        return at.astimezone(UTC).isoformat()

    @staticmethod
    def _days(value: Any, default: int) -> int:
        days = default if value is None else value
        if not isinstance(days, int) or not 180 <= days <= 3_650:
            raise InvalidInput("backtestDays must be 180 to 3650", code="CONSTRAINTS_INVALID")
        return days

    def validate_synthesis(self, params: Params) -> Params:
        objective = params.get("objective")
        if not isinstance(objective, str) or not objective.strip():
            raise InvalidInput("objective must not be empty", code="OBJECTIVE_INVALID")
        objective = objective.strip()
        if len(objective) > MAX_OBJECTIVE:
            raise InvalidInput(
                f"objective is {len(objective)} characters; at most {MAX_OBJECTIVE}", code="OBJECTIVE_INVALID"
            )
        raw = params.get("constraints") or {}
        if not isinstance(raw, dict):
            raise InvalidInput("constraints must be an object", code="CONSTRAINTS_INVALID")
        constraints: dict[str, Any] = {}
        for key, low, high in (
            ("max_position", 0.0, 1.0),
            ("stop_loss", 0.0, 0.999),
            ("max_drawdown", 0.0, 0.999),
        ):
            value = raw.get(key)
            if value is None:
                continue
            if not isinstance(value, int | float) or not low < float(value) <= high:
                raise InvalidInput(
                    f"{key} must be above {low} and at most {high}", code="CONSTRAINTS_INVALID"
                )
            constraints[key] = float(value)
        unknown = set(raw) - {"max_position", "stop_loss", "max_drawdown"}
        if unknown:
            raise InvalidInput(
                f"unknown constraints: {', '.join(sorted(unknown))}", code="CONSTRAINTS_INVALID"
            )
        universe = self._universe(params.get("universe") or list(DEFAULT_UNIVERSE))
        provider = params.get("provider")
        if provider is not None:
            self.llm.choose(str(provider))  # LLM_PROVIDER_UNKNOWN, before the job is queued
        return {
            "objective": objective,
            "constraints": constraints,
            "universe": universe,
            "as_of": self._as_of(params.get("as_of")),
            "backtest_days": self._days(params.get("backtest_days"), 730),
            "provider": provider,
        }

    def _universe(self, keys: Any) -> list[str]:
        if not isinstance(keys, list) or not 1 <= len(keys) <= MAX_UNIVERSE:
            raise InvalidInput(f"universe must list 1 to {MAX_UNIVERSE} instruments", code="UNIVERSE_INVALID")
        out: list[str] = []
        for key in keys:
            instrument = self.market_data.instrument(str(key))  # INSTRUMENT_UNKNOWN
            if instrument.key in out:
                raise InvalidInput(f"{instrument.key} is listed twice", code="UNIVERSE_INVALID")
            out.append(instrument.key)
        return out

    def validate_improvement(self, params: Params) -> Params:
        strategy_id = params.get("strategy_id")
        if not isinstance(strategy_id, str) or not strategy_id:
            raise InvalidInput("strategyId is required", code="STRATEGY_NOT_FOUND")
        trials = params.get("trials", 3)
        if not isinstance(trials, int) or not 1 <= trials <= 10:
            raise InvalidInput("trials must be 1 to 10", code="TRIALS_INVALID")
        train = params.get("train_fraction", 0.7)
        if not isinstance(train, int | float) or not 0.5 <= float(train) <= 0.9:
            raise InvalidInput("trainFraction must be 0.5 to 0.9", code="TRIALS_INVALID")
        return {
            "strategy_id": strategy_id,
            "trials": trials,
            "train_fraction": float(train),
            "as_of": self._as_of(params.get("as_of")),
            "backtest_days": self._days(params.get("backtest_days"), 730),
        }

    # -- the conversation -------------------------------------------------------------------
    def _converse(
        self,
        choice: ModelChoice,
        messages: list[LLMTurn],
        facts: Mapping[str, Any],
        universe: Sequence[str],
        progress: Callable[[str], None],
        same_universe: Mapping[str, Any] | None = None,
        constraints: Mapping[str, Any] | None = None,
    ) -> tuple[Attempt, list[Attempt], str]:
        """Ask, validate, feed errors back; the last attempt, all attempts, the first prompt's hash.
        The answer must trade only `universe`, or keep `same_universe` (an incumbent's screen),
        and respect the risk `constraints` (a breach is fed back like a validation error)."""
        first_hash = prompt_hash(SYSTEM, messages)
        attempts: list[Attempt] = []
        allowed = set(universe)
        for n in range(self.max_repairs + 1):
            progress(f"asking {choice.model}" + (f" (repair {n})" if n else ""))
            answer = self.llm.ask(
                choice,
                system=SYSTEM,
                messages=messages,
                tool=STRATEGY_TOOL,
                max_tokens=MAX_TOKENS,
                facts={**facts, "attempt": n},
            )
            doc = dict(answer.tool_input or {})
            try:
                strategy = self.strategies.parse(doc)
                outside = [k for k in strategy.universe.instruments if k not in allowed]
                unchanged = same_universe is not None and strategy.document["universe"] == same_universe
                errors: list[dict[str, str]] = []
                if not unchanged and (strategy.universe.screen is not None or outside):
                    errors.append(
                        {
                            "path": "/universe",
                            "message": f"use only the instruments asked for: {', '.join(universe)}",
                        }
                    )
                errors.extend(constraint_violations(strategy, constraints))
                if errors:
                    raise StrategyInvalid(errors)
                attempt = Attempt(answer, strategy, [])
            except StrategyInvalid as exc:
                attempt = Attempt(answer, None, exc.errors)
            attempts.append(attempt)
            if attempt.strategy is not None:
                return attempt, attempts, first_hash
            messages = [
                *messages,
                LLMTurn("assistant", tool_input=doc, tool_use_id=answer.tool_use_id or f"call-{n}"),
                LLMTurn(
                    "user",
                    "The strategy failed validation. Fix every error and call "
                    "propose_strategy again:\n" + _errors_text(attempt.errors),
                    tool_use_id=answer.tool_use_id or f"call-{n}",
                    is_error=True,
                ),
            ]
        last = attempts[-1]
        raise JobFailed(
            "SYNTHESIS_INVALID",
            f"the model's answer did not validate after {len(attempts)} attempts "
            f"({self.max_repairs} repairs): " + _errors_text(last.errors, 8).replace("\n", "; "),
        )

    # -- synthesis --------------------------------------------------------------------------
    def run_synthesis(self, ctx: JobContext, params: Params) -> dict[str, Any]:
        existing = self._stored_run(ctx)
        if existing is not None:
            return existing
        universe = list(params["universe"])
        as_of = datetime.fromisoformat(params["as_of"])
        ctx.progress(0.05, "describing the market regime")
        regime = describe_regime(self.market_data, universe, as_of)
        choice = self.llm.for_synthesis(params.get("provider"))
        constraints = params["constraints"]
        prompt = (
            f"Objective: {params['objective']}\n\n"
            f"Instruments (universe): {', '.join(universe)}\n"
            "Constraints (risk limits the strategy must respect; sizing fractions at most max_position): "
            f"{json.dumps(constraints) if constraints else 'none beyond the schema'}\n"
            f"Bar interval: 1d. The strategy is backtested over the {params['backtest_days']} days to "
            f"{as_of.date().isoformat()} after commissions, spread and slippage.\n\n"
            f"Market regime (from the data): {regime['summary']}\n"
            f"Per instrument: {json.dumps(regime['instruments'])}\n\n"
            "Design one strategy for this objective and regime and submit it with propose_strategy."
        )
        facts = {
            "task": "strategy.synthesize",
            "objective": params["objective"],
            "constraints": constraints,
            "universe": universe,
            "regime": regime,
        }
        steps = iter(range(1, 100))
        attempt, attempts, phash = self._converse(
            choice,
            [LLMTurn("user", prompt)],
            facts,
            universe,
            lambda message: ctx.progress(min(0.1 + 0.1 * next(steps), 0.5), message),
            constraints=constraints,
        )
        strategy = attempt.strategy
        assert strategy is not None
        ctx.progress(0.6, "backtesting on the market data")
        start = as_of - timedelta(days=params["backtest_days"])
        result = self._backtest(ctx.tenant_id, strategy, start, as_of)
        ctx.progress(0.9, "storing the strategy version")
        answer = attempt.answer
        note = (
            f"synthesised by {answer.provider}/{answer.model} for: {params['objective'][:300]}"
            if answer.is_llm
            else f"offline template ({answer.stop_reason}); not a language model"
        )
        origin = (
            Origin.llm(model=answer.model, prompt_hash=phash, note=note)
            if answer.is_llm
            else Origin.offline(note)
        )
        metrics = {
            **result.metrics,
            "window_start": start.isoformat(),
            "window_end": as_of.isoformat(),
            "bars": result.bars,
        }
        trials = [
            {
                "attempt": n,
                "valid": a.strategy is not None,
                "errors": a.errors[:20],
                "response_id": a.answer.response_id,
                "usage": {
                    "input_tokens": a.answer.usage.input_tokens,
                    "output_tokens": a.answer.usage.output_tokens,
                },
            }
            for n, a in enumerate(attempts)
        ]
        created_by = self._created_by(ctx)
        with ctx.db.tenant_transaction(ctx.tenant_id) as session:
            version = self.strategies.create_version(
                ctx.tenant_id, strategy.document, origin, created_by, session=session
            )
            run = SynthesisRun(
                tenant_id=ctx.tenant_id,
                job_id=ctx.job_id,
                kind="SYNTHESIZE",
                strategy_id=version.strategy_id,
                strategy_version_id=version.id,
                objective=params["objective"],
                constraints=constraints,
                universe=universe,
                provider=answer.provider,
                model=answer.model,
                is_llm=answer.is_llm,
                prompt_hash=phash,
                repairs=len(attempts) - 1,
                trial_count=1,
                regime=regime,
                trials=trials,
                metrics=metrics,
                created_by=created_by,
            )
            session.add(run)
            session.flush()
            out = self._synthesis_result(run, version.version, strategy.document, result.notes)
        return out

    @staticmethod
    def _synthesis_result(
        run: SynthesisRun, version: int, document: Mapping[str, Any], notes: Sequence[str] = ()
    ) -> dict[str, Any]:
        return {
            "synthesis_run_id": run.id,
            "strategy_id": run.strategy_id,
            "strategy_version_id": run.strategy_version_id,
            "version": version,
            "document": dict(document),
            "metrics": run.metrics,
            "provider": run.provider,
            "model": run.model,
            "is_llm": run.is_llm,
            "prompt_hash": run.prompt_hash,
            "repairs": run.repairs,
            "attempts": run.trials,
            "regime": run.regime.get("summary"),
            "notes": list(notes),
        }

    def _stored_run(self, ctx: JobContext) -> dict[str, Any] | None:
        """A redelivered job whose run was stored answers with it (no second version)."""
        with ctx.session() as session:
            run = session.exec(select(SynthesisRun).where(SynthesisRun.job_id == ctx.job_id)).first()
        if run is None:
            return None
        if run.kind == "IMPROVE":
            return {**run.metrics, "synthesis_run_id": run.id}
        version = self.strategies.version(ctx.tenant_id, run.strategy_version_id or "")
        return self._synthesis_result(run, version.version, version.document)

    @staticmethod
    def _original_constraints(ctx: JobContext, strategy_id: str) -> dict[str, float]:
        """The risk constraints the strategy was synthesised under (none for a hand-made one):
        every revision must keep respecting them."""
        with ctx.session() as session:
            run = session.exec(
                select(SynthesisRun)
                .where(SynthesisRun.strategy_id == strategy_id, SynthesisRun.kind == "SYNTHESIZE")
                .order_by(SynthesisRun.created_at)  # type: ignore[arg-type]
            ).first()
        if run is None:
            return {}
        stored = run.constraints or {}
        return {k: float(stored[k]) for k in RISK_CONSTRAINTS if stored.get(k) is not None}

    @staticmethod
    def _created_by(ctx: JobContext) -> str | None:
        with ctx.session() as session:
            job = session.get(Job, ctx.job_id)
        return job.created_by if job is not None else None

    def _backtest(self, tenant_id: str, strategy: Strategy, start: datetime, end: datetime) -> Any:
        keys = self.strategies.universe(strategy)
        news = None
        if any(s.indicator == "news_sentiment" for s in strategy.signals):
            news = self.news.signals_for(tenant_id, keys, start, end)
        return self.strategies.simulate(
            strategy,
            start,
            end,
            base_currency=self.strategies.base_currency(tenant_id),
            instruments=keys,
            news=news,
        )

    # -- improvement ------------------------------------------------------------------------
    def run_improvement(self, ctx: JobContext, params: Params) -> dict[str, Any]:
        existing = self._stored_run(ctx)
        if existing is not None:
            return existing
        tenant_id = ctx.tenant_id
        strategy_row = self.strategies.strategy(tenant_id, params["strategy_id"])
        versions = self.strategies.versions(tenant_id, [strategy_row.id])[strategy_row.id]
        base_version = versions[-1]
        incumbent = self.strategies.parse(base_version.document)
        universe = self.strategies.universe(incumbent)
        as_of = datetime.fromisoformat(params["as_of"])
        start = as_of - timedelta(days=params["backtest_days"])
        ctx.progress(0.05, "backtesting the current version")
        base = self._evaluate(tenant_id, incumbent, start, as_of, params["train_fraction"])
        constraints = self._original_constraints(ctx, strategy_row.id)
        regime = self._in_sample_regime(universe, start, base["train"]["end"])
        choice = self.llm.for_synthesis()
        trials: list[dict[str, Any]] = []
        evaluated = [base]
        best, best_doc, best_trial = base, base_version.document, 0
        best_hash: str | None = None
        best_answer: StructuredAnswer | None = None
        for trial in range(1, params["trials"] + 1):
            history = [
                {"trial": t["trial"], "change": t.get("change"), "in_sample": t.get("in_sample")}
                for t in trials
            ]
            prompt = (
                f"Current strategy (version {base_version.version}):\n{canonical_json(best_doc)}\n\n"
                f"Its in-sample backtest after costs ({best['train']['start']} to {best['train']['end']}): "
                f"{json.dumps(_figures(best['train']))}\n"
                f"Market regime: {regime['summary']}\n"
                + (f"Revisions already tried (in-sample): {json.dumps(history)}\n" if history else "")
                + (
                    f"Constraints the revision must respect (risk limits; sizing fractions at most "
                    f"max_position): {json.dumps(constraints)}\n"
                    if constraints
                    else ""
                )
                + "\nPropose one revision likely to generalise out of sample (keep the same instruments); "
                "submit the whole revised document with propose_strategy."
            )
            facts = {
                "task": "strategy.improve",
                "document": best_doc,
                "trial": trial - 1,
                "metrics": _figures(best["train"]),
                "regime": regime,
                "constraints": constraints,
            }
            fraction = 0.1 + 0.8 * (trial - 1) / params["trials"]
            record: dict[str, Any] = {
                "trial": trial,
                "provider": choice.provider,
                "model": choice.model,
                "is_llm": choice.is_llm,
            }
            try:
                attempt, attempts, phash = self._converse(
                    choice,
                    [LLMTurn("user", prompt)],
                    facts,
                    universe,
                    lambda message, f=fraction, t=trial: ctx.progress(f, f"trial {t}: {message}"),
                    same_universe=incumbent.document["universe"],
                    constraints=constraints,
                )
            except JobFailed as exc:  # an answer that never validated is a trial too
                record.update(valid=False, kept=False, error=exc.message[:500])
                trials.append(record)
                continue
            candidate = attempt.strategy
            assert candidate is not None
            record.update(
                valid=True,
                repairs=len(attempts) - 1,
                prompt_hash=phash,
                document_hash=document_hash(candidate.document),
                document=candidate.document,
                change=(candidate.description or candidate.name)[:300],
                model=attempt.answer.model,
            )
            try:
                figures = self._evaluate(tenant_id, candidate, start, as_of, params["train_fraction"])
            except DomainError as exc:
                record.update(kept=False, error=f"{exc.code}: {exc.message}"[:500])
                trials.append(record)
                continue
            evaluated.append(figures)
            better = _score(figures["test"]) > _score(best["test"])
            record.update(
                in_sample=_figures(figures["train"]), out_of_sample=_figures(figures["test"]), kept=better
            )
            trials.append(record)
            if better:
                best, best_doc, best_trial, best_hash, best_answer = (
                    figures,
                    candidate.document,
                    trial,
                    phash,
                    attempt.answer,
                )
        ctx.progress(0.92, "deflating the Sharpe ratio by the number of trials")
        n_trials = 1 + len(trials)
        dsr = _deflated(best["test"], [e["test"] for e in evaluated], n_trials)
        created_by = self._created_by(ctx)
        result: dict[str, Any] = {
            "strategy_id": strategy_row.id,
            "base_version_id": base_version.id,
            "kept": best_trial > 0,
            "selected_trial": best_trial,
            "trial_count": n_trials,
            "deflated_sharpe_ratio": dsr,
            "provider": choice.provider,
            "model": choice.model,
            "is_llm": choice.is_llm,
            "train_fraction": params["train_fraction"],
            "constraints": constraints,
            "baseline": {"in_sample": _figures(base["train"]), "out_of_sample": _figures(base["test"])},
            "regime": {k: regime.get(k) for k in ("summary", "start", "as_of", "lookback_days")},
            "trials": trials,
            "strategy_version_id": None,
            "version": None,
        }
        with ctx.db.tenant_transaction(tenant_id) as session:
            version_id = None
            if best_trial > 0 and best_answer is not None:
                note = f"improvement trial {best_trial} of {len(trials)} (out-of-sample Sharpe improved)"
                origin = (
                    Origin.llm(model=best_answer.model, prompt_hash=best_hash or "", note=note)
                    if best_answer.is_llm
                    else Origin.offline(note + "; offline revision, not an LLM")
                )
                version = self.strategies.create_version(
                    tenant_id, best_doc, origin, created_by, strategy_id=strategy_row.id, session=session
                )
                version_id = version.id
                result.update(strategy_version_id=version.id, version=version.version)
            run = SynthesisRun(
                tenant_id=tenant_id,
                job_id=ctx.job_id,
                kind="IMPROVE",
                strategy_id=strategy_row.id,
                strategy_version_id=version_id,
                provider=choice.provider,
                model=choice.model,
                is_llm=choice.is_llm,
                prompt_hash=best_hash or "",
                trial_count=n_trials,
                deflated_sharpe=dsr,
                regime=regime,
                trials=trials,
                metrics=result,
                universe=universe,
                constraints={"train_fraction": params["train_fraction"], **constraints},
                created_by=created_by,
            )
            session.add(run)
            session.flush()
            result["synthesis_run_id"] = run.id
        return result

    def _in_sample_regime(self, universe: Sequence[str], start: datetime, end: str) -> dict[str, Any]:
        """The regime over the in-sample segment only: from the window's start to the segment's
        last close, with bars closed by then. What the model reads must not reach the
        out-of-sample segment it is judged on."""
        cutoff = datetime.fromisoformat(end)
        days = max(1, (cutoff - start).days)
        return describe_regime(self.market_data, universe, cutoff, days, closed_by=True)

    def _evaluate(
        self, tenant_id: str, strategy: Strategy, start: datetime, end: datetime, train_fraction: float
    ) -> dict[str, Any]:
        # Split the run's one-point-per-period curve (not its per-close curve: two venues' closes
        # in one day are one period), so Sharpe ratios and the DSR's length count periods.
        result = self._backtest(tenant_id, strategy, start, end)
        n = len(result.periods)
        train = max(2, int(n * train_fraction))
        splits = walk_forward_splits(n, train, n - train) if n - train >= 2 else []
        if not splits:
            raise DomainError("too few bars for a train/test split", code="BACKTEST_NO_DATA")
        in_sample, out_sample = splits[0]
        return {
            "train": segment_metrics(result, in_sample),
            "test": segment_metrics(result, out_sample),
            "all": dict(result.metrics),
        }


def _score(metrics: Mapping[str, Any]) -> float:
    sharpe = metrics.get("sharpe")
    return float(sharpe) if sharpe is not None and math.isfinite(sharpe) else -math.inf


def _deflated(
    chosen: Mapping[str, Any], all_tests: Sequence[Mapping[str, Any]], n_trials: int
) -> float | None:
    sr = chosen.get("sharpe_per_period")
    if sr is None or chosen.get("periods", 0) < 2:
        return None
    per_period = [m["sharpe_per_period"] for m in all_tests if m.get("sharpe_per_period") is not None]
    variance = float(np.var(per_period, ddof=1)) if len(per_period) > 1 else 0.0
    try:
        return deflated_sharpe_ratio(
            float(sr),
            n_trials,
            int(chosen["periods"]),
            float(chosen.get("skew") or 0.0),
            float(chosen.get("kurtosis") or 3.0),
            variance,
        )
    except ValueError:
        return None
