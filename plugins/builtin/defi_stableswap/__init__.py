"""Two-coin stable-swap pools (Curve's StableSwap invariant) as a DeFi protocol plugin."""

from plugins.builtin.defi_stableswap.protocol import StableSwapProtocol, get_D, get_dy, get_y
from plugins.sdk import DefiProtocol, PluginContext, hookimpl

__all__ = ["StableSwapProtocol", "get_D", "get_dy", "get_y"]


@hookimpl
def alphintra_defi_protocols(context: PluginContext) -> list[DefiProtocol]:
    return [StableSwapProtocol(extra_pools=context.config.get("pools", {}))]
