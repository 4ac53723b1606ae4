"""The project's own providers, on the same contract as partners' plugins.

`BUILTINS` lists (name, module) pairs the gateway registers before any installed plugin.
"""

BUILTINS: list[tuple[str, object]] = []
