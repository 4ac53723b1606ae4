"""The project's own providers, on the same contract as partners' plugins.

`BUILTINS` lists (name, module) pairs the gateway registers before any installed plugin.
"""

from plugins.builtin import (
    defi_cpmm,
    defi_stableswap,
    file_source,
    fx_rates,
    llm_anthropic,
    llm_offline,
    market_twin,
    news_file,
    optimisers,
)
from plugins.builtin.compliance import au, eu, hk, jp, sg, uk, us, venue_markets
from plugins.builtin.sim_exchange import plugin as sim_exchange

BUILTINS: list[tuple[str, object]] = [
    ("market-twin", market_twin),
    ("file-source", file_source),
    ("fx-rates", fx_rates),
    ("optimisers", optimisers),  # portfolio optimisers: classical, qiskit, pennylane
    ("sim-exchange", sim_exchange),
    ("llm-anthropic", llm_anthropic),  # Claude, when an API key is set
    ("llm-offline", llm_offline),  # templates and a lexicon, labelled as not an LLM
    ("news-file", news_file),  # the shipped news file
    ("defi-cpmm", defi_cpmm),  # constant-product pools (Uniswap v2 maths)
    ("defi-stableswap", defi_stableswap),  # stable-swap pools (Curve's invariant)
    # pre-trade compliance: one rule pack per jurisdiction
    ("compliance-us", us),
    ("compliance-eu", eu),
    ("compliance-uk", uk),
    ("compliance-jp", jp),
    ("compliance-hk", hk),
    ("compliance-sg", sg),
    ("compliance-au", au),
    ("compliance-venue-markets", venue_markets),  # CA, MX, CN, IN: their own venues only
]
