"""Cross-currency portfolios, FX exposure and hedging (issue 3). No GraphQL types here.

models    Portfolio, Position, CashBalance, UnsettledTrade, HedgeExecution, HedgePosition
rates     the chain of FX-provider plugins: spot (direct, inverse, cross via USD), history,
          interest rates
maths     pure Decimal arithmetic: exposure, covered interest parity, hedge policies,
          the minimum-variance ratio
service   FxService: what resolvers call
"""
