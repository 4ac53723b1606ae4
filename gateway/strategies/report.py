"""The regulatory report of one strategy, in HTML or PDF (fpdf2, built-in core fonts only).

Contents: the strategy, its governance trail (every version: origin, who created it when, who
approved it when, the document's hash), for each version its latest backtest's figures, and
the explanations: the surrogate model (hash, version, fidelity), the additivity check over
every stored explanation, feature drift, and the most recent explained decisions in words.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlmodel import col, func, select

from gateway.strategies.errors import ReportFormatInvalid
from gateway.strategies.models import Backtest, DecisionExplanation, StrategyVersion
from gateway.tenancy.models import User

if TYPE_CHECKING:
    from gateway.strategies.service import StrategyService

METRICS = (
    ("total_return", "Total return", "pct"),
    ("annualised_return", "Annualised return", "pct"),
    ("volatility", "Volatility (annualised)", "pct"),
    ("sharpe", "Sharpe ratio", "num"),
    ("sortino", "Sortino ratio", "num"),
    ("max_drawdown", "Maximum drawdown", "pct"),
    ("annual_turnover", "Turnover (per year)", "num"),
    ("hit_rate", "Hit rate", "pct"),
    ("exposure", "Exposure", "pct"),
    ("trades", "Trades", "int"),
)


@dataclass
class VersionFacts:
    version: StrategyVersion
    created_by: str
    approved_by: str | None
    backtest: Backtest | None
    explained: int
    non_additive: int
    max_residual: float | None
    examples: list[DecisionExplanation]


def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "n/a"
    if kind == "pct":
        return f"{float(value) * 100:.2f} %"
    if kind == "num":
        return f"{float(value):.3f}"
    return str(value)


def gather(service: StrategyService, tenant_id: str, strategy_id: str) -> tuple[Any, list[VersionFacts]]:
    strategy = service.strategy(tenant_id, strategy_id)
    versions = service.versions(tenant_id, [strategy_id])[strategy_id]
    facts: list[VersionFacts] = []
    with service.db.tenant_session(tenant_id) as session:
        ids = {v.created_by for v in versions} | {v.approved_by for v in versions}
        users = {u.id: u for u in session.exec(select(User).where(col(User.id).in_([i for i in ids if i])))}

        def who(user_id: str | None) -> str:
            if user_id is None:
                return "the platform"
            user = users.get(user_id)
            return f"{user.email} ({user_id})" if user else user_id

        for v in versions:
            backtest = session.exec(
                select(Backtest)
                .where(Backtest.strategy_version_id == v.id)
                .order_by(col(Backtest.created_at).desc())
            ).first()
            where = DecisionExplanation.strategy_version_id == v.id
            explained = session.exec(select(func.count()).select_from(DecisionExplanation).where(where)).one()
            non_additive = session.exec(
                select(func.count())
                .select_from(DecisionExplanation)
                .where(where, col(DecisionExplanation.additive).is_(False))
            ).one()
            max_residual = session.exec(
                select(func.max(func.abs(DecisionExplanation.residual))).where(where)
            ).one()
            examples = list(
                session.exec(
                    select(DecisionExplanation)
                    .where(where)
                    .order_by(col(DecisionExplanation.at).desc())
                    .limit(5)
                )
            )
            facts.append(
                VersionFacts(
                    v,
                    who(v.created_by),
                    who(v.approved_by) if v.approved_by else None,
                    backtest,
                    int(explained),
                    int(non_additive),
                    None if max_residual is None else float(max_residual),
                    examples,
                )
            )
    return strategy, facts


def _costs(c: dict[str, Any]) -> str:
    return (
        f"commission {c.get('commission_bps', '?')} bps (at least {c.get('commission_min', '0')}), "
        f"spread {c.get('spread_bps', '?')} bps, slippage {c.get('slippage_bps', '?')} bps, "
        f"initial capital {c.get('initial_capital', '?')}"
    )


def _origin(v: StrategyVersion) -> str:
    if v.origin == "LLM":
        return f"LLM {v.origin_model} (prompt {(v.origin_prompt_hash or '')[:12]})"
    if v.origin == "OFFLINE":
        return "offline template (not an LLM)"
    return "human"


def render_html(strategy: Any, facts: list[VersionFacts], generated: datetime) -> str:
    e = html.escape
    out = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>Strategy report: {e(strategy.name)}"
        "</title><style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #999;padding:4px 8px;text-align:left}</style></head><body>",
        f"<h1>Strategy report: {e(strategy.name)}</h1>",
        f"<p>Strategy {e(strategy.id)}; report generated {generated.isoformat()}.</p>",
        "<h2>Governance trail</h2><table id='governance'><tr><th>Version</th><th>Origin</th>"
        "<th>Created by</th><th>Created at</th><th>Approved by</th><th>Approved at</th>"
        "<th>Document SHA-256</th></tr>",
    ]
    for f in facts:
        v = f.version
        out.append(
            f"<tr><td>{v.version}</td><td>{e(_origin(v))}</td><td>{e(f.created_by)}</td>"
            f"<td>{v.created_at.isoformat()}</td><td>{e(f.approved_by or 'not approved')}</td>"
            f"<td>{v.approved_at.isoformat() if v.approved_at else '-'}</td>"
            f"<td><code>{v.document_hash}</code></td></tr>"
        )
    out.append("</table><p>Only an approved version may send orders.</p>")
    for f in facts:
        v, b = f.version, f.backtest
        out.append(f"<h2>Version {v.version}</h2>")
        if b is None:
            out.append("<p>No backtest yet.</p>")
            continue
        p = b.params
        out.append(
            f"<p>Latest backtest {e(b.id)}: {e(p.get('start', ''))} to {e(p.get('end', ''))}, "
            f"base currency {e(str(b.metrics.get('base_currency', '')))}, "
            f"costs: {e(_costs(p.get('costs') or {}))}."
            "</p><table class='metrics'>"
        )
        for key, label, kind in METRICS:
            out.append(f"<tr><th>{label}</th><td>{_fmt(b.metrics.get(key), kind)}</td></tr>")
        out.append("</table>")
        x = b.explainer
        out.append("<h3>Explanations</h3>")
        if x.get("status") != "FITTED":
            out.append(f"<p>No explanation model: {e(str(x.get('reason', '')))}</p>")
            continue
        out.append(
            f"<p>Surrogate model {e(x['model_version'])}, hash <code>{e(x['model_hash'])}</code>; fidelity "
            f"{_fmt(x.get('fidelity_train'), 'pct')} on the training window and "
            f"{_fmt(x.get('fidelity_live'), 'pct')} on the live window "
            f"({_fmt(x.get('fidelity_orders'), 'pct')} on the explained order decisions). "
            f"{f.explained} stored "
            f"explanations; {f.non_additive} fail the additivity check (largest residual "
            f"{f.max_residual if f.max_residual is not None else 0:.2e}).</p>"
        )
        drifted = b.drift.get("drifted", [])
        out.append(
            f"<p>Feature drift (PSI, KS): {e(', '.join(drifted)) if drifted else 'no feature drifted'}"
            " significantly.</p><ul>"
        )
        out.extend(f"<li>{e(ex.sentence)}</li>" for ex in f.examples)
        out.append("</ul>")
    out.append("</body></html>")
    return "".join(out)


def _latin1(text: str) -> str:
    return text.replace("\u2212", "-").encode("latin-1", "replace").decode("latin-1")


def render_pdf(strategy: Any, facts: list[VersionFacts], generated: datetime) -> bytes:
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 15)

    def line(text: str, size: int = 9, style: str = "") -> None:
        pdf.set_font("Helvetica", style, size)
        pdf.multi_cell(0, 5, _latin1(text), new_x="LMARGIN", new_y="NEXT")

    line(f"Strategy report: {strategy.name}", 15, "B")
    line(f"Strategy {strategy.id}; generated {generated.isoformat()}")
    pdf.ln(3)
    line("Governance trail", 12, "B")
    for f in facts:
        v = f.version
        approved = (
            f"approved by {f.approved_by} at {v.approved_at.isoformat()}" if v.approved_at else "NOT APPROVED"
        )
        line(
            f"Version {v.version}: {_origin(v)}; created by {f.created_by} at {v.created_at.isoformat()}; "
            f"{approved}; document SHA-256 {v.document_hash}"
        )
    line("Only an approved version may send orders.")
    for f in facts:
        v, b = f.version, f.backtest
        pdf.ln(3)
        line(f"Version {v.version}", 12, "B")
        if b is None:
            line("No backtest yet.")
            continue
        line(
            f"Latest backtest {b.id}: {b.params.get('start')} to {b.params.get('end')}; "
            f"{_costs(b.params.get('costs') or {})}"
        )
        line("; ".join(f"{label}: {_fmt(b.metrics.get(key), kind)}" for key, label, kind in METRICS))
        x = b.explainer
        if x.get("status") != "FITTED":
            line(f"No explanation model: {x.get('reason', '')}")
            continue
        line(
            f"Surrogate model {x['model_version']}, hash {x['model_hash']}; fidelity "
            f"{_fmt(x.get('fidelity_train'), 'pct')} (training) / "
            f"{_fmt(x.get('fidelity_live'), 'pct')} (live); "
            f"{f.explained} explanations, {f.non_additive} failing additivity."
        )
        drifted = b.drift.get("drifted", [])
        line(f"Feature drift: {', '.join(drifted) if drifted else 'no feature drifted significantly'}.")
        for ex in f.examples:
            line(f"- {ex.sentence}", 8)
    return bytes(pdf.output())


def render_report(
    service: StrategyService, tenant_id: str, strategy_id: str, fmt: str
) -> tuple[str, str, bytes]:
    """(file name, content type, bytes) of the report in `fmt` (HTML or PDF)."""
    if fmt not in ("HTML", "PDF"):
        raise ReportFormatInvalid("format must be HTML or PDF")
    strategy, facts = gather(service, tenant_id, strategy_id)
    generated = datetime.now(UTC)
    stem = f"strategy-{strategy.id}-{generated:%Y%m%dT%H%M%SZ}"
    if fmt == "HTML":
        return f"{stem}.html", "text/html; charset=utf-8", render_html(strategy, facts, generated).encode()
    return f"{stem}.pdf", "application/pdf", render_pdf(strategy, facts, generated)
