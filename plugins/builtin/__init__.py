"""The project's own providers, on the same contract as partners' plugins.

`BUILTINS` lists (name, module) pairs the gateway registers before any installed plugin.
"""

from plugins.builtin import file_source, fx_rates, market_twin

BUILTINS: list[tuple[str, object]] = [
    ("market-twin", market_twin),
    ("file-source", file_source),
    ("fx-rates", fx_rates),
]
