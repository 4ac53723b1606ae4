"""The plugin marketplace (issue 5).

Publication: models (vendors, plugins, versions), manifest, wheel (safety), signing (Ed25519),
inspection and conformance (in a separate process), service (MarketplacePublishing), build
and cli (`alphintra plugin`), examples/. Installation, loading, catalogue and metering: the
install*, loader, catalogue, metering and tenant_plugins modules.
"""
