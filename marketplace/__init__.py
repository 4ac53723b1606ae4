"""Publishing, signing, review, catalogue, per-tenant installation and metering of plugins.

Not built yet: see issue 5.
"""
