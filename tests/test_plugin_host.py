"""The plugin host: built-ins first, and one plugin's failure stays its own."""

from plugins.host import PluginHost, default_context
from plugins.sdk import FxRateProvider, hookimpl


class Provider:
    def __init__(self, name):
        self.name = name

    def rate(self, base, quote, at):
        return None

    def history(self, base, quote, start, end):
        return []

    def interest_rate(self, currency, at):
        return None


def plugin(name):
    class Plugin:
        @hookimpl
        def alphintra_fx_rate_providers(self, context):
            return [Provider(name)]

    return Plugin()


class Raising:
    @hookimpl
    def alphintra_fx_rate_providers(self, context):
        raise RuntimeError("vendor bug")


class WrongShape:
    @hookimpl
    def alphintra_fx_rate_providers(self, context):
        return ["not a provider"]


def test_contributions_come_in_registration_order_and_failures_stay_alone():
    host = PluginHost([("builtin", plugin("builtin")), ("raising", Raising()),
                       ("partner", plugin("partner")), ("wrong", WrongShape())])
    contributions, failures = host.collect("alphintra_fx_rate_providers", default_context,
                                           expect=FxRateProvider)
    assert [(c.plugin, c.value.name) for c in contributions] == [("builtin", "builtin"),
                                                                 ("partner", "partner")]
    assert [(f.plugin, f.code) for f in failures] == [("raising", "PLUGIN_FAILED"),
                                                      ("wrong", "PLUGIN_FAILED")]
    assert "vendor bug" in failures[0].message
