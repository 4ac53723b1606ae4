"""The gateway's side of the contract for the built-in plugins: a pluggy manager with the
hookspecs, and collection that isolates one plugin's failure from the rest. Installed
(marketplace) plugins never load here: they run in sandboxed workers (gateway/marketplace/
sandbox/)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pluggy

from plugins import hookspecs
from plugins.sdk import PROJECT, PluginContext

log = logging.getLogger(__name__)


class PluginFailed(Exception):
    """A plugin raised or answered in the wrong shape. `code` is stable for clients."""

    code = "PLUGIN_FAILED"

    def __init__(self, plugin: str, message: str) -> None:
        super().__init__(f"plugin {plugin} failed: {message}")
        self.plugin = plugin
        self.message = f"plugin {plugin} failed: {message}"


@dataclass(frozen=True)
class Contribution:
    plugin: str
    value: Any


class PluginHost:
    def __init__(self, plugins: Iterable[tuple[str, object]] = ()) -> None:
        self.manager = pluggy.PluginManager(PROJECT)
        self.manager.add_hookspecs(hookspecs)
        for name, plugin in plugins:
            self.register(name, plugin)

    def register(self, name: str, plugin: object) -> None:
        self.manager.register(plugin, name=name)
        self.manager.check_pending()  # an implementation of no hook is refused here

    def names(self) -> list[str]:
        return [name for name, _ in self.manager.list_name_plugin()]

    def collect(self, hook: str, context_for: Any, expect: type | None = None
                ) -> tuple[list[Contribution], list[PluginFailed]]:
        """Call `hook` on each plugin separately; gather list results and failures.

        `context_for(plugin_name) -> PluginContext` builds each plugin's own context. Items not
        instances of `expect` (a runtime-checkable protocol) count as that plugin's failure.
        """
        caller = getattr(self.manager.hook, hook)
        contributions: list[Contribution] = []
        failures: list[PluginFailed] = []
        for impl in caller.get_hookimpls():  # registration order: built-ins first
            name = impl.plugin_name
            try:
                result = impl.function(context=context_for(name))
                if not isinstance(result, list):
                    raise TypeError(f"{hook} returned {type(result).__name__}, not a list")
                for item in result:
                    if expect is not None and not isinstance(item, expect):
                        raise TypeError(f"{hook} returned a {type(item).__name__}, "
                                        f"not a {expect.__name__}")
                contributions.extend(Contribution(name, item) for item in result)
            except Exception as exc:
                log.exception("plugin hook failed", extra={"plugin": name, "hook": hook})
                failures.append(PluginFailed(name, str(exc)))
        return contributions, failures


def default_context(plugin_id: str, **kwargs: Any) -> PluginContext:
    return PluginContext(plugin_id=plugin_id, logger=logging.getLogger(f"alphintra.plugin.{plugin_id}"),
                         **kwargs)

