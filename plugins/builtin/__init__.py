"""The project's own providers, on the same contract as partners' plugins.

`BUILTINS` lists (name, module) pairs the gateway registers before any installed plugin.
"""

from plugins.builtin import file_source, fx_rates, market_twin, optimisers
from plugins.builtin.compliance import au, eu, hk, jp, sg, uk, us
from plugins.builtin.sim_exchange import plugin as sim_exchange

BUILTINS: list[tuple[str, object]] = [
    ("market-twin", market_twin),
    ("file-source", file_source),
    ("fx-rates", fx_rates),
    ("optimisers", optimisers),  # portfolio optimisers: classical, qiskit, pennylane
    ("sim-exchange", sim_exchange),
    # pre-trade compliance: one rule pack per jurisdiction
    ("compliance-us", us),
    ("compliance-eu", eu),
    ("compliance-uk", uk),
    ("compliance-jp", jp),
    ("compliance-hk", hk),
    ("compliance-sg", sg),
    ("compliance-au", au),
]
