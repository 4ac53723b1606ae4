"""The plugin contract (hookspecs), its host, and the built-in plugins.

Not built yet: the plugin contract and marketplace are issue 5. This package exists so the
distribution's layout is fixed from the start.
"""
