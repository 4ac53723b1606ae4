"""Errors of installed plugins as clients see them (each names the plugin in details.plugin)."""

from __future__ import annotations

from gateway.errors import DomainError


class PluginCallFailed(DomainError):
    """A plugin raised, crashed, hung past its deadline or answered the wrong shape."""

    code = "PLUGIN_FAILED"
    http_status = 502

    def __init__(self, plugin_id: str, message: str) -> None:
        super().__init__(f"plugin {plugin_id} failed: {message}", details={"plugin": plugin_id})
        self.plugin_id = plugin_id
        self.reason = message


class PoolStateGone(PluginCallFailed):
    """A DeFi protocol's worker no longer holds a pool's state (it was replaced, or the state
    was evicted): the pool is listed again and the call retried, never shown to a client."""


class PluginStartFailed(PluginCallFailed):
    """The worker could not start: the import raised (`error_type` names what), hung past the
    start deadline (`timed_out`), or the worker died while starting."""

    def __init__(self, plugin_id: str, message: str, *, error_type: str = "", detail: str = "",
                 timed_out: bool = False) -> None:
        super().__init__(plugin_id, message)
        self.error_type = error_type
        self.detail = detail or message
        self.timed_out = timed_out


class PluginQuarantined(PluginCallFailed):
    """The plugin failed too often in a short time; it stays stopped for this tenant until it
    is configured, upgraded, rolled back or reinstalled."""

    code = "PLUGIN_QUARANTINED"
    http_status = 503


class SandboxUnavailable(DomainError):
    """This host cannot confine plugin code to the required minimum (docs/sandbox.md)."""

    code = "PLUGIN_SANDBOX_UNAVAILABLE"
    http_status = 503
