"""The AI strategy lab: a strategy DSL (data, never code), its interpreter, an event-driven
backtester, metrics, versioned and approved strategies, and explained decisions.

Modules (see each docstring): dsl (schema, parser, errors), interpreter (indicators and rules
on numpy arrays), backtest (the simulation), metrics (performance figures, deflated Sharpe,
walk-forward splits), models (tables), service (StrategyService on Runtime.strategies), kind
(the `strategy.backtest` job), explain (LightGBM + SHAP explanations, drift), report (HTML and
PDF regulatory report).
"""
