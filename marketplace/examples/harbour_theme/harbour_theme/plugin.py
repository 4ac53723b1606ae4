"""The theme: fixed brand colours, a configurable product name and primary colour."""

from __future__ import annotations

from plugins.sdk import PluginContext, SupportLink, Theme, hookimpl


@hookimpl
def alphintra_white_label(context: PluginContext) -> Theme:
    return Theme(name="harbour", product_name=str(context.config.get("product_name", "Harbour Trader")),
                 primary_colour=str(context.config.get("primary_colour", "#0b3d5c")),
                 secondary_colour="#f2a900", background_colour="#f7f9fb", text_colour="#10212b",
                 logo_url="https://harbour-capital.example/logo.svg",
                 support_links=(SupportLink("Harbour help desk", "https://harbour-capital.example/support"),
                                SupportLink("Email the desk", "mailto:desk@harbour-capital.example")))


@hookimpl
def alphintra_feature_flags(context: PluginContext) -> dict[str, bool]:
    return {"show_vendor_badge": False}
