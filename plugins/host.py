"""The gateway's side of the contract: a pluggy manager with the hookspecs, the built-in
plugins, and calls that isolate one plugin's failure from the rest."""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, TypeVar

import pluggy

from plugins import hookspecs
from plugins.sdk import PROJECT, PluginContext

log = logging.getLogger(__name__)
R = TypeVar("R")
DEFAULT_TIMEOUT_S = 5.0


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


class PluginCalls:
    """Calls into plugins with a deadline. Each plugin gets its own small thread pool, so one
    that hangs exhausts only its own threads: its later calls time out too, and every other
    plugin (and the gateway) keeps its threads. A call past its deadline is abandoned (Python
    cannot kill a thread) and answers PluginFailed naming the plugin; an exception becomes
    PluginFailed too (its text goes to the log, not to clients). Context variables (the
    plugin's bound context, the request's log context) follow the call into the thread."""

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S, threads_per_plugin: int = 4) -> None:
        self.timeout_s = timeout_s
        self.threads_per_plugin = threads_per_plugin
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._lock = threading.Lock()

    def _pool(self, plugin: str) -> ThreadPoolExecutor:
        with self._lock:
            pool = self._pools.get(plugin)
            if pool is None:
                pool = ThreadPoolExecutor(self.threads_per_plugin,
                                          thread_name_prefix=f"plugin-{plugin}"[:40])
                self._pools[plugin] = pool
            return pool

    def call(self, plugin: str, fn: Callable[..., R], *args: Any, timeout_s: float | None = None,
             **kwargs: Any) -> R:
        context = contextvars.copy_context()
        future = self._pool(plugin).submit(context.run, fn, *args, **kwargs)
        limit = self.timeout_s if timeout_s is None else timeout_s
        try:
            return future.result(timeout=limit)
        except FutureTimeout:
            future.cancel()
            log.error("plugin call timed out", extra={"plugin": plugin, "timeout_s": limit})
            raise PluginFailed(plugin, f"no answer within {limit:g} s") from None
        except PluginFailed:
            raise
        except Exception as exc:
            log.error("plugin call failed", exc_info=exc, extra={"plugin": plugin})
            raise PluginFailed(plugin, type(exc).__name__) from exc

    def close(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.shutdown(wait=False, cancel_futures=True)
