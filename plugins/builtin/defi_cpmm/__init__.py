"""Constant-product pools (Uniswap v2 maths, 0.3 % fee) as a DeFi protocol plugin."""

from plugins.builtin.defi_cpmm.protocol import ConstantProductProtocol, amount_out
from plugins.sdk import DefiProtocol, PluginContext, hookimpl

__all__ = ["ConstantProductProtocol", "amount_out"]


@hookimpl
def alphintra_defi_protocols(context: PluginContext) -> list[DefiProtocol]:
    return [ConstantProductProtocol(extra_pools=context.config.get("pools", {}))]
